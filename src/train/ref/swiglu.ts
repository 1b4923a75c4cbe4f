/**
 * SwiGLU gate of the Llama MLP (Shazeer 2020, arXiv:2002.05202): out = silu(gate) ⊙ up, silu(x) = x·σ(x).
 * The gate/up/down projections are separate linears (linear.ts); this is only the elementwise part.
 */
import type { Buf } from './types.ts';

export function swigluForward(
  out: Buf, // (N, I)
  gate: Buf, // (N, I)
  up: Buf, // (N, I)
  n: number, // N*I elements
): void {
  for (let i = 0; i < n; i++) {
    const g = gate[i]!;
    out[i] = (g / (1 + Math.exp(-g))) * up[i]!;
  }
}

/** Gradient contract: dgate and dup are assigned (=). silu'(g) = σ(g)·(1 + g·(1 − σ(g))). */
export function swigluBackward(
  dgate: Buf, // (N, I)
  dup: Buf, // (N, I)
  dout: Buf, // (N, I)
  gate: Buf, // (N, I)
  up: Buf, // (N, I)
  n: number,
): void {
  for (let i = 0; i < n; i++) {
    const g = gate[i]!;
    const s = 1 / (1 + Math.exp(-g));
    const d = dout[i]!;
    dgate[i] = d * up[i]! * s * (1 + g * (1 - s));
    dup[i] = d * g * s;
  }
}
