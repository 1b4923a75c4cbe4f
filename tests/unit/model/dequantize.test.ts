// dequantizeNBits (the wasm backend's load pass): unpacked weights against quantize.ts's own reference
// dequantizer (zero points, a zero-padded last block), and the shipped q4 default model run on
// onnxruntime-web (Node/wasm) as MatMulNBits and as the dequantized fp32 graph: the wasm MatMulNBits kernel
// itself dequantizes to f32 and runs an fp32 GEMM, so the logits agree to float rounding and greedy tokens
// are identical.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { InvalidOptionError } from '../../../src/errors.ts';
import {
  dequantizeNBits,
  unpackNBits,
  WASM_DEQUANTIZE_MAX_BYTES,
  type WasmDequantize,
  wasmGraphOf,
} from '../../../src/model/dequantize.ts';
import {
  decodeModel,
  graphOf,
  initializersOf,
  type ModelProto,
  nodesOf,
} from '../../../src/model/onnx-io.ts';
import { dequantizeMatMulNBits, quantize, quantizeBlock4 } from '../../../src/model/quantize.ts';
import { expectClose, SAME_GRAPH } from '../../helpers/expect-close.ts';
import { DEFAULT_MODEL, defaultModelFeeds, randn, runModel } from './graph-builders.ts';

const Q4 = fileURLToPath(
  new URL('../../../public/models/weblora-shakespeare/onnx/model_q4.onnx', import.meta.url),
);

describe('unpackNBits', () => {
  for (const zeroPoints of [false, true]) {
    for (const [K, N, bs] of [
      [96, 40, 32],
      [40, 8, 32],
      [128, 12, 64],
    ] as const) {
      it(`equals dequantizeMatMulNBits (K=${K}, N=${N}, block ${bs}, zeroPoints=${zeroPoints})`, () => {
        const q = quantizeBlock4(randn(K * N, K * N, 0.3), K, N, { blockSize: bs, zeroPoints });
        const want = dequantizeMatMulNBits(q.packed, q.scales, q.zeroPoints, K, N, bs);
        expect(unpackNBits(q.packed, q.scales, q.zeroPoints ?? null, K, N, bs)).toEqual(want);
      });
    }
  }
});

// dequantizeMatMulNBits (quantize.ts) is the plain per-column loop: the tiled unpackNBits must give the
// same f32 bits for any bytes, scales and zero points, at shapes with a partial last block, an odd K and
// N not a multiple of the 256-column tile.
describe('unpackNBits against the per-column loop (bit-identical)', () => {
  for (const zeroPoints of [false, true]) {
    for (const [K, N, bs] of [
      [576, 600, 32],
      [77, 300, 32],
      [130, 257, 64],
      [16, 1, 16],
      [1536, 40, 128],
    ] as const) {
      it(`K=${K}, N=${N}, block ${bs}, zeroPoints=${zeroPoints}`, () => {
        const nb = Math.ceil(K / bs);
        let seed = K * 7919 + N * 31 + bs + (zeroPoints ? 1 : 0);
        const next = () => {
          seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
          return seed >>> 8;
        };
        const packed = Uint8Array.from({ length: (N * nb * bs) / 2 }, () => next() & 255);
        // Scales across magnitudes and signs, with subnormal-free but inexact products.
        const scales = Float32Array.from(
          { length: N * nb },
          () => ((next() / 2 ** 24) * 2 - 1) * 2 ** ((next() % 40) - 20),
        );
        const zp = zeroPoints ? Uint8Array.from({ length: N * Math.ceil(nb / 2) }, () => next() & 255) : null;
        const got = unpackNBits(packed, scales, zp, K, N, bs);
        const want = dequantizeMatMulNBits(packed, scales, zp ?? undefined, K, N, bs);
        expect(new Uint32Array(got.buffer)).toEqual(new Uint32Array(want.buffer));
      });
    }
  }
});

describe('dequantizeNBits on the shipped q4 default model', () => {
  const q4 = decodeModel(new Uint8Array(readFileSync(Q4)));

  it('turns all 42 MatMulNBits into MatMuls and drops the 4-bit blocks', () => {
    const { model, report } = dequantizeNBits(q4);
    expect(report.nodes).toBe(42);
    const g = graphOf(model);
    expect(nodesOf(g).filter((n) => n.opType === 'MatMulNBits')).toHaveLength(0);
    expect(
      initializersOf(g).filter((t) => t.name.endsWith('_Q4') || t.name.endsWith('_scales')),
    ).toHaveLength(0);
    // 6 layers × (q 256² + k, v 256·128 + o 256² + gate, up, down 256·704) f32
    expect(report.fp32Bytes).toBe(6 * (2 * 256 * 256 + 2 * 256 * 128 + 3 * 256 * 704) * 4);
    expect(wasmGraphOf(q4).dequantized).toMatchObject({ nodes: 42, reason: expect.stringMatching(/wasm/) });
  });

  it('gives the logits of MatMulNBits on wasm (float rounding) and the same greedy tokens', async () => {
    const tokens = Array.from({ length: 16 }, (_, i) => (i * 37 + 5) % 1024);
    const feeds = defaultModelFeeds(tokens);
    const a = (await runModel(q4, feeds)).logits!;
    const b = (await runModel(dequantizeNBits(q4).model, feeds)).logits!;
    expectClose(b, a, SAME_GRAPH, 'dequantized vs MatMulNBits logits');
    const argmaxRows = (x: Float32Array) =>
      Array.from({ length: tokens.length }, (_, t) => {
        const row = x.subarray(t * 1024, (t + 1) * 1024);
        return row.indexOf(Math.max(...row));
      });
    expect(argmaxRows(b)).toEqual(argmaxRows(a));
  });

  it('leaves a model without MatMulNBits untouched', () => {
    const { model, report } = dequantizeNBits(dequantizeNBits(q4).model);
    expect(report).toEqual({ nodes: 0, fp32Bytes: 0, kept: 0, keptFp32Bytes: 0 });
    expect(wasmGraphOf(model).dequantized).toBeNull();
  });
});

// The fp32 byte budget (LoadOptions.wasmDequantize): weights largest first while they fit, first fit.
describe('dequantizeNBits / wasmGraphOf with a byte budget', () => {
  const q4 = decodeModel(new Uint8Array(readFileSync(Q4)));
  // fp32 bytes per weight of the default model (C = 256, kv 128, I = 704).
  const QO = 256 * 256 * 4;
  const KV = 256 * 128 * 4;
  const MLP = 256 * 704 * 4;
  const ALL = 6 * (2 * QO + 2 * KV + 3 * MLP);
  const converted = (m: ModelProto) =>
    nodesOf(graphOf(m))
      .filter((n) => n.opType === 'MatMul' && n.input[1]!.endsWith('_dequantized'))
      .map((n) => n.name);
  const still4bit = (m: ModelProto) => nodesOf(graphOf(m)).filter((n) => n.opType === 'MatMulNBits').length;

  it('a tiny budget converts the largest weights that fit, in graph order among equals, and skips to smaller ones', () => {
    // Room for 3 MLP weights and one q/o weight: the 4th MLP weight does not fit, the first q_proj does.
    const maxBytes = 3 * MLP + QO;
    const { model, report } = dequantizeNBits(q4, { maxBytes });
    expect(report).toEqual({ nodes: 4, fp32Bytes: maxBytes, kept: 38, keptFp32Bytes: ALL - maxBytes });
    expect(converted(model)).toEqual([
      '/model/layers.0/self_attn/q_proj/MatMul',
      '/model/layers.0/mlp/gate_proj/MatMul',
      '/model/layers.0/mlp/up_proj/MatMul',
      '/model/layers.0/mlp/down_proj/MatMul',
    ]);
    expect(still4bit(model)).toBe(38);
    // Only the converted weights' 4-bit blocks are dropped.
    expect(initializersOf(graphOf(model)).filter((t) => t.name.endsWith('_Q4'))).toHaveLength(38);
    // One byte less: the q_proj no longer fits, a k/v weight (smaller) does.
    const less = dequantizeNBits(q4, { maxBytes: maxBytes - 1 });
    expect(less.report).toMatchObject({ nodes: 4, fp32Bytes: 3 * MLP + KV, kept: 38 });
    expect(converted(less.model)).toContain('/model/layers.0/self_attn/k_proj/MatMul');
  });

  it('a partially converted graph gives the logits of the original (float rounding)', async () => {
    const tokens = Array.from({ length: 16 }, (_, i) => (i * 29 + 3) % 1024);
    const feeds = defaultModelFeeds(tokens);
    const a = (await runModel(q4, feeds)).logits!;
    const half = wasmGraphOf(q4, ALL / 2);
    expect(half.dequantized).toMatchObject({ kept: expect.any(Number), maxBytes: ALL / 2 });
    expect(half.dequantized!.nodes).toBeGreaterThan(0);
    expect(half.dequantized!.kept).toBeGreaterThan(0);
    const b = (await runModel(half.model, feeds)).logits!;
    expectClose(b, a, SAME_GRAPH, 'half-dequantized vs MatMulNBits logits');
  });

  it("modes: 'never' converts none, 'auto' (1 GiB) and 'always' all of the default model", () => {
    const never = wasmGraphOf(q4, 'never');
    expect(never.model).toBe(q4);
    expect(never.dequantized).toMatchObject({
      nodes: 0,
      fp32Bytes: 0,
      kept: 42,
      keptFp32Bytes: ALL,
      maxBytes: 0,
      reason: expect.stringMatching(/'never'.*42 4-bit MatMulNBits kept/),
    });
    expect(WASM_DEQUANTIZE_MAX_BYTES).toBe(2 ** 30);
    for (const [mode, maxBytes] of [
      ['auto', 2 ** 30],
      [undefined, 2 ** 30],
      ['always', null],
      [ALL, ALL],
    ] as const) {
      const r = wasmGraphOf(q4, mode).dequantized;
      expect(r).toEqual({
        nodes: 42,
        fp32Bytes: ALL,
        kept: 0,
        keptFp32Bytes: 0,
        maxBytes,
        reason: expect.any(String),
      });
    }
    const partial = wasmGraphOf(q4, MLP).dequantized!;
    expect(partial).toMatchObject({
      nodes: 1,
      fp32Bytes: MLP,
      kept: 41,
      keptFp32Bytes: ALL - MLP,
      maxBytes: MLP,
    });
    expect(partial.reason).toMatch(/1 4-bit MatMulNBits dequantized.*41 kept 4-bit.*budget of 1 MiB/);
  });

  it('rejects a budget that is not a mode or a byte count >= 0 (InvalidOptionError)', () => {
    for (const bad of [-1, Number.NaN, Number.POSITIVE_INFINITY, 'sometimes']) {
      expect(() => wasmGraphOf(q4, bad as WasmDequantize)).toThrow(InvalidOptionError);
    }
  });

  it('puts the lm_head first: the largest weight (quantized default model with a 4-bit lm_head)', () => {
    const { model } = quantize(decodeModel(new Uint8Array(readFileSync(DEFAULT_MODEL))));
    const lmHead = 256 * 1024 * 4; // C × V fp32: 1 MiB, the largest weight
    const r = wasmGraphOf(model, lmHead);
    expect(r.dequantized).toMatchObject({ nodes: 1, fp32Bytes: lmHead });
    const [name] = converted(r.model);
    const node = nodesOf(graphOf(r.model)).find((n) => n.name === name)!;
    expect(node.output).toEqual(['logits']);
  });
});
