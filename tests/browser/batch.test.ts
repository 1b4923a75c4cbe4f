// Continuous batching in the LocalEngine (src/engine/batch.ts) on the default model with the two PEFT
// fixture adapters (ranks 4 and 8) from a real IndexedDB store: concurrent requests — each with its own
// adapter, a mix, or none, different prompt lengths, greedy and seeded sampling — decode in one forward per
// step (debugState().lastBatchRows > 1 while they stream) and each returns exactly what it returns alone
// (tokens, text, deltas). Also: aborting one row leaves the others untouched; a request that arrives
// mid-batch joins it. WebGPU (SwiftShader, ~1 token/s): the same equality with 3 rows × 3 tokens, and
// the batch step's logits against each row's solo step within WEBGPU_VS_WASM (BatchKv directly, with the
// adapter's rank-4 columns uploaded by batchLoraFeeds).
// Per-row logits on wasm are checked in tests/unit/engine/batch.test.ts (FP32_LOGITS).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parsePeftConfig, peftToFeeds } from '../../src/adapters/peft.ts';
import { parseSafetensors } from '../../src/adapters/safetensors.ts';
import { AdapterStore } from '../../src/adapters/store.ts';
import { type BatchRowAdapter, batchLoraFeeds } from '../../src/engine/batch-feeds.ts';
import { BatchKv } from '../../src/engine/batch-kv.ts';
import { LocalEngine } from '../../src/engine/engine.ts';
import { noAdapterFeeds } from '../../src/engine/load.ts';
import { argmax } from '../../src/engine/sampling.ts';
import { createDecoderSession, KvStepper, type Ort, type OrtTensor } from '../../src/engine/session.ts';
import type {
  AdapterSelection,
  GenerateRequest,
  GenerateResult,
  TokenDelta,
} from '../../src/engine/types.ts';
import { injectLora, loraBranchOpFor } from '../../src/model/inject-lora.ts';
import { decodeModel, encodeModel } from '../../src/model/onnx-io.ts';
import { parseModelConfig } from '../../src/model/package.ts';
import { expectClose, FP32_LOGITS, maxAbsDiff, WEBGPU_VS_WASM } from '../helpers/expect-close.ts';
import { MODEL_BASE, setupOrt } from './helpers/model.ts';

const ort = setupOrt() as unknown as Ort;
const DB = `weblora-test-batch-${Date.now()}`;
const A = 'peft-adapter';
const B = 'rslora';
const MIX = [
  { name: A, weight: 0.5 },
  { name: B, weight: 0.5 },
];

async function bytes(url: string): Promise<Uint8Array> {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

interface Run {
  result: GenerateResult;
  deltas: TokenDelta[];
  maxRows: number;
}

function run(engine: LocalEngine, req: GenerateRequest, onDelta?: (n: number) => void): Promise<Run> {
  const deltas: TokenDelta[] = [];
  let maxRows = 0;
  return engine
    .generate(req, (d) => {
      deltas.push(d);
      maxRows = Math.max(maxRows, engine.debugState().lastBatchRows);
      onDelta?.(deltas.length);
    })
    .then((result) => ({ result, deltas, maxRows }));
}

function expectSame(got: Run, alone: Run, what: string): void {
  expect(got.result.tokenIds, `${what}: tokens`).toEqual(alone.result.tokenIds);
  expect(got.result.text, `${what}: text`).toBe(alone.result.text);
  expect(got.result.finishReason, `${what}: finishReason`).toBe(alone.result.finishReason);
  expect(
    got.deltas.map((d) => d.tokenId),
    `${what}: deltas`,
  ).toEqual(got.result.tokenIds);
  expect(got.deltas.map((d) => d.text).join(''), `${what}: delta text`).toBe(got.result.text);
}

async function engineWithAdapters(backend: 'wasm' | 'webgpu'): Promise<LocalEngine> {
  const engine = new LocalEngine({ numThreads: 1, adapterStore: new AdapterStore({ dbName: DB }) });
  await engine.loadModel(MODEL_BASE, { backend, dtype: 'fp32', modelAliases: ['model'] });
  if ((await engine.listAdapters()).length === 0) {
    for (const [name, dir] of [
      [A, 'peft-adapter'],
      [B, 'peft-adapter-rslora'],
    ] as const) {
      const base = `/tests/fixtures/${dir}/`;
      await engine.importAdapter(
        {
          config: await bytes(`${base}adapter_config.json`),
          weights: await bytes(`${base}adapter_model.safetensors`),
        },
        { name },
      );
    }
  }
  return engine;
}

const ROWS: { prompt: string; adapter: AdapterSelection; extra?: Partial<GenerateRequest> }[] = [
  { prompt: 'ROMEO:\nBut soft, what light', adapter: A },
  { prompt: 'JULIET:\nO Romeo', adapter: null },
  {
    prompt: 'First Citizen:\nBefore we proceed any further',
    adapter: B,
    extra: { temperature: 0.8, topK: 20, seed: 3 },
  },
  { prompt: 'HAMLET:\nTo be', adapter: MIX },
];

describe('continuous batching (wasm)', () => {
  let engine: LocalEngine;
  beforeAll(async () => {
    engine = await engineWithAdapters('wasm');
  });
  afterAll(async () => {
    await engine?.dispose();
  });

  it('4 concurrent rows (adapter A, none, B sampled, mix) each equal their solo run', async () => {
    const reqs = ROWS.map((r, i) => ({
      prompt: r.prompt,
      adapter: r.adapter,
      maxNewTokens: 10 + i,
      ...r.extra,
    }));
    const alone: Run[] = [];
    for (const r of reqs) alone.push(await run(engine, r));
    expect(alone.every((a) => a.maxRows === 1)).toBe(true);
    const together = await Promise.all(reqs.map((r) => run(engine, r)));
    together.forEach((t, i) => {
      expectSame(t, alone[i]!, `row ${i}`);
    });
    expect(Math.max(...together.map((t) => t.maxRows))).toBe(4);
    expect(engine.debugState().lastGraph).toBe('injected');
  });

  it('aborting one row leaves the others untouched', async () => {
    const reqs = ROWS.slice(0, 3).map((r, i) => ({
      prompt: r.prompt,
      adapter: r.adapter,
      maxNewTokens: 10,
      requestId: `row${i}`,
      ...r.extra,
    }));
    const alone: Run[] = [];
    for (const r of reqs) alone.push(await run(engine, r));
    const together = await Promise.all(
      reqs.map((r, i) =>
        run(engine, r, (n) => {
          if (i === 1 && n === 3) void engine.abort('row1');
        }),
      ),
    );
    expect(together[1]!.result.finishReason).toBe('abort');
    expect(together[1]!.result.tokenIds).toEqual(alone[1]!.result.tokenIds.slice(0, 3));
    expectSame(together[0]!, alone[0]!, 'row 0');
    expectSame(together[2]!, alone[2]!, 'row 2');
    expect(together[0]!.maxRows).toBe(3);
  });

  it('a request arriving mid-batch joins it at the next step', async () => {
    const first = { prompt: ROWS[0]!.prompt, adapter: A, maxNewTokens: 16 };
    const late = { prompt: ROWS[3]!.prompt, adapter: MIX, maxNewTokens: 8 };
    const aloneFirst = await run(engine, first);
    const aloneLate = await run(engine, late);
    let lateRun: Promise<Run> | null = null;
    const firstRun = await run(engine, first, (n) => {
      if (n === 4) lateRun = run(engine, late);
    });
    expect(lateRun).not.toBeNull();
    const l = await lateRun!;
    expectSame(firstRun, aloneFirst, 'first');
    expectSame(l, aloneLate, 'late joiner');
    expect(l.maxRows).toBe(2);
    expect(firstRun.result.tokenIds.length).toBe(16);
  });

  it('scoreAdapters: one prompt under A, none and the mix in one forward equals each scored alone', async () => {
    const sels: AdapterSelection[] = [A, null, MIX];
    const prompt = ROWS[0]!.prompt;
    const together = await engine.scoreAdapters(prompt, sels);
    expect(together).toHaveLength(3);
    for (const [i, sel] of sels.entries()) {
      const [alone] = await engine.scoreAdapters(prompt, [sel]);
      expectClose(together[i]!, alone!, FP32_LOGITS, `candidate ${i}`);
    }
    expect(together[0]!.length % 1024).toBe(0); // (T, V = 1024)
    expect(together[0]!.length).toBeGreaterThan(1024);
    expect(maxAbsDiff(together[0]!, together[1]!)).toBeGreaterThan(1e-3); // adapter A changes the logits
  });

  it('rows with no adapter only run on the base graph', async () => {
    const reqs = [ROWS[1]!, ROWS[3]!].map((r) => ({ prompt: r.prompt, adapter: null, maxNewTokens: 6 }));
    const alone: Run[] = [];
    for (const r of reqs) alone.push(await run(engine, r));
    const together = await Promise.all(reqs.map((r) => run(engine, r)));
    together.forEach((t, i) => {
      expectSame(t, alone[i]!, `row ${i}`);
    });
    expect(together[0]!.maxRows).toBe(2);
    expect(engine.debugState().lastGraph).toBe('base');
  });
});

describe('continuous batching (webgpu)', () => {
  let engine: LocalEngine;
  beforeAll(async () => {
    engine = await engineWithAdapters('webgpu');
  });
  afterAll(async () => {
    await engine?.dispose();
  });

  it('3 concurrent rows (A, none, B) × 3 tokens each equal their solo run; KV stays on the GPU', async () => {
    const reqs = ROWS.slice(0, 3).map((r) => ({ prompt: r.prompt, adapter: r.adapter, maxNewTokens: 3 }));
    const alone: Run[] = [];
    for (const r of reqs) alone.push(await run(engine, r));
    const together = await Promise.all(reqs.map((r) => run(engine, r)));
    together.forEach((t, i) => {
      expectSame(t, alone[i]!, `row ${i}`);
    });
    expect(Math.max(...together.map((t) => t.maxRows))).toBe(3);
    expect(engine.debugState().lastKvLocations.every((l) => l === 'gpu-buffer')).toBe(true);
  });
});

describe('BatchKv on webgpu: per-row logits of a batch step', () => {
  it('2 rows (adapter A, none; prompts of 8 and 3 tokens) × 3 steps equal their solo steps', async () => {
    const cfg = parseModelConfig(await (await fetch(`${MODEL_BASE}config.json`)).json());
    const inj = injectLora(decodeModel(await bytes(`${MODEL_BASE}onnx/model.onnx`)), {
      branchOp: loraBranchOpFor('webgpu'),
      rowMask: true,
    });
    const g = await createDecoderSession(ort, encodeModel(inj.model), cfg, { backend: 'webgpu' });
    const device = (await ort.env.webgpu.device) as GPUDevice;
    const none = noAdapterFeeds(ort, inj.targets, device);
    const base = '/tests/fixtures/peft-adapter/';
    const peft = peftToFeeds(
      parsePeftConfig(new TextDecoder().decode(await bytes(`${base}adapter_config.json`))),
      parseSafetensors(await bytes(`${base}adapter_model.safetensors`)).tensors,
      inj.targets,
    );
    const aFeeds: Record<string, OrtTensor> = {};
    for (const [k, v] of peft.feeds) aFeeds[k] = new ort.Tensor('float32', v.data, v.dims);
    const prompts = [
      [813, 58, 10, 449, 365, 102, 116, 44],
      [813, 58, 10],
    ];
    const rowFeeds = [aFeeds, none.feeds];
    const STEPS = 3;
    try {
      // Solo: prefill + STEPS greedy steps each.
      const solo: Float32Array[][] = [];
      for (const [i, p] of prompts.entries()) {
        const s = new KvStepper(ort, g, rowFeeds[i]);
        const out: Float32Array[] = [];
        let input = p;
        for (let k = 0; k <= STEPS; k++) {
          const l = await s.step(input);
          out.push(l);
          input = [argmax(l)];
        }
        s.dispose();
        solo.push(out);
      }
      // Batched: each row prefilled alone, then STEPS batch steps.
      const kv = new BatchKv(ort, g);
      const last: number[] = [];
      for (const [i, p] of prompts.entries()) {
        const s = new KvStepper(ort, g, rowFeeds[i]);
        last.push(argmax(await s.step(p)));
        await kv.join(s.takeKv());
        s.dispose();
      }
      const spec: BatchRowAdapter[] = [
        { key: 'A', feeds: { feeds: aFeeds, release: () => {} } },
        { key: 'none', feeds: null },
      ];
      const lora = await batchLoraFeeds(ort, spec, inj.targets, { device, noAdapter: none.feeds });
      expect(lora.rank).toBe(4);
      for (let k = 1; k <= STEPS; k++) {
        const rows = await kv.step(last, lora.feeds);
        rows.forEach((l, b) => {
          expectClose(l, solo[b]![k]!, WEBGPU_VS_WASM, `row ${b} step ${k}`);
          expect(argmax(l), `row ${b} step ${k} token`).toBe(argmax(solo[b]![k]!));
          last[b] = argmax(l);
        });
      }
      expect(kv.locations.every((l) => l === 'gpu-buffer')).toBe(true);
      lora.dispose();
      kv.dispose();
    } finally {
      none.dispose();
      await g.session.release();
    }
  });
});
