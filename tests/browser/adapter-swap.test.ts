// Per-prompt adapter hot swap in ONE loaded model, checked against an independent oracle: the fp32 base
// ONNX with each selection's LoRA deltas merged offline into its weights (tests/helpers/merge-oracle.ts),
// run un-injected on wasm by full recompute. Sequence [A, B, none, A, mix(A 0.5, B 0.5)]: greedy tokens
// equal the oracle's, first-step logits agree within FP32_LOGITS, 'none' is bit-identical to the base
// model run before any adapter (no residue), the repeated A uploads nothing. Also: adapters survive a
// fresh engine + store handle (a page reload cannot happen inside a vitest browser test), export →
// re-import is byte-identical, delete removes, a failed import leaves the store unchanged, concurrent
// requests with different adapters equal each alone. wasm runs ≥ 8 tokens per prompt; SwiftShader
// WebGPU decodes ~1 token/s, so its run is 3 tokens per prompt, plus the rank-0 fix (WebGPU never gets
// zero-size LoRA inputs). Model weights may change: everything compares two paths, never fixed text.

import { createStore, keys } from 'idb-keyval';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseSafetensors, readFloat32, readInt32 } from '../../src/adapters/safetensors.ts';
import { AdapterStore, DEFAULT_STORE } from '../../src/adapters/store.ts';
import { LocalEngine, storeAdapterProvider } from '../../src/engine/engine.ts';
import { TextTokenizer } from '../../src/engine/tokenizer.ts';
import type { AdapterSelection, GenerateResult, LoadReport } from '../../src/engine/types.ts';
import {
  AdapterBaseModelError,
  AdapterNameConflictError,
  AdapterNotFoundError,
  SafetensorsError,
} from '../../src/errors.ts';
import { weightsAsExternal } from '../../src/model/external-weights.ts';
import { decodeModel, encodeModel } from '../../src/model/onnx-io.ts';
import { parseModelConfig } from '../../src/model/package.ts';
import { prepareDecoderGraph } from '../../src/model/prepare-decoder.ts';
import { expectClose, FP32_LOGITS, maxAbsDiff, WEBGPU_VS_WASM } from '../helpers/expect-close.ts';
import { createMergedOracle, type MergedOracle, type OracleGreedy } from '../helpers/merge-oracle.ts';
import { MODEL_BASE, PROMPT, setupOrt } from './helpers/model.ts';

const ort = setupOrt();
const DB = `weblora-test-swap-${Date.now()}`;
const CPU_TOKENS = 10;
const GPU_TOKENS = 3;
/**
 * Greedy tokens are compared exactly up to the first step whose oracle top1−top2 margin is below this:
 * the merged (X·(W+ΔW)) and injected (X·W + (X·A)·B) paths differ by ~1e-5 in fp32 logits (measured
 * below and logged), so a 1e-3 margin is 100x that; closer calls may legitimately flip.
 */
const TIE_MARGIN = 1e-3;
/** The fixtures declare base_model_name_or_path "model" (older) or "weblora-shakespeare" (= the model id). */
const ALIASES = ['model'];

const A = 'peft-adapter'; // imported from files; the name comes from their folder
const B = 'rslora'; // imported from a URL with an explicit name
type Step = { label: string; sel: AdapterSelection };
const MIX = [
  { name: A, weight: 0.5 },
  { name: B, weight: 0.5 },
];
const SEQUENCE: Step[] = [
  { label: 'A', sel: A },
  { label: 'B', sel: B },
  { label: 'none', sel: null },
  { label: 'A again', sel: A },
  { label: 'mix', sel: MIX },
];

async function bytes(url: string): Promise<Uint8Array> {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

interface Fixture {
  config: Uint8Array;
  weights: Uint8Array;
}
const fx: Record<'A' | 'B', Fixture> = {} as Record<'A' | 'B', Fixture>;
let modelBytes: Uint8Array;
let prompt = PROMPT;
/** Candidate prompts (see beforeAll): greedy near-ties make exact-token checks meaningless. */
const PROMPTS = [
  PROMPT,
  'JULIET:\nO Romeo, Romeo! wherefore art thou',
  'First Citizen:\nBefore we proceed any further, hear me speak.',
  'KING RICHARD III:\nNow is the winter of our discontent',
  'HAMLET:\nTo be, or not to be',
  'MERCUTIO:\nA plague o',
];
let eos: Set<number>;
const oracle: Record<'base' | 'A' | 'B' | 'mix', OracleGreedy> = {} as never;
let oracleA: MergedOracle;

function pickedFiles(folder: string, f: Fixture): File[] {
  const out: File[] = [];
  for (const [name, data] of [
    ['adapter_config.json', f.config],
    ['adapter_model.safetensors', f.weights],
  ] as const) {
    const file = new File([data as BlobPart], name);
    Object.defineProperty(file, 'webkitRelativePath', { value: `${folder}/${name}` });
    out.push(file);
  }
  return out;
}

function oracleFor(step: Step): OracleGreedy {
  if (step.sel === null) return oracle.base;
  if (step.sel === A) return oracle.A;
  if (step.sel === B) return oracle.B;
  return oracle.mix;
}

/** Exact tokens up to the first near-tie of the oracle (see TIE_MARGIN); returns how many were compared. */
function expectOracleTokens(got: number[], want: OracleGreedy, n: number, what: string): number {
  const tie = want.margins.slice(0, n).findIndex((m) => m < TIE_MARGIN);
  const upTo = tie < 0 ? Math.min(n, want.tokens.length) : tie;
  if (tie >= 0)
    console.warn(`${what}: oracle near-tie at step ${tie} (margin ${want.margins[tie]}); compared ${upTo}`);
  expect(got.slice(0, upTo), `${what}: greedy tokens vs merged-offline oracle`).toEqual(
    want.tokens.slice(0, upTo),
  );
  if (tie < 0) expect(got.length, `${what}: length`).toBe(Math.min(n, want.tokens.length));
  return upTo;
}

function lastLogits(engine: LocalEngine): Float32Array {
  const l = engine.debugState().lastPrefillLogits;
  if (!l) throw new Error('no prefill logits recorded');
  return l;
}

beforeAll(async () => {
  const base = '/tests/fixtures/';
  for (const [k, dir] of [
    ['A', 'peft-adapter'],
    ['B', 'peft-adapter-rslora'],
  ] as const) {
    fx[k] = {
      config: await bytes(`${base}${dir}/adapter_config.json`),
      weights: await bytes(`${base}${dir}/adapter_model.safetensors`),
    };
  }
  modelBytes = await bytes(`${MODEL_BASE}onnx/model.onnx`);
  const cfg = await (await fetch(`${MODEL_BASE}config.json`)).json();
  const tok = TextTokenizer.fromJSON(
    await (await fetch(`${MODEL_BASE}tokenizer.json`)).json(),
    await (await fetch(`${MODEL_BASE}tokenizer_config.json`)).json(),
    cfg.eos_token_id,
  );
  eos = new Set([cfg.eos_token_id, tok.eosTokenId].flat().filter((x) => typeof x === 'number'));
  const kv = { numKvHeads: cfg.num_key_value_heads, headDim: cfg.head_dim };
  const one = (f: Fixture, weight: number) => ({ config: f.config, weights: f.weights, weight });
  const sets = {
    base: [],
    A: [one(fx.A, 1)],
    B: [one(fx.B, 1)],
    mix: [one(fx.A, 0.5), one(fx.B, 0.5)],
  } as const;
  const made = {} as Record<keyof typeof sets, MergedOracle>;
  for (const [k, adapters] of Object.entries(sets) as [
    keyof typeof sets,
    (typeof sets)[keyof typeof sets],
  ][]) {
    made[k] = await createMergedOracle(ort, modelBytes, adapters, kv);
  }
  // The prompt: the first candidate whose greedy steps are all clear of near-ties (TIE_MARGIN) for every
  // selection, judged by the oracle alone; else the one with the most clear steps.
  let best = -1;
  for (const p of PROMPTS) {
    const ids = tok.encode(p);
    const runs = {} as typeof oracle;
    let clear = 0;
    for (const k of Object.keys(made) as (keyof typeof sets)[]) {
      runs[k] = await made[k].greedy(ids, CPU_TOKENS, eos);
      const tie = runs[k].margins.findIndex((m) => m < TIE_MARGIN);
      clear += tie < 0 ? runs[k].tokens.length : tie;
    }
    if (clear > best) {
      best = clear;
      prompt = p;
      Object.assign(oracle, runs);
    }
    if (clear === 4 * CPU_TOKENS) break;
  }
  console.info(`prompt ${JSON.stringify(prompt)}: ${best}/${4 * CPU_TOKENS} oracle steps clear of near-ties`);
  oracleA = made.A;
  await Promise.all([made.base.release(), made.B.release(), made.mix.release()]);
});

afterAll(async () => {
  await oracleA?.release();
});

describe('merge oracle', () => {
  it('equals the PyTorch/PEFT golden logits', async () => {
    const golden = parseSafetensors(await bytes('/tests/fixtures/golden.safetensors'));
    const sha = Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', modelBytes as BufferSource)))
      .map((b) => b.toString(16).padStart(2, '0'))
      .join('');
    expect(golden.metadata.model_sha256, 'fixtures are stale: rerun scripts/build-default-model.sh').toBe(
      sha,
    );
    const ids = Array.from(readInt32(golden.tensors.get('seq0.tokens')!));
    const got = await oracleA.logits(ids);
    expectClose(got, readFloat32(golden.tensors.get('peft-adapter.seq0.logits')!), FP32_LOGITS, 'oracle A');
  });
});

describe('adapter hot swap (wasm)', () => {
  let store: AdapterStore;
  let engine: LocalEngine;
  let report: LoadReport;
  const results = new Map<string, GenerateResult>();

  beforeAll(async () => {
    store = new AdapterStore({ dbName: DB });
    engine = new LocalEngine({ numThreads: 1, adapterStore: store });
    report = await engine.loadModel(MODEL_BASE, { backend: 'wasm', dtype: 'fp32', modelAliases: ALIASES });
  });

  afterAll(async () => {
    await engine?.dispose();
  });

  it('imports A from picked files and B from a URL, validated against the loaded model', async () => {
    expect(report.modelId).toBe('weblora-shakespeare');
    const stages: string[] = [];
    const a = await engine.importAdapter(
      { files: pickedFiles('peft-adapter', fx.A) },
      { onProgress: (p) => stages.push(p.stage) },
    );
    expect(stages).toEqual(['read', 'validate', 'store', 'done']);
    expect(a.name).toBe(A);
    expect(a.rank).toBe(4);
    expect(a.moduleCount).toBe(report.targetCount);
    const b = await engine.importAdapter({ url: '/tests/fixtures/peft-adapter-rslora/' }, { name: B });
    expect(b.useRslora).toBe(true);
    expect((await engine.listAdapters()).map((m) => m.name)).toEqual([A, B]);
    await expect(engine.importAdapter({ files: pickedFiles('peft-adapter', fx.A) })).rejects.toBeInstanceOf(
      AdapterNameConflictError,
    );
  });

  it('an import stores the feeds packed for the loaded model in the background (first cold swap = one read)', async () => {
    // The pack's key is ['feeds', name, <targets signature>] (store.ts); poll: it is written after import returns.
    const packKeys = async () =>
      (await keys(createStore(DB, DEFAULT_STORE))).filter(
        (k) => Array.isArray(k) && k[0] === 'feeds' && k[1] === A,
      );
    let found: IDBValidKey[] = [];
    for (let i = 0; i < 100 && found.length === 0; i++) {
      found = await packKeys();
      if (!found.length) await new Promise((r) => setTimeout(r, 50));
    }
    expect(found).toHaveLength(1);
  });

  it('a failed import leaves the store unchanged', async () => {
    const before = JSON.stringify(await engine.listAdapters());
    const truncated = { config: fx.A.config, weights: fx.A.weights.slice(0, fx.A.weights.length - 10) };
    await expect(engine.importAdapter(truncated, { name: 'broken' })).rejects.toBeInstanceOf(
      SafetensorsError,
    );
    const other = JSON.parse(new TextDecoder().decode(fx.A.config));
    other.base_model_name_or_path = 'org/some-other-model';
    const err = await engine
      .importAdapter({ config: JSON.stringify(other), weights: fx.A.weights }, { name: A, overwrite: true })
      .catch((e) => e);
    expect(err).toBeInstanceOf(AdapterBaseModelError);
    expect(JSON.stringify(await engine.listAdapters())).toBe(before);
  });

  it(`[A, B, none, A, mix] in one model, ${CPU_TOKENS} tokens each = the merged-offline oracle`, async () => {
    const req = { prompt, maxNewTokens: CPU_TOKENS };
    const base = await engine.generate({ ...req, adapter: null });
    const baseLogits = lastLogits(engine);
    expectOracleTokens(base.tokenIds, oracle.base, CPU_TOKENS, 'base');
    expectClose(baseLogits, oracle.base.firstLogits, FP32_LOGITS, 'base logits');
    const firstA: { tokens?: number[]; logits?: Float32Array } = {};
    let compared = 0;
    for (const step of SEQUENCE) {
      const before = await engine.adapterStats();
      const r = await engine.generate({ ...req, adapter: step.sel });
      const logits = lastLogits(engine);
      const after = await engine.adapterStats();
      const want = oracleFor(step);
      compared += expectOracleTokens(r.tokenIds, want, CPU_TOKENS, step.label);
      expectClose(logits, want.firstLogits, FP32_LOGITS, `${step.label}: first-step logits`);
      console.info(
        `${step.label}: max |engine − oracle| logit ${maxAbsDiff(logits, want.firstLogits).toExponential(2)}`,
      );
      results.set(step.label, r);
      expect(engine.debugState().lastGraph, step.label).toBe(step.sel === null ? 'base' : 'injected');
      if (step.sel === null) {
        // No residue of A or B: bit-identical to the base run before any adapter.
        expect(r.tokenIds).toEqual(base.tokenIds);
        expect(Array.from(logits)).toEqual(Array.from(baseLogits));
      }
      if (step.label === 'A') {
        firstA.tokens = r.tokenIds;
        firstA.logits = logits;
        expect(after.uploads).toBe(before.uploads + 1);
      }
      if (step.label === 'A again') {
        expect(r.tokenIds).toEqual(firstA.tokens);
        expect(Array.from(logits)).toEqual(Array.from(firstA.logits!));
        expect(after.uploads).toBe(before.uploads); // hot: nothing built or uploaded
        expect(after.hits).toBe(before.hits + 1);
      }
    }
    expect(compared).toBeGreaterThanOrEqual(SEQUENCE.length * 8); // ≥ 8 exact tokens per prompt on average
    // The adapters really change the output (otherwise the test would prove nothing).
    expect(maxAbsDiff(oracle.A.firstLogits, oracle.base.firstLogits)).toBeGreaterThan(1e-2);
    expect(maxAbsDiff(oracle.B.firstLogits, oracle.base.firstLogits)).toBeGreaterThan(1e-2);
    const stats = await engine.adapterStats();
    expect(stats.entries).toBe(3); // A, B, mix ("none" is the engine's base feeds, never cached)
    expect(stats.bytesHeld).toBeGreaterThan(0);
    expect(stats.bytesHeld).toBeLessThanOrEqual(stats.budgetBytes);
  });

  it('two concurrent generate calls with different adapters return exactly what each returns alone', async () => {
    const reqA = { prompt, maxNewTokens: CPU_TOKENS, adapter: A };
    const reqMix = { prompt: 'JULIET:\nO Romeo', maxNewTokens: 8, adapter: MIX };
    const aloneA = await engine.generate(reqA);
    const aloneMix = await engine.generate(reqMix);
    const [ca, cm] = await Promise.all([engine.generate(reqA), engine.generate(reqMix)]);
    expect(ca.tokenIds).toEqual(aloneA.tokenIds);
    expect(ca.text).toBe(aloneA.text);
    expect(cm.tokenIds).toEqual(aloneMix.tokenIds);
    expect(cm.text).toBe(aloneMix.text);
    expect(aloneA.tokenIds).toEqual(results.get('A')!.tokenIds);
  });

  it('"no adapter" on the un-injected session = the injected graph with zero feeds (baseGraphForNoAdapter: false)', async () => {
    expect(report.baseSession).toBe(true);
    const req = { prompt, maxNewTokens: CPU_TOKENS };
    const zeroMix = [
      { name: A, weight: 0 },
      { name: B, weight: 0 },
    ];
    const base = await engine.generate({ ...req, adapter: null });
    const baseLogits = lastLogits(engine);
    expect(engine.debugState().lastGraph).toBe('base');
    const z = await engine.generate({ ...req, adapter: zeroMix });
    expect(engine.debugState().lastGraph).toBe('base');
    expect(z.tokenIds).toEqual(base.tokenIds);
    const single = new LocalEngine({
      numThreads: 1,
      adapterStore: new AdapterStore({ dbName: DB }),
      baseGraphForNoAdapter: false,
    });
    try {
      const r = await single.loadModel(MODEL_BASE, { backend: 'wasm', dtype: 'fp32', modelAliases: ALIASES });
      expect(r.baseSession).toBe(false);
      expect(r.sessionBytes).toBeLessThan(report.sessionBytes);
      // The base session holds the re-encoded graph (prepared as load.ts does with
      // model/prepare-decoder.ts: decoder-fused, greedy head) and the weights its external data points at
      // in the file (external-weights.ts).
      const file = new Uint8Array(await (await fetch(`${MODEL_BASE}onnx/model.onnx`)).arrayBuffer());
      const config = parseModelConfig(await (await fetch(`${MODEL_BASE}config.json`)).json());
      const slim = weightsAsExternal(prepareDecoderGraph(decodeModel(file), config, 'wasm').model, file);
      expect(report.sessionBytes - r.sessionBytes).toBe(
        encodeModel(slim.model).byteLength + slim.externalBytes,
      );
      for (const sel of [null, [], zeroMix] as AdapterSelection[]) {
        const got = await single.generate({ ...req, adapter: sel });
        expect(single.debugState().lastGraph).toBe('injected');
        expect(got.tokenIds, JSON.stringify(sel)).toEqual(base.tokenIds);
        expect(got.text).toBe(base.text);
        expectClose(lastLogits(single), baseLogits, FP32_LOGITS, 'injected graph, zero feeds');
      }
      const a = await single.generate({ ...req, adapter: A });
      expect(a.tokenIds).toEqual(results.get('A')!.tokenIds);
      for (const e of [engine, single]) {
        await expect(
          e.generate({ ...req, adapter: [{ name: 'no such adapter', weight: 0 }] }),
        ).rejects.toBeInstanceOf(AdapterNotFoundError);
      }
    } finally {
      await single.dispose();
    }
  });

  it('adapters survive a fresh engine and store handle (reload simulation)', async () => {
    const before = await engine.listAdapters();
    const fresh = new LocalEngine({ numThreads: 1, adapterStore: new AdapterStore({ dbName: DB }) });
    try {
      expect(await fresh.listAdapters()).toEqual(before);
      await fresh.loadModel(MODEL_BASE, { backend: 'wasm', dtype: 'fp32' });
      for (const label of ['A', 'B', 'mix'] as const) {
        const step = SEQUENCE.find((s) => s.label === label)!;
        const r = await fresh.generate({ prompt, maxNewTokens: CPU_TOKENS, adapter: step.sel });
        expect(r.tokenIds, label).toEqual(results.get(label)!.tokenIds);
      }
    } finally {
      await fresh.dispose();
    }
  });

  it('export is byte-identical; re-import of the export is too; rename and delete', async () => {
    const out = await engine.exportAdapter(A);
    expect(out['adapter_config.json']).toEqual(fx.A.config);
    expect(out['adapter_model.safetensors']).toEqual(fx.A.weights);
    await engine.importAdapter(
      { config: out['adapter_config.json'], weights: out['adapter_model.safetensors'] },
      { name: 'A copy' },
    );
    const again = await engine.exportAdapter('A copy');
    expect(again['adapter_config.json']).toEqual(fx.A.config);
    expect(again['adapter_model.safetensors']).toEqual(fx.A.weights);
    const r = await engine.generate({ prompt, maxNewTokens: CPU_TOKENS, adapter: 'A copy' });
    expect(r.tokenIds).toEqual(results.get('A')!.tokenIds);

    const renamed = await engine.renameAdapter('A copy', 'A renamed');
    expect(renamed.name).toBe('A renamed');
    await expect(engine.generate({ prompt, maxNewTokens: 1, adapter: 'A copy' })).rejects.toBeInstanceOf(
      AdapterNotFoundError,
    );
    const r2 = await engine.generate({ prompt, maxNewTokens: CPU_TOKENS, adapter: 'A renamed' });
    expect(r2.tokenIds).toEqual(results.get('A')!.tokenIds);

    const entries = (await engine.adapterStats()).entries;
    await engine.deleteAdapter('A renamed');
    expect((await engine.listAdapters()).map((m) => m.name)).toEqual([A, B]);
    expect((await engine.adapterStats()).entries).toBe(entries - 1); // its cached tensors are gone too
    await expect(engine.exportAdapter('A renamed')).rejects.toBeInstanceOf(AdapterNotFoundError);
    await expect(engine.deleteAdapter('A renamed')).rejects.toBeInstanceOf(AdapterNotFoundError);
    await expect(engine.generate({ prompt, maxNewTokens: 1, adapter: 'A renamed' })).rejects.toBeInstanceOf(
      AdapterNotFoundError,
    );
    // The fresh handle sees the delete.
    expect((await new AdapterStore({ dbName: DB }).list()).map((m) => m.name)).toEqual([A, B]);
  });
});

describe('adapter hot swap (webgpu)', () => {
  let engine: LocalEngine;
  let store: AdapterStore;

  beforeAll(async () => {
    store = new AdapterStore({ dbName: DB });
    const budgetBytes = 16 * 1024 * 1024;
    // Normally imported by the wasm block above; import here when this block runs alone.
    const have = (await store.list()).map((m) => m.name);
    engine = new LocalEngine({
      adapterStore: store,
      adapterProvider: storeAdapterProvider(store, budgetBytes),
    });
    const r = await engine.loadModel(MODEL_BASE, { backend: 'webgpu', dtype: 'fp32', modelAliases: ALIASES });
    expect(r.backend).toBe('webgpu');
    expect(r.loraBranchOp).toBe('einsum'); // the oracle comparisons below check the Einsum branch
    if (!have.includes(A)) await engine.importAdapter({ files: pickedFiles('peft-adapter', fx.A) });
    if (!have.includes(B))
      await engine.importAdapter({ config: fx.B.config, weights: fx.B.weights }, { name: B });
  });

  afterAll(async () => {
    await engine?.dispose();
  });

  it(`[A, B, none, A, mix], ${GPU_TOKENS} tokens each = the oracle; the repeated A uploads nothing`, async () => {
    const req = { prompt, maxNewTokens: GPU_TOKENS };
    const base = await engine.generate({ ...req, adapter: null });
    const baseLogits = lastLogits(engine);
    expectOracleTokens(base.tokenIds, oracle.base, GPU_TOKENS, 'webgpu base');
    expectClose(baseLogits, oracle.base.firstLogits, WEBGPU_VS_WASM, 'webgpu base logits');
    let firstA: Float32Array | null = null;
    for (const step of SEQUENCE) {
      const before = await engine.adapterStats();
      const r = await engine.generate({ ...req, adapter: step.sel });
      const logits = lastLogits(engine);
      const after = await engine.adapterStats();
      const want = oracleFor(step);
      expectOracleTokens(r.tokenIds, want, GPU_TOKENS, `webgpu ${step.label}`);
      expectClose(logits, want.firstLogits, WEBGPU_VS_WASM, `webgpu ${step.label}: first-step logits`);
      console.info(
        `webgpu ${step.label}: max |engine − oracle| logit ${maxAbsDiff(logits, want.firstLogits).toExponential(2)}`,
      );
      if (step.sel === null) {
        expect(Array.from(logits)).toEqual(Array.from(baseLogits));
        expect(after.uploads).toBe(before.uploads);
      }
      if (step.label === 'A' || step.label === 'B' || step.label === 'mix') {
        expect(after.uploads, step.label).toBe(before.uploads + 1);
      }
      if (step.label === 'A') firstA = logits;
      if (step.label === 'A again') {
        expect(after.uploads).toBe(before.uploads); // GPU buffers reused: no writeBuffer
        expect(after.hits).toBe(before.hits + 1);
        expect(Array.from(logits)).toEqual(Array.from(firstA!));
      }
    }
  });

  it('"no adapter" on webgpu: none / [] / all-zero mix = the base model, on the base session and on the injected graph', async () => {
    const req = { prompt, maxNewTokens: 1 };
    const base = await engine.generate({ ...req, adapter: null });
    const baseLogits = lastLogits(engine);
    expect(engine.debugState().lastGraph).toBe('base');
    const zeroMix = [
      { name: A, weight: 0 },
      { name: B, weight: 0 },
    ];
    const z = await engine.generate({ ...req, adapter: zeroMix });
    expect(engine.debugState().lastGraph).toBe('base');
    expect(z.tokenIds).toEqual(base.tokenIds);
    expect(Array.from(lastLogits(engine))).toEqual(Array.from(baseLogits));
    await expect(
      engine.generate({ ...req, adapter: [{ name: 'no such adapter', weight: 0 }] }),
    ).rejects.toBeInstanceOf(AdapterNotFoundError);

    // One session: "no adapter" runs the injected graph with the engine's off feeds (rank-1 zeros on
    // webgpu, which cannot bind rank 0: load.ts noAdapterFeeds).
    const single = new LocalEngine({ adapterStore: store, baseGraphForNoAdapter: false });
    try {
      const r = await single.loadModel(MODEL_BASE, {
        backend: 'webgpu',
        dtype: 'fp32',
        modelAliases: ALIASES,
      });
      expect(r.baseSession).toBe(false);
      for (const sel of [null, [], zeroMix] as AdapterSelection[]) {
        const got = await single.generate({ ...req, adapter: sel });
        expect(single.debugState().lastGraph).toBe('injected');
        expect(got.tokenIds, JSON.stringify(sel)).toEqual(base.tokenIds);
        expectClose(lastLogits(single), baseLogits, FP32_LOGITS, 'webgpu injected graph, off feeds');
      }
    } finally {
      await single.dispose();
    }
  });
});
