/**
 * RMSNorm (Zhang & Sennrich 2019, arXiv:1910.07467) as in scripts/py/model.py and the exported graph:
 * y = x · (mean(x²) + eps)^(-1/2) · w. Saves rstd (one number per row) for the backward, like llm.c's
 * layernorm saves mean/rstd. No bias, no mean subtraction (that is LayerNorm, not used by Llama).
 */
import type { Buf } from './types.ts';

export function rmsnormForward(
  out: Buf, // (N, C)
  rstd: Buf, // (N) saved: 1 / sqrt(mean(x²) + eps)
  inp: Buf, // (N, C)
  weight: Buf, // (C)
  N: number,
  C: number,
  eps: number,
): void {
  for (let i = 0; i < N; i++) {
    const o = i * C;
    let ss = 0;
    for (let c = 0; c < C; c++) ss += inp[o + c]! * inp[o + c]!;
    const r = 1 / Math.sqrt(ss / C + eps);
    rstd[i] = r;
    for (let c = 0; c < C; c++) out[o + c] = inp[o + c]! * r * weight[c]!;
  }
}

/**
 * Gradient contract: dinp accumulates (+=) because the input is the residual stream; dweight (optional,
 * the norm weights are frozen in LoRA training) accumulates (+=).
 * dx_j = r·w_j·g_j − (r³/C)·x_j·Σ_i w_i·g_i·x_i, with r = rstd.
 */
export function rmsnormBackward(
  dinp: Buf, // (N, C)
  dweight: Buf | null, // (C)
  dout: Buf, // (N, C)
  inp: Buf, // (N, C)
  weight: Buf, // (C)
  rstd: Buf, // (N)
  N: number,
  C: number,
): void {
  for (let i = 0; i < N; i++) {
    const o = i * C;
    const r = rstd[i]!;
    let dot = 0;
    for (let c = 0; c < C; c++) dot += weight[c]! * dout[o + c]! * inp[o + c]!;
    const k = (r * r * r * dot) / C;
    for (let c = 0; c < C; c++) {
      dinp[o + c]! += r * weight[c]! * dout[o + c]! - k * inp[o + c]!;
      if (dweight) dweight[c]! += dout[o + c]! * inp[o + c]! * r;
    }
  }
}
