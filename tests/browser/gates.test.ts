// Gated mixes through the real engine (real Chromium, onnxruntime-web, IndexedDB, a real worker): the
// default fp32 model loaded with { gates: true }, the example adapters weblora-shout and weblora-romeo
// imported from public/adapters, the gate oracle's mix (tests/fixtures/gates.safetensors, made by
// scripts/py/gate_fixtures.py) stored as a gated mix; `generate` with { gated } reproduces PyTorch's last
// prompt-position logits on wasm, and WebGPU (SwiftShader) agrees with wasm. Also: typed errors for an
// unknown mix and for a gated selection on an ungated model, an ordinary adapter on the gated graph equal
// to the ungated engine, a tiny `trainGates` run (2 steps) that stores a usable mix, and the worker path.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GatedMix } from '../../src/adapters/gated.ts';
import { GatedMixStore } from '../../src/adapters/gated-store.ts';
import { parseSafetensors, readFloat32, readInt32 } from '../../src/adapters/safetensors.ts';
import { AdapterStore } from '../../src/adapters/store.ts';
import { createWorkerEngine, type WorkerEngine } from '../../src/engine/client.ts';
import { LocalEngine } from '../../src/engine/engine.ts';
import { TextTokenizer } from '../../src/engine/tokenizer.ts';
import {
  AdapterFormatError,
  AdapterNameConflictError,
  AdapterNotFoundError,
  UnsupportedError,
} from '../../src/errors.ts';
import { expectClose, FP32_LOGITS, maxAbsDiff, SAME_GRAPH, WEBGPU_VS_WASM } from '../helpers/expect-close.ts';
import { MODEL_BASE, setupOrt } from './helpers/model.ts';

setupOrt();
const DB = `weblora-test-gates-${Date.now()}`;
const EXPERTS = ['weblora-shout', 'weblora-romeo'];
const MIX = 'fx-mix';

let fxMix: GatedMix;
let want: Float32Array; // (V) oracle logits of the last prompt position
let prompt: string;

async function bytes(url: string): Promise<Uint8Array> {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

function lastLogits(e: LocalEngine): Float32Array {
  const l = e.debugState().lastPrefillLogits;
  if (!l) throw new Error('no prefill logits recorded');
  return Float32Array.from(l);
}

async function gatedEngine(
  backend: 'wasm' | 'webgpu',
  store: AdapterStore,
  gates = true,
): Promise<LocalEngine> {
  const e = new LocalEngine({ numThreads: 1, adapterStore: store, baseGraphForNoAdapter: false });
  await e.loadModel(MODEL_BASE, { backend, dtype: 'fp32', gates });
  return e;
}

beforeAll(async () => {
  const st = parseSafetensors(await bytes('/tests/fixtures/gates.safetensors'));
  const V = st.tensors.get('logits')!.shape[1]!;
  const all = readFloat32(st.tensors.get('logits')!);
  want = all.subarray(all.length - V);
  const experts = JSON.parse(st.metadata.experts!) as { name: string; weight: number }[];
  const gates = new Map<number, { W: Float32Array; b: Float32Array }>();
  for (let l = 0; st.tensors.has(`layers.${l}.gate.weight`); l++)
    gates.set(l, {
      W: readFloat32(st.tensors.get(`layers.${l}.gate.weight`)!),
      b: readFloat32(st.tensors.get(`layers.${l}.gate.bias`)!),
    });
  fxMix = { experts, hiddenSize: st.tensors.get('layers.0.gate.weight')!.shape[1]!, gates };
  const tok = TextTokenizer.fromJSON(
    await (await fetch(`${MODEL_BASE}tokenizer.json`)).json(),
    await (await fetch(`${MODEL_BASE}tokenizer_config.json`)).json(),
  );
  const ids = Array.from(readInt32(st.tensors.get('tokens')!));
  prompt = tok.decode(ids);
  expect(tok.encode(prompt)).toEqual(ids); // the engine encodes exactly the oracle's tokens
});

describe('gated mix on the engine (wasm, then WebGPU)', () => {
  const store = new AdapterStore({ dbName: DB });
  let wasm: LocalEngine;
  let wasmLogits: Float32Array;
  let wasmBase: Float32Array;

  beforeAll(async () => {
    wasm = await gatedEngine('wasm', store);
    for (const name of EXPERTS) await wasm.importAdapter({ url: `/adapters/${name}/` }, { name });
    await new GatedMixStore(store).save(MIX, fxMix);
  });
  afterAll(async () => {
    await wasm?.dispose();
  });

  it('wasm: generate with { gated } matches the PyTorch gate oracle', async () => {
    await wasm.generate({ prompt, maxNewTokens: 1, adapter: { gated: MIX } });
    wasmLogits = lastLogits(wasm);
    expectClose(wasmLogits, want, FP32_LOGITS, 'wasm gated logits vs PyTorch');
  });

  it('typed errors: unknown mix; gated selection on an ungated model', async () => {
    await expect(wasm.generate({ prompt, maxNewTokens: 1, adapter: { gated: 'nope' } })).rejects.toThrow(
      AdapterNotFoundError,
    );
    const plain = await gatedEngine('wasm', store, false);
    try {
      await expect(plain.generate({ prompt, maxNewTokens: 1, adapter: { gated: MIX } })).rejects.toThrow(
        UnsupportedError,
      );
      // An ordinary adapter on the gated graph (neutral gate) equals the ungated engine.
      await plain.generate({ prompt, maxNewTokens: 1, adapter: EXPERTS[0]! });
      const ungated = lastLogits(plain);
      await wasm.generate({ prompt, maxNewTokens: 1, adapter: EXPERTS[0]! });
      expectClose(lastLogits(wasm), ungated, SAME_GRAPH, 'plain adapter: gated graph vs ungated graph');
      // "No adapter" on the gated graph (no base session here: noAdapterFeeds + the neutral gate).
      await plain.generate({ prompt, maxNewTokens: 1, adapter: null });
      const base = lastLogits(plain);
      await wasm.generate({ prompt, maxNewTokens: 1, adapter: null });
      wasmBase = lastLogits(wasm);
      expectClose(wasmBase, base, SAME_GRAPH, 'no adapter: gated graph vs ungated graph');
    } finally {
      await plain.dispose();
    }
  });

  it('concurrent requests on a gated model (gated mix, plain adapter, none) each equal their solo run', async () => {
    // The batcher keeps a gated model to one request per forward (the gate inputs belong to one
    // selection); overlapping calls still give exactly their solo tokens.
    const reqs = [{ gated: MIX }, EXPERTS[0]!, null].map((adapter) => ({
      prompt,
      maxNewTokens: 4,
      temperature: 0,
      adapter,
    }));
    const solo = [];
    for (const r of reqs) solo.push(await wasm.generate(r));
    const together = await Promise.all(reqs.map((r) => wasm.generate(r)));
    expect(together.map((r) => r.tokenIds)).toEqual(solo.map((r) => r.tokenIds));
    expect(together.map((r) => r.timings.batchRows)).toEqual([1, 1, 1]);
  });

  it("adapter 'auto' on a gated model scores its candidates and runs the pick exactly", async () => {
    const routed = await wasm.generate({
      prompt,
      maxNewTokens: 3,
      temperature: 0,
      adapter: { auto: { candidates: [...EXPERTS] } },
    });
    expect(routed.routing?.scores.map((s) => s.adapter)).toEqual([...EXPERTS]);
    expect(routed.routing?.chosen).toHaveLength(1);
    const direct = await wasm.generate({
      prompt,
      maxNewTokens: 3,
      temperature: 0,
      adapter: routed.routing!.chosen[0]!,
    });
    expect(routed.tokenIds).toEqual(direct.tokenIds);
  });

  it('trainGates (2 CPU steps) stores a mix that generate runs', async () => {
    const lines = ['ROMEO:\n', 'KING HENRY:\n', 'ROMEO:\n', 'QUEEN:\n', 'ROMEO:\n', 'DUKE:\n'].map((p, i) =>
      JSON.stringify({
        prompt: p,
        completion: i % 2 ? 'WHAT SAY YOU, MY LORD?\n' : 'What light through yonder\n',
      }),
    );
    const steps: number[] = [];
    const r = await wasm.trainGates(
      {
        name: 'tiny',
        adapters: EXPERTS.map((name) => ({ name })),
        data: lines.join('\n'),
        steps: 2,
        batchSize: 2,
        evalSplit: 0.34,
      },
      (p) => steps.push(p.step),
    );
    expect(steps).toEqual([1, 2]);
    expect(r.losses).toHaveLength(2);
    expect(r.evalLossBefore).toBeGreaterThan(0);
    expect(r.evalLossAfter).toBeGreaterThan(0);
    expect(r.mix).toMatchObject({ name: 'tiny', layers: [0, 1, 2, 3, 4, 5], source: 'train' });
    expect((await new GatedMixStore(store).list()).map((m) => m.name)).toEqual([MIX, 'tiny']);
    const out = await wasm.generate({ prompt: 'ROMEO:\n', maxNewTokens: 2, adapter: { gated: 'tiny' } });
    expect(out.tokenIds.length).toBeGreaterThan(0);
  });

  it('store: export → picked files → importFiles round-trips; conflicts and missing experts are typed', async () => {
    const gm = new GatedMixStore(store);
    const files = await gm.export(MIX);
    const picked = [
      new File([files.config], 'gated_mix_config.json'),
      new File([files.weights as BlobPart], 'gates.safetensors'),
    ];
    const info = await gm.importFiles('copy', picked);
    expect(info).toMatchObject({
      name: 'copy',
      source: 'import',
      experts: fxMix.experts,
      layers: [0, 1, 2, 3, 4, 5],
    });
    expect(await gm.export('copy')).toEqual(files);
    await expect(gm.importFiles('copy', picked)).rejects.toThrow(AdapterNameConflictError);
    await expect(gm.importFiles('x', picked.slice(0, 1))).rejects.toThrow(AdapterFormatError);
    const orphan = { ...fxMix, experts: [{ name: 'missing', weight: 1 }, fxMix.experts[1]!] };
    await expect(gm.save('orphan', orphan)).rejects.toThrow(AdapterNotFoundError);
    await gm.delete('copy');
    await expect(gm.get('copy')).rejects.toThrow(AdapterNotFoundError);
  });

  it('webgpu: the gated mix agrees with wasm', async () => {
    if (!('gpu' in navigator) || !(await navigator.gpu.requestAdapter())) {
      console.warn('skipped: no WebGPU adapter in this browser');
      return;
    }
    const gpu = await gatedEngine('webgpu', store);
    try {
      expect((await gpu.info())?.backend).toBe('webgpu');
      await gpu.generate({ prompt, maxNewTokens: 1, adapter: { gated: MIX } });
      const got = lastLogits(gpu);
      console.info(
        `webgpu gated logits: max |webgpu − wasm| ${maxAbsDiff(got, wasmLogits).toExponential(2)}, ` +
          `max |webgpu − PyTorch| ${maxAbsDiff(got, want).toExponential(2)}`,
      );
      expectClose(got, wasmLogits, WEBGPU_VS_WASM, 'webgpu vs wasm gated logits');
      expectClose(got, want, WEBGPU_VS_WASM, 'webgpu gated logits vs PyTorch');
      await gpu.generate({ prompt, maxNewTokens: 1, adapter: null }); // rank-1 zero feeds + neutral gate
      expectClose(lastLogits(gpu), wasmBase, WEBGPU_VS_WASM, 'webgpu no adapter on the gated graph');
    } finally {
      await gpu.dispose();
    }
  });
});

describe('gated mix through the worker', () => {
  let engine: WorkerEngine;
  const tag = `${Date.now()}`;
  const store = new AdapterStore(); // the worker's default store (same origin, same IndexedDB)
  afterAll(async () => {
    await engine?.dispose();
    engine?.terminate();
    for (const n of EXPERTS) await store.delete(`${n}-${tag}`).catch(() => {});
    await new GatedMixStore(store).delete(`mix-${tag}`).catch(() => {});
  });

  it('loadModel({ gates: true }) + generate({ adapter: { gated } }) match the in-thread engine', async () => {
    engine = createWorkerEngine();
    await engine.loadModel(MODEL_BASE, { backend: 'wasm', dtype: 'fp32', gates: true });
    for (const n of EXPERTS) await engine.importAdapter({ url: `/adapters/${n}/` }, { name: `${n}-${tag}` });
    const mix = { ...fxMix, experts: fxMix.experts.map((e) => ({ ...e, name: `${e.name}-${tag}` })) };
    await new GatedMixStore(store).save(`mix-${tag}`, mix);
    const local = await gatedEngine('wasm', store);
    try {
      const a = await engine.generate({ prompt, maxNewTokens: 4, adapter: { gated: `mix-${tag}` } });
      const b = await local.generate({ prompt, maxNewTokens: 4, adapter: { gated: `mix-${tag}` } });
      expect(a.tokenIds).toEqual(b.tokenIds);
      await expect(engine.generate({ prompt, maxNewTokens: 1, adapter: { gated: 'nope' } })).rejects.toThrow(
        AdapterNotFoundError,
      );
      // trainGates across the worker: progress streams over, the mix is stored, typed errors survive.
      const steps: number[] = [];
      const data = ['ROMEO:\n', 'DUKE:\n', 'ROMEO:\n']
        .map((p, i) =>
          JSON.stringify({ prompt: p, completion: i % 2 ? 'AY, MY LORD.\n' : 'Soft you now.\n' }),
        )
        .join('\n');
      const adapters = EXPERTS.map((n) => ({ name: `${n}-${tag}` }));
      const r = await engine.trainGates(
        { name: `mix-${tag}`, adapters, data, steps: 1, batchSize: 2, evalSplit: 0, overwrite: true },
        (p) => steps.push(p.step),
      );
      expect(steps).toEqual([1]);
      expect(r.evalLossBefore).toBeNull();
      expect(r.mix.source).toBe('train');
      await expect(engine.trainGates({ name: `mix-${tag}`, adapters, data, steps: 1 })).rejects.toThrow(
        AdapterNameConflictError,
      );
    } finally {
      await local.dispose();
    }
  });
});
