/**
 * Rotary position embedding (Su et al. 2021, arXiv:2104.09864) in the rotate-half form of HF Llama and
 * scripts/py/model.py: out = x·cos + rotate_half(x)·sin, rotate_half(x) = cat(−x[D/2:], x[:D/2]), with
 * cos/sin of cat(freqs, freqs), freqs = pos · inv_freq, inv_freq_i = θ^(−2i/D) rounded to float32 as the
 * PyTorch buffer is (the product and cos/sin in f64). Works in place on the (N, heads·D) projection layout; no interleaved (GPT-J) form.
 */
import type { Buf } from './types.ts';

/** cos/sin tables for each row's position. */
export function ropeTables(
  cos: Buf, // (N, D)
  sin: Buf, // (N, D)
  positions: ArrayLike<number>, // (N)
  N: number,
  D: number,
  theta: number,
): void {
  const half = D / 2;
  const inv = new Float64Array(half); // (D/2)
  for (let i = 0; i < half; i++) inv[i] = Math.fround(1 / theta ** ((2 * i) / D));
  for (let n = 0; n < N; n++) {
    const p = Math.fround(positions[n]!);
    for (let i = 0; i < half; i++) {
      const a = p * inv[i]!; // f64 product, as the float64 oracle (fp32 ONNX rounds it: <= 1 ulp)
      const c = Math.cos(a);
      const s = Math.sin(a);
      cos[n * D + i] = c;
      cos[n * D + i + half] = c;
      sin[n * D + i] = s;
      sin[n * D + i + half] = s;
    }
  }
}

/** out may alias inp (the rotation of each pair reads both values before writing). */
export function ropeForward(
  out: Buf, // (N, nh, D)
  inp: Buf, // (N, nh, D)
  cos: Buf, // (N, D)
  sin: Buf, // (N, D)
  N: number,
  nh: number,
  D: number,
): void {
  const half = D / 2;
  for (let n = 0; n < N; n++) {
    for (let h = 0; h < nh; h++) {
      const o = (n * nh + h) * D;
      for (let i = 0; i < half; i++) {
        const x1 = inp[o + i]!;
        const x2 = inp[o + i + half]!;
        out[o + i] = x1 * cos[n * D + i]! - x2 * sin[n * D + i]!;
        out[o + i + half] = x2 * cos[n * D + i + half]! + x1 * sin[n * D + i + half]!;
      }
    }
  }
}

/** Gradient contract: dinp is assigned (=); it may alias dout (the transpose rotation, in place). */
export function ropeBackward(
  dinp: Buf, // (N, nh, D)
  dout: Buf, // (N, nh, D)
  cos: Buf, // (N, D)
  sin: Buf, // (N, D)
  N: number,
  nh: number,
  D: number,
): void {
  const half = D / 2;
  for (let n = 0; n < N; n++) {
    for (let h = 0; h < nh; h++) {
      const o = (n * nh + h) * D;
      for (let i = 0; i < half; i++) {
        const g1 = dout[o + i]!;
        const g2 = dout[o + i + half]!;
        dinp[o + i] = g1 * cos[n * D + i]! + g2 * sin[n * D + i + half]!;
        dinp[o + i + half] = g2 * cos[n * D + i + half]! - g1 * sin[n * D + i]!;
      }
    }
  }
}
