/**
 * Web Worker entry: one LocalEngine behind Comlink, implementing `WorkerApi` (protocol.ts). Every method
 * returns a `WorkerReply` — a value, or an error passed through `serializeError`, plus the count of
 * streaming-callback calls it made — so the main thread (remote-engine.ts) rebuilds the same typed
 * error class and resolves only after the last callback arrived. Callbacks are Comlink proxies to the
 * main thread, called without awaiting and released when the call settles. Runtime settings (ORT's
 * wasm files, threads) are the engine's defaults from config.ts, which reads the Worker's `name`.
 * It deliberately holds no state of its own beyond the engine.
 */
import * as Comlink from 'comlink';
import { serializeError } from '../errors.ts';
import { LocalEngine, type LocalEngineOptions } from './engine.ts';
import {
  countCalls,
  unwireAdapterInput,
  unwireModelSource,
  type WorkerApi,
  type WorkerReply,
} from './protocol.ts';

async function reply<T>(f: () => Promise<T>, counted?: { calls: number }): Promise<WorkerReply<T>> {
  try {
    const value = await f();
    return { ok: true, value, calls: counted?.calls ?? 0 };
  } catch (e) {
    return { ok: false, error: serializeError(e), calls: counted?.calls ?? 0 };
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

/** Wraps `engine` as the worker protocol. Exported so another worker entry can install its own engine. */
export function workerApi(engine: LocalEngine): WorkerApi {
  return {
    loadModel: (source, opts, onProgress, onDeviceLost) => {
      const progress = countCalls(onProgress);
      return reply(
        () =>
          engine.loadModel(unwireModelSource(source), {
            ...opts,
            ...(progress.fn ? { onProgress: progress.fn } : {}),
            // Kept (not released) while the model is loaded: the device may be lost at any time.
            ...(onDeviceLost ? { onDeviceLost } : {}),
          }),
        progress,
      ).finally(() => release(onProgress));
    },
    generate: (request, onToken) => {
      const tokens = countCalls(onToken);
      return reply(() => engine.generate(request, tokens.fn), tokens).finally(() => release(onToken));
    },
    abort: (requestId) => reply(() => engine.abort(requestId)),
    info: () => reply(() => engine.info()),
    dispose: () => reply(() => engine.dispose()),
    importAdapter: (input, opts, onProgress) => {
      const progress = countCalls(onProgress);
      return reply(
        () =>
          engine.importAdapter(unwireAdapterInput(input), {
            ...opts,
            ...(progress.fn ? { onProgress: progress.fn } : {}),
          }),
        progress,
      ).finally(() => release(onProgress));
    },
    listAdapters: () => reply(() => engine.listAdapters()),
    renameAdapter: (from, to) => reply(() => engine.renameAdapter(from, to)),
    deleteAdapter: (name) => reply(() => engine.deleteAdapter(name)),
    exportAdapter: (name) => reply(() => engine.exportAdapter(name)),
    adapterStats: () => reply(() => engine.adapterStats()),
    mergeAdapters: (opts, onProgress) => {
      const progress = countCalls(onProgress);
      return reply(() => engine.mergeAdapters(opts, progress.fn), progress).finally(() =>
        release(onProgress),
      );
    },
    truncateAdapter: (name, rank, opts) => reply(() => engine.truncateAdapter(name, rank, opts)),
    train: (opts, onProgress) => {
      const progress = countCalls(onProgress);
      return reply(() => engine.train(opts, progress.fn), progress).finally(() => release(onProgress));
    },
    pauseTraining: (trainId) => reply(() => engine.pauseTraining(trainId)),
    cancelTraining: (trainId) => reply(() => engine.cancelTraining(trainId)),
    resumeTraining: (trainId, onProgress) => {
      const progress = countCalls(onProgress);
      return reply(() => engine.resumeTraining(trainId, progress.fn), progress).finally(() =>
        release(onProgress),
      );
    },
    listCheckpoints: () => reply(() => engine.listCheckpoints()),
    deleteCheckpoint: (trainId) => reply(() => engine.deleteCheckpoint(trainId)),
    trainGates: (opts, onProgress) => {
      const progress = countCalls(onProgress);
      return reply(() => engine.trainGates(opts, progress.fn), progress).finally(() => release(onProgress));
    },
  };
}

/** Exposes a new LocalEngine on this worker's global scope (its runtime defaults: config.ts). */
export function exposeEngine(opts: LocalEngineOptions = {}): void {
  Comlink.expose(workerApi(new LocalEngine(opts)));
}

// Only as a worker entry: importing this module elsewhere (tests, other entries) has no side effect.
if (typeof WorkerGlobalScope !== 'undefined' && self instanceof WorkerGlobalScope) {
  exposeEngine();
}
