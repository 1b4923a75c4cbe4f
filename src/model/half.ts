/**
 * IEEE 754 binary16 <-> float32, the one implementation for the whole library: float16 graph inputs
 * (injectLora's `branchDtype: 'float16'`, as onnxruntime-web 'float16' tensors), the packed adapter feeds
 * (adapters/feed-pack.ts) and the WebGPU trainer's packed f16 words (train/f16.ts; the same rounding as
 * WGSL's pack2x16float). float32 → half rounds to nearest, ties to even, keeps subnormals, overflows to
 * ±Infinity and keeps NaN a NaN. Plain bit arithmetic, no Float16Array (Node 20 and older browsers lack it).
 */
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function floatToHalfBits(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // Inf / NaN
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow
  if (e <= 0) {
    if (e < -10) return sign; // underflow to ±0
    const m = mant | 0x800000; // implicit 1
    const shift = 14 - e;
    const half = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    return sign | (half + (rem > mid || (rem === mid && half & 1) ? 1 : 0));
  }
  const half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent (up to Infinity).
  return sign | (half + (rem > 0x1000 || (rem === 0x1000 && half & 1) ? 1 : 0));
}

let halfTableCache: Float32Array | null = null;
/** binary16 bits → float32 for all 65536 patterns, built once. */
export function halfTable(): Float32Array {
  if (halfTableCache) return halfTableCache;
  const t = new Float32Array(65536);
  for (let b = 0; b < 65536; b++) {
    const s = b & 0x8000 ? -1 : 1;
    const e = (b >>> 10) & 0x1f;
    const m = b & 0x3ff;
    t[b] =
      e === 0
        ? s * m * 2 ** -24
        : e === 31
          ? m
            ? Number.NaN
            : s * Infinity
          : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  halfTableCache = t;
  return t;
}

/** The float32 value of binary16 bits `h`. */
export function halfBitsToFloat(h: number): number {
  return halfTable()[h & 0xffff]!;
}

/** A Float32Array as binary16 bits. */
export function toHalfBits(a: Float32Array): Uint16Array {
  const out = new Uint16Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = floatToHalfBits(a[i]!);
  return out;
}
