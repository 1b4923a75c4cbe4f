/**
 * Linear layers over a frozen base weight, with an optional PEFT LoRA branch (Hu et al. 2021,
 * arXiv:2106.09685): y = x·Wᵀ + scale·(x·Aᵀ)·Bᵀ, A (R, K), B (O, R) exactly as PEFT stores them.
 * The frozen W is either fp32 (O, K) (PyTorch layout: row o holds the K inputs of output o) or 4-bit
 * com.microsoft.MatMulNBits blocks (src/model/quantize.ts layout), dequantized one output row at a time
 * into a (K) scratch (QLoRA-style, Dettmers et al. 2023, arXiv:2305.14314): no fp32 copy of a 4-bit W.
 * Not here: biases (Llama has none), weight gradients of W, 2/3/8-bit blocks, g_idx (act-order).
 */
import type { Buf } from './types.ts';

export type FrozenLinear =
  | {
      kind: 'f32';
      K: number; // in features
      O: number; // out features
      w: Float32Array; // (O, K)
    }
  | {
      kind: 'q4';
      K: number;
      O: number;
      blockSize: number; // power of two >= 16
      packed: Uint8Array; // (O, nb, blockSize/2), nb = ceil(K/blockSize); low nibble = even k
      scales: Float32Array; // (O, nb)
      zeroPoints: Uint8Array | null; // (O, ceil(nb/2)) 4-bit, low nibble = even block; null = 8
    };

/** A LoRA branch on one linear; grads are allocated by the model on first backward. */
export interface LoraBranch {
  R: number;
  scale: number;
  A: Buf; // (R, K)
  B: Buf; // (O, R)
  dA: Buf | null; // (R, K)
  dB: Buf | null; // (O, R)
}

/**
 * Row o of W (its K weights) as floats: a view for fp32 (no copy), dequantized into `scratch` for q4:
 * w[k] = (q(k) − zp) · scale(block of k).
 */
export function weightRow(
  scratch: Float32Array, // (K)
  w: FrozenLinear,
  o: number,
): Float32Array {
  const K = w.K;
  if (w.kind === 'f32') return w.w.subarray(o * K, o * K + K);
  const bs = w.blockSize;
  const nb = Math.ceil(K / bs);
  const half = bs / 2;
  const zpBytes = Math.ceil(nb / 2);
  for (let b = 0; b < nb; b++) {
    const s = w.scales[o * nb + b]!;
    const z = w.zeroPoints ? (w.zeroPoints[o * zpBytes + (b >> 1)]! >> ((b & 1) * 4)) & 15 : 8;
    const base = (o * nb + b) * half;
    const k0 = b * bs;
    const k1 = Math.min(K, k0 + bs);
    for (let k = k0; k < k1; k += 2) {
      const byte = w.packed[base + ((k - k0) >> 1)]!;
      scratch[k] = ((byte & 15) - z) * s;
      if (k + 1 < k1) scratch[k + 1] = ((byte >> 4) - z) * s;
    }
  }
  return scratch;
}

/** out = inp·Wᵀ. */
export function matmulForward(
  out: Buf, // (M, O)
  inp: Buf, // (M, K)
  w: FrozenLinear,
  M: number,
): void {
  const { K, O } = w;
  const scratch = new Float32Array(K); // (K)
  for (let o = 0; o < O; o++) {
    const row = weightRow(scratch, w, o);
    let m = 0;
    for (; m + 4 <= M; m += 4) {
      // 4 input rows per pass over the weight row (each weight load used 4 times).
      const x0 = m * K;
      const x1 = x0 + K;
      const x2 = x1 + K;
      const x3 = x2 + K;
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      for (let k = 0; k < K; k++) {
        const wk = row[k]!;
        s0 += inp[x0 + k]! * wk;
        s1 += inp[x1 + k]! * wk;
        s2 += inp[x2 + k]! * wk;
        s3 += inp[x3 + k]! * wk;
      }
      out[m * O + o] = s0;
      out[(m + 1) * O + o] = s1;
      out[(m + 2) * O + o] = s2;
      out[(m + 3) * O + o] = s3;
    }
    for (; m < M; m++) {
      const x = m * K;
      let s = 0;
      for (let k = 0; k < K; k++) s += inp[x + k]! * row[k]!;
      out[m * O + o] = s;
    }
  }
}

/** Gradient contract: dinp accumulates (+=) (q/k/v and gate/up read one input). dinp += dout·W. */
export function matmulBackward(
  dinp: Buf, // (M, K)
  dout: Buf, // (M, O)
  w: FrozenLinear,
  M: number,
): void {
  const { K, O } = w;
  const scratch = [0, 1, 2, 3].map(() => new Float32Array(K)); // 4 x (K)
  const acc = new Float64Array(M * K); // (M, K) f64 accumulator over the O outputs
  let o = 0;
  for (; o + 4 <= O; o += 4) {
    // 4 weight rows per pass over acc (one read-modify-write of acc per 4 outputs).
    const r0 = weightRow(scratch[0]!, w, o);
    const r1 = weightRow(scratch[1]!, w, o + 1);
    const r2 = weightRow(scratch[2]!, w, o + 2);
    const r3 = weightRow(scratch[3]!, w, o + 3);
    for (let m = 0; m < M; m++) {
      const d = m * O + o;
      const g0 = dout[d]!;
      const g1 = dout[d + 1]!;
      const g2 = dout[d + 2]!;
      const g3 = dout[d + 3]!;
      if (g0 === 0 && g1 === 0 && g2 === 0 && g3 === 0) continue;
      const x = m * K;
      for (let k = 0; k < K; k++) acc[x + k]! += g0 * r0[k]! + g1 * r1[k]! + g2 * r2[k]! + g3 * r3[k]!;
    }
  }
  for (; o < O; o++) {
    const row = weightRow(scratch[0]!, w, o);
    for (let m = 0; m < M; m++) {
      const g = dout[m * O + o]!;
      if (g === 0) continue;
      const x = m * K;
      for (let k = 0; k < K; k++) acc[x + k]! += g * row[k]!;
    }
  }
  for (let i = 0; i < M * K; i++) dinp[i]! += acc[i]!;
}

/** out = inp·Wᵀ + scale·(inp·Aᵀ)·Bᵀ; saves xa = inp·Aᵀ for the backward. */
export function linearLoraForward(
  out: Buf, // (M, O)
  xa: Buf | null, // (M, R) saved; null when lora is null
  inp: Buf, // (M, K)
  w: FrozenLinear,
  lora: LoraBranch | null,
  M: number,
): void {
  matmulForward(out, inp, w, M);
  if (!lora || !xa) return;
  const { K, O } = w;
  const { R, A, B, scale } = lora;
  for (let m = 0; m < M; m++) {
    for (let r = 0; r < R; r++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += inp[m * K + k]! * A[r * K + k]!;
      xa[m * R + r] = s;
    }
    for (let o = 0; o < O; o++) {
      let s = 0;
      for (let r = 0; r < R; r++) s += xa[m * R + r]! * B[o * R + r]!;
      out[m * O + o]! += scale * s;
    }
  }
}

/**
 * Gradient contract: dinp accumulates (+=) (fan-out of a shared input); lora.dA and lora.dB accumulate
 * (+=) (gradient accumulation across micro-batches). With dxa = scale·dout·B (M, R):
 * dB += scale·doutᵀ·xa, dA += dxaᵀ·inp, dinp += dout·W + dxa·A.
 */
export function linearLoraBackward(
  dinp: Buf | null, // (M, K); null skips the input gradient (lowest trained layer)
  dout: Buf, // (M, O)
  xa: Buf | null, // (M, R)
  inp: Buf, // (M, K)
  w: FrozenLinear,
  lora: LoraBranch | null,
  M: number,
): void {
  const { K, O } = w;
  if (lora && xa) {
    const { R, A, B, scale } = lora;
    const dA = lora.dA!;
    const dB = lora.dB!;
    const dxa = new Float64Array(M * R); // (M, R)
    const accB = new Float64Array(O * R); // (O, R)
    const accA = new Float64Array(R * K); // (R, K)
    // Loops ordered so the innermost index is contiguous in every operand.
    for (let m = 0; m < M; m++) {
      for (let o = 0; o < O; o++) {
        const g = dout[m * O + o]!;
        if (g === 0) continue;
        for (let r = 0; r < R; r++) {
          dxa[m * R + r]! += g * B[o * R + r]!;
          accB[o * R + r]! += g * xa[m * R + r]!;
        }
      }
      for (let r = 0; r < R; r++) {
        const d = dxa[m * R + r]! * scale;
        dxa[m * R + r] = d;
        for (let k = 0; k < K; k++) accA[r * K + k]! += d * inp[m * K + k]!;
      }
    }
    for (let i = 0; i < O * R; i++) dB[i]! += scale * accB[i]!;
    for (let i = 0; i < R * K; i++) dA[i]! += accA[i]!;
    if (dinp) {
      for (let m = 0; m < M; m++) {
        for (let k = 0; k < K; k++) {
          let s = 0;
          for (let r = 0; r < R; r++) s += dxa[m * R + r]! * A[r * K + k]!;
          dinp[m * K + k]! += s;
        }
      }
    }
  }
  if (dinp) matmulBackward(dinp, dout, w, M);
}
