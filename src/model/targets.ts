/**
 * Finds the LoRA-able projections (q/k/v/o/gate/up/down per decoder layer) in an exported decoder graph.
 * A candidate is a MatMul, Gemm or com.microsoft.MatMulNBits whose weight is constant (an initializer or
 * Constant node, possibly behind a 2-D Transpose); its (layer, module) comes from the first name that
 * matches `layers.N ... <module>`: the node name (torch scope `/model/layers.0/self_attn/q_proj/MatMul`),
 * then the weight name (`model.layers.0.self_attn.q_proj.weight`), then the output name. in/out come from
 * the weight's shape. This file only reads the graph; it does not look inside If/Loop subgraphs (merged
 * with/without-past exports are not supported) and does not judge whether the model is a Llama.
 */
import { ModelFormatError } from '../errors.ts';
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

export type ProjectionKind = 'MatMul' | 'Gemm' | 'MatMulNBits';

export interface Projection {
  layer: number;
  module: ModuleName;
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

const NAME_RE = new RegExp(
  `(?:^|[^A-Za-z0-9])layers?[._/](\\d+)(?:[._/].*?)?[._/](${MODULE_ORDER.join('|')})(?:[._/]|$)`,
);

/** `{layer, module}` from a name such as `/model/layers.3/mlp/up_proj/MatMul`, else null. */
export function parseProjectionName(name: string): { layer: number; module: ModuleName } | null {
  const m = NAME_RE.exec(name);
  if (!m?.[1] || !m[2]) return null;
  return { layer: Number(m[1]), module: m[2] as ModuleName };
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
  const found: Projection[] = [];
  nodesOf(g).forEach((node, nodeIndex) => {
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
    const id =
      parseProjectionName(node.name) ??
      parseProjectionName(weight.name) ??
      parseProjectionName(node.output[0] ?? '');
    if (!id) return;
    const where = `${label(node)} (${id.module}, layer ${id.layer})`;
    if (weight.dataType !== DataType.FLOAT) {
      throw new ModelFormatError(
        `LoRA injection needs float32 activations, but ${where} has a weight/scale of ONNX data_type ` +
          `${weight.dataType} (expected 1 = float32); export the base model in fp32`,
        { node: node.name, dataType: weight.dataType },
      );
    }
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
    found.push({
      ...id,
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
