/**
 * Names the decoder layout of an ONNX graph from what the graph contains — ops, scopes, initializer and I/O
 * types — never from a file name or config.json (../shared/docs/model-layouts.md lists the layouts):
 * Optimum/torch.onnx exports (`/model/layers.N/self_attn/…` scopes) vs onnxruntime-genai builder graphs
 * (GroupQueryAttention, SkipSimplifiedLayerNormalization, `/attn/qkv_proj`), the weight format (fp32, fp16,
 * q4 = MatMulNBits with fp32 scales, q4f16 = fp16 scales, int8 = MatMulInteger family, bnb4), packed QKV,
 * where rotary happens, optional inputs, external data and the KV dtype. It is a report for the loader, the
 * load report and error messages; the graph passes (targets.ts, inject-lora.ts) and the runtime (session.ts)
 * read the same facts themselves and do not depend on it.
 */
import {
  DataType,
  dimsOf,
  getIntAttr,
  graphOf,
  initializersOf,
  inputsOf,
  isExternal,
  type ModelProto,
  MS_DOMAIN,
  nodesOf,
} from './onnx-io.ts';
import { parseGraphModuleName } from './targets.ts';

export type WeightFormat = 'fp32' | 'fp16' | 'q4' | 'q4f16' | 'int8' | 'bnb4';

export interface DecoderLayout {
  /** 'builder': onnxruntime-genai model builder; 'optimum': torch.onnx export scopes; else 'unknown'. */
  family: 'optimum' | 'builder' | 'unknown';
  weights: WeightFormat;
  /** Q, K and V in one projection (`qkv_proj`). */
  packedQkv: boolean;
  /** Rotary inside GroupQueryAttention (do_rotary=1), in RotaryEmbedding nodes, or as plain graph ops. */
  rotary: 'gqa' | 'rotary-nodes' | 'graph';
  positionIds: boolean;
  numLogitsToKeep: boolean;
  /** Some initializer lives in an external-data file (`.onnx_data`). */
  externalData: boolean;
  /** Element type of `past_key_values.*`, or null when the graph has no KV inputs. */
  kvDtype: 'float32' | 'float16' | null;
}

const INT8_OPS = new Set(['MatMulInteger', 'DynamicQuantizeMatMul', 'MatMulIntegerToFloat', 'QLinearMatMul']);

export function detectLayout(model: ModelProto): DecoderLayout {
  const g = graphOf(model);
  const nodes = nodesOf(g);
  const inits = new Map(initializersOf(g).map((t) => [t.name, t]));
  const ms = (op: string) => nodes.filter((n) => n.domain === MS_DOMAIN && n.opType === op);
  const gqa = ms('GroupQueryAttention');
  const builder =
    gqa.length > 0 ||
    ms('SkipSimplifiedLayerNormalization').length > 0 ||
    nodes.some((n) => /\/model\/layers\.\d+\/attn\//.test(n.name));
  const optimum = nodes.some((n) => /\/model\/layers\.\d+\/self_attn\//.test(n.name));

  let weights: WeightFormat;
  const nbits = ms('MatMulNBits');
  if (nodes.some((n) => INT8_OPS.has(n.opType))) weights = 'int8';
  else if (ms('MatMulBnb4').length > 0) weights = 'bnb4';
  else if (nbits.length > 0) {
    const scales = inits.get(nbits[0]!.input[2] ?? '');
    weights = scales?.dataType === DataType.FLOAT16 ? 'q4f16' : 'q4';
  } else {
    // The float format most weight bytes are stored in.
    let f32 = 0;
    let f16 = 0;
    for (const t of inits.values()) {
      const n = dimsOf(t).reduce((a, b) => a * b, 1);
      if (t.dataType === DataType.FLOAT) f32 += n;
      else if (t.dataType === DataType.FLOAT16) f16 += n;
    }
    weights = f16 > f32 ? 'fp16' : 'fp32';
  }

  const inputs = inputsOf(g);
  const kv = inputs.find((i) => i.name.startsWith('past_key_values.'));
  const kvElem = kv?.type?.tensorType?.elemType;
  return {
    family: builder ? 'builder' : optimum ? 'optimum' : 'unknown',
    weights,
    packedQkv: nodes.some((n) => parseGraphModuleName(n.name)?.module === 'qkv_proj'),
    rotary: gqa.some((n) => getIntAttr(n, 'do_rotary', 0) === 1)
      ? 'gqa'
      : ms('RotaryEmbedding').length > 0
        ? 'rotary-nodes'
        : 'graph',
    positionIds: inputs.some((i) => i.name === 'position_ids'),
    numLogitsToKeep: inputs.some((i) => i.name === 'num_logits_to_keep'),
    externalData: [...inits.values()].some(isExternal),
    kvDtype: kv ? (kvElem === DataType.FLOAT16 ? 'float16' : 'float32') : null,
  };
}
