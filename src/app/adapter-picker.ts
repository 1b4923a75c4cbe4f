/**
 * The per-prompt adapter picker: none (base model), one stored adapter, a weighted mix with one
 * slider per stored adapter (weight 0 leaves it out), or Auto: the engine scores the prompt under every
 * stored adapter and picks the best or mixes them (engine/route.ts; the chosen adapters and weights are
 * shown with the result, generate.ts `describeRouting`). Re-rendered whenever the stored list changes,
 * keeping the user's choices for adapters that still exist; known descriptions (adapters/index.json)
 * are shown next to the names. `selection()` returns the engine's
 * `AdapterRequest`; mixing math and validation live in the engine (src/adapters/mix.ts).
 */
import type { AdapterInfo, AdapterRequest } from '../engine/types.ts';
import { h } from '../ui/dom.ts';

type Mode = 'none' | 'one' | 'mix' | 'auto';

export interface AdapterPicker {
  selection(): AdapterRequest;
  /** A short label of the current selection, e.g. "shout ×0.5 + romeo ×1". */
  describe(): string;
}

const MIX_MIN = -1;
const MIX_MAX = 2;

export function mountAdapterPicker(
  fieldset: HTMLFieldSetElement,
  onAdapters: (cb: (l: AdapterInfo[]) => void) => void,
  describeAdapter: (name: string) => string | undefined = () => undefined,
): AdapterPicker {
  let mode: Mode = 'none';
  let one = '';
  let autoMode: 'pick' | 'mix' = 'pick';
  const weights = new Map<string, number>();
  let names: string[] = [];

  const modes = h('div', { class: 'segmented', role: 'radiogroup', 'aria-label': 'Adapter mode' });
  const body = h('div', { class: 'picker-body' });
  fieldset.append(modes, body);

  const radios = new Map<Mode, HTMLInputElement>();
  for (const [m, label] of [
    ['none', 'None (base model)'],
    ['one', 'One adapter'],
    ['mix', 'Weighted mix'],
    ['auto', 'Auto (per prompt)'],
  ] as const) {
    const input = h('input', { type: 'radio', name: 'adapter-mode', value: m, id: `adapter-mode-${m}` });
    input.checked = m === mode;
    input.addEventListener('change', () => {
      if (!input.checked) return;
      mode = m;
      render();
    });
    radios.set(m, input);
    modes.append(h('label', { for: `adapter-mode-${m}` }, input, ` ${label}`));
  }

  function render(): void {
    const noAdapters = names.length === 0;
    for (const [m, r] of radios) if (m !== 'none') r.disabled = noAdapters;
    if (noAdapters && mode !== 'none') {
      mode = 'none';
      radios.get('none')!.checked = true;
    }
    body.replaceChildren();
    if (mode === 'none') {
      body.append(
        h(
          'p',
          { class: 'hint' },
          noAdapters
            ? 'No stored adapters yet: import one in the Adapters panel.'
            : 'The base model, no LoRA.',
        ),
      );
      return;
    }
    if (mode === 'one') {
      if (!names.includes(one)) one = names[0] ?? '';
      const select = h('select', {
        id: 'adapter-one',
        'aria-label': 'Stored adapter',
        'aria-describedby': 'adapter-one-desc',
      });
      for (const n of names) {
        const d = describeAdapter(n);
        select.append(h('option', { value: n }, d ? `${n} — ${d}` : n));
      }
      select.value = one;
      const desc = h('p', { id: 'adapter-one-desc', class: 'hint' });
      const showDesc = (): void => {
        desc.textContent = describeAdapter(one) ?? '';
      };
      select.addEventListener('change', () => {
        one = select.value;
        showDesc();
      });
      showDesc();
      body.append(select, desc);
      return;
    }
    if (mode === 'auto') {
      const select = h(
        'select',
        { id: 'adapter-auto-mode', 'aria-label': 'Auto mode' },
        h('option', { value: 'pick' }, 'Pick the best adapter'),
        h('option', { value: 'mix' }, 'Mix by score (softmax)'),
      );
      select.value = autoMode;
      select.addEventListener('change', () => {
        autoMode = select.value === 'mix' ? 'mix' : 'pick';
      });
      body.append(
        select,
        h(
          'p',
          { class: 'hint' },
          `Scores the prompt under each of the ${names.length} stored adapters (mean token loss) and ` +
            'uses the best, or a mix weighted by the scores; the choice is shown with the result.',
        ),
      );
      return;
    }
    const list = h('div', { class: 'mix' });
    for (const n of names) {
      const id = `mix-${CSS.escape(n)}`;
      const w = weights.get(n) ?? 0;
      const slider = h('input', {
        type: 'range',
        id,
        min: MIX_MIN,
        max: MIX_MAX,
        step: 0.05,
        value: w,
        'data-adapter': n,
      });
      const out = h('output', { for: id, class: 'mono' }, w.toFixed(2));
      slider.addEventListener('input', () => {
        weights.set(n, Number(slider.value));
        out.textContent = Number(slider.value).toFixed(2);
      });
      const d = describeAdapter(n);
      list.append(h('label', { for: id, class: 'mix-name', ...(d ? { title: d } : {}) }, n), slider, out);
    }
    body.append(
      list,
      h('p', { class: 'hint' }, 'Weight 0 leaves an adapter out; negative weights subtract it.'),
    );
  }

  onAdapters((list) => {
    names = list.map((a) => a.name);
    for (const n of [...weights.keys()]) if (!names.includes(n)) weights.delete(n);
    render();
  });

  const mixParts = (): { name: string; weight: number }[] =>
    names.map((name) => ({ name, weight: weights.get(name) ?? 0 })).filter((p) => p.weight !== 0);

  return {
    selection(): AdapterRequest {
      if (mode === 'auto') return autoMode === 'pick' ? 'auto' : { auto: { mode: 'mix' } };
      if (mode === 'one' && one) return one;
      if (mode === 'mix') return mixParts();
      return null;
    },
    describe(): string {
      if (mode === 'auto') return `auto (${autoMode})`;
      if (mode === 'one' && one) return one;
      if (mode === 'mix') {
        const parts = mixParts();
        return parts.length
          ? parts.map((p) => `${p.name} ×${p.weight}`).join(' + ')
          : 'base model (empty mix)';
      }
      return 'base model';
    },
  };
}
