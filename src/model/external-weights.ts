/**
 * Graph-only ONNX bytes whose weights stay where they already are: every inline initializer of `model`
 * whose raw_data is a view into `file` (what decodeModel returns: protobufjs keeps `bytes` fields as
 * subarrays of its input) becomes an external-data reference (`location`, `offset`, `length`) into
 * `file`, which onnxruntime-web then receives unchanged as `externalData: [{ path: location, data: file }]`.
 * Large tensors made by a graph pass (e.g. dequantize.ts's fp32 weights, each in a buffer of its own)
 * become external data of their own (`weblora-tensor-<i>.bin`, their bytes as they are). So a graph
 * pass costs one encode of the graph structure (kilobytes) instead of a copy of every weight, and
 * onnxruntime-web reads each weight straight out of the buffer it is in (on webgpu it uploads it to the
 * GPU from there, never staging the whole file in the wasm heap). Small tensors, float_data tensors,
 * Constant nodes and subgraphs stay inline; initializers that are already external are left as they
 * are. The input model is not modified.
 * ONNX external data: https://onnx.ai/onnx/repo-docs/ExternalData.html
 */
import {
  cloneGraph,
  graphOf,
  initializersOf,
  isExternal,
  type ModelProto,
  onnx,
  type TensorProto,
  withGraph,
} from './onnx-io.ts';

/** The external-data name under which the engine hands the model file's own bytes to onnxruntime-web. */
export const FILE_WEIGHTS_LOCATION = 'weblora-file-weights.bin';

/** Inline tensors of the file below this size stay inline (not worth an external-data entry). */
const MIN_EXTERNAL_BYTES = 64;
/** Tensors outside the file get an external-data entry of their own from this size on. */
const MIN_STANDALONE_BYTES = 64 * 1024;

export interface ExternalizedModel {
  model: ModelProto;
  /** Initializers now read as external data. */
  externalized: number;
  /** Their bytes (what re-encoding would have copied). */
  externalBytes: number;
  /** What onnxruntime-web's `externalData` option must get for them (empty when nothing moved). */
  externalData: { path: string; data: Uint8Array }[];
}

/** Offset of `view` inside `file`, or -1 when it is not a view into file's bytes. */
function offsetIn(view: Uint8Array, file: Uint8Array): number {
  if (view.buffer !== file.buffer) return -1;
  const off = view.byteOffset - file.byteOffset;
  return off >= 0 && off + view.byteLength <= file.byteLength ? off : -1;
}

function external(t: TensorProto, location: string, offset: number, length: number): TensorProto {
  const { rawData: _inline, ...rest } = t;
  return onnx.TensorProto.create({
    ...rest,
    dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
    externalData: [
      { key: 'location', value: location },
      { key: 'offset', value: String(offset) },
      { key: 'length', value: String(length) },
    ],
  });
}

/** See the file comment. `location` must not be a name the graph's own external data already uses. */
export function weightsAsExternal(
  model: ModelProto,
  file: Uint8Array,
  location: string = FILE_WEIGHTS_LOCATION,
): ExternalizedModel {
  const g = graphOf(model);
  let externalized = 0;
  let externalBytes = 0;
  let usesFile = false;
  const own: { path: string; data: Uint8Array }[] = [];
  const initializer = initializersOf(g).map((t): TensorProto => {
    const raw = t.rawData;
    if (isExternal(t) || !raw || raw.byteLength < MIN_EXTERNAL_BYTES) return t;
    const offset = offsetIn(raw, file);
    if (offset >= 0) {
      usesFile = true;
    } else if (raw.byteLength < MIN_STANDALONE_BYTES) {
      return t;
    }
    externalized++;
    externalBytes += raw.byteLength;
    if (offset >= 0) return external(t, location, offset, raw.byteLength);
    const path = `weblora-tensor-${own.length}.bin`;
    own.push({ path, data: raw });
    return external(t, path, 0, raw.byteLength);
  });
  const externalData = [...(usesFile ? [{ path: location, data: file }] : []), ...own];
  return {
    model: withGraph(model, cloneGraph(g, { initializer })),
    externalized,
    externalBytes,
    externalData,
  };
}
