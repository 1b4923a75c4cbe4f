/**
 * Random LoRA feeds and the per-row graph form shared by the branch and batch-form benches
 * (branch-profile.ts, batch-forms.ts, batch-forms-webgpu.test.ts): the same seeds give the same
 * adapter in every run and in every script.
 */
import type { Ort, OrtTensor } from '../src/engine/session.ts';
import type { LoraTarget } from '../src/model/inject-lora.ts';
import { einsum } from '../src/model/lora-nodes.ts';
import {
  attrsOf,
  cloneGraph,
  DataType,
  graphOf,
  inputsOf,
  type ModelProto,
  nodesOf,
  tensorValueInfo,
  withGraph,
} from '../src/model/onnx-io.ts';

/** Deterministic uniform(-s, s) values (xorshift32). */
export function uniform(n: number, s: number, seed: number): Float32Array {
  let x = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = ((x >>> 0) / 2 ** 32 - 0.5) * 2 * s;
  }
  return out;
}

/**
 * A rank-`rank` adapter on every target: A (in, rank) uniform(±1/√in), B (rank, out) uniform(±0.05), large
 * enough to move the logits. Tensors take consecutive seeds from `seed` (A then B, target by target).
 */
export function randomLoraFeeds(
  ort: Ort,
  targets: readonly LoraTarget[],
  rank: number,
  seed: number,
): Record<string, OrtTensor> {
  const feeds: Record<string, OrtTensor> = {};
  let s = seed;
  for (const t of targets) {
    feeds[t.inputA] = new ort.Tensor('float32', uniform(t.in * rank, 1 / Math.sqrt(t.in), s++), [t.in, rank]);
    feeds[t.inputB] = new ort.Tensor('float32', uniform(rank * t.out, 0.05, s++), [rank, t.out]);
  }
  return feeds;
}

/**
 * The per-row form's graph: LoRA A/B inputs declared (lora_rows, in, R) and (lora_rows, R, out); an Einsum
 * branch (the webgpu operator) gets per-row equations, `abi,ir->abr` → `abi,air->abr` and `abr,ro->abo` →
 * `abr,aro->abo` (a MatMul branch broadcasts over the rows as it is).
 */
export function perRowGraph(model: ModelProto, targets: readonly LoraTarget[]): ModelProto {
  const g = graphOf(model);
  const byName = new Map<string, readonly (number | string)[]>();
  for (const t of targets) {
    byName.set(t.inputA, ['lora_rows', t.in, 'lora_rank']);
    byName.set(t.inputB, ['lora_rows', 'lora_rank', t.out]);
  }
  const input = inputsOf(g).map((v) => {
    const dims = byName.get(v.name);
    return dims ? tensorValueInfo(v.name, DataType.FLOAT, dims) : v;
  });
  const node = nodesOf(g).map((n) => {
    if (n.opType !== 'Einsum' || !(n.name ?? '').startsWith('/lora.')) return n;
    const eq = new TextDecoder().decode(attrsOf(n).find((a) => a.name === 'equation')!.s!);
    const [ins, out] = eq.split('->') as [string, string];
    const [x, w] = ins.split(',') as [string, string];
    return einsum(n.name, `${x},${x[0]}${w}->${out}`, [...n.input], n.output[0]!);
  });
  return withGraph(model, cloneGraph(g, { input, node }));
}
