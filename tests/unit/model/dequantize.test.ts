// dequantizeNBits (the wasm backend's load pass): unpacked weights against quantize.ts's own reference
// dequantizer (zero points, a zero-padded last block), and the shipped q4 default model run on
// onnxruntime-web (Node/wasm) as MatMulNBits and as the dequantized fp32 graph: the wasm MatMulNBits kernel
// itself dequantizes to f32 and runs an fp32 GEMM, so the logits agree to float rounding and greedy tokens
// are identical.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { dequantizeNBits, unpackNBits, wasmGraphOf } from '../../../src/model/dequantize.ts';
import { decodeModel, graphOf, initializersOf, nodesOf } from '../../../src/model/onnx-io.ts';
import { dequantizeMatMulNBits, quantizeBlock4 } from '../../../src/model/quantize.ts';
import { expectClose, SAME_GRAPH } from '../../helpers/expect-close.ts';
import { defaultModelFeeds, randn, runModel } from './graph-builders.ts';

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
    expect(report).toEqual({ nodes: 0, fp32Bytes: 0 });
    expect(wasmGraphOf(model).dequantized).toBeNull();
  });
});
