/**
 * Runtime configuration in one place, read by the engine, the engine worker and `<weblora-chat>`:
 * where onnxruntime-web's wasm runtime files live, which model loads when none is named, and the wasm
 * thread count. App builds serve both folders under Vite's BASE_URL; the library build (dist-lib/)
 * keeps them next to its module. A worker cannot know the page's choices from its own URL, so the page
 * passes them in the Worker's `name` (`workerName()`), and inside a worker this module starts from
 * there. It deliberately holds no other settings: per-call options stay on the calls.
 */

/** Set by vite.lib.config.ts (`define`); absent in app builds and tests. */
declare const __WEBLORA_LIB__: boolean | undefined;
const IS_LIB = typeof __WEBLORA_LIB__ !== 'undefined' && __WEBLORA_LIB__;

export interface WebLoraConfig {
  /** Folder URL of onnxruntime-web's runtime files (ort-wasm-simd-threaded.asyncify.{mjs,wasm}). */
  wasmPaths: string;
  /** The model loaded when none is named (an element without `model`, `loadModel()` without a source). */
  defaultModel: string;
  /**
   * ORT wasm threads. Default 1 when the page is not cross-origin isolated (no SharedArrayBuffer, so
   * ORT could not use more), else unset (ORT's own choice).
   */
  numThreads?: number;
}

/** The default model's folder under the app's BASE_URL (app builds). */
export const DEFAULT_MODEL_PATH = 'models/weblora-shakespeare/';
const ORT_PATH = 'ort/';

function hereUrl(): string {
  if (typeof document !== 'undefined') return document.baseURI;
  return String(globalThis.location?.href ?? 'http://localhost/');
}

function inWorker(): boolean {
  return typeof WorkerGlobalScope !== 'undefined' && self instanceof WorkerGlobalScope;
}

/** Settings the page passed in this worker's `name` (see workerName), or null. */
function fromWorkerName(): Partial<WebLoraConfig> | null {
  if (!inWorker()) return null;
  try {
    const parsed: unknown = JSON.parse((self as unknown as { name?: string }).name || 'null');
    return parsed && typeof parsed === 'object' ? (parsed as Partial<WebLoraConfig>) : null;
  } catch {
    return null;
  }
}

function defaults(): WebLoraConfig {
  let base: WebLoraConfig;
  if (IS_LIB) {
    // Library build: ort/ and models/ sit next to the module (variables keep Vite from treating these
    // folder URLs as assets to bundle).
    const ortDir = ORT_PATH;
    const modelDir = DEFAULT_MODEL_PATH;
    base = {
      wasmPaths: new URL(ortDir, import.meta.url).href,
      defaultModel: new URL(modelDir, import.meta.url).href,
    };
  } else {
    const root = import.meta.env?.BASE_URL ?? '/';
    base = {
      wasmPaths: new URL(`${root}${ORT_PATH}`, hereUrl()).href,
      defaultModel: new URL(`${root}${DEFAULT_MODEL_PATH}`, hereUrl()).href,
    };
  }
  if (!(globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated) base.numThreads = 1;
  return { ...base, ...fromWorkerName() };
}

let config: WebLoraConfig | null = null;

/** Current settings (defaults computed on first use). */
export function getWebLoraConfig(): WebLoraConfig {
  config ??= defaults();
  return config;
}

/** Overrides settings (relative URLs against the page); affects engines and workers created afterwards. */
export function configureWebLora(c: Partial<WebLoraConfig>): void {
  const cur = getWebLoraConfig();
  config = {
    wasmPaths: c.wasmPaths ? new URL(c.wasmPaths, hereUrl()).href : cur.wasmPaths,
    defaultModel: c.defaultModel ? new URL(c.defaultModel, hereUrl()).href : cur.defaultModel,
  };
  const threads = c.numThreads ?? cur.numThreads;
  if (threads !== undefined) config.numThreads = threads;
}

/** The `name` to give an engine Worker so it runs with this page's settings. */
export function workerName(): string {
  return JSON.stringify(getWebLoraConfig());
}
