/**
 * Worker entry for `<weblora-chat>`: the stock engine worker (src/engine/worker.ts, which exposes a
 * LocalEngine through Comlink when it is evaluated as a worker) plus the two settings an embedding page
 * must control: where onnxruntime-web's wasm runtime lives (the page knows, the worker's own URL does
 * not — in a library build it sits next to the element module, not under the app's BASE_URL) and the
 * wasm thread count (1 when the page is not cross-origin isolated: no SharedArrayBuffer). They arrive
 * as JSON in the Worker's `name`, so no extra message or protocol change is needed. The overrides run
 * after worker.ts built its engine, but before any message is handled, so the first session sees them.
 */
import * as ort from 'onnxruntime-web/webgpu';
import '../engine/worker.ts';

export interface ElementWorkerConfig {
  /** Absolute URL of the folder holding ort-wasm-simd-threaded.asyncify.{mjs,wasm}. */
  wasmPaths?: string;
  numThreads?: number;
}

function readConfig(): ElementWorkerConfig {
  try {
    const parsed: unknown = JSON.parse((self as unknown as { name?: string }).name || '{}');
    return parsed && typeof parsed === 'object' ? (parsed as ElementWorkerConfig) : {};
  } catch {
    return {};
  }
}

const config = readConfig();
if (config.wasmPaths) ort.env.wasm.wasmPaths = config.wasmPaths;
if (config.numThreads !== undefined) ort.env.wasm.numThreads = config.numThreads;
