/**
 * ONNX external data for the offline tools (scripts/quantize-model.ts): read a graph whose weights live in
 * `<file>_data` chunks as if they were inline, and write a graph back out with its weights in one
 * `<file>_data` file, as onnxruntime-genai builder packages ship them (model.onnx + model.onnx_data).
 * `inlineExternalData` makes each external initializer's raw_data a view into the chunk it names (no copy),
 * so the graph passes, which skip external tensors, see every weight. `moveToExternalData` is the reverse
 * for a graph about to be encoded: raw_data of `minBytes` or more goes to the data file, in initializer
 * order, unaligned (as onnx.save_model writes it). The engine's load path hands the chunks to onnxruntime-web
 * as they are (load-files.ts, external-weights.ts), except on wasm, where the 4-bit weights must be read to be
 * dequantized at load (dequantize.ts skips external tensors): `withInlineExternalData` there.
 * ONNX external data: https://onnx.ai/onnx/repo-docs/ExternalData.html
 */
import { ModelFormatError } from '../errors.ts';
import {
  cloneGraph,
  graphOf,
  initializersOf,
  isExternal,
  type ModelProto,
  nodesOf,
  onnx,
  type TensorProto,
  withGraph,
} from './onnx-io.ts';

function entry(t: TensorProto, key: string): string | undefined {
  return t.externalData.find((e) => e.key === key)?.value ?? undefined;
}

/**
 * `model` with every external initializer inline: raw_data = a view of `chunks[location]` at its offset
 * and length (a missing length means the rest of the chunk). Throws ModelFormatError when a chunk is
 * missing or a tensor reaches past its end. The input model is not modified.
 */
export function inlineExternalData(model: ModelProto, chunks: ReadonlyMap<string, Uint8Array>): ModelProto {
  const g = graphOf(model);
  const initializer = initializersOf(g).map((t): TensorProto => {
    if (!isExternal(t)) return t;
    const location = entry(t, 'location') ?? '';
    const data = chunks.get(location);
    if (!data) {
      throw new ModelFormatError(
        `tensor ${t.name} has its data in "${location}", which was not given (next to the model file?)`,
        { tensor: t.name, location },
      );
    }
    const offset = Number(entry(t, 'offset') ?? 0);
    const length = entry(t, 'length') === undefined ? data.byteLength - offset : Number(entry(t, 'length'));
    if (!(offset >= 0 && length >= 0 && offset + length <= data.byteLength)) {
      throw new ModelFormatError(
        `tensor ${t.name}: bytes ${offset}..${offset + length} are outside "${location}" (${data.byteLength} bytes)`,
        { tensor: t.name, location, offset, length, size: data.byteLength },
      );
    }
    const { externalData: _refs, dataLocation: _loc, ...rest } = t;
    return onnx.TensorProto.create({ ...rest, rawData: data.subarray(offset, offset + length) });
  });
  return withGraph(model, cloneGraph(g, { initializer }));
}

export interface ExternalDataFile {
  model: ModelProto;
  /** The data file's contents, in order (write them one after the other; their views are not copied). */
  parts: Uint8Array[];
  /** Total bytes of `parts`. */
  bytes: number;
  /** Initializers moved. */
  tensors: number;
}

/**
 * `model` with every inline raw_data of at least `minBytes` moved to the data file `location` (default
 * 64 bytes, as replicas.py's save_external: small int64 shape constants stay inline). Initializers
 * already external, float_data tensors and Constant nodes are left as they are. The input model is not
 * modified.
 */
export function moveToExternalData(model: ModelProto, location: string, minBytes = 64): ExternalDataFile {
  const g = graphOf(model);
  const parts: Uint8Array[] = [];
  let bytes = 0;
  const initializer = initializersOf(g).map((t): TensorProto => {
    const raw = t.rawData;
    if (isExternal(t) || !raw || raw.byteLength < minBytes) return t;
    const { rawData: _inline, ...rest } = t;
    const moved = onnx.TensorProto.create({
      ...rest,
      dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
      externalData: [
        { key: 'location', value: location },
        { key: 'offset', value: String(bytes) },
        { key: 'length', value: String(raw.byteLength) },
      ],
    });
    parts.push(raw);
    bytes += raw.byteLength;
    return moved;
  });
  return {
    model: withGraph(model, cloneGraph(g, { initializer })),
    parts,
    bytes,
    tensors: parts.length,
  };
}

/**
 * `inlineExternalData` for the engine's wasm load (load.ts), ahead of the dequantize pass: the chunks as
 * load-files.ts returns them, by the names the graph references; `model` itself when it has no external
 * data or no MatMulNBits to dequantize (then onnxruntime-web reads the chunks as they are).
 */
export function withInlineExternalData(
  model: ModelProto,
  externalData: readonly { path: string; data: Uint8Array }[],
): ModelProto {
  const g = graphOf(model);
  if (!nodesOf(g).some((n) => n.opType === 'MatMulNBits')) return model;
  if (!initializersOf(g).some(isExternal)) return model;
  return inlineExternalData(model, new Map(externalData.map((c) => [c.path, c.data])));
}
