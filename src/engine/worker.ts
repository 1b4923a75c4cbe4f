/**
 * Web Worker entry: one LocalEngine behind Comlink, implementing `WorkerApi` (types.ts). Every method
 * returns a `WorkerReply` — a value, or an error passed through `serializeError` — so the main thread
 * (client.ts) rebuilds the same typed error class. Callbacks (progress, tokens, device lost) are Comlink
 * proxies to the main thread; they are called without awaiting and released when the call settles.
 * Create it with `new Worker(new URL('./worker.ts', import.meta.url), { type: 'module' })` (client.ts
 * does). The engine it exposes installs the real adapter provider (IndexedDB store, GPU feed cache on
 * ORT's device); a custom entry can call `exposeEngine({ adapterCacheBytes, adapterStore, … })`.
 * It deliberately holds no state of its own beyond the engine.
 */
import * as Comlink from 'comlink';
import { serializeError } from '../errors.ts';
import { LocalEngine, type LocalEngineOptions } from './engine.ts';
import type {
  AdapterImportInput,
  ModelSource,
  WireAdapterImportInput,
  WirePickedFile,
  WorkerApi,
  WorkerReply,
} from './types.ts';

async function reply<T>(f: () => Promise<T>): Promise<WorkerReply<T>> {
  try {
    return { ok: true, value: await f() };
  } catch (e) {
    return { ok: false, error: serializeError(e) };
  }
}

/** Frees a Comlink callback proxy (its MessagePort); calls already sent are still delivered first. */
function release(cb: unknown): void {
  const r = (cb as { [Comlink.releaseProxy]?: () => void } | undefined)?.[Comlink.releaseProxy];
  if (typeof r !== 'function') return;
  try {
    r.call(cb);
  } catch {
    // already released
  }
}

function unwire(source: string | WirePickedFile[] | undefined): ModelSource | undefined {
  if (source === undefined || typeof source === 'string') return source;
  return unwireFiles(source);
}

function unwireFiles(source: WirePickedFile[]): File[] {
  return source.map(({ path, file }) => {
    if (file.webkitRelativePath !== path) {
      Object.defineProperty(file, 'webkitRelativePath', { value: path, configurable: true });
    }
    return file;
  });
}

function unwireAdapter(input: WireAdapterImportInput): AdapterImportInput {
  if (input && 'files' in input && Array.isArray(input.files)) return { files: unwireFiles(input.files) };
  return input as AdapterImportInput;
}

/** Wraps `engine` as the worker protocol. Exported so another worker entry can install its own engine. */
export function workerApi(engine: LocalEngine): WorkerApi {
  return {
    loadModel: (source, opts, onProgress, onDeviceLost) =>
      reply(() =>
        engine.loadModel(unwire(source), {
          ...opts,
          ...(onProgress ? { onProgress } : {}),
          // Kept (not released) while the model is loaded: the device may be lost at any time.
          ...(onDeviceLost ? { onDeviceLost } : {}),
        }),
      ).finally(() => release(onProgress)),
    generate: (request, onToken) =>
      reply(() => engine.generate(request, onToken)).finally(() => release(onToken)),
    abort: (requestId) => reply(() => engine.abort(requestId)),
    info: () => reply(() => engine.info()),
    dispose: () => reply(() => engine.dispose()),
    importAdapter: (input, opts, onProgress) =>
      reply(() =>
        engine.importAdapter(unwireAdapter(input), { ...opts, ...(onProgress ? { onProgress } : {}) }),
      ).finally(() => release(onProgress)),
    listAdapters: () => reply(() => engine.listAdapters()),
    renameAdapter: (from, to) => reply(() => engine.renameAdapter(from, to)),
    deleteAdapter: (name) => reply(() => engine.deleteAdapter(name)),
    exportAdapter: (name) => reply(() => engine.exportAdapter(name)),
    adapterStats: () => reply(() => engine.adapterStats()),
  };
}

/** Exposes a new LocalEngine on this worker's global scope. */
export function exposeEngine(opts: LocalEngineOptions = {}): void {
  Comlink.expose(workerApi(new LocalEngine(opts)));
}

// Only as a worker entry: importing this module elsewhere (tests, other entries) has no side effect.
if (typeof WorkerGlobalScope !== 'undefined' && self instanceof WorkerGlobalScope) {
  exposeEngine();
}
