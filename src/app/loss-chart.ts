/**
 * The Train panel's live loss curve: train loss per step and eval loss at its checkpoints, as a small
 * dependency-free SVG line chart behind the one interface the panel uses —
 * `createLossChart(el) → { add(step, train, eval), reset() }` — so swapping in a charting library
 * (uPlot: `npm i -E uplot`, then draw `lossData.columns()` with it) touches only this file.
 * `LossData` holds the points (pure, tested); `createLossChart` renders them with axes, ticks, a
 * legend, and `data-train-points` / `data-eval-points` counts on the element for automation.
 */

export interface LossPoint {
  step: number;
  loss: number;
}

/** The two series; a step's point is replaced when it arrives again (a resumed run repeats none, but a
 * re-emitted eval at the same step must not draw twice). Non-finite losses are skipped. */
export class LossData {
  readonly train: LossPoint[] = [];
  readonly eval: LossPoint[] = [];

  add(step: number, train: number | null, evalLoss: number | null): void {
    if (train !== null && Number.isFinite(train)) put(this.train, step, train);
    if (evalLoss !== null && Number.isFinite(evalLoss)) put(this.eval, step, evalLoss);
  }

  reset(): void {
    this.train.length = 0;
    this.eval.length = 0;
  }

  /** The extent of both series (y from 0 to a round value above the highest loss); null when empty. */
  bounds(): { x0: number; x1: number; y0: number; y1: number } | null {
    const all = [...this.train, ...this.eval];
    if (all.length === 0) return null;
    let x0 = Infinity;
    let x1 = -Infinity;
    let y1 = 0;
    for (const p of all) {
      x0 = Math.min(x0, p.step);
      x1 = Math.max(x1, p.step);
      y1 = Math.max(y1, p.loss);
    }
    return { x0, x1: x1 === x0 ? x0 + 1 : x1, y0: 0, y1: niceCeil(y1) };
  }

  /** uPlot-style columns: [steps, train, eval] with null gaps (for a charting library later). */
  columns(): [number[], (number | null)[], (number | null)[]] {
    const steps = [...new Set([...this.train, ...this.eval].map((p) => p.step))].sort((a, b) => a - b);
    const at = (s: LossPoint[]): (number | null)[] => {
      const m = new Map(s.map((p) => [p.step, p.loss]));
      return steps.map((x) => m.get(x) ?? null);
    };
    return [steps, at(this.train), at(this.eval)];
  }
}

function put(series: LossPoint[], step: number, loss: number): void {
  const i = series.findIndex((p) => p.step >= step);
  if (i === -1) series.push({ step, loss });
  else if (series[i]!.step === step) series[i] = { step, loss };
  else series.splice(i, 0, { step, loss });
}

/** The smallest of 1, 2, 2.5, 5 × 10^k at or above `y`. */
export function niceCeil(y: number): number {
  if (y <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(y));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= y - 1e-12) return m * p;
  return 10 * p;
}

/** Up to `n` round tick values from 0 to `max`. */
export function ticks(max: number, n: number): number[] {
  const raw = max / n;
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = 0; v <= max + 1e-9; v += step) out.push(Math.round(v * 1e6) / 1e6);
  return out;
}

export interface LossChart {
  add(step: number, train: number | null, evalLoss: number | null): void;
  reset(): void;
  readonly data: LossData;
}

const NS = 'http://www.w3.org/2000/svg';
const W = 600;
const H = 220;
const PAD = { l: 44, r: 12, t: 12, b: 30 };

function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | number>,
  text?: string,
): SVGElementTagNameMap[K] {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

export function createLossChart(el: HTMLElement): LossChart {
  const data = new LossData();
  const root = svg('svg', {
    viewBox: `0 0 ${W} ${H}`,
    class: 'loss-chart',
    role: 'img',
    'aria-label': 'Loss per step: train and eval',
  });
  const legend = document.createElement('p');
  legend.className = 'loss-legend';
  legend.innerHTML =
    '<span class="key train"></span> train loss <span class="key eval"></span> eval loss ' +
    '<span class="loss-latest mono"></span>';
  const latest = legend.querySelector<HTMLElement>('.loss-latest')!;
  el.replaceChildren(root, legend);
  let frame = 0;

  function draw(): void {
    frame = 0;
    root.replaceChildren();
    el.dataset.trainPoints = String(data.train.length);
    el.dataset.evalPoints = String(data.eval.length);
    const b = data.bounds();
    const plotW = W - PAD.l - PAD.r;
    const plotH = H - PAD.t - PAD.b;
    if (!b) {
      root.append(
        svg('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty' }, 'No steps yet'),
      );
      latest.textContent = '';
      return;
    }
    const x = (s: number): number => PAD.l + ((s - b.x0) / (b.x1 - b.x0)) * plotW;
    const y = (l: number): number => PAD.t + (1 - (l - b.y0) / (b.y1 - b.y0)) * plotH;
    for (const t of ticks(b.y1, 4)) {
      root.append(
        svg('line', { x1: PAD.l, x2: W - PAD.r, y1: y(t), y2: y(t), class: 'grid' }),
        svg('text', { x: PAD.l - 6, y: y(t) + 4, 'text-anchor': 'end', class: 'tick' }, String(t)),
      );
    }
    const span = b.x1 - b.x0;
    for (const t of ticks(span, 5)) {
      const s = b.x0 + t;
      if (!Number.isInteger(s)) continue;
      root.append(
        svg('text', { x: x(s), y: H - PAD.b + 16, 'text-anchor': 'middle', class: 'tick' }, String(s)),
      );
    }
    root.append(
      svg('line', { x1: PAD.l, x2: W - PAD.r, y1: H - PAD.b, y2: H - PAD.b, class: 'axis' }),
      svg('text', { x: W - PAD.r, y: H - 2, 'text-anchor': 'end', class: 'tick' }, 'step'),
    );
    const line = (pts: LossPoint[], cls: string): void => {
      if (pts.length === 0) return;
      const d = pts.map((p, i) => `${i ? 'L' : 'M'}${x(p.step).toFixed(1)},${y(p.loss).toFixed(1)}`).join('');
      root.append(svg('path', { d, class: `series ${cls}` }));
    };
    line(data.train, 'train');
    line(data.eval, 'eval');
    for (const p of data.eval)
      root.append(svg('circle', { cx: x(p.step), cy: y(p.loss), r: 3, class: 'eval' }));
    const lt = data.train.at(-1);
    const le = data.eval.at(-1);
    latest.textContent =
      (lt ? `· step ${lt.step}: train ${lt.loss.toFixed(3)}` : '') +
      (le ? ` · eval ${le.loss.toFixed(3)} (step ${le.step})` : '');
  }

  const schedule = (): void => {
    // At most one redraw per frame; a hidden tab (no frames) still draws on the next add via the timer.
    if (frame) return;
    frame = requestAnimationFrame(draw);
    setTimeout(() => {
      if (frame) {
        cancelAnimationFrame(frame);
        draw();
      }
    }, 250);
  };
  draw();
  return {
    data,
    add(step, train, evalLoss) {
      data.add(step, train, evalLoss);
      schedule();
    },
    reset() {
      data.reset();
      if (frame) cancelAnimationFrame(frame);
      draw();
    },
  };
}
