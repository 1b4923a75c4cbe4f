// The Train panel's logic modules in Chromium: form reading and validation in words (train-form.ts),
// the example data (train-example.ts), and the loss chart's data handling and SVG drawing
// (loss-chart.ts). No engine or model: the panel's wiring is tests/e2e/train.e2e.ts.
import { describe, expect, it } from 'vitest';
import { createLossChart, LossData } from '../../src/app/loss-chart.ts';
import { upperCaseExample } from '../../src/app/train-example.ts';
import {
  autoEvalEvery,
  formatEta,
  freeName,
  parseLayers,
  readTrainForm,
  samplePromptOf,
  TARGETS,
  TRAIN_DEFAULTS,
  type TrainFormValues,
} from '../../src/app/train-form.ts';

const ctx = { numLayers: 6, maxPositions: 256, adapterNames: ['taken'] };
const form = (over: Partial<TrainFormValues> = {}): TrainFormValues => ({
  ...TRAIN_DEFAULTS,
  name: 'mine',
  data: '{"prompt":"a","completion":"B"}',
  ...over,
});
const problemsOf = (over: Partial<TrainFormValues>): Record<string, string> => {
  const r = readTrainForm(form(over), ctx);
  if (r.ok) return {};
  return Object.fromEntries(r.problems.map((p) => [p.field, p.message]));
};

describe('readTrainForm', () => {
  it('turns the defaults into TrainOptions (all targets, all layers, auto eval cadence)', () => {
    const r = readTrainForm(form(), ctx);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.options).toEqual({
      name: 'mine',
      data: '{"prompt":"a","completion":"B"}',
      format: 'auto',
      rank: 4,
      targets: [...TARGETS],
      steps: 60,
      lr: 0.005,
      weightDecay: 0,
      batchSize: 8,
      seqLen: 64,
      seed: 0,
      evalSplit: 0.1,
      evalEvery: 6,
      device: 'auto',
      recompute: false,
    });
    expect('layers' in r.options).toBe(false);
    expect('alpha' in r.options).toBe(false);
  });

  it('passes layers, alpha, warmup and a subset of targets (in module order)', () => {
    const r = readTrainForm(
      form({
        layers: '3-5',
        alpha: '8',
        warmup: '2',
        targets: ['v_proj', 'q_proj'],
        device: 'cpu',
        recompute: 'on',
      }),
      ctx,
    );
    expect(r.ok && r.options).toMatchObject({
      layers: [3, 4, 5],
      alpha: 8,
      warmupSteps: 2,
      targets: ['q_proj', 'v_proj'],
      device: 'cpu',
      recompute: true,
    });
  });

  it('names every problem in words, each with its field', () => {
    expect(problemsOf({ name: ' ' }).name).toBe('Give the adapter a name.');
    expect(problemsOf({ name: 'taken' }).name).toContain('already stored');
    expect(problemsOf({ data: '  \n' }).data).toContain('Paste or upload training data');
    expect(problemsOf({ rank: '0' }).rank).toBe('Rank must be a whole number from 1 to 64.');
    expect(problemsOf({ rank: '2.5' }).rank).toBeDefined();
    expect(problemsOf({ rank: 'abc' }).rank).toBeDefined();
    expect(problemsOf({ targets: [] }).targets).toBe('Tick at least one target projection.');
    expect(problemsOf({ layers: '7' }).layers).toBe('Layers: 7 does not exist (this model has layers 0–5).');
    expect(problemsOf({ layers: '5-3' }).layers).toContain('runs backwards');
    expect(problemsOf({ steps: '0' }).steps).toContain('Steps must be a whole number');
    expect(problemsOf({ lr: '0' }).lr).toContain('Learning rate must be');
    expect(problemsOf({ lr: '2' }).lr).toBeDefined();
    expect(problemsOf({ batchSize: '' }).batchSize).toContain('Batch size');
    expect(problemsOf({ seqLen: '1000' }).seqLen).toBe(
      'Sequence length must be a whole number from 2 to 256.',
    );
    expect(problemsOf({ alpha: '-1' }).alpha).toContain('Alpha');
    expect(problemsOf({ warmup: '60' }).warmup).toBe('Warmup steps must be fewer than the 60 steps.');
    expect(problemsOf({ weightDecay: '-0.1' }).weightDecay).toContain('Weight decay');
    expect(problemsOf({ evalSplit: '0.9' }).evalSplit).toContain('Eval split');
    expect(problemsOf({ seed: '-3' }).seed).toContain('Seed');
    expect(problemsOf({ device: 'tpu' }).device).toContain('Device');
    expect(problemsOf({ recompute: 'yes' }).recompute).toBe('Recompute activations must be off or on.');
    expect(problemsOf({ format: 'csv' }).format).toContain('Format');
    // Several at once, in form order.
    const r = readTrainForm(form({ name: '', rank: '99', steps: 'x' }), ctx);
    expect(r.ok ? [] : r.problems.map((p) => p.field)).toEqual(['name', 'rank', 'steps']);
  });

  it('blank optional fields take their defaults (seed 0, no weight decay, no eval)', () => {
    const r = readTrainForm(form({ seed: '', weightDecay: '', evalSplit: '' }), ctx);
    expect(r.ok && r.options).toMatchObject({ seed: 0, weightDecay: 0, evalSplit: 0 });
  });
});

describe('form helpers', () => {
  it('parseLayers: lists, ranges, blank = all, no model = no range check', () => {
    expect(parseLayers('', 6)).toBeUndefined();
    expect(parseLayers('all', 6)).toBeUndefined();
    expect(parseLayers('1-2, 5 2', 6)).toEqual([1, 2, 5]);
    expect(parseLayers('0–1', 6)).toEqual([0, 1]);
    expect(parseLayers('40', null)).toEqual([40]);
    expect(parseLayers('x', 6)).toContain('“x” is not a layer number');
  });

  it('formatEta, freeName, autoEvalEvery, samplePromptOf', () => {
    expect(formatEta(null)).toBe('—');
    expect(formatEta(65_000)).toBe('1:05');
    expect(formatEta(3_725_000)).toBe('1:02:05');
    expect(freeName('trained', [])).toBe('trained');
    expect(freeName('trained', ['trained', 'trained-2'])).toBe('trained-3');
    expect(autoEvalEvery(8)).toBe(1);
    expect(autoEvalEvery(60)).toBe(6);
    expect(samplePromptOf('\n{"prompt":"see romeo\\n","completion":"ROMEO"}')).toBe('see romeo\n');
    expect(samplePromptOf('{"messages":[{"role":"user","content":"hi"}]}')).toBe('hi');
    expect(samplePromptOf('ROMEO: But soft, what light through yonder window breaks')).toBe(
      'ROMEO: But soft, what light through yond',
    );
  });

  it('the example: 191 JSONL pairs without the held-out sample prompt; its settings pass the form', () => {
    const ex = upperCaseExample();
    const lines = ex.data.split('\n').map((l) => JSON.parse(l) as { prompt: string; completion: string });
    expect(lines).toHaveLength(191);
    expect(lines.every((l) => l.completion === l.prompt.trim().split(' ')[1]!.toUpperCase())).toBe(true);
    expect(lines.some((l) => l.prompt === ex.samplePrompt)).toBe(false);
    const r = readTrainForm({ ...form(), ...ex.settings, name: 'x', data: ex.data }, ctx);
    expect(r.ok && r.options).toMatchObject({ rank: 4, layers: [3, 4, 5], steps: 60, lr: 0.01, seqLen: 16 });
  });
});

describe('loss chart', () => {
  it('LossData keeps both series sorted by step, replaces a repeated step, skips non-finite losses', () => {
    const d = new LossData();
    d.add(2, 3, null);
    d.add(1, 4, 4.5);
    d.add(2, 2.5, null);
    d.add(3, Number.NaN, 2);
    d.add(0, null, 5.2);
    expect(d.train).toEqual([
      { step: 1, loss: 4 },
      { step: 2, loss: 2.5 },
    ]);
    expect(d.eval.map((p) => p.step)).toEqual([0, 1, 3]);
    expect(d.columns()).toEqual([
      [0, 1, 2, 3],
      [null, 4, 2.5, null],
      [5.2, 4.5, null, 2],
    ]);
    d.reset();
    expect(d.train).toEqual([]);
    expect(d.eval).toEqual([]);
  });

  it('createLossChart hands uPlot both series and counts points on the element', async () => {
    const el = document.createElement('div');
    document.body.append(el);
    const chart = createLossChart(el);
    expect(el.querySelector('.loss-latest')?.textContent).toBe('No steps yet');
    expect(el.querySelector('canvas')).not.toBeNull(); // uPlot drew into the element
    chart.add(0, null, 6);
    for (let s = 1; s <= 5; s++) chart.add(s, 6 - s, s === 5 ? 1.2 : null);
    await new Promise((r) => setTimeout(r, 300));
    expect(el.dataset.trainPoints).toBe('5');
    expect(el.dataset.evalPoints).toBe('2');
    expect(chart.plot.data[0]).toEqual([0, 1, 2, 3, 4, 5]);
    expect(chart.plot.data[1]).toEqual([null, 5, 4, 3, 2, 1]);
    expect(chart.plot.data[2]).toEqual([6, null, null, null, null, 1.2]);
    expect(el.querySelector('.loss-latest')?.textContent).toContain('step 5: train 1.000');
    chart.reset();
    expect(el.dataset.trainPoints).toBe('0');
    expect(chart.plot.data[0]).toEqual([]);
    el.remove();
  });
});
