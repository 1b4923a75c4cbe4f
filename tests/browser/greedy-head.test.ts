// The greedy head (src/model/greedy-head.ts) in Chromium on onnxruntime-web's WebGPU EP (SwiftShader) and
// wasm EP: ArgMax picks the first maximal index like sampling.ts's argmax on crafted ties across a
// 49152-wide vocab; on the default model the head changes no greedy token and no logit beyond float
// noise; the engine reads back ids for greedy requests and logits rows for sampled ones.
// SwiftShader decodes about one token per second: webgpu runs stay at 4 tokens.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalEngine } from '../../src/engine/engine.ts';
import { argmax } from '../../src/engine/sampling.ts';
import { createDecoderSession, type DecoderGraph, greedy, KvStepper } from '../../src/engine/session.ts';
import { wasmGraphOf } from '../../src/model/dequantize.ts';
import { ARGMAX_OUTPUT, NUM_LOGITS_TO_KEEP, withGreedyHead } from '../../src/model/greedy-head.ts';
import { decodeModel, encodeModel, onnx } from '../../src/model/onnx-io.ts';
import { expectClose, SAME_GRAPH } from '../helpers/expect-close.ts';
import { loadPackage, MODEL_BASE, PROMPT, setupOrt } from './helpers/model.ts';

const ort = setupOrt();
const GPU_TOKENS = 4;

/** logits = h·W, h (1, T, 2), W (2, V) a constant: the smallest graph the head slices. */
function tieModel(W: Float32Array, V: number): Uint8Array {
  const vi = (name: string, dims: (number | string)[]) => ({
    name,
    type: {
      tensorType: {
        elemType: 1,
        shape: { dim: dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) },
      },
    },
  });
  const m = onnx.ModelProto.fromObject({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 17 }],
    graph: {
      name: 'ties',
      node: [{ name: 'lm_head', opType: 'MatMul', input: ['h', 'W'], output: ['logits'] }],
      input: [vi('h', [1, 'T', 2])],
      output: [vi('logits', [1, 'T', V])],
      initializer: [{ name: 'W', dataType: 1, dims: [2, V], rawData: new Uint8Array(W.buffer) }],
    },
  });
  return encodeModel(withGreedyHead(decodeModel(encodeModel(m))).model);
}

describe('greedy head ArgMax ties', () => {
  it.each(['webgpu', 'wasm'] as const)('%s: the first maximal index, as sampling.ts argmax', async (ep) => {
    const V = 49152;
    const a = new Float32Array(V).fill(-1);
    a[40000] = 3;
    a[7] = 3; // ties with 40000 and 49151: 7 wins
    a[49151] = 3;
    const b = new Float32Array(V).map((_, i) => Math.sin(i * 0.37));
    b[30000] = 5;
    b[124] = 5;
    b[123] = 5; // ties with 124 and 30000: 123 wins
    const W = new Float32Array(2 * V);
    W.set(a, 0);
    W.set(b, V);
    const s = await ort.InferenceSession.create(tieModel(W, V), { executionProviders: [ep] });
    try {
      // Rows: reads a; reads b; all zeros (every index ties: 0); reads -a (the 49149 -1s become +1: first is 0).
      const h = new ort.Tensor('float32', Float32Array.of(1, 0, 0, 1, 0, 0, -1, 0), [1, 4, 2]);
      const k = new ort.Tensor('int64', BigInt64Array.of(4n), []);
      const out = await s.run({ h, [NUM_LOGITS_TO_KEEP]: k });
      const ids = Array.from(out[ARGMAX_OUTPUT]!.data as BigInt64Array, Number);
      expect(ids).toEqual([7, 123, 0, 0]);
      const logits = out.logits!.data as Float32Array;
      expect(ids).toEqual([0, 1, 2, 3].map((r) => argmax(logits.subarray(r * V, (r + 1) * V))));
    } finally {
      await s.release();
    }
  });
});

describe('greedy head on the default model (q4)', () => {
  let file: Uint8Array;
  let config: Awaited<ReturnType<typeof loadPackage>>['pkg']['config'];
  let promptIds: number[];
  beforeAll(async () => {
    const { pkg, tok } = await loadPackage('q4');
    file = pkg.model;
    config = pkg.config;
    promptIds = tok.encode(PROMPT);
  });

  /** The engine's graph for a backend (wasm dequantizes 4-bit at load), with or without the head. */
  async function session(backend: 'webgpu' | 'wasm', head: boolean): Promise<DecoderGraph> {
    const decoded = decodeModel(file);
    const model = backend === 'wasm' ? wasmGraphOf(decoded).model : decoded;
    const bytes = encodeModel(head ? withGreedyHead(model).model : model);
    return createDecoderSession(ort, bytes, config, { backend });
  }

  it.each([
    ['webgpu', GPU_TOKENS],
    ['wasm', 16],
  ] as const)('%s: greedy tokens and prefill logits equal with and without the head', async (backend, n) => {
    const plain = await session(backend, false);
    const head = await session(backend, true);
    try {
      expect(plain.argmax).toBe(false);
      expect(head.argmax).toBe(true);
      const want = await greedy(ort, plain, promptIds, n);
      expect(want).toHaveLength(n);
      expect(await greedy(ort, head, promptIds, n)).toEqual(want);
      // The last row alone (k = 1) against the full graph's last row; k = T against all rows.
      const rows = async (g: DecoderGraph, allLogits: boolean) => {
        const st = new KvStepper(ort, g);
        try {
          return await st.step(promptIds, { allLogits });
        } finally {
          st.dispose();
        }
      };
      const full = await rows(plain, true);
      const last = await rows(head, false);
      const V = last.length;
      expect(V).toBe(config.vocabSize);
      expectClose(last, full.slice(full.length - V), SAME_GRAPH, `${backend} last row`);
      expectClose(await rows(head, true), full, SAME_GRAPH, `${backend} all rows`);
    } finally {
      await plain.session.release();
      await head.session.release();
    }
  });
});

describe('LocalEngine reads ids for greedy requests, logits rows otherwise (webgpu)', () => {
  let engine: LocalEngine;
  beforeAll(async () => {
    engine = new LocalEngine({ adapterStore: null });
    await engine.loadModel(MODEL_BASE, { backend: 'webgpu', dtype: 'q4' });
  });
  afterAll(async () => {
    await engine?.dispose();
  });

  it('greedy: ids; temperature > 0 or a repetition penalty: logits; greedy tokens = the head-less greedy loop', async () => {
    const { pkg, tok } = await loadPackage('q4');
    const plain = await createDecoderSession(ort, pkg.model, pkg.config, { backend: 'webgpu' });
    let want: number[];
    try {
      want = await greedy(ort, plain, tok.encode(PROMPT), GPU_TOKENS);
    } finally {
      await plain.session.release();
    }
    const g = await engine.generate({ prompt: PROMPT, maxNewTokens: GPU_TOKENS });
    expect(engine.debugState().lastDecodeRead).toBe('ids');
    expect(g.tokenIds).toEqual(want);
    await engine.generate({ prompt: PROMPT, maxNewTokens: 2, temperature: 0.8, seed: 1 });
    expect(engine.debugState().lastDecodeRead).toBe('logits');
    await engine.generate({ prompt: PROMPT, maxNewTokens: 2, repetitionPenalty: 1.3 });
    expect(engine.debugState().lastDecodeRead).toBe('logits');
  });
});
