/**
 * Shared setup for browser tests: our onnxruntime-web served from our own origin (vite.config.ts
 * serveOrtFiles under /ort/), the default model package fetched from /models/ (publicDir), and the
 * fixed prompt every parity test uses.
 */
import * as ort from 'onnxruntime-web/webgpu';
import { TextTokenizer } from '../../../src/engine/tokenizer.ts';
import {
  fetchModelPackage,
  type ModelDtype,
  type ModelPackage,
  modelFileName,
} from '../../../src/model/package.ts';

export const MODEL_NAME = 'weblora-shakespeare';
export const MODEL_BASE = `/models/${MODEL_NAME}/`;
export const PROMPT = 'ROMEO:\nBut soft, what light';

/** The app's ORT (webgpu build: webgpu and wasm EPs), runtime files from our origin, one thread. */
export function setupOrt(): typeof ort {
  ort.env.wasm.wasmPaths = new URL('/ort/', location.href).href;
  ort.env.wasm.numThreads = 1;
  return ort;
}

/** True when the package has this file (the dev server may answer misses with index.html). */
export async function hasModelFile(dtype: ModelDtype): Promise<boolean> {
  const r = await fetch(MODEL_BASE + modelFileName(dtype), { method: 'HEAD' });
  const type = r.headers.get('content-type') ?? '';
  return r.ok && !type.includes('text/html');
}

export async function loadPackage(
  dtype: ModelDtype = 'fp32',
): Promise<{ pkg: ModelPackage; tok: TextTokenizer }> {
  const pkg = await fetchModelPackage(MODEL_BASE, { dtype });
  const tok = TextTokenizer.fromJSON(pkg.tokenizerJson, pkg.tokenizerConfig, pkg.config.eosTokenIds[0]);
  return { pkg, tok };
}
