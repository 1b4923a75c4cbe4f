/**
 * Batches and LoRA modules checked and laid out for the WebGPU trainer (gpu-model.ts): token ids as u32,
 * RoPE tables from ref/rope.ts (f64 angles, as the CPU path), the key mask, next-token targets and the
 * per-row loss weights (label mask / target count), validated by cpu-model.ts's checkBatch like the CPU
 * path. No GPU calls here.
 */
import { InvalidOptionError } from '../errors.ts';
import { type Batch, checkBatch, type FrozenWeights, type LoraModule } from './cpu-model.ts';
import { ropeTables } from './ref/rope.ts';

/** A batch as the kernels read it: ids, RoPE tables, key mask, next-token targets and row weights. */
export function prepareBatch(batch: Batch, w: FrozenWeights) {
  const { V, D, ropeTheta } = w.config;
  const { B, T, tokens } = batch;
  const N = B * T;
  const positions = checkBatch(batch, V);
  const ids = Uint32Array.from(tokens); // (N)
  const cos = new Float32Array(N * D); // (N, D)
  const sin = new Float32Array(N * D); // (N, D)
  ropeTables(cos, sin, positions, N, D, ropeTheta);
  const keyMask = Float32Array.from({ length: N }, (_, i) =>
    batch.attentionMask ? (batch.attentionMask[i] ? 1 : 0) : 1,
  );
  const targets = new Uint32Array(N); // (N) next token; unused where weights are 0
  const weights = new Float64Array(N); // (N) mask / count
  let count = 0;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t + 1 < T; t++) {
      const i = b * T + t;
      targets[i] = ids[i + 1]!;
      if (batch.labelMask ? batch.labelMask[i + 1] : 1) {
        weights[i] = 1;
        count++;
      }
    }
  }
  if (count) for (let i = 0; i < N; i++) weights[i]! /= count;
  return { B, T, N, ids, cos, sin, keyMask, targets, weights, count };
}

export function validateModules(w: FrozenWeights, modules: LoraModule[]): void {
  const seen = new Set<string>();
  for (const m of modules) {
    const lin = w.layers[m.layer]?.proj[m.module];
    if (!lin)
      throw new InvalidOptionError(
        `LoRA module ${m.path}: the model has no ${m.module} in layer ${m.layer}`,
        { layer: m.layer, module: m.module },
      );
    const { R, A, B } = m.branch;
    if (!(Number.isInteger(R) && R >= 1) || A.length !== R * lin.K || B.length !== lin.O * R)
      throw new InvalidOptionError(
        `LoRA module ${m.path}: A must be [${R}, ${lin.K}] and B [${lin.O}, ${R}]`,
        { path: m.path },
      );
    const key = `${m.layer}.${m.module}`;
    if (seen.has(key))
      throw new InvalidOptionError(`two LoRA modules for layer ${m.layer} ${m.module}`, { path: m.path });
    seen.add(key);
  }
}
