/**
 * Adapters made in this app (trained, merged, truncated) written out as Hugging Face PEFT files, exactly
 * as PEFT names and lays them out, so they export and re-import like any other adapter. It deliberately
 * does no validation beyond shapes: a written adapter is imported through import.ts like any other.
 */
import { AdapterModuleError, AdapterShapeError } from '../errors.ts';
import { CONFIG_FILE, type PeftFiles, WEIGHTS_FILE } from './import.ts';
import { type TensorView, writeSafetensors } from './safetensors.ts';

const PARENT: Record<string, string> = {
  q_proj: 'self_attn',
  k_proj: 'self_attn',
  v_proj: 'self_attn',
  o_proj: 'self_attn',
  gate_proj: 'mlp',
  up_proj: 'mlp',
  down_proj: 'mlp',
};

/** PEFT module path of a target, e.g. `model.layers.3.self_attn.q_proj`. */
export function peftModulePath(layer: number, module: string): string {
  const parent = PARENT[module];
  if (!parent) throw new AdapterModuleError(`unknown LoRA module ${module}`, { module });
  return `model.layers.${layer}.${parent}.${module}`;
}

export interface InAppModuleWeights {
  layer: number;
  module: string;
  /** lora_A (r, in) and lora_B (out, r), PEFT layout, row-major. */
  A: Float32Array;
  B: Float32Array;
  in: number;
  out: number;
}

export interface InAppAdapter {
  baseModel: string;
  r: number;
  loraAlpha: number;
  useRslora?: boolean;
  modules: InAppModuleWeights[];
}

/**
 * PEFT files for an adapter trained here: keys `base_model.model.model.layers.{i}.{self_attn|mlp}.{module}
 * .lora_A.weight` [r, in] / `.lora_B.weight` [out, r], F32, written by safetensors.ts (canonical layout);
 * modules whose rank differs from `r` get a full-path `rank_pattern` entry, as PEFT would write.
 */
export function buildPeftFiles(a: InAppAdapter): PeftFiles {
  const tensors = new Map<string, TensorView>();
  const rankPattern: Record<string, number> = {};
  const targetModules = new Set<string>();
  for (const m of a.modules) {
    const path = peftModulePath(m.layer, m.module);
    const r = m.A.length / m.in;
    if (!Number.isInteger(r) || r * m.out !== m.B.length) {
      throw new AdapterShapeError(
        `${path}: A has ${m.A.length} values and B ${m.B.length}; need r·${m.in} and ${m.out}·r`,
        {
          module: path,
        },
      );
    }
    if (r !== a.r) rankPattern[path] = r;
    targetModules.add(m.module);
    const f32 = (x: Float32Array): Uint8Array => {
      const c = new Float32Array(x);
      return new Uint8Array(c.buffer);
    };
    tensors.set(`base_model.model.${path}.lora_A.weight`, { dtype: 'F32', shape: [r, m.in], data: f32(m.A) });
    tensors.set(`base_model.model.${path}.lora_B.weight`, {
      dtype: 'F32',
      shape: [m.out, r],
      data: f32(m.B),
    });
  }
  const config = {
    alpha_pattern: {},
    base_model_name_or_path: a.baseModel,
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layers_pattern: null,
    layers_to_transform: null,
    lora_alpha: a.loraAlpha,
    lora_dropout: 0.0,
    modules_to_save: null,
    peft_type: 'LORA',
    r: a.r,
    rank_pattern: rankPattern,
    revision: null,
    target_modules: [...targetModules].sort(),
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: a.useRslora ?? false,
  };
  return {
    [CONFIG_FILE]: new TextEncoder().encode(JSON.stringify(config, null, 2)),
    [WEIGHTS_FILE]: writeSafetensors(tensors, { format: 'pt' }),
  } as PeftFiles;
}
