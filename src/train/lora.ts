/**
 * LoRA parameters of the trainer in PEFT terms: A (R, in), B (out, R), scale = alpha/R (alpha/√R with
 * rsLoRA), module path `model.layers.{i}.{self_attn|mlp}.{module}`. Loading a PEFT adapter goes through
 * src/adapters/peft.ts (peftToFeeds validates keys, shapes, rank/alpha patterns and computes the scales),
 * so training starts from exactly what inference applies. Writing back gives PEFT tensor names. Fresh
 * adapters follow PEFT's default init (A Kaiming-uniform, bound 1/√in; B zero) from a seeded generator.
 */
import { type PeftLoraConfig, peftToFeeds } from '../adapters/peft.ts';
import { readFloat32, type TensorView } from '../adapters/safetensors.ts';
import { InvalidOptionError } from '../errors.ts';
import { MODULE_ORDER, type ModuleName } from '../model/targets.ts';
import type { FrozenWeights, LoraModule } from './cpu-model.ts';

export const PEFT_PREFIX = 'base_model.model.';

export function modulePath(layer: number, module: ModuleName): string {
  const parent = ['q_proj', 'k_proj', 'v_proj', 'o_proj'].includes(module) ? 'self_attn' : 'mlp';
  return `model.layers.${layer}.${parent}.${module}`;
}

/** Every (layer, module) of the frozen model with its in/out, as peft.ts expects targets. */
export function loraTargets(w: FrozenWeights): { layer: number; module: string; in: number; out: number }[] {
  return w.layers.flatMap((l, layer) =>
    MODULE_ORDER.map((module) => ({ layer, module, in: l.proj[module].K, out: l.proj[module].O })),
  );
}

/** A PEFT adapter as trainable LoRA modules (fp32 copies of A and B). */
export function loraFromPeft(
  cfg: PeftLoraConfig,
  tensors: Map<string, TensorView>,
  w: FrozenWeights,
): LoraModule[] {
  const { modules } = peftToFeeds(cfg, tensors, loraTargets(w));
  return modules.map((m) => {
    const a = tensors.get(`${PEFT_PREFIX}${m.path}.lora_A.weight`)!;
    const b = tensors.get(`${PEFT_PREFIX}${m.path}.lora_B.weight`)!;
    return {
      layer: m.layer,
      module: m.module as ModuleName,
      path: m.path,
      branch: { R: m.rank, scale: m.scale, A: readFloat32(a), B: readFloat32(b), dA: null, dB: null },
    };
  });
}

/** PEFT tensor names → (values, shape), for writeSafetensors or comparisons. */
export function loraToPeft(modules: LoraModule[]): Map<string, { data: Float32Array; shape: number[] }> {
  const out = new Map<string, { data: Float32Array; shape: number[] }>();
  for (const m of modules) {
    const { R, A, B } = m.branch;
    out.set(`${PEFT_PREFIX}${m.path}.lora_A.weight`, {
      data: Float32Array.from(A),
      shape: [R, A.length / R],
    });
    out.set(`${PEFT_PREFIX}${m.path}.lora_B.weight`, {
      data: Float32Array.from(B),
      shape: [B.length / R, R],
    });
  }
  return out;
}

/** mulberry32: a tiny seeded uniform generator in [0, 1) (same seed ⇒ same adapter). */
export function seededUniform(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface LoraInit {
  rank: number; // 1..64
  alpha: number;
  targets: readonly ModuleName[];
  layers?: readonly number[]; // default: all
  rslora?: boolean;
  seed: number;
}

/** A fresh adapter: A ~ U(−1/√in, 1/√in) (PEFT's kaiming_uniform_(a=√5)), B = 0, so it starts as a no-op. */
export function initLora(w: FrozenWeights, o: LoraInit): LoraModule[] {
  if (!(Number.isInteger(o.rank) && o.rank >= 1 && o.rank <= 64))
    throw new InvalidOptionError(`rank must be an integer in 1..64 (got ${o.rank})`, { rank: o.rank });
  const layers = o.layers ?? w.layers.map((_, i) => i);
  for (const l of layers)
    if (!(Number.isInteger(l) && l >= 0 && l < w.layers.length))
      throw new InvalidOptionError(`layer ${l} is not in 0..${w.layers.length - 1}`, { layer: l });
  for (const t of o.targets)
    if (!MODULE_ORDER.includes(t)) throw new InvalidOptionError(`unknown target module ${t}`, { module: t });
  const rnd = seededUniform(o.seed);
  const R = o.rank;
  const scale = o.rslora ? o.alpha / Math.sqrt(R) : o.alpha / R;
  const out: LoraModule[] = [];
  for (const layer of [...layers].sort((a, b) => a - b)) {
    for (const module of MODULE_ORDER) {
      if (!o.targets.includes(module)) continue;
      const { K, O } = w.layers[layer]!.proj[module];
      const bound = 1 / Math.sqrt(K);
      const A = Float32Array.from({ length: R * K }, () => (2 * rnd() - 1) * bound);
      out.push({
        layer,
        module,
        path: modulePath(layer, module),
        branch: { R, scale, A, B: new Float32Array(O * R), dA: null, dB: null },
      });
    }
  }
  return out;
}
