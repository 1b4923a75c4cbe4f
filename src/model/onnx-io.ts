/**
 * ONNX ModelProto in and out, plus the small tensor/attribute helpers the graph passes share.
 * Decoding is zero-copy for weights: protobufjs returns every `bytes` field (TensorProto.raw_data) as a
 * subarray of the input buffer, so decode + encode copies each weight exactly once (on encode). The
 * passes build on that with structural sharing: they return a new ModelProto that reuses the input's
 * TensorProto objects and never copies a weight buffer. Consequence: the decoded model keeps the input
 * buffer alive. This file does not validate ONNX semantics (types, shapes, topological order); it only
 * rejects bytes that are not a usable ModelProto. External-data initializers are passed through as-is.
 */
import * as onnxPkg from 'onnx-proto';
import { ModelFormatError } from '../errors.ts';

type OnnxNs = typeof onnxPkg.onnx;
// onnx-proto is CommonJS (`module.exports = { onnx }`): Node's ESM loader exposes it only as `default`,
// bundlers also as a named export. Accept both.
const pkg = onnxPkg as unknown as { onnx?: OnnxNs; default?: { onnx: OnnxNs } };
export const onnx: OnnxNs = (pkg.onnx ?? pkg.default?.onnx) as OnnxNs;

export type ModelProto = onnxPkg.onnx.ModelProto;
export type GraphProto = onnxPkg.onnx.GraphProto;
export type NodeProto = onnxPkg.onnx.NodeProto;
export type TensorProto = onnxPkg.onnx.TensorProto;
export type ValueInfoProto = onnxPkg.onnx.ValueInfoProto;
export type AttributeProto = onnxPkg.onnx.AttributeProto;

/**
 * onnx-proto types nested messages as nullable `I*` interfaces, but decoded (or `fromObject`-built)
 * messages are class instances whose repeated fields are always arrays. These accessors state that once.
 * Passes accept models from `decodeModel` or `onnx.ModelProto.fromObject` (plain nested objects are not).
 */
export function graphOf(m: ModelProto): GraphProto {
  if (!m.graph) throw new ModelFormatError('ONNX model has no graph', {});
  return m.graph as GraphProto;
}
export const nodesOf = (g: GraphProto): NodeProto[] => g.node as NodeProto[];
export const initializersOf = (g: GraphProto): TensorProto[] => g.initializer as TensorProto[];
export const inputsOf = (g: GraphProto): ValueInfoProto[] => g.input as ValueInfoProto[];
export const outputsOf = (g: GraphProto): ValueInfoProto[] => g.output as ValueInfoProto[];
export const attrsOf = (n: NodeProto): AttributeProto[] => n.attribute as AttributeProto[];

export const DataType = { FLOAT: 1, UINT8: 2, INT64: 7, FLOAT16: 10 } as const;
export const MS_DOMAIN = 'com.microsoft';

/** Decode ONNX bytes. Weights stay views into `bytes` (do not mutate `bytes` afterwards). */
export function decodeModel(bytes: Uint8Array): ModelProto {
  if (!(bytes instanceof Uint8Array)) {
    throw new ModelFormatError('decodeModel expects a Uint8Array of ONNX protobuf bytes', {
      got: typeof bytes,
    });
  }
  if (bytes.byteLength === 0) throw new ModelFormatError('ONNX model bytes are empty', { byteLength: 0 });
  let m: ModelProto;
  try {
    m = onnx.ModelProto.decode(bytes);
  } catch (e) {
    throw new ModelFormatError(
      `bytes are not a valid ONNX ModelProto (protobuf decode failed: ${(e as Error).message}); ` +
        'the file is truncated, corrupt, or not an .onnx file',
      { byteLength: bytes.byteLength, cause: String(e) },
    );
  }
  if (!m.graph) {
    throw new ModelFormatError('ONNX ModelProto has no graph: the file is truncated or not an .onnx model', {
      byteLength: bytes.byteLength,
    });
  }
  const g = m.graph as GraphProto;
  if (g.node.length === 0) {
    throw new ModelFormatError('ONNX graph has no nodes: the file is truncated or not an .onnx model', {
      byteLength: bytes.byteLength,
    });
  }
  if (m.opsetImport.length === 0) {
    throw new ModelFormatError('ONNX model has no opset_import: the file is truncated or corrupt', {
      byteLength: bytes.byteLength,
    });
  }
  if (g.output.length === 0) {
    throw new ModelFormatError('ONNX graph declares no outputs: the file is truncated or corrupt', {
      byteLength: bytes.byteLength,
    });
  }
  return m;
}

/** Encode to ONNX bytes: the one copy of every weight. */
export function encodeModel(m: ModelProto): Uint8Array {
  return onnx.ModelProto.encode(m).finish();
}

/** int64 fields decode as Long objects (protobufjs + long); make them plain numbers. */
export function toNum(x: number | { toNumber(): number } | null | undefined): number {
  if (x == null) return 0;
  return typeof x === 'number' ? x : x.toNumber();
}

export function dimsOf(t: TensorProto): number[] {
  return t.dims.map((d) => toNum(d));
}

export function isExternal(t: TensorProto): boolean {
  return t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL;
}

/**
 * The external-data files a graph's initializers reference (`location` of each external tensor), in
 * first-use order, e.g. ['model.onnx_data', 'model.onnx_data_1']: the names onnxruntime-web must be given
 * the bytes under (`externalData: [{ path, data }]`).
 */
export function externalDataLocations(m: ModelProto): string[] {
  const out = new Set<string>();
  for (const t of initializersOf(graphOf(m))) {
    if (!isExternal(t)) continue;
    const loc = t.externalData.find((e) => e.key === 'location')?.value;
    if (loc) out.add(loc);
  }
  return [...out];
}

/**
 * Read access to an fp32 tensor without copying: a DataView over raw_data (raw_data offsets inside an
 * .onnx file are arbitrary, so a Float32Array view is usually impossible). `float_data` tensors (small
 * hand-built ones) are packed into a fresh buffer. External data is refused: the caller must skip it.
 */
export function float32Reader(t: TensorProto): DataView {
  if (isExternal(t)) throw new ModelFormatError(`tensor ${t.name} has external data`, { tensor: t.name });
  if (t.dataType !== DataType.FLOAT) {
    throw new ModelFormatError(`tensor ${t.name} is not float32 (data_type ${t.dataType})`, {
      tensor: t.name,
    });
  }
  const raw = t.rawData;
  if (raw && raw.byteLength > 0) return new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const f = Float32Array.from(t.floatData);
  return new DataView(f.buffer);
}

/** A new initializer owning `data` (its bytes become raw_data, no copy). */
export function makeTensor(
  name: string,
  dataType: number,
  dims: readonly number[],
  data: Uint8Array | Float32Array,
): TensorProto {
  const rawData = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return onnx.TensorProto.create({ name, dataType, dims: [...dims], rawData });
}

export function intAttr(name: string, i: number): AttributeProto {
  return onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INT, i });
}

export function getIntAttr(node: NodeProto, name: string, dflt: number): number {
  const a = attrsOf(node).find((x) => x.name === name);
  return a ? toNum(a.i) : dflt;
}

/** A tensor ValueInfo; string dims become symbolic (dim_param). */
export function tensorValueInfo(
  name: string,
  elemType: number,
  dims: readonly (number | string)[],
): ValueInfoProto {
  const dim = dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d }));
  return onnx.ValueInfoProto.create({ name, type: { tensorType: { elemType, shape: { dim } } } });
}

/** Default-domain check: '' and 'ai.onnx' both mean the standard operator set. */
export function isOnnxDomain(node: NodeProto): boolean {
  return !node.domain || node.domain === 'ai.onnx';
}

/** Shallow copy of a model with a replaced graph; everything else (incl. tensors) is shared. */
export function withGraph(m: ModelProto, graph: GraphProto): ModelProto {
  return onnx.ModelProto.create({ ...m, graph });
}

/** Shallow copy of a graph with some fields replaced. */
export function cloneGraph(g: GraphProto, patch: Partial<onnxPkg.onnx.IGraphProto>): GraphProto {
  return onnx.GraphProto.create({ ...g, ...patch });
}

/** Constant tensors by name: initializers and `Constant` nodes with a `value` tensor. */
export function constantTensors(g: GraphProto): Map<string, TensorProto> {
  const out = new Map<string, TensorProto>();
  for (const t of initializersOf(g)) out.set(t.name, t);
  for (const n of nodesOf(g)) {
    if (n.opType !== 'Constant' || !isOnnxDomain(n)) continue;
    const v = attrsOf(n).find((a) => a.name === 'value');
    const o = n.output[0];
    if (v?.t && o) out.set(o, v.t as TensorProto);
  }
  return out;
}
