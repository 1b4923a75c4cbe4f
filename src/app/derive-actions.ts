/**
 * Merge and Compress actions of the adapters panel (issue 13 §3–4), in their own file so the panel only
 * hooks them in: a Compress button per stored adapter (best rank-k approximation, stored as
 * `<name>-r<k>`), and a Merge form above the list (two or more stored adapters, a rank, LoRA-LEGO or
 * the averaging baseline, a name) with a progress bar. The math and checks are the engine's
 * (adapters/derive.ts); errors show through the panel's `act`. The rank-vs-behaviour plot is rank-plot.ts.
 */
import type { AdapterInfo } from '../engine/types.ts';
import { h } from '../ui/dom.ts';
import type { AppState } from './state.ts';

type Act = (what: string, f: () => Promise<unknown>) => Promise<void>;

/** "Compress": an inline rank field (default half the rank); the result is a new adapter. */
export function compressButton(state: AppState, a: AdapterInfo, act: Act): HTMLButtonElement {
  const button = h(
    'button',
    { type: 'button', 'aria-label': `Compress ${a.name}`, title: 'Store a lower-rank copy (SVD truncation)' },
    'Compress',
  );
  button.disabled = a.rank <= 1;
  button.addEventListener('click', () => {
    const input = h('input', {
      type: 'number',
      min: 1,
      max: a.rank - 1,
      value: Math.max(1, Math.floor(a.rank / 2)),
      'aria-label': `Rank for the compressed copy of ${a.name}`,
    });
    const ok = h('button', { type: 'submit' }, 'Compress');
    const cancel = h('button', { type: 'button' }, 'Cancel');
    const form = h('form', { class: 'compress-form' }, input, ok, cancel);
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      void act('Compress', () => state.engine.truncateAdapter(a.name, Number(input.value)));
    });
    cancel.addEventListener('click', () => form.replaceWith(button));
    button.replaceWith(form);
    input.select();
  });
  return button;
}

/** The Merge form, inserted before `list` and kept in sync with the stored adapters. */
export function mountMergeForm(state: AppState, list: HTMLElement, act: Act): void {
  const picks = h('fieldset', { class: 'merge-picks' }, h('legend', {}, 'Adapters to merge'));
  const rank = h('input', { type: 'number', min: 1, max: 64, value: 8, 'aria-label': 'Merged rank' });
  const method = h(
    'select',
    { 'aria-label': 'Merge method' },
    h('option', { value: 'lego' }, 'LoRA-LEGO (cluster rank units)'),
    h('option', { value: 'average' }, 'Average (baseline)'),
  );
  const name = h('input', { type: 'text', placeholder: 'merged', 'aria-label': 'Merged adapter name' });
  const go = h('button', { type: 'submit' }, 'Merge');
  const bar = h('progress', { max: 1, value: 0, hidden: true });
  const form = h(
    'form',
    { class: 'merge-form' },
    picks,
    h('label', {}, 'Rank ', rank),
    h('label', {}, 'Method ', method),
    h('label', {}, 'Name ', name),
    go,
    bar,
  );
  const box = h('details', { class: 'merge-adapters' }, h('summary', {}, 'Merge adapters…'), form);
  list.before(box);
  state.onAdapters((adapters) => {
    picks.replaceChildren(
      h('legend', {}, 'Adapters to merge'),
      ...adapters.map((a) =>
        h(
          'label',
          {},
          h('input', { type: 'checkbox', value: a.name, 'aria-label': `Merge ${a.name}` }),
          ` ${a.name}`,
        ),
      ),
    );
  });
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const names = [...picks.querySelectorAll<HTMLInputElement>('input:checked')].map((i) => i.value);
    bar.hidden = false;
    bar.value = 0;
    go.disabled = true;
    void act('Merge', () =>
      state.engine.mergeAdapters(
        {
          names,
          rank: Number(rank.value),
          name: name.value.trim() || 'merged',
          method: method.value === 'average' ? 'average' : 'lego',
        },
        (p) => {
          bar.value =
            p.stage === 'compute' ? p.done / Math.max(1, p.total) : p.stage === 'done' ? 1 : bar.value;
        },
      ),
    ).finally(() => {
      go.disabled = false;
      bar.hidden = true;
    });
  });
}
