// The trainer loop (src/train/trainer.ts) over the CPU backend in Node, on the default q4 model with a
// tiny configuration (one layer, rank 2, short sequences): options are resolved and checked, a paused
// run restored from its snapshot + cursor ends with exactly the weights of an uninterrupted run,
// gradient accumulation of two micro-batches equals one batch of both, and progress is ordered.
import { describe, expect, it } from 'vitest';
import { createTrainBackend } from '../../../src/engine/train.ts';
import { InvalidOptionError } from '../../../src/errors.ts';
import { CpuTrainBackend } from '../../../src/train/cpu-backend.ts';
import { BatchSchedule, type Example, makeBatch } from '../../../src/train/data.ts';
import { initLora } from '../../../src/train/lora.ts';
import {
  type LoopHooks,
  planSteps,
  type ResolvedTrainOptions,
  resolveTrainOptions,
  START_CURSOR,
  type TrainCursor,
  trainLoop,
} from '../../../src/train/trainer.ts';
import type { TrainProgress, TrainState } from '../../../src/train/types.ts';
import { defaultWeights } from './helpers.ts';

const w = defaultWeights('q4');
const MODEL = { numLayers: w.config.L, maxPositions: 512 };

/** Deterministic examples: 10 sequences of 6–9 ids, targets after the first 3. */
const examples: Example[] = Array.from({ length: 10 }, (_, i) => {
  const n = 6 + (i % 4);
  const ids = Int32Array.from({ length: n }, (_, t) => (i * 97 + t * 31) % 1000);
  const target = Uint8Array.from({ length: n }, (_, t) => (t >= 3 ? 1 : 0));
  return { ids, target };
});

function options(extra: Partial<Parameters<typeof resolveTrainOptions>[0]> = {}): ResolvedTrainOptions {
  const o = resolveTrainOptions(
    {
      name: 't',
      data: '',
      rank: 2,
      targets: ['q_proj', 'v_proj'],
      layers: [5],
      steps: 6,
      lr: 1e-2,
      batchSize: 3,
      seed: 5,
      ...extra,
    },
    MODEL,
  );
  return planSteps(o, Math.ceil(examples.length / o.batchSize));
}

function backendFor(o: ResolvedTrainOptions): CpuTrainBackend {
  const modules = initLora(w, {
    rank: o.rank,
    alpha: o.alpha,
    targets: o.targets,
    layers: o.layers,
    seed: o.seed,
  });
  return new CpuTrainBackend(w, modules, { adam: { weightDecay: o.weightDecay } });
}

function hooks(
  events: TrainProgress['stage'][],
  saved: { state: TrainState; cursor: TrainCursor }[],
): LoopHooks {
  return {
    progress: (p) => events.push(p.stage),
    checkpoint: async (state, cursor) => {
      saved.push({ state, cursor });
    },
    yieldNow: async () => {},
  };
}

describe('trainer loop (CPU backend)', () => {
  it('resolves defaults and rejects bad options with InvalidOptionError', () => {
    const o = resolveTrainOptions({ name: 'x', data: '' }, MODEL);
    expect(o).toMatchObject({
      rank: 8,
      alpha: 16,
      lr: 2e-3,
      batchSize: 4,
      seqLen: 128,
      epochs: 1,
      evalSplit: 0.1,
      recompute: false,
    });
    expect(resolveTrainOptions({ name: 'x', data: '', recompute: true }, MODEL).recompute).toBe(true);
    expect(o.targets).toHaveLength(7);
    expect(o.layers).toEqual([0, 1, 2, 3, 4, 5]);
    expect(planSteps(o, 10)).toMatchObject({ steps: 10, warmupSteps: 1 });
    for (const bad of [
      { rank: 0 },
      { rank: 65 },
      { steps: 3, epochs: 1 },
      { layers: [6] },
      { targets: ['x_proj'] },
      { seqLen: 513 },
      { lr: -1 },
      { evalSplit: 0.9 },
      { name: ' padded ' },
      { recompute: 'yes' },
    ]) {
      expect(() => resolveTrainOptions({ name: 'x', data: '', ...bad } as never, MODEL)).toThrow(
        InvalidOptionError,
      );
    }
  });

  it('pause at step 2 + restore + continue = the uninterrupted run, bit for bit', async () => {
    const o = options({ checkpointEvery: 0, evalEvery: 0 });
    const sched = () => new BatchSchedule(examples, o.batchSize, o.seed, 0);
    const full = backendFor(o);
    const events: TrainProgress['stage'][] = [];
    const r1 = await trainLoop(
      full,
      o,
      sched(),
      [],
      { pause: false, cancel: false },
      START_CURSOR,
      hooks(events, []),
    );
    expect(r1.status).toBe('done');
    expect(events.filter((e) => e === 'train')).toHaveLength(6);

    const first = backendFor(o);
    const control = { pause: false, cancel: false };
    const saved: { state: TrainState; cursor: TrainCursor }[] = [];
    const h = hooks([], saved);
    const r2 = await trainLoop(first, o, sched(), [], control, START_CURSOR, {
      ...h,
      progress: (p) => {
        if (p.stage === 'train' && p.step === 2) control.pause = true;
      },
    });
    expect(r2.status).toBe('paused');
    expect(saved).toHaveLength(1);
    expect(saved[0]!.cursor).toMatchObject({ step: 2, micro: 2 });
    first.dispose();

    const second = backendFor(o); // fresh init, then the checkpoint's state
    await second.restore(saved[0]!.state);
    const r3 = await trainLoop(
      second,
      o,
      sched(),
      [],
      { pause: false, cancel: false },
      saved[0]!.cursor,
      hooks([], []),
    );
    expect(r3.status).toBe('done');
    expect(r3.cursor.step).toBe(6);
    const a = await full.snapshot();
    const b = await second.snapshot();
    expect(b.step).toBe(6);
    for (let i = 0; i < a.modules.length; i++) {
      expect(Array.from(b.modules[i]!.A)).toEqual(Array.from(a.modules[i]!.A));
      expect(Array.from(b.modules[i]!.B)).toEqual(Array.from(a.modules[i]!.B));
    }
    expect(a.modules.some((m) => m.B.some((x) => x !== 0))).toBe(true);
  });

  it('cancel stops before the next step and checkpoints nothing', async () => {
    const o = options({ checkpointEvery: 1 });
    const control = { pause: false, cancel: false };
    const saved: { state: TrainState; cursor: TrainCursor }[] = [];
    const r = await trainLoop(
      backendFor(o),
      o,
      new BatchSchedule(examples, 3, 5, 0),
      [],
      control,
      START_CURSOR,
      {
        ...hooks([], saved),
        yieldNow: async () => {
          if (saved.length >= 1) control.cancel = true;
        },
      },
    );
    expect(r.status).toBe('cancelled');
    expect(r.cursor.step).toBe(1);
  });

  it('recompute: createTrainBackend passes it on; the run ends with the same weights bit for bit', async () => {
    const run = async (recompute: boolean) => {
      const o = options({ recompute, layers: [4, 5], targets: ['v_proj', 'down_proj'] });
      const modules = initLora(w, { ...o, targets: o.targets, layers: o.layers });
      const b = await createTrainBackend('cpu', { backend: 'wasm', device: null }, w, modules, o);
      expect((b as CpuTrainBackend).model.recompute).toBe(recompute);
      const schedule = new BatchSchedule(examples, o.batchSize, o.seed, 0);
      const control = { pause: false, cancel: false };
      await trainLoop(b, { ...o, steps: 2 }, schedule, [], control, START_CURSOR, hooks([], []));
      return (await b.snapshot()).modules.flatMap((m) => [Array.from(m.A), Array.from(m.B)]);
    };
    expect(await run(true)).toEqual(await run(false));
  });

  it('two accumulated micro-batches give the same update as one batch holding both', async () => {
    const o = options({ steps: 1, batchSize: 2, gradAccumSteps: 2, warmupSteps: 0 });
    const a = backendFor(o);
    const sched = new BatchSchedule(examples, 2, o.seed, 0);
    await trainLoop(a, o, sched, [], { pause: false, cancel: false }, START_CURSOR, hooks([], []));
    const b = backendFor(o);
    const both = [...sched.indices(0), ...sched.indices(1)].map((i) => examples[i]!);
    await b.accumulate(makeBatch(both, 0), 1);
    await b.step(o.lr, o.maxGradNorm);
    const sa = await a.snapshot();
    const sb = await b.snapshot();
    for (let i = 0; i < sa.modules.length; i++) {
      const x = sa.modules[i]!.B;
      const y = sb.modules[i]!.B;
      for (let j = 0; j < x.length; j++) expect(x[j]).toBeCloseTo(y[j]!, 6);
    }
  });

  it('eval at start, every evalEvery steps and at the end; checkpoints every N steps', async () => {
    const o = options({ evalEvery: 2, checkpointEvery: 3 });
    const events: TrainProgress['stage'][] = [];
    const saved: { state: TrainState; cursor: TrainCursor }[] = [];
    const evalSet = [makeBatch(examples.slice(0, 2), 0)];
    const r = await trainLoop(
      backendFor(o),
      o,
      new BatchSchedule(examples, 3, 5, 0),
      evalSet,
      { pause: false, cancel: false },
      START_CURSOR,
      hooks(events, saved),
    );
    expect(events).toEqual([
      'eval',
      'train',
      'train',
      'eval',
      'train',
      'checkpoint',
      'train',
      'eval',
      'train',
      'train',
      'eval',
    ]);
    expect(saved.map((s) => s.cursor.step)).toEqual([3]);
    expect(r.cursor.initialEvalLoss).toBeGreaterThan(0);
    expect(r.cursor.lastEvalLoss).not.toBe(r.cursor.initialEvalLoss);
  });
});
