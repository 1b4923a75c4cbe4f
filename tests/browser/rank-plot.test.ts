// The demo's "Behaviour vs rank" measurement (src/app/rank-plot.ts) through the real worker engine
// (wasm): truncated copies at ranks 1, 2, 4 of the rank-8 romeo adapter, the full adapter and the base
// model score the full adapter's own greedy continuation; the full adapter explains its output best, the
// base model worst, temporary adapters are gone afterwards, and the uPlot chart and its data-* numbers
// are drawn. The figures are printed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { drawRankCurve, measureRankCurve, rankLadder } from '../../src/app/rank-plot.ts';
import { createWorkerEngine, type WorkerEngine } from '../../src/engine/client.ts';
import { MODEL_BASE, setupOrt } from './helpers/model.ts';

setupOrt();
const name = `rankplot-${Date.now().toString(36)}-romeo`;

describe('behaviour vs rank (demo panel logic, wasm worker)', () => {
  let engine: WorkerEngine;

  beforeAll(async () => {
    engine = createWorkerEngine();
    await engine.loadModel(MODEL_BASE, { backend: 'wasm' });
    await engine.importAdapter({ url: '/adapters/weblora-romeo/' }, { name });
  });
  afterAll(async () => {
    await engine?.deleteAdapter(name).catch(() => {});
    await engine?.dispose();
    engine?.terminate();
  });

  it('rankLadder: powers of two below r, then r', () => {
    expect(rankLadder(8)).toEqual([1, 2, 4, 8]);
    expect(rankLadder(6)).toEqual([1, 2, 4, 6]);
    expect(rankLadder(1)).toEqual([1]);
  });

  it('measures the curve, cleans up, and draws it', async () => {
    const c = await measureRankCurve(engine, { name, rank: 8 });
    console.log(
      `romeo: ${c.ranks.map((k, i) => `r${k} ${c.nll[i]!.toFixed(3)}`).join(', ')}, base ${c.baseNll.toFixed(3)}`,
    );
    expect(c.ranks).toEqual([1, 2, 4, 8]);
    const full = c.nll.at(-1)!;
    expect(full).toBeLessThanOrEqual(Math.min(...c.nll));
    expect(c.baseNll).toBeGreaterThan(Math.max(...c.nll));
    expect((await engine.listAdapters()).filter((a) => a.name.includes('~plot-'))).toEqual([]);
    const box = document.createElement('div');
    document.body.append(box);
    const plot = drawRankCurve(box, name, c);
    expect(box.querySelector('canvas')).not.toBeNull();
    expect(box.dataset.ranks).toBe('1,2,4,8');
    expect(box.dataset.nll!.split(',').map(Number)).toHaveLength(4);
    expect(plot.data[1]).toEqual(c.nll);
    plot.destroy();
    box.remove();
  }, 120_000);
});
