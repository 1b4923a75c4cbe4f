/**
 * The main-thread side of the worker engine: `wrapWorkerEngine(worker)` turns a worker running
 * worker.ts (or any entry that calls `exposeEngine`) into an `Engine` (types.ts) — the same contract as
 * the in-thread LocalEngine, so UI code works with either. It names no worker script itself (client.ts
 * does), so bundles that bring their own worker (the `<weblora-chat>` library) carry no unused one.
 * Errors come back as `WorkerReply` values (protocol.ts) and are rebuilt with `reviveError`, so
 * `instanceof FetchError` etc. work here; a call resolves only after every callback call the worker
 * counted has been delivered (protocol.ts says why). An AbortSignal cannot cross postMessage, so it
 * becomes `abort(requestId)`. A crashed worker (an 'error' event) fails every pending and later call.
 * It deliberately imports no engine code (only types), so the main-thread bundle stays free of
 * onnxruntime-web.
 */
import * as Comlink from 'comlink';
import { reviveError, WebLoraError } from '../errors.ts';
import type { GateTrainProgress, GateTrainRequest, GateTrainResult } from './gates.ts';
import {
  countDeliveries,
  type WorkerApi,
  type WorkerReply,
  wireAdapterInput,
  wireModelSource,
} from './protocol.ts';
import type {
  AdapterDeriveProgress,
  AdapterImportInput,
  AdapterImportOptions,
  AdapterInfo,
  Engine,
  GenerateRequest,
  GenerateResult,
  LoadOptions,
  LoadReport,
  MergeAdaptersOptions,
  ModelSource,
  RankBudget,
  TokenDelta,
  TrainOptions,
  TrainProgress,
  TrainResult,
  TruncateAdapterOptions,
} from './types.ts';

export interface WorkerEngine extends Engine {
  /** Stops the worker at once (no cleanup; prefer `dispose()` first). */
  terminate(): void;
}

let idCounter = 0;
function newTrainId(): string {
  const rnd = globalThis.crypto?.randomUUID?.() ?? Math.random().toString(36).slice(2);
  return `train-${++idCounter}-${rnd}`;
}
function newRequestId(): string {
  const rnd = globalThis.crypto?.randomUUID?.() ?? Math.random().toString(36).slice(2);
  return `req-${++idCounter}-${rnd}`;
}

export function wrapWorkerEngine(worker: Worker): WorkerEngine {
  const remote = Comlink.wrap<WorkerApi>(worker);
  let fatal: Error | null = null;
  let failAll: (e: Error) => void = () => {};
  const crashed = new Promise<never>((_, reject) => {
    failAll = reject;
  });
  crashed.catch(() => {});
  worker.addEventListener('error', (ev) => {
    fatal ??= new WebLoraError(`the engine worker failed: ${ev.message || 'script error'}`, {
      filename: ev.filename,
      lineno: ev.lineno,
    });
    failAll(fatal);
  });

  /** One call; `stream` (its counted callback) must have seen every call the worker made first. */
  async function call<T>(
    p: Promise<WorkerReply<T>>,
    stream?: { until(calls: number): Promise<void> },
  ): Promise<T> {
    if (fatal) throw fatal;
    const r = await Promise.race([p, crashed]);
    if (stream && r.calls > 0) await Promise.race([stream.until(r.calls), crashed]);
    if (!r.ok) throw reviveError(r.error);
    return r.value;
  }

  /** The callback as a Comlink proxy, counted; undefined stays undefined. */
  function streamOf<A>(cb: ((a: A) => void) | undefined) {
    const counter = countDeliveries(cb);
    return { counter, proxy: counter.fn ? Comlink.proxy(counter.fn) : undefined };
  }

  return {
    loadModel(source?: ModelSource, o: LoadOptions = {}): Promise<LoadReport> {
      const { onProgress, onDeviceLost, ...rest } = o;
      const progress = streamOf(onProgress);
      return call(
        remote.loadModel(
          wireModelSource(source),
          rest,
          progress.proxy,
          onDeviceLost ? Comlink.proxy(onDeviceLost) : undefined,
        ),
        progress.counter,
      );
    },
    async generate(request: GenerateRequest, onToken?: (d: TokenDelta) => void): Promise<GenerateResult> {
      const { signal, ...rest } = request;
      const requestId = rest.requestId ?? newRequestId();
      const onAbort = (): void => {
        remote.abort(requestId).catch(() => {});
      };
      const tokens = streamOf(onToken);
      // Sent after generate, so the worker has registered the id when the abort arrives.
      const pending = call(remote.generate({ ...rest, requestId }, tokens.proxy), tokens.counter);
      if (signal?.aborted) onAbort();
      else signal?.addEventListener('abort', onAbort, { once: true });
      try {
        return await pending;
      } finally {
        signal?.removeEventListener('abort', onAbort);
      }
    },
    abort: (requestId: string) => call(remote.abort(requestId)),
    info: () => call(remote.info()),
    dispose: () => call(remote.dispose()),
    importAdapter(input: AdapterImportInput, o: AdapterImportOptions = {}): Promise<AdapterInfo> {
      const { onProgress, ...rest } = o;
      const progress = streamOf(onProgress);
      const page = typeof location === 'undefined' ? undefined : location.href;
      return call(
        remote.importAdapter(wireAdapterInput(input, page), rest, progress.proxy),
        progress.counter,
      );
    },
    listAdapters: () => call(remote.listAdapters()),
    renameAdapter: (from: string, to: string) => call(remote.renameAdapter(from, to)),
    deleteAdapter: (name: string) => call(remote.deleteAdapter(name)),
    exportAdapter: (name: string) => call(remote.exportAdapter(name)),
    adapterStats: () => call(remote.adapterStats()),
    mergeAdapters(
      opts: MergeAdaptersOptions,
      onProgress?: (p: AdapterDeriveProgress) => void,
    ): Promise<AdapterInfo> {
      const progress = streamOf(onProgress);
      return call(remote.mergeAdapters(opts, progress.proxy), progress.counter);
    },
    truncateAdapter: (name: string, rank: number | RankBudget, opts: TruncateAdapterOptions = {}) =>
      call(remote.truncateAdapter(name, rank, opts)),
    train(opts: TrainOptions, onProgress?: (p: TrainProgress) => void): Promise<TrainResult> {
      // The id is made here, so pause/cancel can name the run before its first progress event.
      const trainId = opts.trainId ?? newTrainId();
      const progress = streamOf(onProgress);
      return call(remote.train({ ...opts, trainId }, progress.proxy), progress.counter);
    },
    pauseTraining: (trainId: string) => call(remote.pauseTraining(trainId)),
    cancelTraining: (trainId: string) => call(remote.cancelTraining(trainId)),
    resumeTraining(trainId: string, onProgress?: (p: TrainProgress) => void): Promise<TrainResult> {
      const progress = streamOf(onProgress);
      return call(remote.resumeTraining(trainId, progress.proxy), progress.counter);
    },
    listCheckpoints: () => call(remote.listCheckpoints()),
    deleteCheckpoint: (trainId: string) => call(remote.deleteCheckpoint(trainId)),
    trainGates(
      opts: GateTrainRequest,
      onProgress?: (p: GateTrainProgress) => void,
    ): Promise<GateTrainResult> {
      const progress = streamOf(onProgress);
      return call(remote.trainGates(opts, progress.proxy), progress.counter);
    },
    terminate() {
      remote[Comlink.releaseProxy]();
      worker.terminate();
      fatal ??= new WebLoraError('the engine worker was terminated', {});
      failAll(fatal);
    },
  };
}
