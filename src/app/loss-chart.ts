/**
 * The Train panel's live loss curve: train loss per step and eval loss at its evaluations, drawn with
 * uPlot (a small, fast canvas time-series chart) behind the one interface the panel uses —
 * `createLossChart(el) → { add(step, train, eval), reset() }`. `LossData` holds the points (pure,
 * tested) and hands uPlot its column format; the chart keeps a text line with the latest values and
 * `data-train-points` / `data-eval-points` counts on the element for automation and screen readers.
 */
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

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

  /** uPlot's columns: [steps, train, eval] with null gaps. */
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

export interface LossChart {
  add(step: number, train: number | null, evalLoss: number | null): void;
  reset(): void;
  readonly data: LossData;
  /** The uPlot instance (tests, resizing). */
  readonly plot: uPlot;
}

const HEIGHT = 220;

function cssVar(el: Element, name: string, fallback: string): string {
  return getComputedStyle(el).getPropertyValue(name).trim() || fallback;
}

export function createLossChart(el: HTMLElement): LossChart {
  const data = new LossData();
  const canvasBox = document.createElement('div');
  canvasBox.className = 'loss-chart';
  canvasBox.setAttribute('role', 'img');
  canvasBox.setAttribute('aria-label', 'Loss per step: train and eval');
  const legend = document.createElement('p');
  legend.className = 'loss-legend';
  const latest = document.createElement('span');
  latest.className = 'loss-latest mono';
  legend.append(latest);
  el.replaceChildren(canvasBox, legend);
  const accent = cssVar(el, '--accent', '#3b6fd4');
  const plot = new uPlot(
    {
      width: Math.max(280, el.clientWidth || 600),
      height: HEIGHT,
      scales: { x: { time: false }, y: { range: (_u, _min, max) => [0, Math.max(1, max) * 1.05] } },
      axes: [{ label: 'step' }, { label: 'loss (nats/token)' }],
      series: [
        { label: 'step' },
        { label: 'train', stroke: accent, width: 2, spanGaps: true, value: (_u, v) => v?.toFixed(3) ?? '—' },
        {
          label: 'eval',
          stroke: '#d4733b',
          width: 2,
          dash: [6, 4],
          spanGaps: true,
          points: { show: true, size: 6 },
          value: (_u, v) => v?.toFixed(3) ?? '—',
        },
      ],
      legend: { show: true },
    },
    data.columns(),
    canvasBox,
  );
  const resize = new ResizeObserver(() => {
    const w = el.clientWidth;
    if (w > 0 && w !== plot.width) plot.setSize({ width: w, height: HEIGHT });
  });
  resize.observe(el);

  let frame = 0;
  function draw(): void {
    frame = 0;
    plot.setData(data.columns());
    el.dataset.trainPoints = String(data.train.length);
    el.dataset.evalPoints = String(data.eval.length);
    const lt = data.train.at(-1);
    const le = data.eval.at(-1);
    latest.textContent =
      lt || le
        ? (lt ? `step ${lt.step}: train ${lt.loss.toFixed(3)}` : '') +
          (le ? ` · eval ${le.loss.toFixed(3)} (step ${le.step})` : '')
        : 'No steps yet';
  }
  const schedule = (): void => {
    // At most one redraw per frame; a hidden tab (no frames) still draws through the timer.
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
    plot,
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
