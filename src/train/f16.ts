/**
 * IEEE binary16 <-> f32 on the CPU, matching WGSL's pack2x16float / unpack2x16float (round to nearest
 * even, subnormals kept, overflow to ±Infinity), for the WebGPU backend's packed AdamW moments
 * (adamw.wgsl): snapshots unpack them, restores pack them (unpackMoments / packMoments). Not here: NaN payloads (a NaN stays a NaN).
 */
// The conversions themselves live once, in model/half.ts.
import { floatToHalfBits as f16Bits, halfBitsToFloat as f16Value } from '../model/half.ts';

export { f16Bits, f16Value };

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** m and v from adamw.wgsl's packed words at scale S (m·S low half, sqrt(v)·S high half). */
export function unpackMoments(packed: Uint32Array, S: number): [Float32Array, Float32Array] {
  const m = new Float32Array(packed.length);
  const v = new Float32Array(packed.length);
  for (let i = 0; i < packed.length; i++) {
    m[i] = f16Value(packed[i]! & 0xffff) / S;
    v[i] = (f16Value(packed[i]! >>> 16) / S) ** 2;
  }
  return [m, v];
}

/** The inverse, at the scale gradnorm.wgsl would pick for gmax = the largest |m| or sqrt(v). */
export function packMoments(
  m: Float32Array,
  v: Float32Array,
): { packed: Uint32Array; S: number; gmax: number } {
  let gmax = 0;
  for (let i = 0; i < m.length; i++) gmax = Math.max(gmax, Math.abs(m[i]!), Math.sqrt(v[i]!));
  const S = 2 ** (gmax > 0 ? Math.min(100, Math.max(-100, 14 - Math.ceil(Math.log2(gmax)))) : 100);
  const packed = new Uint32Array(m.length);
  for (let i = 0; i < m.length; i++)
    packed[i] = (f16Bits(m[i]! * S) | (f16Bits(Math.sqrt(v[i]!) * S) << 16)) >>> 0;
  return { packed, S, gmax };
}

/**
 * The WebGPU backend's packed LoRA gradients ("g16", shaders/matmul*_lora_backward.wgsl, gradnorm.wgsl,
 * adamw.wgsl): 16 bits per gradient, two per u32 word (element 2j in the low half), so the gradient
 * buffer is 2 bytes per parameter instead of 4. Layout: sign (bit 15) | exponent field f (6 bits) |
 * mantissa (9 bits). f = 0: ±0; f = 63: ±Infinity (mantissa 0) or NaN; else the value
 * ±(1 + m/512)·2^(f − 1 + G16_EMIN). So it spans 2^-40 … 2^22 with 10 significant bits (relative
 * rounding error ≤ 2^-10) and needs no scale: magnitudes below 2^-40 flush to 0 (for AdamW with
 * eps = 1e-8 such a gradient moves its parameter by < 1e-4·lr), above 2^22 become ±Infinity (as f32
 * overflow would). Rounding is to nearest, ties away from zero (add half an ulp to the magnitude bits,
 * truncate), identical in WGSL and here.
 */
export const G16_EMIN = -40;

/** The g16 bits of x (as WGSL g16Enc). */
export function g16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  const s = (b >>> 16) & 0x8000;
  const mag = b & 0x7fffffff;
  if (mag > 0x7f800000) return s | 0x7fff; // NaN
  const a = mag + 0x2000;
  const e = (a >>> 23) - 127;
  if (e < G16_EMIN) return s;
  if (e > G16_EMIN + 61) return s | 0x7e00; // ±Infinity
  return s | ((e - G16_EMIN + 1) << 9) | ((a >>> 14) & 0x1ff);
}

/** The f32 value of g16 bits h (as WGSL g16Dec). */
export function g16Value(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const f = (h >>> 9) & 0x3f;
  const m = h & 0x1ff;
  if (f === 0) return sign * 0;
  if (f === 63) return m ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1 + m / 512) * 2 ** (f - 1 + G16_EMIN);
}

/** n gradients from their packed words (two per word, low half first). */
export function unpackG16(words: Uint32Array, n: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = g16Value((words[i >>> 1]! >>> ((i & 1) * 16)) & 0xffff);
  return out;
}

/** The inverse: ceil(n / 2) words (tests build kernel inputs with it). */
export function packG16(g: ArrayLike<number>): Uint32Array {
  const out = new Uint32Array(Math.ceil(g.length / 2));
  for (let i = 0; i < g.length; i++) out[i >>> 1]! |= g16Bits(g[i]!) << ((i & 1) * 16);
  return out;
}

/**
 * A frozen f32 tensor as f16 pairs (element 2j in the low half) at a power-of-two scale S with
 * absmax·S ≤ 2^15, so nothing overflows and values down to absmax·2^-29 stay normal (11 significant
 * bits: relative error ≤ 2^-11 = 4.9e-4). The kernels read unpack2x16float(w[i / 2])[i % 2] · inv,
 * inv = 1/S (exact). Used for the WebGPU backend's embedding / tied lm_head and 4-bit block scales.
 */
export function packF16Scaled(x: ArrayLike<number>): { words: Uint32Array; inv: number } {
  let absmax = 0;
  for (let i = 0; i < x.length; i++) absmax = Math.max(absmax, Math.abs(x[i]!));
  const e = absmax > 0 ? Math.min(100, Math.max(-100, 15 - Math.ceil(Math.log2(absmax)))) : 0;
  const S = 2 ** e;
  const words = new Uint32Array(Math.ceil(x.length / 2));
  for (let i = 0; i < x.length; i++) words[i >>> 1]! |= f16Bits(x[i]! * S) << ((i & 1) * 16);
  return { words, inv: 2 ** -e };
}

/** The f32 values the kernels read from packF16Scaled's words (tests and the CPU mirror use it). */
export function unpackF16Scaled(words: Uint32Array, inv: number, n: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = f16Value((words[i >>> 1]! >>> ((i & 1) * 16)) & 0xffff) * inv;
  return out;
}
