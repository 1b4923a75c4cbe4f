/**
 * The bench's own sessions (loops a–d in ours.ts) are built from the package's ONNX file as fetchModelPackage
 * returns it, which has no external data. An onnxruntime-genai builder package keeps every weight in
 * `<file>_data` (scripts/py/replica_135m.py --layout builder: onnx/model_q4.onnx + onnx/model_q4.onnx_data),
 * so this fetches the chunks the graph names, next to the file, and makes their tensors inline views
 * (model/external-data.ts): from there on the graph is handled exactly like an Optimum file's (wasmGraphOf,
 * injectLora, encodeModel), as the engine's load path does. A graph without external data is returned as is.
 */
import { inlineExternalData } from '../src/model/external-data.ts';
import { externalDataLocations, type ModelProto } from '../src/model/onnx-io.ts';
import { type ModelDtype, modelFileName } from '../src/model/package.ts';

export async function withExternalData(
  model: ModelProto,
  modelBase: string,
  dtype: ModelDtype,
): Promise<ModelProto> {
  const locations = externalDataLocations(model);
  if (locations.length === 0) return model;
  const file = modelFileName(dtype);
  const dir = `${modelBase}${file.slice(0, file.lastIndexOf('/') + 1)}`;
  const chunks = new Map<string, Uint8Array>();
  for (const loc of locations) {
    const res = await fetch(`${dir}${loc}`);
    if (!res.ok) throw new Error(`bench: ${dir}${loc}: HTTP ${res.status}`);
    chunks.set(loc, new Uint8Array(await res.arrayBuffer()));
  }
  return inlineExternalData(model, chunks);
}
