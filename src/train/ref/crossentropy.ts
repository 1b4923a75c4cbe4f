/**
 * Masked mean next-token cross-entropy from logits (softmax fused in, computed in f64 per row). The
 * caller turns the loss mask into per-row weights (mask / number of counted rows), so the same backward
 * serves a plain mean, completion-only loss, padding and token-weighted gradient accumulation. Rows with
 * weight 0 get zero gradient. No label smoothing, no z-loss.
 */
import type { Buf } from './types.ts';

/** losses[i] = logsumexp(logits_i) − logits_i[targets_i], for every row (weights are applied by the caller). */
export function crossEntropyForward(
  losses: Buf, // (N)
  logits: Buf, // (N, V)
  targets: ArrayLike<number>, // (N)
  N: number,
  V: number,
): void {
  for (let i = 0; i < N; i++) {
    const o = i * V;
    let max = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < V; j++) if (logits[o + j]! > max) max = logits[o + j]!;
    let sum = 0;
    for (let j = 0; j < V; j++) sum += Math.exp(logits[o + j]! - max);
    losses[i] = max + Math.log(sum) - logits[o + targets[i]!]!;
  }
}

/**
 * Gradient of Σ_i weights_i·losses_i. Gradient contract: dlogits is assigned (=); it may alias logits
 * (each row is read fully before it is written).
 */
export function crossEntropyBackward(
  dlogits: Buf, // (N, V)
  logits: Buf, // (N, V)
  targets: ArrayLike<number>, // (N)
  weights: ArrayLike<number>, // (N)
  N: number,
  V: number,
): void {
  for (let i = 0; i < N; i++) {
    const o = i * V;
    const w = weights[i]!;
    if (w === 0) {
      dlogits.fill(0, o, o + V);
      continue;
    }
    let max = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < V; j++) if (logits[o + j]! > max) max = logits[o + j]!;
    let sum = 0;
    for (let j = 0; j < V; j++) sum += Math.exp(logits[o + j]! - max);
    const lse = max + Math.log(sum);
    for (let j = 0; j < V; j++) dlogits[o + j] = Math.exp(logits[o + j]! - lse) * w;
    dlogits[o + targets[i]!]! -= w;
  }
}
