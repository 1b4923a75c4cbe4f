// Training through the public Engine API in Chromium: a real module worker (createWorkerEngine), real
// IndexedDB (adapter store + checkpoints), the CPU training backend. Real learning: a rank-4 adapter
// trained on generated examples of a task the base model cannot do — "verb name" → the NAME in upper
// case (the speaker-tag spelling, one token) — moves held-out exact match from ≤ 10 % to ≥ 90 %, then
// runs through generate with the same greedy tokens as the trainer's own forward (CpuLoraModel). Also:
// pause + resume = uninterrupted weights, cancel stores nothing, a worker terminated mid-run resumes
// from its IndexedDB checkpoint in a new worker, bad data gets its typed error, progress is ordered.
// Sizes are tiny because CPU training in JS is slow (~150 tokens/s fwd+bwd on this model).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PEFT_KEY_RE, parsePeftConfig } from '../../src/adapters/peft.ts';
import { parseSafetensors } from '../../src/adapters/safetensors.ts';
import { AdapterStore } from '../../src/adapters/store.ts';
import { createWorkerEngine, type WorkerEngine } from '../../src/engine/client.ts';
import { LocalEngine } from '../../src/engine/engine.ts';
import type { TrainMetadata, TrainOptions, TrainProgress } from '../../src/engine/types.ts';
import {
  AdapterNameConflictError,
  AdapterNotFoundError,
  InvalidOptionError,
  TrainDataError,
  WebLoraError,
} from '../../src/errors.ts';
import { decodeModel } from '../../src/model/onnx-io.ts';
import { CheckpointStore } from '../../src/train/checkpoints.ts';
import { CpuLoraModel, type FrozenWeights } from '../../src/train/cpu-model.ts';
import { seededPermutation } from '../../src/train/data.ts';
import { loraFromPeft } from '../../src/train/lora.ts';
import { decoderConfig, loadFrozenWeights } from '../../src/train/weights.ts';
import { loadPackage, MODEL_BASE, setupOrt } from './helpers/model.ts';

setupOrt();

const RUN = Date.now().toString(36);
// Names whose upper-case form is one token of this tokenizer (speaker tags in the corpus).
const NAMES = 'romeo juliet king queen duke lucio isabella leontes sicinius gloucester menenius lady'.split(
  ' ',
);
const VERBS = 'enter exit call hail see bid thank kill love mark find save fetch greet follow summon'.split(
  ' ',
);

/** All 192 (verb, name) pairs in a seeded order: the first 40 are held out, the rest is training data. */
function task() {
  const all = VERBS.flatMap((v) =>
    NAMES.map((n) => ({ prompt: `${v} ${n}\n`, completion: n.toUpperCase() })),
  );
  const order = seededPermutation(all.length, 1234);
  const shuffled = Array.from(order, (i) => all[i]!);
  return { heldOut: shuffled.slice(0, 40), train: shuffled.slice(40) };
}
const jsonl = (xs: { prompt: string; completion: string }[]): string =>
  xs.map((x) => JSON.stringify(x)).join('\n');

async function exactMatch(
  engine: WorkerEngine,
  xs: { prompt: string; completion: string }[],
  adapter: string | null,
): Promise<number> {
  let ok = 0;
  for (const x of xs) {
    const r = await engine.generate({ prompt: x.prompt, adapter, maxNewTokens: 4 });
    if (r.text === x.completion && r.finishReason === 'eos') ok++;
  }
  return ok / xs.length;
}

async function newEngine(): Promise<WorkerEngine> {
  const e = createWorkerEngine();
  await e.loadModel(MODEL_BASE, { backend: 'wasm', dtype: 'q4' });
  return e;
}

/** The adapter's tensors as one comparable record (name → values). */
async function weightsOf(engine: WorkerEngine, name: string): Promise<Record<string, number[]>> {
  const files = await engine.exportAdapter(name);
  const st = parseSafetensors(files['adapter_model.safetensors']);
  const out: Record<string, number[]> = {};
  for (const [k, t] of st.tensors) out[k] = Array.from(new Float32Array(t.data.slice().buffer));
  return out;
}

const cleanup: { adapters: string[]; checkpoints: string[] } = { adapters: [], checkpoints: [] };
let engine: WorkerEngine;

beforeAll(async () => {
  engine = await newEngine();
});

afterAll(async () => {
  for (const n of cleanup.adapters) await engine?.deleteAdapter(n).catch(() => {});
  for (const id of cleanup.checkpoints) await engine?.deleteCheckpoint(id).catch(() => {});
  await engine?.dispose();
  engine?.terminate();
});

describe('train(): bad data', () => {
  it('malformed JSONL → TrainDataError with its line; nothing stored', async () => {
    const name = `bad-${RUN}`;
    const data = '{"prompt":"a","completion":"b"}\n{"prompt": "x", "completion": \n';
    const err = await engine.train({ name, data, steps: 1, trainId: `bad-${RUN}` }).catch((e) => e);
    expect(err).toBeInstanceOf(TrainDataError);
    expect(err.data).toMatchObject({ reason: 'malformed-json', line: 2 });
    const empty = await engine.train({ name, data: ' \n ', steps: 1 }).catch((e) => e);
    expect(empty).toBeInstanceOf(TrainDataError);
    expect(empty.data.reason).toBe('empty');
    const missing = await engine.train({ name, data: '{"text":"x"}', steps: 1 }).catch((e) => e);
    expect(missing.data).toMatchObject({ reason: 'missing-fields', line: 1 });
    expect((await engine.listAdapters()).map((a) => a.name)).not.toContain(name);
    expect((await engine.listCheckpoints()).map((c) => c.trainId)).not.toContain(`bad-${RUN}`);
  });
});

describe('train(): options', () => {
  it('bad options (rank, device) fail with typed errors before training, nothing stored', async () => {
    const data = jsonl(task().train.slice(0, 4));
    const rank = await engine.train({ name: `o-${RUN}`, data, rank: 0 }).catch((e) => e);
    expect(rank).toBeInstanceOf(InvalidOptionError);
    expect(rank.data.option).toBe('rank');
    const dev = await engine
      .train({ name: `o-${RUN}`, data, steps: 1, device: 'tpu' as 'cpu' })
      .catch((e) => e);
    expect(dev).toBeInstanceOf(InvalidOptionError);
    expect(dev.data.option).toBe('device');
    expect((await engine.listAdapters()).map((a) => a.name)).not.toContain(`o-${RUN}`);
  });
});

describe('train() on the in-thread LocalEngine', () => {
  it('trains, stores in its own adapter store, refuses a taken name, and generates with the result', async () => {
    const store = new AdapterStore({ dbName: `weblora-test-train-${RUN}` });
    const checkpointStore = new CheckpointStore({ dbName: `weblora-test-train-ckpt-${RUN}` });
    const local = new LocalEngine({ numThreads: 1, adapterStore: store, checkpointStore });
    try {
      await local.loadModel(MODEL_BASE, { backend: 'wasm', dtype: 'q4' });
      const opts: TrainOptions = {
        name: 'tiny',
        data: jsonl(task().train.slice(0, 8)),
        rank: 2,
        layers: [5],
        targets: ['v_proj'],
        steps: 2,
        batchSize: 2,
        seqLen: 16,
      };
      const events: TrainProgress['stage'][] = [];
      const r = await local.train(opts, (p) => events.push(p.stage));
      expect(r).toMatchObject({ status: 'done', steps: 2, adapter: { name: 'tiny' }, device: 'cpu' });
      expect(events[0]).toBe('prepare');
      expect(events.slice(-2)).toEqual(['save', 'done']);
      expect((await store.getMeta('tiny'))?.source).toBe('train');
      await expect(local.train(opts)).rejects.toBeInstanceOf(AdapterNameConflictError);
      // Paused before it started (queued behind a generate): a step-0 checkpoint in the injected store.
      const gen = local.generate({ prompt: 'see romeo\n', maxNewTokens: 2 });
      const queued = local.train({ ...opts, name: 'tiny-2', trainId: 'queued' });
      expect(await local.pauseTraining('queued')).toBe(true);
      await gen;
      expect(await queued).toMatchObject({ status: 'paused', steps: 0, initialEvalLoss: null });
      expect((await checkpointStore.list()).map((c) => [c.trainId, c.step])).toEqual([['queued', 0]]);
      expect(await local.cancelTraining('queued')).toBe(true); // a paused run: its checkpoint goes
      expect(await checkpointStore.list()).toEqual([]);
      const g = await local.generate({ prompt: 'see romeo\n', adapter: 'tiny', maxNewTokens: 3 });
      expect(g.tokenIds.length).toBeGreaterThan(0);
    } finally {
      await local.dispose();
    }
  });
});

describe('train(): real learning (upper-case speaker names)', () => {
  const { heldOut, train } = task();
  const name = `upper-${RUN}`;
  let weights: FrozenWeights;
  let tokenizer: Awaited<ReturnType<typeof loadPackage>>['tok'];

  beforeAll(async () => {
    const { pkg, tok } = await loadPackage('q4');
    weights = loadFrozenWeights(decodeModel(pkg.model), decoderConfig(pkg.config));
    tokenizer = tok;
  });

  it('held-out exact match goes from ≤ 10 % to ≥ 90 %; metadata and PEFT export', async () => {
    const before = await exactMatch(engine, heldOut, null);
    expect(before).toBeLessThanOrEqual(0.1);

    const events: TrainProgress[] = [];
    const opts: TrainOptions = {
      name,
      data: jsonl(train),
      rank: 4,
      alpha: 8,
      layers: [3, 4, 5],
      steps: 60,
      lr: 1e-2,
      warmupSteps: 2,
      batchSize: 8,
      seqLen: 16,
      evalSplit: 0.1,
      evalEvery: 0,
      checkpointEvery: 0,
      seed: 0,
    };
    cleanup.adapters.push(name);
    const t0 = performance.now();
    const result = await engine.train(opts, (p) => events.push(p));
    const trainMs = performance.now() - t0;
    expect(result.status).toBe('done');
    expect(result.adapter).toEqual({ name });
    expect(result.device).toBe('cpu');
    expect(result.finalEvalLoss!).toBeLessThan(result.initialEvalLoss! / 4);

    const after = await exactMatch(engine, heldOut, name);
    console.info(
      `[train-api] upper-case task: held-out exact match ${before} → ${after}; ${result.steps} steps in ` +
        `${(trainMs / 1000).toFixed(1)} s; eval loss ${result.initialEvalLoss?.toFixed(3)} → ` +
        `${result.finalEvalLoss?.toFixed(3)}; ${events.at(-2)?.tokensPerSecond.toFixed(0)} tokens/s`,
    );
    expect(after).toBeGreaterThanOrEqual(0.9);

    // Progress: prepare first, steps in order, 'done' last.
    expect(events[0]!.stage).toBe('prepare');
    expect(events.at(-1)!.stage).toBe('done');
    const steps = events.filter((e) => e.stage === 'train').map((e) => e.step);
    expect(steps).toEqual(Array.from({ length: 60 }, (_, i) => i + 1));
    const trainEvents = events.filter((e) => e.stage === 'train');
    expect(trainEvents.every((e) => e.totalSteps === 60 && e.tokensPerSecond > 0 && e.etaMs !== null)).toBe(
      true,
    );
    expect(new Set(events.map((e) => e.trainId)).size).toBe(1);

    // Stored with its TrainMetadata; exports as PEFT files with PEFT key names.
    const meta = (await engine.listAdapters()).find((a) => a.name === name)!;
    expect(meta.source).toBe('train');
    expect(meta.train).toMatchObject({
      dataExamples: train.length,
      steps: 60,
      device: 'cpu',
      modelId: 'weblora-shakespeare',
      options: { rank: 4, alpha: 8, layers: [3, 4, 5], lr: 1e-2, batchSize: 8, seqLen: 16, steps: 60 },
    });
    const sha = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(opts.data));
    expect((meta.train as TrainMetadata).dataSha256).toBe(
      Array.from(new Uint8Array(sha), (b) => b.toString(16).padStart(2, '0')).join(''),
    );
    const files = await engine.exportAdapter(name);
    const cfg = JSON.parse(new TextDecoder().decode(files['adapter_config.json']));
    expect(cfg).toMatchObject({
      peft_type: 'LORA',
      r: 4,
      lora_alpha: 8,
      base_model_name_or_path: 'weblora-shakespeare',
    });
    const keys = [...parseSafetensors(files['adapter_model.safetensors']).tensors.keys()];
    expect(keys).toHaveLength(3 * 7 * 2);
    for (const k of keys) expect(k).toMatch(PEFT_KEY_RE);
    expect(keys).toContain('base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight');
    expect(keys).toContain('base_model.model.model.layers.5.mlp.down_proj.lora_B.weight');
  });

  it('generate with the adapter gives the same greedy tokens as the trainer forward (CpuLoraModel)', async () => {
    const files = await engine.exportAdapter(name);
    const cfg = parsePeftConfig(new TextDecoder().decode(files['adapter_config.json']));
    const modules = loraFromPeft(cfg, parseSafetensors(files['adapter_model.safetensors']).tensors, weights);
    const model = new CpuLoraModel(weights, modules);
    for (const x of [...heldOut.slice(0, 4), { prompt: 'ROMEO:\nBut soft, what light', completion: '' }]) {
      const ids = tokenizer.encode(x.prompt);
      const mine: number[] = [];
      for (let i = 0; i < 6; i++) {
        const seq = [...ids, ...mine];
        model.forward({ B: 1, T: seq.length, tokens: seq });
        const V = weights.config.V;
        const row = model.logits.subarray((seq.length - 1) * V, seq.length * V);
        let best = 0;
        for (let v = 1; v < V; v++) if (row[v]! > row[best]!) best = v;
        mine.push(best);
        if (best === tokenizer.eosTokenId) break;
      }
      const r = await engine.generate({ prompt: x.prompt, adapter: name, maxNewTokens: mine.length });
      expect(r.tokenIds).toEqual(mine);
    }
  });
});

describe('pause, resume, cancel, and a killed worker', () => {
  // Tiny run: one layer, two targets, rank 2, 8 steps of 2 sequences.
  const data = jsonl(task().train.slice(0, 16));
  const base = (name: string, trainId: string): TrainOptions => ({
    name,
    trainId,
    data,
    rank: 2,
    layers: [5],
    targets: ['q_proj', 'v_proj'],
    steps: 8,
    lr: 1e-2,
    batchSize: 2,
    seqLen: 16,
    evalSplit: 0,
    checkpointEvery: 2,
    seed: 7,
  });
  const full = `full-${RUN}`;

  it('pause + resume gives exactly the weights of an uninterrupted run', async () => {
    cleanup.adapters.push(full);
    const r0 = await engine.train(base(full, `full-${RUN}`));
    expect(r0).toMatchObject({ status: 'done', steps: 8 });
    expect((await engine.listCheckpoints()).map((c) => c.trainId)).not.toContain(`full-${RUN}`);

    const name = `paused-${RUN}`;
    const id = `pause-${RUN}`;
    cleanup.adapters.push(name);
    cleanup.checkpoints.push(id);
    const events: TrainProgress[] = [];
    const r1 = await engine.train({ ...base(name, id), checkpointEvery: 0 }, (p) => {
      events.push(p);
      if (p.stage === 'train' && p.step === 2) engine.pauseTraining(id);
    });
    expect(r1.status).toBe('paused');
    expect(r1.adapter).toBeNull();
    expect(r1.steps).toBeGreaterThanOrEqual(2);
    expect(r1.steps).toBeLessThan(8);
    expect(events.at(-2)!.stage).toBe('checkpoint');
    expect(events.at(-1)!.stage).toBe('done');
    await expect(engine.exportAdapter(name)).rejects.toBeInstanceOf(AdapterNotFoundError);
    const ck = (await engine.listCheckpoints()).find((c) => c.trainId === id)!;
    expect(ck).toMatchObject({ name, modelId: 'weblora-shakespeare', step: r1.steps, totalSteps: 8 });
    expect(ck.bytes).toBeGreaterThan(0);

    const resumed: TrainProgress[] = [];
    const r2 = await engine.resumeTraining(id, (p) => resumed.push(p));
    expect(r2).toMatchObject({ status: 'done', steps: 8, adapter: { name } });
    expect(resumed.filter((e) => e.stage === 'train').map((e) => e.step)).toEqual(
      Array.from({ length: 8 - r1.steps }, (_, i) => r1.steps + i + 1),
    );
    expect((await engine.listCheckpoints()).map((c) => c.trainId)).not.toContain(id);
    expect(await weightsOf(engine, name)).toEqual(await weightsOf(engine, full));
  });

  it('cancel leaves no adapter and no checkpoint', async () => {
    const name = `cancel-${RUN}`;
    const id = `cancel-${RUN}`;
    cleanup.checkpoints.push(id);
    const seen: TrainProgress['stage'][] = [];
    const r = await engine.train({ ...base(name, id), checkpointEvery: 1 }, (p) => {
      seen.push(p.stage);
      if (p.stage === 'checkpoint') engine.cancelTraining(id);
    });
    expect(r.status).toBe('cancelled');
    expect(r.adapter).toBeNull();
    expect(r.steps).toBeLessThan(8);
    expect(seen).toContain('checkpoint'); // one was written, and then removed
    expect(seen.at(-1)).toBe('done');
    expect((await engine.listAdapters()).map((a) => a.name)).not.toContain(name);
    expect((await engine.listCheckpoints()).map((c) => c.trainId)).not.toContain(id);
    expect(await engine.cancelTraining(id)).toBe(false);
  });

  it('a worker terminated mid-run resumes from its last checkpoint in a new worker', async () => {
    const name = `killed-${RUN}`;
    const id = `killed-${RUN}`;
    cleanup.adapters.push(name);
    cleanup.checkpoints.push(id);
    const first = await newEngine();
    const run = first.train(base(name, id), (p) => {
      if (p.stage === 'checkpoint' && p.step === 2) first.terminate();
    });
    await expect(run).rejects.toBeInstanceOf(WebLoraError);

    const second = await newEngine();
    try {
      const ck = (await second.listCheckpoints()).find((c) => c.trainId === id);
      expect(ck?.step).toBeGreaterThanOrEqual(2);
      expect(ck!.step).toBeLessThan(8);
      const r = await second.resumeTraining(id);
      expect(r).toMatchObject({ status: 'done', steps: 8, adapter: { name } });
      // Same seed, same data: the same weights as the uninterrupted run.
      expect(await weightsOf(second, name)).toEqual(await weightsOf(second, full));
    } finally {
      await second.dispose();
      second.terminate();
    }
  });
});
