// quantize(): the 4-bit block packing against its error bound, MatMulNBits on onnxruntime-web (Node/wasm)
// against an fp32 MatMul with the dequantized weight, and the quantized default model against fp32.
import { describe, expect, it } from 'vitest';
import { ModelFormatError } from '../../../src/errors.ts';
import {
  decodeModel,
  encodeModel,
  graphOf,
  initializersOf,
  type ModelProto,
  nodesOf,
  onnx,
  type TensorProto,
} from '../../../src/model/onnx-io.ts';
import { dequantizeMatMulNBits, quantize, quantizeBlock4 } from '../../../src/model/quantize.ts';
import { expectClose, expectQ4Logits, FP32_LOGITS, maxAbsDiff } from '../../helpers/expect-close.ts';
import {
  defaultModelFeeds,
  f32,
  loadDefaultBytes,
  matmulRef,
  randn,
  runModel,
  tinyModel,
} from './graph-builders.ts';

/** Tensor bytes as an aligned Float32Array / Uint8Array (test-side copy; the passes never copy). */
const f32Of = (t: TensorProto) => new Float32Array(t.rawData.slice().buffer);
const initOf = (m: ModelProto, name: string) => {
  const t = initializersOf(graphOf(m)).find((x) => x.name === name);
  if (!t) throw new Error(`no initializer ${name}`);
  return t;
};

describe('quantizeBlock4 / dequantizeMatMulNBits', () => {
  // Bound: symmetric scale = absmax/7 per (column, block), q = round(w/scale) + 8 never clamps, so
  // |w - (q-8)*scale| <= scale/2 (plus one float32 rounding of the product). Asymmetric: the range
  // [min(0,min), max(0,max)] is split into 15 steps of `scale`; rounding to a step gives the same scale/2.
  for (const zeroPoints of [false, true]) {
    for (const [K, N] of [
      [96, 40],
      [40, 8],
    ] as const) {
      it(`respects |err| <= scale/2 (K=${K}, N=${N}, zeroPoints=${zeroPoints})`, () => {
        const w = randn(K * N, K + N, 0.5); // (K, N)
        w[5] = 3; // an outlier: only its own block gets a coarse scale
        const q = quantizeBlock4(w, K, N, { zeroPoints });
        const nb = Math.ceil(K / 32);
        expect(q.packed.length).toBe(N * nb * 16);
        expect(q.scales.length).toBe(N * nb);
        expect(q.zeroPoints?.length).toBe(zeroPoints ? N * Math.ceil(nb / 2) : undefined);
        const deq = dequantizeMatMulNBits(q.packed, q.scales, q.zeroPoints, K, N);
        // Per element: half the step of its (column, block); rtol 1e-6 covers the float32 product.
        const halfStep = Float32Array.from({ length: K * N }, (_, i) => {
          const k = Math.floor(i / N);
          const n = i % N;
          return q.scales[n * nb + Math.floor(k / 32)]! / 2;
        });
        expectClose(deq, w, { atol: halfStep, rtol: 1e-6 }, 'dequantized weight');
        expect(q.maxAbsError).toBeCloseTo(maxAbsDiff(deq, w), 6);
        if (!zeroPoints) {
          // W[0, 5] = 3 is the absmax of (column 5, block 0): scale 3/7, and it maps to q = 15 exactly.
          expect(q.scales[5 * nb]).toBeCloseTo(3 / 7, 6);
          expectClose([deq[5]!], [3], { atol: 1e-6, rtol: 0 }, 'outlier');
        }
      });
    }
  }

  it('rejects block sizes MatMulNBits cannot run', () => {
    expect(() => quantizeBlock4(new Float32Array(64), 8, 8, { blockSize: 8 })).toThrow(ModelFormatError);
    expect(() => quantizeBlock4(new Float32Array(64), 8, 8, { blockSize: 48 })).toThrow(/power of two/);
  });
});

describe('MatMulNBits on onnxruntime-web (wasm)', () => {
  const cases = [
    { K: 64, N: 48, zeroPoints: false },
    { K: 96, N: 24, zeroPoints: true }, // odd number of blocks: zero points half-fill their last byte
    { K: 40, N: 16, zeroPoints: false }, // K not a multiple of 32: zero-padded
    { K: 64, N: 32, zeroPoints: false, blockSize: 16 },
  ];
  for (const c of cases) {
    it(`equals a MatMul with the dequantized weight (${JSON.stringify(c)})`, async () => {
      const { K, N } = c;
      const M = 3;
      const W = randn(K * N, 11 * K + N); // (K, N)
      const X = randn(M * K, 5); // (M, K)
      const model = tinyModel({
        nodes: [{ op: 'MatMul', inputs: ['X', 'W'], outputs: ['Y'], name: '/proj/MatMul' }],
        inputs: [{ name: 'X', dims: ['m', K] }],
        outputs: [{ name: 'Y', dims: ['m', N] }],
        inits: [{ name: 'W', dims: [K, N], data: W }],
      });
      const { model: q, report } = quantize(model, c);
      expect(report.quantized).toHaveLength(1);
      expect(report.quantized[0]).toMatchObject({
        node: '/proj/MatMul',
        K,
        N,
        padded: K % (c.blockSize ?? 32) !== 0,
      });
      const g = graphOf(q);
      expect(nodesOf(g).map((n) => `${n.domain}.${n.opType}`)).toEqual(['com.microsoft.MatMulNBits']);
      expect(initializersOf(g).some((t) => t.name === 'W')).toBe(false); // fp32 weight dropped
      expect(q.opsetImport.some((o) => o.domain === 'com.microsoft')).toBe(true);

      const zp = c.zeroPoints ? new Uint8Array(initOf(q, 'W_zp').rawData) : undefined;
      const deq = dequantizeMatMulNBits(
        new Uint8Array(initOf(q, 'W_Q4').rawData),
        f32Of(initOf(q, 'W_scales')),
        zp,
        K,
        N,
        c.blockSize,
      );
      const ref = tinyModel({
        nodes: [{ op: 'MatMul', inputs: ['X', 'W'], outputs: ['Y'] }],
        inputs: [{ name: 'X', dims: ['m', K] }],
        outputs: [{ name: 'Y', dims: ['m', N] }],
        inits: [{ name: 'W', dims: [K, N], data: deq }],
      });
      const feeds = { X: f32(X, [M, K]) };
      const yq = (await runModel(decodeModel(encodeModel(q)), feeds)).Y!;
      const yref = (await runModel(ref, feeds)).Y!;
      expectClose(yq, yref, { atol: 1e-5, rtol: 0 }, 'MatMulNBits vs MatMul(dequantized)');
      expectClose(
        yq,
        matmulRef(X, deq, M, K, N),
        { atol: 1e-5, rtol: 0 },
        'MatMulNBits vs plain-TS reference',
      );
    });
  }
});

describe('quantize on the default model', () => {
  const bytes = loadDefaultBytes();
  const tokens = Array.from({ length: 16 }, (_, i) => (i * 37 + 5) % 1024);

  it('quantizes the 42 projections and lm_head, stores the tied embedding once (4-bit), shrinks the file', async () => {
    const fp32 = decodeModel(bytes);
    const { model, report } = quantize(fp32);
    expect(report.quantized).toHaveLength(43);
    expect(report.skipped).toEqual([]);
    expect(report.tiedEmbedding).toEqual({
      gather: '/model/embed_tokens/Gather',
      table: 'model.embed_tokens.weight',
    });
    const g = graphOf(model);
    expect(nodesOf(g).filter((n) => n.opType === 'MatMulNBits')).toHaveLength(43);
    // The lookup gathers the lm_head's packed rows and scales by input_ids (no GatherBlockQuantized: the
    // app's onnxruntime-web build has no kernel for it).
    const gathers = nodesOf(g).filter((n) => n.opType === 'Gather' && n.input[1] === 'input_ids');
    expect(gathers.map((n) => n.name)).toEqual([
      '/model/embed_tokens/Gather_Q4/GatherRows',
      '/model/embed_tokens/Gather_Q4/GatherScales',
    ]);
    expect(nodesOf(g).some((n) => n.opType === 'GatherBlockQuantized')).toBe(false);
    // Neither fp32 copy of the tied embedding is left (the Gather table nor the lm_head's transposed copy).
    const names = initializersOf(g).map((t) => t.name);
    expect(names).not.toContain('model.embed_tokens.weight');
    expect(names).not.toContain('onnx::MatMul_1645');
    const out = encodeModel(model);
    console.log(
      `q4 model: ${(out.byteLength / 1e6).toFixed(2)} MB (fp32 ${(bytes.byteLength / 1e6).toFixed(2)} MB); ` +
        `weights ${report.bytesBefore} -> ${report.bytesAfter} bytes`,
    );
    expect(out.byteLength).toBeLessThan(0.2 * bytes.byteLength); // issue 12's target

    // embedding 'fp32': lm_head 4-bit, the fp32 Gather table kept; includeLmHead false: the old layout.
    const fp32Embed = quantize(fp32, { embedding: 'fp32' });
    expect(fp32Embed.report.quantized).toHaveLength(43);
    expect(fp32Embed.report.tiedEmbedding).toBeNull();
    expect(initializersOf(graphOf(fp32Embed.model)).some((t) => t.name === 'model.embed_tokens.weight')).toBe(
      true,
    );
    const noHead = quantize(fp32, { includeLmHead: false });
    expect(noHead.report.quantized).toHaveLength(42);
    expect(noHead.report.skipped).toEqual([{ node: '/MatMul', reason: expect.stringMatching(/lm_head/) }]);
    expect(noHead.report.tiedEmbedding).toBeNull();
    expect(encodeModel(fp32Embed.model).byteLength).toBeGreaterThan(out.byteLength);
    expect(encodeModel(noHead.model).byteLength).toBeGreaterThan(encodeModel(fp32Embed.model).byteLength);
    // The input model is untouched (the pass returns a new graph sharing tensors).
    expect(nodesOf(graphOf(fp32)).some((n) => n.opType === 'MatMulNBits')).toBe(false);
  });

  it('runs; logits equal the fp32 graph with dequantized weights, and stay close to fp32', async () => {
    const fp32 = decodeModel(bytes);
    const { model: q4, report } = quantize(fp32);
    const feeds = defaultModelFeeds(tokens);
    const lq = (await runModel(q4, feeds)).logits!; // (1, T, V)
    const lf = (await runModel(fp32, feeds)).logits!;

    // Exactness of the kernel path: same arithmetic as fp32 with W replaced by dequant(quant(W)).
    // The embedding table of `fake` is the dequantized lm_head transposed (the lookup reads the lm_head's
    // blocks with zero point 8): this checks the lookup's arithmetic exactly too.
    const fake = onnx.ModelProto.create({ ...fp32 });
    const g = onnx.GraphProto.create({ ...graphOf(fp32) });
    const deqOf = (name: string) => {
      const e = report.quantized.find((x) => x.weight === name)!;
      const w = dequantizeMatMulNBits(
        new Uint8Array(initOf(q4, `${name}_Q4`).rawData),
        f32Of(initOf(q4, `${name}_scales`)),
        undefined,
        e.K,
        e.N,
      );
      return { w, K: e.K, N: e.N };
    };
    expect(report.tiedEmbedding?.table).toBe('model.embed_tokens.weight');
    g.initializer = initializersOf(g).map((t) => {
      if (t.name === 'model.embed_tokens.weight') {
        const { w, K, N } = deqOf('onnx::MatMul_1645'); // (K = C, N = V)
        const e = new Float32Array(K * N); // (V, C)
        for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) e[n * K + k] = w[k * N + n]!;
        return onnx.TensorProto.create({ ...t, rawData: new Uint8Array(e.buffer) });
      }
      if (!report.quantized.some((x) => x.weight === t.name)) return t;
      return onnx.TensorProto.create({ ...t, rawData: new Uint8Array(deqOf(t.name).w.buffer) });
    });
    fake.graph = g;
    const lfake = (await runModel(fake, feeds)).logits!;
    expectClose(lq, lfake, FP32_LOGITS, 'q4 logits vs fp32-with-dequantized-weights');

    // Quantization noise vs true fp32: the shared q4 bounds (tests/helpers/expect-close.ts, the same
    // ones golden.test.ts applies to the shipped model_q4.onnx).
    const m = expectQ4Logits(lq, lf, 1024, 'q4 vs fp32 logits');
    console.log(`q4 vs fp32 logits: relative RMS ${m.relRms.toFixed(3)}, top-1 ${m.top1 * m.rows}/${m.rows}`);
  });
});
