/**
 * The main-thread side of the worker engine: `wrapWorkerEngine(worker)` turns a worker running
 * worker.ts (or any entry that calls `exposeEngine`) into an `Engine` (types.ts) — the same contract as
 * the in-thread LocalEngine, so UI code works with either. It names no worker script itself (client.ts
 * does), so bundles that bring their own worker (the `<weblora-chat>` library) carry no unused one.
 * Errors come back as `WorkerReply` values and are rebuilt with `reviveError`, so `instanceof
 * FetchError` etc. work here. Callbacks go over as `Comlink.proxy`; an AbortSignal cannot cross
 * postMessage, so it becomes `abort(requestId)`. A crashed worker (an 'error' event) fails every
 * pending and later call with WebLoraError. It deliberately imports no engine code (only types), so the
 * main-thread bundle stays free of onnxruntime-web.
 */
import * as Comlink from 'comlink';
import { reviveError, WebLoraError } from '../errors.ts';
import type {
  AdapterImportInput,
  AdapterImportOptions,
  AdapterInfo,
  Engine,
  GenerateRequest,
  GenerateResult,
  LoadOptions,
  LoadReport,
  ModelSource,
  TokenDelta,
  WireAdapterImportInput,
  WorkerApi,
  WorkerReply,
} from './types.ts';

export interface WorkerEngine extends Engine {
  /** Stops the worker at once (no cleanup; prefer `dispose()` first). */
  terminate(): void;
}

let idCounter = 0;
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

  async function call<T>(p: Promise<WorkerReply<T>>): Promise<T> {
    if (fatal) throw fatal;
    const r = await Promise.race([p, crashed]);
    if (!r.ok) throw reviveError(r.error);
    return r.value;
  }

  return {
    loadModel(source?: ModelSource, o: LoadOptions = {}): Promise<LoadReport> {
      const { onProgress, onDeviceLost, ...rest } = o;
      const wire =
        typeof source === 'string' || source === undefined
          ? source
          : Array.from(source, (file) => ({ path: file.webkitRelativePath || file.name, file }));
      return call(
        remote.loadModel(
          wire,
          rest,
          onProgress ? Comlink.proxy(onProgress) : undefined,
          onDeviceLost ? Comlink.proxy(onDeviceLost) : undefined,
        ),
      );
    },
    async generate(request: GenerateRequest, onToken?: (d: TokenDelta) => void): Promise<GenerateResult> {
      const { signal, ...rest } = request;
      const requestId = rest.requestId ?? newRequestId();
      const onAbort = (): void => {
        remote.abort(requestId).catch(() => {});
      };
      // Sent after generate, so the worker has registered the id when the abort arrives.
      const pending = call(
        remote.generate({ ...rest, requestId }, onToken ? Comlink.proxy(onToken) : undefined),
      );
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
      let wire = input as WireAdapterImportInput;
      if (input && 'files' in input && input.files) {
        wire = {
          files: Array.from(input.files, (file) => ({ path: file.webkitRelativePath || file.name, file })),
        };
      } else if (
        input &&
        'url' in input &&
        typeof input.url === 'string' &&
        typeof location !== 'undefined'
      ) {
        // Relative URLs mean this page's, not the worker script's.
        wire = { url: new URL(input.url, location.href).href };
      }
      return call(remote.importAdapter(wire, rest, onProgress ? Comlink.proxy(onProgress) : undefined));
    },
    listAdapters: () => call(remote.listAdapters()),
    renameAdapter: (from: string, to: string) => call(remote.renameAdapter(from, to)),
    deleteAdapter: (name: string) => call(remote.deleteAdapter(name)),
    exportAdapter: (name: string) => call(remote.exportAdapter(name)),
    adapterStats: () => call(remote.adapterStats()),
    terminate() {
      remote[Comlink.releaseProxy]();
      worker.terminate();
      fatal ??= new WebLoraError('the engine worker was terminated', {});
      failAll(fatal);
    },
  };
}
