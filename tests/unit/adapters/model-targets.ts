/**
 * Shared by the adapter import/mix/fuzz unit tests: the default model's LoRA targets (from its config:
 * 6 layers, hidden 256, kv 4×32, intermediate 704, all 7 modules, as injectLora finds them), the model
 * info adapters are checked against, and byte-level helpers to build malformed safetensors files.
 */
import type { AdapterModelInfo } from '../../../src/adapters/import.ts';
import type { TensorView } from '../../../src/adapters/safetensors.ts';
import { type LoraModule, type LoraTarget, loraInputName } from '../../../src/model/inject-lora.ts';

const H = 256;
const KV = 4 * 32;
const I = 704;
/** [in, out] of each LoRA target module of the default model. */
export const MODEL_DIMS: Record<LoraModule, [number, number]> = {
  q_proj: [H, H],
  k_proj: [H, KV],
  v_proj: [H, KV],
  o_proj: [H, H],
  gate_proj: [H, I],
  up_proj: [H, I],
  down_proj: [I, H],
};

export function modelTargets(layers = 6): LoraTarget[] {
  const out: LoraTarget[] = [];
  for (let layer = 0; layer < layers; layer++) {
    for (const module of Object.keys(MODEL_DIMS) as LoraModule[]) {
      const [i, o] = MODEL_DIMS[module];
      out.push({
        layer,
        module,
        in: i,
        out: o,
        node: `/model/layers.${layer}/${module}/MatMul`,
        inputA: loraInputName(layer, module, 'A'),
        inputB: loraInputName(layer, module, 'B'),
      });
    }
  }
  return out;
}

export const TARGETS = modelTargets();

/**
 * The fixtures declare base_model_name_or_path "model" (the checkpoint folder scripts/py/fixtures.py
 * loads), so the test model lists it as an alias of weblora-shakespeare.
 */
export const MODEL: AdapterModelInfo = { id: 'weblora-shakespeare', aliases: ['model'], targets: TARGETS };

/** A safetensors file from a header object and a data section, with no validation at all. */
export function rawSafetensors(header: unknown, data: Uint8Array, headerLen?: number): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLen ?? json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

/** Header JSON and data section of a safetensors file (no validation). */
export function splitSafetensors(bytes: Uint8Array): { header: Record<string, unknown>; data: Uint8Array } {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  return {
    header: JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))),
    data: bytes.subarray(8 + n),
  };
}

/** f32 → IEEE half bits, round to nearest even (subnormals and overflow handled). */
export function f32ToF16Bits(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0]!;
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++; // may carry into the exponent: still correct
  return sign | h;
}

/** f32 → bfloat16 bits, round to nearest even. */
export function f32ToBf16Bits(x: number): number {
  const u = new Uint32Array(new Float32Array([x]).buffer)[0]!;
  const lsb = (u >>> 16) & 1;
  return ((u + 0x7fff + lsb) >>> 16) & 0xffff;
}

/** A copy of an F32 tensor converted to F16 or BF16. */
export function convertTensor(t: TensorView, dtype: 'F16' | 'BF16'): TensorView {
  const src = new Float32Array(t.data.slice().buffer);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++)
    out[i] = dtype === 'F16' ? f32ToF16Bits(src[i]!) : f32ToBf16Bits(src[i]!);
  return { dtype, shape: t.shape, data: new Uint8Array(out.buffer) };
}
