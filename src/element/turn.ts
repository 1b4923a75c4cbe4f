/**
 * Small pieces of `<weblora-chat>`'s output kept out of its file (which is near the line cap): one
 * prompt/response turn in the output (parts `turn`, `prompt`, `response`) and the result a prompt
 * stopped before it reached the engine resolves to.
 */

/** Appends a turn showing `prompt` to `output`; the response span fills as tokens stream. */
export function appendTurn(
  output: HTMLElement,
  prompt: string,
): { turn: HTMLElement; response: HTMLElement } {
  const part = (tag: string, name: string): HTMLElement => {
    const el = document.createElement(tag);
    el.className = name;
    el.setAttribute('part', name);
    return el;
  };
  const turn = part('div', 'turn');
  const p = part('span', 'prompt');
  p.textContent = prompt;
  const response = part('span', 'response');
  turn.append(p, response);
  output.append(turn);
  return { turn, response };
}
