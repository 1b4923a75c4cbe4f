/**
 * Shared loading for the WebGPU trainer tests (browser side of tests/unit/train/helpers.ts): the default
 * model package as frozen weights (fetched from /models/, fp32 or q4), the peft-adapter fixture as LoRA
 * modules and the lora-grads / adamw-trajectory fixtures (fetched from /tests/fixtures/, checked fresh
 * against model.onnx's sha256), a tiny random decoder for fast GPU-vs-CPU and finite-difference checks,
 * and the relative error ‖g − g*‖/‖g*‖. No assertions here.
 */
import { parsePeftConfig } from '../../src/adapters/peft.ts';
import {
  parseSafetensors,
  readFloat32,
  readInt32,
  type Safetensors,
} from '../../src/adapters/safetensors.ts';
import { decodeModel } from '../../src/model/onnx-io.ts';
import { parseModelConfig } from '../../src/model/package.ts';
import type { ModuleName } from '../../src/model/targets.ts';
import type { FrozenWeights, LoraModule } from '../../src/train/cpu-model.ts';
import { loraFromPeft, modulePath } from '../../src/train/lora.ts';
import { decoderConfig, loadFrozenWeights } from '../../src/train/weights.ts';
import { rand as rand64 } from '../helpers/tiny-decoder.ts';

export const MODEL_BASE = '/models/weblora-shakespeare/';

export async function bytes(url: string): Promise<Uint8Array> {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

async function sha256(b: Uint8Array): Promise<string> {
  const h = new Uint8Array(await crypto.subtle.digest('SHA-256', b as Uint8Array<ArrayBuffer>));
  return Array.from(h, (x) => x.toString(16).padStart(2, '0')).join('');
}

export interface DefaultModel {
  weights: FrozenWeights;
  onnx: Uint8Array;
}

const models = new Map<string, Promise<DefaultModel>>();

/** The default model package's frozen weights (cached per file). */
export function defaultModel(which: 'fp32' | 'q4'): Promise<DefaultModel> {
  let p = models.get(which);
  if (!p) {
    p = (async () => {
      const cfg = decoderConfig(
        parseModelConfig(JSON.parse(new TextDecoder().decode(await bytes(`${MODEL_BASE}config.json`)))),
      );
      const onnx = await bytes(`${MODEL_BASE}onnx/${which === 'q4' ? 'model_q4.onnx' : 'model.onnx'}`);
      return { weights: loadFrozenWeights(decodeModel(onnx), cfg), onnx };
    })();
    models.set(which, p);
  }
  return p;
}

/** A fixture file, checked to be made for the model.onnx being served (as tests/helpers/fixtures.ts). */
export async function fixture(name: 'lora-grads' | 'adamw-trajectory'): Promise<Safetensors> {
  const st = parseSafetensors(await bytes(`/tests/fixtures/${name}.safetensors`));
  const have = await sha256((await defaultModel('fp32')).onnx);
  if (st.metadata.model_sha256 !== have)
    throw new Error(
      `fixtures are stale: ${name} was made for model.onnx ${st.metadata.model_sha256}, served ${have}`,
    );
  return st;
}

export const f32 = (st: Safetensors, key: string): Float32Array => readFloat32(st.tensors.get(key)!);
export const i32 = (st: Safetensors, key: string): number[] => Array.from(readInt32(st.tensors.get(key)!));

/** peft-adapter as fresh trainable modules (new copies every call), plus its parsed config. */
export async function peftAdapter(w: FrozenWeights) {
  const base = '/tests/fixtures/peft-adapter/';
  const config = parsePeftConfig(new TextDecoder().decode(await bytes(`${base}adapter_config.json`)));
  const st = parseSafetensors(await bytes(`${base}adapter_model.safetensors`));
  return { config, modules: loraFromPeft(config, st.tensors, w) };
}

export { relErr, TINY, tinyWeights } from '../helpers/tiny-decoder.ts';

/** Deterministic uniform values in [-scale, scale) as float32 (the shared xorshift32 source). */
export function rand(n: number, seed: number, scale = 1): Float32Array {
  return Float32Array.from(rand64(n, seed, scale));
}

/** LoRA on a mixed subset (rank 2, scale 1.5, B non-zero so every gradient path is live). */
export function tinyModules(w: FrozenWeights, seed = 7): LoraModule[] {
  const picks: [number, ModuleName][] = [
    [0, 'v_proj'],
    [0, 'down_proj'],
    [1, 'q_proj'],
    [1, 'k_proj'],
    [1, 'o_proj'],
    [1, 'gate_proj'],
    [1, 'up_proj'],
  ];
  const R = 2;
  return picks.map(([layer, module], i) => {
    const { K, O } = w.layers[layer]!.proj[module];
    return {
      layer,
      module,
      path: modulePath(layer, module),
      branch: {
        R,
        scale: 1.5,
        A: rand(R * K, seed + 2 * i, 0.5),
        B: rand(O * R, seed + 2 * i + 1, 0.5),
        dA: null,
        dB: null,
      },
    };
  });
}

/** A tiny batch: B 2, T 6, a completion-only label mask and a padded (masked) last key in row 1. */
export function tinyBatch() {
  const T = 6;
  return {
    B: 2,
    T,
    tokens: [1, 5, 9, 30, 2, 7, 3, 3, 17, 8, 21, 0],
    labelMask: [0, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0],
    attentionMask: [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0],
  };
}
