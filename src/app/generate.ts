/**
 * The prompt panel: Generate streams into #output token by token — completion: the prompt (dimmed)
 * and its continuation; chat (mode.ts): the conversation, one line per message, the input cleared
 * after sending. Stop aborts the request through `engine.abort(requestId)` (the engine answers within
 * one decode step with finishReason 'abort' and the text so far). Also exports `streamView`, the output
 * box both this panel and the compare columns use. Errors are shown as "TypedName: message" under the
 * output.
 */
import type { ChatMessage, GenerateResult } from '../engine/types.ts';
import { h } from '../ui/dom.ts';
import type { AdapterPicker } from './adapter-picker.ts';
import { byId, errorText, setMessage } from './dom.ts';
import type { ModeControl } from './mode.ts';
import { readSampling } from './sampling.ts';
import { type AppState, newRequestId } from './state.ts';

/** The tiny model can emit NUL and other control characters; show them instead of dropping them. */
function visible(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: making control characters visible is the point
  return text.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, (c) =>
    String.fromCharCode(0x2400 + c.charCodeAt(0)),
  );
}

export interface StreamView {
  append(text: string): void;
  /** Everything appended so far (raw, not made visible). */
  readonly text: string;
}

/** Resets `pre` to show `prompt` (dimmed) followed by the streamed continuation. */
export function streamView(pre: HTMLElement, prompt: string | null): StreamView {
  const cont = h('span', { class: 'continuation' });
  pre.replaceChildren(...(prompt ? [h('span', { class: 'prompt' }, visible(prompt))] : []), cont);
  let text = '';
  return {
    append(delta) {
      if (!delta) return;
      text += delta;
      cont.textContent = visible(text);
    },
    get text() {
      return text;
    },
  };
}

/** Resets `pre` to the chat so far, then `user`'s new message and the streamed reply, one line each. */
export function chatView(pre: HTMLElement, turns: readonly ChatMessage[], user: string): StreamView {
  const msg = (role: string, text: string): HTMLElement =>
    h('span', { class: `msg ${role}`, 'data-role': role }, visible(text));
  const cont = h('span', { class: 'msg assistant continuation', 'data-role': 'assistant' });
  pre.replaceChildren(...turns.map((t) => msg(t.role, t.content)), msg('user', user), cont);
  let text = '';
  return {
    append(delta) {
      if (!delta) return;
      text += delta;
      cont.textContent = visible(text);
    },
    get text() {
      return text;
    },
  };
}

export function describeResult(r: GenerateResult): string {
  const t = r.timings;
  const n = r.tokenIds.length;
  const speed = t.tokensPerSecond > 0 ? `, ${t.tokensPerSecond.toFixed(1)} tok/s` : '';
  return `${n} token${n === 1 ? '' : 's'} (${r.finishReason}) · prompt ${t.promptTokens} tokens in ${t.prefillMs.toFixed(0)} ms${speed}`;
}

export function mountGenerate(state: AppState, picker: AdapterPicker, mode: ModeControl): void {
  const form = byId<HTMLFormElement>('gen-form');
  const prompt = byId<HTMLTextAreaElement>('prompt');
  const generate = byId<HTMLButtonElement>('generate');
  const stop = byId<HTMLButtonElement>('stop');
  const output = byId('output');
  const stats = byId('stats');
  const error = byId('gen-error');
  let running: string | null = null;

  const sync = (): void => {
    generate.disabled = !state.ready || running !== null;
    stop.disabled = running === null;
  };
  state.onModel(sync);
  mode.onReset(() => {
    if (running) return;
    output.replaceChildren();
    stats.textContent = '';
    delete output.dataset.status;
  });

  prompt.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      form.requestSubmit();
    }
  });

  stop.addEventListener('click', () => {
    if (running) void state.engine.abort(running);
  });

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (running || !state.ready) return;
    setMessage(error, '');
    const requestId = newRequestId('gen');
    running = requestId;
    sync();
    const done = state.beginGeneration();
    const text = prompt.value;
    const body = mode.request(text);
    const chat = body.messages !== undefined;
    const view = chat ? chatView(output, mode.history(), text) : streamView(output, text);
    if (chat) prompt.value = ''; // the message is in the conversation now
    const label = picker.describe();
    stats.textContent = `Generating with ${label}…`;
    output.dataset.status = 'streaming';
    try {
      const r = await state.engine.generate(
        { ...body, adapter: picker.selection(), requestId, ...readSampling() },
        (d) => view.append(d.text),
      );
      if (chat) mode.commit(text, r.text);
      stats.textContent = `${describeResult(r)} · ${label}`;
      output.dataset.status = r.finishReason;
    } catch (e) {
      stats.textContent = '';
      output.dataset.status = 'error';
      setMessage(error, errorText(e));
    } finally {
      running = null;
      done();
      sync();
      void state.refreshStats();
    }
  });
}
