/**
 * Finds the LoRA-able projections (q/k/v/o/gate/up/down per decoder layer, or the packed `qkv_proj` /
 * `gate_up_proj` of onnxruntime-genai builder and Phi-3 graphs) in an exported decoder graph.
 * A candidate is a MatMul, Gemm or com.microsoft.MatMulNBits whose weight is constant (an initializer or
 * Constant node, possibly behind a 2-D Transpose); its (layer, module) comes from the first name that
 * matches `layers.N ... <module>`: the node name (torch scope `/model/layers.0/self_attn/q_proj/MatMul`,
 * builder scope `/model/layers.0/attn/qkv_proj/MatMul_Q4`), then the weight name, then the output name.
 * in/out come from the weight's shape; the activation dtype (float32 or float16) from the weight or, for
 * MatMulNBits, its scales. A packed projection lists its parts (rows Q, K, V with the head counts of the
 * graph's GroupQueryAttention; gate then up). Nodes inside LoRA sub-scopes (`…/q_proj/lora_A/MatMul`,
 * a LoRA the builder baked in) are not targets. Int8 (MatMulInteger) and bnb4 (MatMulBnb4) projections are
 * refused with UnsupportedModelError naming the layout. This file only reads the graph; it does not look
 * inside If/Loop subgraphs (merged with/without-past exports are not supported).
 */
import { ModelFormatError, UnsupportedModelError } from '../errors.ts';
import {
  attrsOf,
  constantTensors,
  DataType,
  dimsOf,
  type GraphProto,
  getIntAttr,
  isOnnxDomain,
  MS_DOMAIN,
  type NodeProto,
  nodesOf,
  type TensorProto,
  toNum,
} from './onnx-io.ts';

export const MODULE_ORDER = [
  'q_proj',
  'k_proj',
  'v_proj',
  'o_proj',
  'gate_proj',
  'up_proj',
  'down_proj',
] as const;
export type ModuleName = (typeof MODULE_ORDER)[number];

/** Packed projections and their parts, in row order (Phi-3 PEFT modules; builder's qkv_proj). */
export const PACKED_MODULES = {
  qkv_proj: ['q_proj', 'k_proj', 'v_proj'],
  gate_up_proj: ['gate_proj', 'up_proj'],
} as const satisfies Record<string, readonly ModuleName[]>;
export type PackedModuleName = keyof typeof PACKED_MODULES;
/** A projection the graph can hold: one of the 7 modules or a packed one. */
export type GraphModuleName = ModuleName | PackedModuleName;
export const GRAPH_MODULE_ORDER: readonly GraphModuleName[] = [
  'qkv_proj',
  ...MODULE_ORDER.slice(0, 4),
  'gate_up_proj',
  ...MODULE_ORDER.slice(4),
];

/** One module's rows inside a packed projection's output: columns [offset, offset + size). */
export interface PackedPart {
  module: ModuleName;
  offset: number;
  size: number;
}

/** Activation (and LoRA-branch output) dtype of a projection. */
export type ActivationDtype = 'float32' | 'float16';

export type ProjectionKind = 'MatMul' | 'Gemm' | 'MatMulNBits';

export interface Projection {
  layer: number;
  module: GraphModuleName;
  /** Packed projections: where each module's rows are (absent when the split is unknown). */
  parts?: PackedPart[];
  dtype: ActivationDtype;
  kind: ProjectionKind;
  nodeIndex: number;
  node: NodeProto;
  /** Human label: node name, or `<opType> -> <output>` for unnamed nodes. */
  label: string;
  /** Name of the constant weight (before any Transpose). */
  weight: string;
  in: number;
  out: number;
}

const nameRe = (modules: readonly string[]) =>
  new RegExp(`(?:^|[^A-Za-z0-9])layers?[._/](\\d+)(?:[._/].*?)?[._/](${modules.join('|')})(?:[._/]|$)`);
const NAME_RE = nameRe(MODULE_ORDER);
const GRAPH_NAME_RE = nameRe(GRAPH_MODULE_ORDER);
/** A LoRA sub-scope (`…/q_proj/lora_A/MatMul`, `model.layers.0.attn.q_proj.lora_B.MatMul.weight`). */
const LORA_SCOPE_RE = /[._/]lora(?:_[AB])?[._/]/;

/** `{layer, module}` from a name such as `/model/layers.3/mlp/up_proj/MatMul`, else null. */
export function parseProjectionName(name: string): { layer: number; module: ModuleName } | null {
  const m = NAME_RE.exec(name);
  if (!m?.[1] || !m[2]) return null;
  return { layer: Number(m[1]), module: m[2] as ModuleName };
}

/** Like parseProjectionName, packed modules included; null inside LoRA sub-scopes. */
export function parseGraphModuleName(name: string): { layer: number; module: GraphModuleName } | null {
  if (LORA_SCOPE_RE.test(name)) return null;
  const m = GRAPH_NAME_RE.exec(name);
  if (!m?.[1] || !m[2]) return null;
  return { layer: Number(m[1]), module: m[2] as GraphModuleName };
}

/** Quantized projection ops weblora cannot put a LoRA branch next to, with the layout each means. */
const UNSUPPORTED_OPS: Record<string, string> = {
  MatMulInteger: 'int8 (MatMulInteger + DynamicQuantizeLinear: model_quantized/model_int8/model_uint8.onnx)',
  DynamicQuantizeMatMul: 'int8 (DynamicQuantizeMatMul)',
  MatMulIntegerToFloat: 'int8 (MatMulIntegerToFloat)',
  QLinearMatMul: 'int8 (QLinearMatMul)',
  MatMulBnb4: 'bnb4 (MatMulBnb4: model_bnb4.onnx)',
};
const SUPPORTED_LAYOUTS = 'fp32, fp16, q4 and q4f16 (MatMulNBits) files';

function checkSupported(node: NodeProto): void {
  const layout = UNSUPPORTED_OPS[node.opType];
  if (!layout) return;
  const id = parseGraphModuleName(node.name) ?? parseGraphModuleName(node.input[1] ?? '');
  if (!id) return;
  throw new UnsupportedModelError(
    `${label(node)} (${id.module}, layer ${id.layer}) is a ${node.opType} projection: the ${layout} layout ` +
      `cannot take LoRA branches here; use the ${SUPPORTED_LAYOUTS} of the same model`,
    { layout, op: node.opType, node: node.name, supported: SUPPORTED_LAYOUTS },
  );
}

/** num_heads / kv_num_heads of the graph's first com.microsoft.GroupQueryAttention, else null. */
function gqaHeads(g: GraphProto): { heads: number; kvHeads: number } | null {
  const n = nodesOf(g).find((x) => x.domain === MS_DOMAIN && x.opType === 'GroupQueryAttention');
  if (!n) return null;
  const heads = getIntAttr(n, 'num_heads', 0);
  const kvHeads = getIntAttr(n, 'kv_num_heads', heads);
  return heads > 0 && kvHeads > 0 ? { heads, kvHeads } : null;
}

/** Rows of each part of a packed projection with `out` outputs, or undefined when unknown. */
function packedParts(
  module: PackedModuleName,
  out: number,
  heads: { heads: number; kvHeads: number } | null,
): PackedPart[] | undefined {
  let sizes: number[];
  if (module === 'gate_up_proj') {
    if (out % 2 !== 0) return undefined;
    sizes = [out / 2, out / 2];
  } else {
    if (!heads || out % (heads.heads + 2 * heads.kvHeads) !== 0) return undefined;
    const hd = out / (heads.heads + 2 * heads.kvHeads);
    sizes = [heads.heads * hd, heads.kvHeads * hd, heads.kvHeads * hd];
  }
  let offset = 0;
  return PACKED_MODULES[module].map((m, i) => {
    const part = { module: m, offset, size: sizes[i]! };
    offset += part.size;
    return part;
  });
}

interface WeightInfo {
  name: string;
  /** Shape as it enters the node, after an optional Transpose. */
  dims: number[];
  dataType: number;
}

function resolveWeight(
  input: string | undefined,
  consts: Map<string, TensorProto>,
  producers: Map<string, NodeProto>,
): WeightInfo | null {
  if (!input) return null;
  const t = consts.get(input);
  if (t) return { name: input, dims: dimsOf(t), dataType: t.dataType };
  const p = producers.get(input);
  if (p?.opType !== 'Transpose' || !isOnnxDomain(p)) return null;
  const src = p.input[0] ? consts.get(p.input[0]) : undefined;
  if (!src) return null;
  const d = dimsOf(src);
  const perm = attrsOf(p)
    .find((a) => a.name === 'perm')
    ?.ints?.map((x) => toNum(x)) ?? [1, 0];
  if (d.length !== 2 || perm[0] !== 1 || perm[1] !== 0) return null;
  return { name: src.name, dims: [d[1] ?? 0, d[0] ?? 0], dataType: src.dataType };
}

function label(n: NodeProto): string {
  return n.name || `${n.opType} -> ${n.output[0] ?? '?'}`;
}

/** Every MatMul/Gemm/MatMulNBits with a constant weight, named or not (for error messages too). */
export function constantWeightMatmuls(
  g: GraphProto,
): { node: NodeProto; index: number; kind: ProjectionKind }[] {
  const out: { node: NodeProto; index: number; kind: ProjectionKind }[] = [];
  const consts = constantTensors(g);
  const producers = producerMap(g);
  nodesOf(g).forEach((node, index) => {
    const kind = kindOf(node);
    if (!kind) return;
    if (kind === 'MatMulNBits' || resolveWeight(node.input[1], consts, producers))
      out.push({ node, index, kind });
  });
  return out;
}

function kindOf(n: NodeProto): ProjectionKind | null {
  if (isOnnxDomain(n) && (n.opType === 'MatMul' || n.opType === 'Gemm')) return n.opType;
  if (n.domain === MS_DOMAIN && n.opType === 'MatMulNBits') return 'MatMulNBits';
  return null;
}

function producerMap(g: GraphProto): Map<string, NodeProto> {
  const m = new Map<string, NodeProto>();
  for (const n of nodesOf(g)) for (const o of n.output) if (o) m.set(o, n);
  return m;
}

/** All recognisable projections, in graph order (duplicates included: the caller decides). */
export function findProjections(g: GraphProto): Projection[] {
  const consts = constantTensors(g);
  const producers = producerMap(g);
  const heads = gqaHeads(g);
  const found: Projection[] = [];
  nodesOf(g).forEach((node, nodeIndex) => {
    checkSupported(node);
    const kind = kindOf(node);
    if (!kind) return;
    let weight: WeightInfo | null;
    let inDim: number;
    let outDim: number;
    if (kind === 'MatMulNBits') {
      const s = node.input[2] ? consts.get(node.input[2]) : undefined;
      weight = { name: node.input[1] ?? '', dims: [], dataType: s?.dataType ?? DataType.FLOAT };
      inDim = getIntAttr(node, 'K', 0);
      outDim = getIntAttr(node, 'N', 0);
    } else {
      weight = resolveWeight(node.input[1], consts, producers);
      if (weight?.dims.length !== 2) return;
      const [d0 = 0, d1 = 0] = weight.dims;
      const transB = kind === 'Gemm' && getIntAttr(node, 'transB', 0) === 1;
      inDim = transB ? d1 : d0;
      outDim = transB ? d0 : d1;
    }
    if ([node.name, weight.name, node.output[0] ?? ''].some((n) => LORA_SCOPE_RE.test(n))) return;
    const id =
      parseGraphModuleName(node.name) ??
      parseGraphModuleName(weight.name) ??
      parseGraphModuleName(node.output[0] ?? '');
    if (!id) return;
    const where = `${label(node)} (${id.module}, layer ${id.layer})`;
    if (weight.dataType !== DataType.FLOAT && weight.dataType !== DataType.FLOAT16) {
      throw new ModelFormatError(
        `LoRA injection needs float32 or float16 activations, but ${where} has a weight/scale of ONNX ` +
          `data_type ${weight.dataType} (expected 1 = float32 or 10 = float16)`,
        { node: node.name, dataType: weight.dataType },
      );
    }
    const dtype: ActivationDtype = weight.dataType === DataType.FLOAT16 ? 'float16' : 'float32';
    if (kind === 'Gemm' && getIntAttr(node, 'transA', 0) !== 0) {
      throw new ModelFormatError(
        `${where} is a Gemm with transA=1; expected transA=0 (activations as rows)`,
        {
          node: node.name,
        },
      );
    }
    if (!(inDim > 0 && outDim > 0)) {
      throw new ModelFormatError(`${where}: could not read in/out from the weight (got ${inDim}x${outDim})`, {
        node: node.name,
      });
    }
    const parts =
      id.module in PACKED_MODULES ? packedParts(id.module as PackedModuleName, outDim, heads) : null;
    found.push({
      ...id,
      ...(parts ? { parts } : {}),
      dtype,
      kind,
      nodeIndex,
      node,
      label: label(node),
      weight: weight.name,
      in: inDim,
      out: outDim,
    });
  });
  return found;
}
