// The CPU side of the WebGPU backend's packed AdamW moments (src/train/f16.ts): binary16 encode/decode
// against known bit patterns and round-to-nearest-even, and packMoments ∘ unpackMoments within f16
// rounding at the power-of-two scale adamw.wgsl uses. The GPU side is tests/browser/train-gpu-kernels.
import { describe, expect, test } from 'vitest';
import {
  f16Bits,
  f16Value,
  g16Bits,
  g16Value,
  packG16,
  packMoments,
  unpackG16,
  unpackMoments,
} from '../../../src/train/f16.ts';
import { expectClose } from '../../helpers/expect-close.ts';
import { rand } from './helpers.ts';

describe('binary16', () => {
  test('known values, subnormals, overflow, ties to even', () => {
    const cases: [number, number][] = [
      [0, 0x0000],
      [1, 0x3c00],
      [-2, 0xc000],
      [65504, 0x7bff],
      [2 ** -14, 0x0400], // smallest normal
      [2 ** -24, 0x0001], // smallest subnormal
      [0.1, 0x2e66],
      [1 + 2 ** -11, 0x3c00], // tie → even (down)
      [1 + 3 * 2 ** -11, 0x3c02], // tie → even (up)
      [65520, 0x7c00], // rounds to Infinity
      [2 ** -26, 0x0000], // below half the smallest subnormal
    ];
    for (const [x, bits] of cases) {
      expect(f16Bits(x), String(x)).toBe(bits);
    }
    for (const x of [0, 1, -2, 65504, 2 ** -14, 2 ** -24]) expect(f16Value(f16Bits(x))).toBe(x);
    expect(f16Value(0x2e66)).toBe(0.0999755859375);
    expect(f16Value(0x3c00)).toBe(1);
    expect(f16Value(0x0001)).toBe(2 ** -24);
    expect(f16Value(0xfc00)).toBe(Number.NEGATIVE_INFINITY);
    for (let h = 0; h < 0x7c00; h += 7) expect(f16Bits(f16Value(h))).toBe(h); // exact round trip
  });

  test('packMoments → unpackMoments: within 2^-11 of the largest moment, scale a power of two', () => {
    const n = 1000;
    const m = Float32Array.from(rand(n, 1, 3e-4));
    const v = Float32Array.from(rand(n, 2, 1e-3), (x) => x * x * 1e-4);
    const { packed, S, gmax } = packMoments(m, v);
    expect(Number.isInteger(Math.log2(S))).toBe(true);
    expect(gmax * S).toBeLessThanOrEqual(2 ** 14);
    expect(gmax * S).toBeGreaterThan(2 ** 13);
    const [m2, v2] = unpackMoments(packed, S);
    expectClose(m2, m, { atol: 2 ** -24 / S, rtol: 2 ** -11 }, 'm');
    expectClose(
      Array.from(v2, Math.sqrt),
      Array.from(v, Math.sqrt),
      { atol: 2 ** -24 / S, rtol: 2 ** -11 },
      'sqrt v',
    );
  });
});

describe('g16 (packed LoRA gradients of the WebGPU backend)', () => {
  test('encodes exactly representable values exactly, and rounds to nearest with ties away from zero', () => {
    for (const x of [0, 1, -1, 1.5, 0.1171875, -3 * 2 ** -30, 2 ** -40, -(2 ** 21) * (1 + 511 / 512)])
      expect(g16Value(g16Bits(x))).toBe(x);
    const ulp = 2 ** -9;
    expect(g16Value(g16Bits(1 + ulp / 2))).toBe(1 + ulp); // tie → away from zero
    expect(g16Value(g16Bits(-(1 + ulp / 2)))).toBe(-(1 + ulp));
    expect(g16Value(g16Bits(1 + ulp * 0.49))).toBe(1);
    expect(g16Value(g16Bits(2 - ulp / 4))).toBe(2); // carry into the exponent
  });

  test('flushes below 2^-40 to zero, overflows above 2^22 to ±Infinity, keeps NaN', () => {
    expect(g16Value(g16Bits(2 ** -41))).toBe(0);
    expect(g16Value(g16Bits(-(2 ** 22)))).toBe(Number.NEGATIVE_INFINITY);
    expect(g16Value(g16Bits(Number.POSITIVE_INFINITY))).toBe(Number.POSITIVE_INFINITY);
    expect(g16Value(g16Bits(Number.NaN))).toBeNaN();
  });

  test('relative error ≤ 2^-10 over the range; pack / unpack two per word (odd length)', () => {
    let worst = 0;
    const xs: number[] = [];
    for (let i = 0; i < 20001; i++) {
      const x = Math.fround((i % 2 ? -1 : 1) * Math.exp(-25 + (i / 20000) * 35));
      xs.push(x);
      worst = Math.max(worst, Math.abs(g16Value(g16Bits(x)) - x) / Math.abs(x));
    }
    expect(worst).toBeLessThanOrEqual(2 ** -10);
    expect(worst).toBeGreaterThan(2 ** -10 * 0.99);
    const back = unpackG16(packG16(xs), xs.length);
    expect(packG16(xs).length).toBe(10001);
    expect(Array.from(back)).toEqual(xs.map((x) => g16Value(g16Bits(x))));
  });
});
