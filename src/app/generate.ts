/**
 * The prompt panel: Generate streams into #output token by token — completion: the prompt (dimmed)
 * and its continuation; chat (mode.ts): the conversation, one line per message, the input cleared
 * after sending. While streaming: the box follows the text (unless the user scrolled up), the stats
 * line counts tokens and tok/s, and a run waiting behind another (a compare run, training) says "queued". Stop
 * or Escape aborts the request through `engine.abort(requestId)` (the engine answers within one decode
 * step with finishReason 'abort' and the text so far). Copy puts the output on the clipboard; finished
 * runs go to "Recent runs" (run-history.ts). A run that shared decode steps with other requests (an
 * embedded `<weblora-chat>`, a compare) says "decoded in a batch of N" (`#output[data-batch-rows]`).
 * Also exports `streamView`, the output box both this panel and the compare columns use. Errors are
 * shown as "TypedName: message" under the output.
 */
import type { ChatMessage, GenerateResult, RoutingReport } from '../engine/types.ts';
import { h } from '../ui/dom.ts';
import type { AdapterPicker } from './adapter-picker.ts';
import { byId, errorText, setMessage } from './dom.ts';
import type { ModeControl } from './mode.ts';
import { mountRunHistory } from './run-history.ts';
import { type mountSampling, readSampling, type SamplingFields } from './sampling.ts';
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

/** Keeps a scroll box at its end while text streams in, unless the user scrolled up to read. */
function follow(pre: HTMLElement, update: () => void): void {
  const atEnd = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
  update();
  if (atEnd) pre.scrollTop = pre.scrollHeight;
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
      follow(pre, () => {
        cont.textContent = visible(text);
      });
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
  pre.scrollTop = pre.scrollHeight;
  let text = '';
  return {
    append(delta) {
      if (!delta) return;
      text += delta;
      follow(pre, () => {
        cont.textContent = visible(text);
      });
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
  // Continuous batching (engine/batch.ts): how many requests at most shared a decode step with this one.
  const batch = (t.batchRows ?? 1) > 1 ? ` · decoded in a batch of ${t.batchRows}` : '';
  return `${n} token${n === 1 ? '' : 's'} (${r.finishReason}) · prompt ${t.promptTokens} tokens in ${t.prefillMs.toFixed(0)} ms${speed}${batch}`;
}

/** "auto chose shout ×1.00 (prompt loss: shout 2.31, romeo 3.90 nats/token)"; base model = "base". */
export function describeRouting(r: RoutingReport): string {
  const nm = (a: string | null): string => a ?? 'base';
  const chosen = r.chosen.map((a, i) => `${nm(a)} ×${r.weights[i]!.toFixed(2)}`).join(' + ');
  const scores = r.scores.map((s) => `${nm(s.adapter)} ${s.nll.toFixed(2)}`).join(', ');
  return `auto chose ${chosen} (prompt loss: ${scores} nats/token)`;
}

export function mountGenerate(
  state: AppState,
  picker: AdapterPicker,
  mode: ModeControl,
  samplingForm: ReturnType<typeof mountSampling>,
): void {
  const form = byId<HTMLFormElement>('gen-form');
  const prompt = byId<HTMLTextAreaElement>('prompt');
  const generate = byId<HTMLButtonElement>('generate');
  const stop = byId<HTMLButtonElement>('stop');
  const output = byId('output');
  const stats = byId('stats');
  const error = byId('gen-error');
  const copy = byId<HTMLButtonElement>('copy');
  const history = mountRunHistory();
  let running: string | null = null;
  /** What Copy copies: the completion (prompt + continuation) or the last chat reply. */
  let copyText = '';

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
  // Escape anywhere on the page stops this panel's run (the compare panel has its own Stop).
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && running) {
      ev.preventDefault();
      void state.engine.abort(running);
    }
  });
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(copyText);
      copy.textContent = 'Copied';
    } catch {
      copy.textContent = 'Copy failed';
    }
    setTimeout(() => {
      copy.textContent = 'Copy';
    }, 1500);
  });

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (running || !state.ready) return;
    setMessage(error, '');
    let sampling: SamplingFields;
    try {
      sampling = readSampling(); // an invalid field is marked in the form and named here
    } catch (e) {
      setMessage(error, errorText(e));
      return;
    }
    const requestId = newRequestId('gen');
    running = requestId;
    sync();
    // Training holds the engine: this run waits in its queue. A running compare does not: this run
    // joins its batch at the next decode step (continuous batching) and streams at once.
    const queued = state.training;
    const joins = !queued && state.busy;
    const done = state.beginGeneration();
    const text = prompt.value;
    const body = mode.request(text);
    const chat = body.messages !== undefined;
    const view = chat ? chatView(output, mode.history(), text) : streamView(output, text);
    if (chat) prompt.value = ''; // the message is in the conversation now
    const label = picker.describe();
    stats.textContent = queued
      ? `Queued: waiting for training to pause or finish (${label})…`
      : `Generating with ${label}${joins ? ', in the running compare’s batch' : ''}…`;
    output.dataset.status = queued ? 'queued' : 'streaming';
    copy.disabled = true;
    let tokens = 0;
    let firstAt = 0;
    let shownAt = 0;
    const live = (): void => {
      const now = performance.now();
      if (now - shownAt < 100) return; // at most ten updates a second
      shownAt = now;
      const secs = (now - firstAt) / 1000;
      const rate = tokens > 1 && secs > 0 ? ` · ${((tokens - 1) / secs).toFixed(1)} tok/s` : '';
      stats.textContent = `Generating with ${label}… ${tokens} token${tokens === 1 ? '' : 's'}${rate}`;
    };
    try {
      const r = await state.engine.generate(
        { ...body, adapter: picker.selection(), requestId, ...sampling },
        (d) => {
          if (tokens++ === 0) {
            firstAt = performance.now();
            output.dataset.status = 'streaming';
          }
          view.append(d.text);
          live();
        },
      );
      if (chat) mode.commit(text, r.text);
      samplingForm.setContext(state.report?.config.maxPositionEmbeddings ?? null, r.timings.promptTokens);
      stats.textContent = `${describeResult(r)} · ${r.routing ? describeRouting(r.routing) : label}`;
      output.dataset.status = r.finishReason;
      output.dataset.batchRows = String(r.timings.batchRows ?? 1);
      copyText = chat ? r.text : text + r.text;
      copy.disabled = false;
      history.add({
        label: r.routing ? describeRouting(r.routing) : label,
        mode: chat ? 'chat' : 'completion',
        prompt: text,
        output: r.text,
        result: describeResult(r),
      });
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
