/**
 * Token embedding lookup (nn.Embedding / ONNX Gather). The base embedding is frozen, so training never
 * needs its gradient; the backward exists for completeness and for finite-difference tests. Token ids are
 * not range-checked here (the model checks them once per batch).
 */
import type { Buf } from './types.ts';

export function embeddingForward(
  out: Buf, // (N, C)
  tokens: ArrayLike<number>, // (N)
  wte: Buf, // (V, C)
  N: number,
  C: number,
): void {
  for (let i = 0; i < N; i++) {
    const t = tokens[i]!;
    out.set(wte.subarray(t * C, t * C + C), i * C);
  }
}

/** Gradient contract: dwte accumulates (+=); a token seen twice adds both rows. */
export function embeddingBackward(
  dwte: Buf, // (V, C)
  dout: Buf, // (N, C)
  tokens: ArrayLike<number>, // (N)
  N: number,
  C: number,
): void {
  for (let i = 0; i < N; i++) {
    const t = tokens[i]!;
    for (let c = 0; c < C; c++) dwte[t * C + c]! += dout[i * C + c]!;
  }
}
