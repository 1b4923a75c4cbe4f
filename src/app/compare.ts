/**
 * Compare view: the prompt from the Generate panel (in chat mode: as a single message, without the
 * conversation), with the same sampling settings, run once per selected column: the base model, stored
 * adapters, and the Generate panel's current picker selection (one adapter or a weighted mix). All
 * requests are submitted at once and the engine decodes them together as one batch (engine/batch.ts: one
 * forward per step for every column), so each column shows "queued" until its prompt has run and then
 * streams alongside the others, and the line above the columns counts ("Running 4 of 4…"). Up to four
 * columns share one row on a desktop screen. Stop aborts every request of the run (columns that had not
 * started say "Cancelled"). It deliberately keeps no history of earlier runs.
 */
import type { AdapterInfo, GenerateResult } from '../engine/types.ts';
import { h } from '../ui/dom.ts';
import type { AdapterPicker } from './adapter-picker.ts';
import { byId, errorText, setMessage } from './dom.ts';
import { describeResult, streamView } from './generate.ts';
import type { ModeControl } from './mode.ts';
import { readSampling } from './sampling.ts';
import { type AppState, newRequestId } from './state.ts';

/** Column key of the base model (adapter names cannot be empty, so this never clashes). */
const BASE = '';
/** Column key of the Generate panel's picker selection (a mix, or one adapter). */
const PICKER = '\u0000picker';

/** A column's result line: aborted runs say so in words instead of "0 tokens (abort) · prompt 0 …". */
export function describeColumn(r: GenerateResult): string {
  if (r.finishReason === 'abort') {
    const n = r.tokenIds.length;
    return n === 0 ? 'Cancelled' : `Stopped after ${n} token${n === 1 ? '' : 's'}`;
  }
  return describeResult(r);
}

export function mountCompare(state: AppState, mode: ModeControl, picker: AdapterPicker): void {
  const choices = byId<HTMLFieldSetElement>('compare-choices');
  const run = byId<HTMLButtonElement>('compare-run');
  const stop = byId<HTMLButtonElement>('compare-stop');
  const columns = byId('compare-columns');
  const error = byId('compare-error');
  const progress = byId('compare-progress');
  const prompt = byId<HTMLTextAreaElement>('prompt');
  const checked = new Set<string>([BASE]);
  let knownNames = new Set<string>();
  let active: string[] = [];
  const list = h('div', { class: 'choice-list' });
  choices.append(list);

  const sync = (): void => {
    run.disabled = !state.ready || active.length > 0 || checked.size === 0;
    stop.disabled = active.length === 0;
  };

  function render(adapters: AdapterInfo[]): void {
    const names = adapters.map((a) => a.name);
    for (const n of names) if (!knownNames.has(n)) checked.add(n); // new adapters start selected
    for (const n of [...checked]) if (n !== BASE && n !== PICKER && !names.includes(n)) checked.delete(n);
    knownNames = new Set(names);
    list.replaceChildren();
    for (const key of [BASE, ...names, PICKER]) {
      const box = h('input', {
        type: 'checkbox',
        value: key,
        'data-adapter': key === PICKER ? 'picker' : key,
      });
      box.checked = checked.has(key);
      box.addEventListener('change', () => {
        if (box.checked) checked.add(key);
        else checked.delete(key);
        sync();
      });
      const about =
        key === BASE
          ? 'The base model, no LoRA'
          : key === PICKER
            ? 'Whatever the adapter picker above selects: one adapter or a weighted mix'
            : state.describe(key);
      const text = key === BASE ? 'Base model' : key === PICKER ? 'Picker selection (e.g. a mix)' : key;
      list.append(h('label', { class: 'check', title: about }, box, ` ${text}`));
    }
    sync();
  }
  state.onAdapters(render);
  state.onModel(sync);

  stop.addEventListener('click', () => {
    for (const id of active) void state.engine.abort(id);
  });

  run.addEventListener('click', async () => {
    if (active.length > 0 || !state.ready) return;
    setMessage(error, '');
    const keys = [BASE, ...knownNames, PICKER].filter((k) => checked.has(k));
    let sampling: ReturnType<typeof readSampling>;
    try {
      sampling = readSampling(); // an invalid field is marked in the form and named here
    } catch (e) {
      setMessage(error, errorText(e));
      return;
    }
    // Chat mode: each column answers the message alone (system prompt, no earlier turns).
    const body = mode.request(prompt.value, { history: false });
    columns.replaceChildren();
    columns.style.setProperty('--columns', String(Math.max(1, keys.length)));
    const total = keys.length;
    let started = 0;
    let finished = 0;
    const showProgress = (): void => {
      progress.textContent =
        finished === total
          ? `${total} of ${total} done`
          : `Running ${Math.min(started, total) || 1} of ${total}…`;
    };
    showProgress();
    const pickerSelection = picker.selection();
    const pickerLabel = picker.describe();
    const jobs = keys.map((key) => {
      const requestId = newRequestId('cmp');
      const status = h('p', { class: 'column-status', role: 'status' }, 'queued');
      const pre = h('pre', { class: 'output', tabindex: 0 });
      const title = key === BASE ? 'Base model' : key === PICKER ? pickerLabel : key;
      const col = h(
        'article',
        {
          class: 'column',
          'data-adapter': key === PICKER ? 'picker' : key,
          'aria-label': `Output with ${title}`,
        },
        h('h3', {}, title),
        pre,
        status,
      );
      col.dataset.status = 'queued';
      columns.append(col);
      const view = streamView(pre, null);
      return { key, requestId, status, col, view };
    });
    active = jobs.map((j) => j.requestId);
    sync();
    const done = state.beginGeneration();
    try {
      await Promise.all(
        jobs.map(async (j) => {
          try {
            const r = await state.engine.generate(
              {
                ...body,
                adapter: j.key === BASE ? null : j.key === PICKER ? pickerSelection : j.key,
                requestId: j.requestId,
                ...sampling,
              },
              (d) => {
                if (j.col.dataset.status === 'queued') {
                  j.col.dataset.status = 'streaming';
                  j.status.textContent = 'streaming…';
                  started++;
                  showProgress();
                }
                j.view.append(d.text);
              },
            );
            j.col.dataset.status = r.finishReason;
            j.status.textContent = describeColumn(r);
          } catch (e) {
            j.col.dataset.status = 'error';
            j.status.textContent = errorText(e);
          } finally {
            finished++;
            if (finished === total) showProgress();
          }
        }),
      );
      const cancelled = jobs.filter((j) => j.col.dataset.status === 'abort').length;
      if (cancelled > 0) progress.textContent = `Stopped: ${total - cancelled} of ${total} done`;
    } finally {
      active = [];
      done();
      sync();
      void state.refreshStats();
    }
  });
}
