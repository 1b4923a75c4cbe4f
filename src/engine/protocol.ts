/**
 * The worker protocol in one place: the `WorkerApi` worker.ts exposes through Comlink, the reply shape,
 * the wire forms of picked files and adapter inputs (with both directions of each conversion), and the
 * ordering rule. Comlink sends a proxied callback's calls on that proxy's own MessagePort, which has
 * no ordering with the reply port: a reply could overtake the last token delta or progress event. So
 * the worker counts the calls it made to a request's streaming callback and sends the count with the
 * reply (`calls`); the page counts deliveries and resolves only once it has seen that many. The worker
 * never waits for the page, so the next queued request starts at once. Lifetime callbacks
 * (onDeviceLost) are not counted. Only types and small pure helpers here, so both sides can import it.
 */

import type { GateTrainProgress, GateTrainRequest, GateTrainResult } from './gates.ts';
import type {
  AdapterDeriveProgress,
  AdapterImportInput,
  AdapterImportOptions,
  AdapterImportProgress,
  AdapterInfo,
  AdapterStats,
  DeviceLostInfo,
  GenerateRequest,
  GenerateResult,
  LoadOptions,
  LoadProgress,
  LoadReport,
  MergeAdaptersOptions,
  ModelSource,
  PeftFiles,
  RankBudget,
  TokenDelta,
  TrainCheckpointInfo,
  TrainOptions,
  TrainProgress,
  TrainResult,
  TruncateAdapterOptions,
} from './types.ts';

/** The Error `SerializedError` shape from errors.ts, restated so this file stays type-only. */
export interface WireError {
  __weblora_error__: true;
  name: string;
  message: string;
  data: Record<string, unknown>;
  stack?: string;
}

/**
 * Every worker method resolves to one of these instead of throwing, so typed errors cross the boundary
 * through serializeError/reviveError (errors.ts), not Comlink's lossy default. `calls`: how many times
 * the worker called the method's streaming callback (0 when it has none).
 */
export type WorkerReply<T> = ({ ok: true; value: T } | { ok: false; error: WireError }) & { calls: number };

/**
 * A picked file on the wire: structured clone does not keep `File.webkitRelativePath`, so the client
 * sends it alongside and the worker restores it.
 */
export interface WirePickedFile {
  path: string;
  file: File;
}

/** AdapterImportInput on the wire: picked files travel with their relative path (see WirePickedFile). */
export type WireAdapterImportInput =
  | { files: WirePickedFile[] }
  | { url: string }
  | { config?: Uint8Array | string; weights: Uint8Array };

/**
 * What worker.ts exposes through Comlink and remote-engine.ts calls. Callbacks arrive as Comlink
 * proxies (the worker never awaits their promises and releases them when the call settles).
 */
export interface WorkerApi {
  loadModel(
    source: string | WirePickedFile[] | undefined,
    opts: Omit<LoadOptions, 'onProgress' | 'onDeviceLost'>,
    onProgress?: (p: LoadProgress) => void,
    onDeviceLost?: (info: DeviceLostInfo) => void,
  ): Promise<WorkerReply<LoadReport>>;
  generate(
    request: Omit<GenerateRequest, 'signal'> & { requestId: string },
    onToken?: (delta: TokenDelta) => void,
  ): Promise<WorkerReply<GenerateResult>>;
  abort(requestId: string): Promise<WorkerReply<boolean>>;
  info(): Promise<WorkerReply<LoadReport | null>>;
  dispose(): Promise<WorkerReply<void>>;
  importAdapter(
    input: WireAdapterImportInput,
    opts: Omit<AdapterImportOptions, 'onProgress'>,
    onProgress?: (p: AdapterImportProgress) => void,
  ): Promise<WorkerReply<AdapterInfo>>;
  listAdapters(): Promise<WorkerReply<AdapterInfo[]>>;
  renameAdapter(from: string, to: string): Promise<WorkerReply<AdapterInfo>>;
  deleteAdapter(name: string): Promise<WorkerReply<void>>;
  exportAdapter(name: string): Promise<WorkerReply<PeftFiles>>;
  adapterStats(): Promise<WorkerReply<AdapterStats>>;
  /** `calls` counts progress events (read, compute per module, store, done). */
  mergeAdapters(
    opts: MergeAdaptersOptions,
    onProgress?: (p: AdapterDeriveProgress) => void,
  ): Promise<WorkerReply<AdapterInfo>>;
  truncateAdapter(
    name: string,
    rank: number | RankBudget,
    opts: TruncateAdapterOptions,
  ): Promise<WorkerReply<AdapterInfo>>;
  /** `calls` counts progress events, so the page resolves only after the last ('done') one. */
  train(
    opts: TrainOptions & { trainId: string },
    onProgress?: (p: TrainProgress) => void,
  ): Promise<WorkerReply<TrainResult>>;
  pauseTraining(trainId: string): Promise<WorkerReply<boolean>>;
  cancelTraining(trainId: string): Promise<WorkerReply<boolean>>;
  resumeTraining(trainId: string, onProgress?: (p: TrainProgress) => void): Promise<WorkerReply<TrainResult>>;
  listCheckpoints(): Promise<WorkerReply<TrainCheckpointInfo[]>>;
  deleteCheckpoint(trainId: string): Promise<WorkerReply<void>>;
  trainGates(
    opts: GateTrainRequest,
    onProgress?: (p: GateTrainProgress) => void,
  ): Promise<WorkerReply<GateTrainResult>>;
}

// ---------------------------------------------------------------- ordering

/** Worker side: wraps a streaming callback and counts the calls made to it. */
export interface CountedCallback<A> {
  /** Undefined when there was no callback (then `calls` stays 0). */
  readonly fn: ((a: A) => void) | undefined;
  readonly calls: number;
}

export function countCalls<A>(cb: ((a: A) => unknown) | undefined): CountedCallback<A> {
  const state = { calls: 0, fn: undefined as ((a: A) => void) | undefined };
  if (cb) {
    state.fn = (a: A) => {
      state.calls++;
      // A Comlink proxy returns a promise; never await it (a round trip per token).
      const r = cb(a) as Promise<unknown> | undefined;
      if (r && typeof r.catch === 'function') r.catch(() => {});
    };
  }
  return state;
}

/** Page side: counts deliveries of a callback so a reply can wait for the last of them. */
export interface DeliveryCounter<A> {
  /** The function to proxy to the worker (undefined when there is no callback). */
  readonly fn: ((a: A) => void) | undefined;
  /** Resolves once `calls` deliveries have happened (at once when they already have). */
  until(calls: number): Promise<void>;
}

export function countDeliveries<A>(cb: ((a: A) => void) | undefined): DeliveryCounter<A> {
  if (!cb) return { fn: undefined, until: () => Promise.resolve() };
  let delivered = 0;
  let waiter: { calls: number; resolve: () => void } | null = null;
  return {
    fn: (a: A) => {
      delivered++;
      try {
        cb(a);
      } finally {
        if (waiter && delivered >= waiter.calls) {
          waiter.resolve();
          waiter = null;
        }
      }
    },
    until(calls: number): Promise<void> {
      if (delivered >= calls) return Promise.resolve();
      return new Promise((resolve) => {
        waiter = { calls, resolve };
      });
    },
  };
}

// ---------------------------------------------------------------- wire forms

function wireFiles(files: readonly File[]): WirePickedFile[] {
  return Array.from(files, (file) => ({ path: file.webkitRelativePath || file.name, file }));
}

function unwireFiles(source: readonly WirePickedFile[]): File[] {
  return source.map(({ path, file }) => {
    if (file.webkitRelativePath !== path) {
      Object.defineProperty(file, 'webkitRelativePath', { value: path, configurable: true });
    }
    return file;
  });
}

export function wireModelSource(source: ModelSource | undefined): string | WirePickedFile[] | undefined {
  return typeof source === 'string' || source === undefined ? source : wireFiles(source);
}

export function unwireModelSource(source: string | WirePickedFile[] | undefined): ModelSource | undefined {
  return source === undefined || typeof source === 'string' ? source : unwireFiles(source);
}

/** Picked files keep their paths; a relative URL means the page's, not the worker script's. */
export function wireAdapterInput(input: AdapterImportInput, pageUrl?: string): WireAdapterImportInput {
  if (input && 'files' in input && input.files) return { files: wireFiles(Array.from(input.files)) };
  if (input && 'url' in input && typeof input.url === 'string' && pageUrl) {
    return { url: new URL(input.url, pageUrl).href };
  }
  return input as WireAdapterImportInput;
}

export function unwireAdapterInput(input: WireAdapterImportInput): AdapterImportInput {
  if (input && 'files' in input && Array.isArray(input.files)) return { files: unwireFiles(input.files) };
  return input as AdapterImportInput;
}
