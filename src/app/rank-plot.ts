/**
 * "Behaviour vs rank" panel of the adapters panel (issue 13 §3): for a chosen stored adapter of rank r,
 * how much of its behaviour survives truncation to ranks 1, 2, 4, …, r. The metric is output agreement
 * measured as a loss: the adapter's own greedy continuation of a prompt (48 tokens) is scored — mean
 * token NLL of prompt + continuation, nats/token — under each truncated copy (engine.truncateAdapter,
 * stored under temporary names and deleted afterwards), the full adapter and the base model, all in one
 * `adapter: { auto: … }` request with maxNewTokens 0 (the router's scores, engine/route.ts). Lower is
 * closer to the full adapter; the base model's loss is the "behaviour gone" line. Drawn with uPlot.
 */
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import type { AdapterInfo, Engine } from '../engine/types.ts';
import { h } from '../ui/dom.ts';
import { errorText } from './dom.ts';
import type { AppState } from './state.ts';

export const RANK_PLOT_PROMPT = 'JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\n';
export const RANK_PLOT_TOKENS = 48;

export interface RankCurve {
  ranks: number[];
  /** Mean NLL of the full adapter's output under each rank (the last is the full adapter itself). */
  nll: number[];
  /** The same under the base model. */
  baseNll: number;
}

/** 1, 2, 4, … below r, then r. */
export function rankLadder(r: number): number[] {
  const out: number[] = [];
  for (let k = 1; k < r; k *= 2) out.push(k);
  out.push(r);
  return out;
}

/** Measures the curve through the engine (temporary adapters are removed even on failure). */
export async function measureRankCurve(
  engine: Pick<Engine, 'generate' | 'truncateAdapter' | 'deleteAdapter'>,
  adapter: Pick<AdapterInfo, 'name' | 'rank'>,
  prompt: string = RANK_PLOT_PROMPT,
): Promise<RankCurve> {
  const ranks = rankLadder(adapter.rank);
  const tag = `${Date.now().toString(36)}`;
  const temps = new Map<number, string>();
  try {
    const full = await engine.generate({ prompt, adapter: adapter.name, maxNewTokens: RANK_PLOT_TOKENS });
    for (const k of ranks.slice(0, -1)) {
      const meta = await engine.truncateAdapter(adapter.name, k, {
        name: `${adapter.name}~plot-${tag}-r${k}`,
      });
      temps.set(k, meta.name);
    }
    const names = ranks.map((k) => temps.get(k) ?? adapter.name);
    const scored = await engine.generate({
      prompt: prompt + full.text,
      maxNewTokens: 0,
      adapter: { auto: { candidates: names, includeBase: true } },
    });
    const nllOf = (a: string | null): number => scored.routing!.scores.find((s) => s.adapter === a)!.nll;
    return { ranks, nll: names.map(nllOf), baseNll: nllOf(null) };
  } finally {
    for (const n of temps.values()) await engine.deleteAdapter(n).catch(() => {});
  }
}

/** Draws a curve into `box` (replacing what was there); data-* attributes carry the numbers. */
export function drawRankCurve(box: HTMLElement, name: string, c: RankCurve): uPlot {
  const chart = h('div', { class: 'rank-chart', role: 'img', 'aria-label': `Loss vs rank for ${name}` });
  const table = h(
    'p',
    { class: 'rank-values mono' },
    `${c.ranks.map((k, i) => `r${k} ${c.nll[i]!.toFixed(3)}`).join(' · ')} · base ${c.baseNll.toFixed(3)}`,
  );
  box.replaceChildren(chart, table);
  box.dataset.ranks = c.ranks.join(',');
  box.dataset.nll = c.nll.map((x) => x.toFixed(4)).join(',');
  box.dataset.base = c.baseNll.toFixed(4);
  return new uPlot(
    {
      width: Math.max(260, box.clientWidth || 420),
      height: 180,
      scales: { x: { time: false, distr: 3, log: 2 } },
      axes: [{ label: 'rank' }, { label: 'loss of its output (nats/token)' }],
      series: [
        { label: 'rank' },
        { label: name, stroke: '#3b6fd4', width: 2, points: { show: true, size: 6 } },
        { label: 'base model', stroke: '#999', dash: [4, 4], width: 1 },
      ],
    },
    [c.ranks, c.nll, c.ranks.map(() => c.baseNll)],
    chart,
  );
}

/** The panel: an adapter select, a Measure button, the chart. Inserted before `list`. */
export function mountRankPlot(state: AppState, list: HTMLElement): void {
  const select = h('select', { 'aria-label': 'Adapter to measure' });
  const go = h('button', { type: 'submit' }, 'Measure');
  const status = h('p', { class: 'hint', role: 'status' });
  const box = h('div', { class: 'rank-plot' });
  const form = h('form', { class: 'rank-form' }, h('label', {}, 'Adapter ', select), go, status, box);
  list.before(h('details', { class: 'rank-plot-box' }, h('summary', {}, 'Behaviour vs rank…'), form));
  let adapters: AdapterInfo[] = [];
  state.onAdapters((l) => {
    adapters = l.filter((a) => !a.name.includes('~plot-'));
    const keep = select.value;
    select.replaceChildren(
      ...adapters.map((a) => h('option', { value: a.name }, `${a.name} (rank ${a.rank})`)),
    );
    if (adapters.some((a) => a.name === keep)) select.value = keep;
  });
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const a = adapters.find((x) => x.name === select.value);
    if (!a) return;
    go.disabled = true;
    status.textContent = `Measuring ${a.name} at ranks ${rankLadder(a.rank).join(', ')}…`;
    try {
      drawRankCurve(box, a.name, await measureRankCurve(state.engine, a));
      status.textContent = `Loss of ${a.name}'s own ${RANK_PLOT_TOKENS}-token continuation, per rank (lower = closer).`;
    } catch (e) {
      status.textContent = errorText(e);
    } finally {
      go.disabled = false;
      void state.refreshAdapters({ notify: false });
    }
  });
}
