/**
 * The GPU buffer layouts of src/train/gpu-layout.ts, checked in Node: a line-by-line TypeScript copy of
 * the WGSL `weightAt` (shaders/matmul_q4_lora*.wgsl) reading the packed u32 buffer must reproduce the CPU
 * reference's dequantized rows of the weight as stored (f16 block scales: gpuStoredLinear) exactly, with
 * and without zero points and with odd byte counts; the stored scales are within 2^-11 of the file's;
 * and the LoRA pair is [A | B]. (The kernels themselves run in tests/browser/train-kernels.test.ts.)
 */
import { describe, expect, test } from 'vitest';
import { quantizeBlock4 } from '../../../src/model/quantize.ts';
import { f16Value } from '../../../src/train/f16.ts';
import { gpuStoredLinear, packLoraForGpu, packQ4ForGpu } from '../../../src/train/gpu-layout.ts';
import { type FrozenLinear, weightRow } from '../../../src/train/ref/linear.ts';
import { expectClose } from '../../helpers/expect-close.ts';
import { rand } from './helpers.ts';

/** shaders/matmul_q4_lora.wgsl weightAt, transcribed (u32 words, byte and nibble extraction, bitcast). */
function wgslWeightAt(
  words: Uint32Array,
  p: { bs: number; nb: number; scalesOff: number; zpOff: number; sInv: number },
) {
  const scaleAt = (i: number) =>
    Math.fround(f16Value((words[p.scalesOff + (i >>> 1)]! >>> ((i & 1) * 16)) & 0xffff) * p.sInv);
  const byteAt = (bi: number) => (words[bi >>> 2]! >>> ((bi & 3) * 8)) & 0xff;
  return (o: number, k: number): number => {
    const b = Math.floor(k / p.bs);
    const q = (byteAt((o * p.nb + b) * (p.bs / 2) + ((k % p.bs) >> 1)) >> ((k & 1) * 4)) & 0xf;
    let z = 8;
    if (p.zpOff !== 0) z = (byteAt(p.zpOff * 4 + o * ((p.nb + 1) >> 1) + (b >> 1)) >> ((b & 1) * 4)) & 0xf;
    return Math.fround((q - z) * scaleAt(o * p.nb + b));
  };
}

describe('packQ4ForGpu', () => {
  for (const [K, O, bs, zeroPoints] of [
    [40, 7, 16, false],
    [40, 7, 16, true],
    [96, 3, 32, true], // nb = 3: odd zero-point nibble count per row
  ] as const) {
    test(`K ${K}, O ${O}, block ${bs}, zero points ${zeroPoints}: the WGSL read == weightRow`, () => {
      const q = quantizeBlock4(Float32Array.from(rand(K * O, K + O, 0.4)), K, O, {
        blockSize: bs,
        zeroPoints,
      });
      const w: FrozenLinear = {
        kind: 'q4',
        K,
        O,
        blockSize: bs,
        packed: q.packed,
        scales: q.scales,
        zeroPoints: q.zeroPoints ?? null,
      };
      const g = packQ4ForGpu(w);
      expect(g.zpOffset === 0).toBe(!zeroPoints);
      const at = wgslWeightAt(g.words, {
        bs,
        nb: g.nb,
        scalesOff: g.scalesOffset,
        zpOff: g.zpOffset,
        sInv: g.scaleInv,
      });
      const stored = gpuStoredLinear(w);
      if (stored.kind !== 'q4') throw new Error('unreachable');
      expectClose(stored.scales, w.scales, { atol: 0, rtol: 2 ** -11 }, 'f16 scales');
      const scratch = new Float32Array(K);
      for (let o = 0; o < O; o++) {
        const row = weightRow(scratch, stored, o);
        expectClose(
          Float32Array.from({ length: K }, (_, k) => at(o, k)),
          row,
          { atol: 0, rtol: 0 },
          `row ${o}`,
        );
      }
    });
  }

  test('fp32 weights are refused; LoRA pairs pack as [A | B]', () => {
    expect(() => packQ4ForGpu({ kind: 'f32', K: 1, O: 1, w: new Float32Array(1) })).toThrow(/4-bit/);
    const A = Float32Array.of(1, 2, 3, 4);
    const B = Float32Array.of(5, 6);
    expect(Array.from(packLoraForGpu({ R: 2, scale: 1, A, B, dA: null, dB: null }))).toEqual([
      1, 2, 3, 4, 5, 6,
    ]);
  });
});
