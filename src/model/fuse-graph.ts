/**
 * The small graph toolkit the fusion passes (fuse-decoder.ts, fuse-rotary.ts) share: producer / consumer
 * maps, constant lookup, node construction and dead-node pruning, over a mutable copy of a graph's node
 * list. Nothing here knows about decoders.
 */
import { halfBitsToFloat } from './half.ts';
import {
  attrsOf,
  constantTensors,
  DataType,
  float32Reader,
  type GraphProto,
  isExternal,
  isOnnxDomain,
  makeTensor,
  type NodeProto,
  nodesOf,
  onnx,
  outputsOf,
  type TensorProto,
  toNum,
} from './onnx-io.ts';

export interface Net {
  nodes: NodeProto[];
  producer: Map<string, NodeProto>;
  consumers: Map<string, NodeProto[]>;
  consts: Map<string, TensorProto>;
  /** Initializers the passes add. */
  added: TensorProto[];
  graphOutputs: Set<string>;
}

export function netOf(g: GraphProto): Net {
  const net: Net = {
    // Shallow copies: the passes rewire inputs, and the input model's nodes must stay as they are.
    nodes: nodesOf(g).map((n) => onnx.NodeProto.create({ ...n, input: [...n.input], output: [...n.output] })),
    producer: new Map(),
    consumers: new Map(),
    consts: constantTensors(g),
    added: [],
    graphOutputs: new Set(outputsOf(g).map((o) => o.name)),
  };
  // torch.onnx deduplicates equal initializers into Identity nodes (e.g. every RMSNorm weight of a fresh
  // model is all ones): such an Identity's output is the same constant.
  for (const n of net.nodes) {
    const t = n.opType === 'Identity' && isOnnxDomain(n) ? net.consts.get(n.input[0] ?? '') : undefined;
    if (t && n.output[0]) net.consts.set(n.output[0], t);
  }
  reindex(net);
  return net;
}

/** Rebuilds the producer / consumer maps after the node list changed. */
export function reindex(net: Net): void {
  net.producer.clear();
  net.consumers.clear();
  for (const n of net.nodes) {
    for (const o of n.output) if (o) net.producer.set(o, n);
    for (const i of n.input) {
      if (!i) continue;
      const list = net.consumers.get(i);
      if (list) list.push(n);
      else net.consumers.set(i, [n]);
    }
  }
}

/** The node writing `name` when it has type `op` in the default domain (or `domain`), else null. */
export function producedBy(net: Net, name: string | undefined, op: string, domain = ''): NodeProto | null {
  if (!name) return null;
  const n = net.producer.get(name);
  if (!n || n.opType !== op) return null;
  if (domain ? n.domain !== domain : !isOnnxDomain(n)) return null;
  return n;
}

/** A constant's values as numbers (float32, float16, int64, int32), or null. */
export function constValues(net: Net, name: string | undefined): number[] | null {
  if (!name) return null;
  const t = net.consts.get(name);
  if (!t || isExternal(t)) return null;
  const raw = t.rawData && t.rawData.byteLength > 0 ? t.rawData : null;
  switch (t.dataType) {
    case DataType.FLOAT: {
      const v = float32Reader(t);
      return Array.from({ length: v.byteLength / 4 }, (_, i) => v.getFloat32(i * 4, true));
    }
    case DataType.FLOAT16: {
      if (!raw) return t.int32Data.map((b) => halfBitsToFloat(b));
      const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
      return Array.from({ length: raw.byteLength / 2 }, (_, i) => halfBitsToFloat(v.getUint16(i * 2, true)));
    }
    case DataType.INT64:
      if (raw) {
        const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
        return Array.from({ length: raw.byteLength / 8 }, (_, i) => Number(v.getBigInt64(i * 8, true)));
      }
      return t.int64Data.map((x) => toNum(x));
    case 6: // INT32
      if (raw) {
        const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
        return Array.from({ length: raw.byteLength / 4 }, (_, i) => v.getInt32(i * 4, true));
      }
      return [...t.int32Data];
    default:
      return null;
  }
}

/** A single-valued constant, or null. */
export function scalarOf(net: Net, name: string | undefined): number | null {
  const v = constValues(net, name);
  return v && v.length === 1 ? v[0]! : null;
}

export function intsAttr(node: NodeProto, name: string): number[] | null {
  const a = attrsOf(node).find((x) => x.name === name);
  return a ? a.ints.map((x) => toNum(x)) : null;
}

export interface Attrs {
  ints?: Record<string, number>;
  intLists?: Record<string, number[]>;
  floats?: Record<string, number>;
  strings?: Record<string, string>;
}

export function makeNode(
  opType: string,
  input: string[],
  output: string[],
  name: string,
  attrs: Attrs = {},
  domain = '',
): NodeProto {
  const T = onnx.AttributeProto.AttributeType;
  const attribute = [
    ...Object.entries(attrs.ints ?? {}).map(([k, i]) =>
      onnx.AttributeProto.create({ name: k, type: T.INT, i }),
    ),
    ...Object.entries(attrs.intLists ?? {}).map(([k, ints]) =>
      onnx.AttributeProto.create({ name: k, type: T.INTS, ints }),
    ),
    ...Object.entries(attrs.floats ?? {}).map(([k, f]) =>
      onnx.AttributeProto.create({ name: k, type: T.FLOAT, f }),
    ),
    ...Object.entries(attrs.strings ?? {}).map(([k, v]) =>
      onnx.AttributeProto.create({ name: k, type: T.STRING, s: new TextEncoder().encode(v) }),
    ),
  ];
  return onnx.NodeProto.create({ name, opType, input, output, attribute, ...(domain ? { domain } : {}) });
}

/** An int64 initializer (added once per name). */
export function int64Const(net: Net, name: string, values: number[]): string {
  if (!net.consts.has(name)) {
    const t = makeTensor(
      name,
      DataType.INT64,
      [values.length],
      new Uint8Array(BigInt64Array.from(values.map(BigInt)).buffer),
    );
    net.consts.set(name, t);
    net.added.push(t);
  }
  return name;
}

/** Replaces node `old` by `replacement` (in its position). */
export function replaceNode(net: Net, old: NodeProto, replacement: NodeProto[]): void {
  const at = net.nodes.indexOf(old);
  net.nodes.splice(at, 1, ...replacement);
}

/** Points every reader of `from` at `to` (graph outputs excluded: they keep their names). */
export function rewire(net: Net, from: string, to: string): void {
  for (const n of net.consumers.get(from) ?? []) {
    n.input = n.input.map((i) => (i === from ? to : i));
  }
}

/** Drops nodes none of whose outputs is read (by a node or as a graph output), to a fixed point. */
export function pruneDead(net: Net): void {
  const live = new Set(net.graphOutputs);
  const keep: NodeProto[] = [];
  for (let i = net.nodes.length - 1; i >= 0; i--) {
    const n = net.nodes[i]!;
    if (n.output.some((o) => o && live.has(o))) {
      keep.push(n);
      for (const x of n.input) if (x) live.add(x);
    }
  }
  net.nodes = keep.reverse();
  reindex(net);
}
