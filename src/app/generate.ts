/**
 * The prompt panel: Generate streams the continuation into #output token by token, Stop aborts the
 * request through `engine.abort(requestId)` (the engine answers within one decode step with
 * finishReason 'abort' and the text so far). Also exports `streamView`, the output box both this panel
 * and the compare columns use. Errors are shown as "TypedName: message" under the output.
 */
import type { GenerateResult } from '../engine/types.ts';
import { h } from '../ui/dom.ts';
import type { AdapterPicker } from './adapter-picker.ts';
import { byId, errorText, setMessage } from './dom.ts';
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

export function describeResult(r: GenerateResult): string {
  const t = r.timings;
  const n = r.tokenIds.length;
  const speed = t.tokensPerSecond > 0 ? `, ${t.tokensPerSecond.toFixed(1)} tok/s` : '';
  return `${n} token${n === 1 ? '' : 's'} (${r.finishReason}) · prompt ${t.promptTokens} tokens in ${t.prefillMs.toFixed(0)} ms${speed}`;
}

export function mountGenerate(state: AppState, picker: AdapterPicker): void {
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
    const view = streamView(output, prompt.value);
    const label = picker.describe();
    stats.textContent = `Generating with ${label}…`;
    output.dataset.status = 'streaming';
    try {
      const r = await state.engine.generate(
        { prompt: prompt.value, adapter: picker.selection(), requestId, ...readSampling() },
        (d) => view.append(d.text),
      );
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
