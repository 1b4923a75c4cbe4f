/**
 * Shared types of the plain-TypeScript training reference (src/train/ref/*): the oracle the WGSL kernels
 * are tested against, and the CPU fallback. Every layer function follows llm.c's order:
 * `opForward(outputs, saved, inputs, sizes)`, `opBackward(input grads, param grads, output grads, saved,
 * inputs, sizes)`, with a shape comment on every buffer. Shape key, written once for all of src/train:
 *   B=batch, T=tokens per row, N=B*T rows, C=channels (hidden), V=vocab, R=LoRA rank, H=query heads,
 *   Hkv=key/value heads, D=head dim, I=intermediate (MLP), K=in features, O=out features.
 * Activation buffers are `Buf` so the same code runs in float32 (the engine) or float64 (finite-difference
 * tests); sums are accumulated in JS numbers (f64) and rounded once on store.
 */
export type Buf = Float32Array | Float64Array;

/** A zeroed buffer of the given precision. */
export function alloc(n: number, f64 = false): Buf {
  return f64 ? new Float64Array(n) : new Float32Array(n);
}
