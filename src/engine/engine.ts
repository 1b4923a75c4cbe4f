/**
 * LocalEngine: the in-thread `Engine` (types.ts) — the worker (worker.ts) runs one of these too. It owns
 * the request lifecycle: a SerialQueue runs loads, training and batches one at a time; generate
 * requests go through batch.ts (continuous batching: requests arriving while a batch decodes join it),
 * each validated, its adapter selection resolved by the AdapterFeedProvider (adapters/provider.ts: LRU
 * cache, GPU buffers on ORT's own device), streamed, and aborted by requestId or signal within one decode
 * step. "No adapter" (the provider answers null) runs the un-injected base session when load.ts made
 * one, else the injected graph with load.ts's `noAdapterFeeds`. Loading is load.ts, the decode loop
 * batch.ts + decode.ts, adapter bytes adapters/import*.ts, training runs (queued like
 * requests) train.ts. It deliberately does no prefix caching or speculative decoding.
 */
import * as ortWebgpu from 'onnxruntime-web/webgpu';
import { mergeStoredAdapters, truncateStoredAdapter } from '../adapters/derive.ts';
import { withStoreGates } from '../adapters/gated-store.ts';
import { type AdapterModelInfo, importPeftAdapter, type PeftFiles } from '../adapters/import.ts';
import { defaultAdapterName, readAdapterInput } from '../adapters/import-sources.ts';
import { AdapterStore } from '../adapters/store.ts';
import { getWebLoraConfig } from '../config.ts';
import {
  AbortError,
  type DeviceLostError,
  InvalidOptionError,
  NoModelError,
  UnsupportedError,
} from '../errors.ts';
import type { CheckpointStore } from '../train/checkpoints.ts';
import { abortedResult } from './aborted.ts';
import { Batcher } from './batch.ts';
import { scoreSelections } from './batch-score.ts';
import { callQuietly } from './decode.ts';
import type { GateTrainProgress, GateTrainRequest, GateTrainResult } from './gates.ts';
import { type LoadedModel, loadModel } from './load.ts';
import type { FetchModelFilesOptions } from './model-files.ts';
import { DEFAULT_ADAPTER_CACHE_BYTES, noStoreProvider, storeAdapterProvider } from './providers.ts';
import { SerialQueue } from './queue.ts';
import type { Ort } from './session.ts';
import { TrainingManager } from './train.ts';
import type {
  AdapterDeriveProgress,
  AdapterFeedProvider,
  AdapterImportInput,
  AdapterImportOptions,
  AdapterImportProgress,
  AdapterInfo,
  AdapterProviderFactory,
  AdapterSelection,
  AdapterStats,
  Engine,
  GenerateRequest,
  GenerateResult,
  LoadOptions,
  LoadProgress,
  LoadReport,
  MergeAdaptersOptions,
  ModelSource,
  RankBudget,
  TokenDelta,
  TrainCheckpointInfo,
  TrainOptions,
  TrainProgress,
  TrainResult,
  TruncateAdapterOptions,
} from './types.ts';

export { DEFAULT_ADAPTER_CACHE_BYTES, noStoreProvider, storeAdapterProvider };

export interface LocalEngineOptions {
  /** The ORT module; default `onnxruntime-web/webgpu` (webgpu + wasm EPs). */
  ort?: Ort;
  /** Where ORT's wasm runtime files are served; default from config.ts (`getWebLoraConfig().wasmPaths`). */
  wasmPaths?: string;
  /** ORT wasm threads; default from config.ts (1 unless the page is cross-origin isolated). */
  numThreads?: number;
  /**
   * Builds the adapter feed provider once a model is loaded. Default: `createAdapterProvider` over
   * `adapterStore` (on webgpu with ORT's GPUDevice), or base model only when there is no store.
   */
  adapterProvider?: AdapterProviderFactory;
  /**
   * Where adapters are stored. Default: `new AdapterStore()` (IndexedDB `weblora`/`adapters`), opened on
   * first use; null: no store (adapter methods throw UnsupportedError, generate accepts only null).
   */
  adapterStore?: AdapterStore | null;
  /** Byte budget of the default provider's feed cache; default DEFAULT_ADAPTER_CACHE_BYTES (64 MiB). */
  adapterCacheBytes?: number;
  /** Training checkpoints; default `new CheckpointStore()` (IndexedDB `weblora-train`/`checkpoints`). */
  checkpointStore?: CheckpointStore;
  /** Passed to fetchModelFiles (Cache Storage bucket, injectable fetch, useCache). */
  files?: Pick<FetchModelFilesOptions, 'cacheName' | 'useCache' | 'fetch'>;
  /**
   * Whether "no adapter" requests get a second session of the original, un-injected graph: faster (no
   * LoRA branch at all) but the model's weights are held twice. Default: only for model files up to
   * BASE_SESSION_MAX_BYTES (load.ts, which gives the measurements). false: one session; "no adapter"
   * runs the injected graph with feeds that turn the branch off (same tokens).
   */
  baseGraphForNoAdapter?: boolean;
  /**
   * false: sessions run the graph as exported, without the decoder fusion (model/fuse-decoder.ts;
   * LoadSettings.fuse), and LoadReport.fused is null. For comparison and diagnosis; default true.
   */
  fuseDecoder?: boolean;
}

/** Internal state exposed for tests and diagnostics; not part of the Engine contract. */
export interface EngineDebugState {
  /** `tensor.location` of each KV tensor the last decode step produced (e.g. 'gpu-buffer'). */
  lastKvLocations: string[];
  /** Requests waiting behind the running one (in the queue, or to join the running batch). */
  queued: number;
  /** Session input names (incl. `lora.*`). */
  inputNames: string[];
  /** Logits row of the last request's first generated token (its prompt forward pass), or null. */
  lastPrefillLogits: Float32Array | null;
  /** Which session ran the last request: the un-injected 'base' graph or the LoRA-'injected' one. */
  lastGraph: 'base' | 'injected' | null;
  /** Rows of the last decode step (batch.ts: > 1 when requests decoded together). */
  lastBatchRows: number;
  /** What the last decode step read back: greedy ids (model/greedy-head.ts) or logits rows. */
  lastDecodeRead?: 'ids' | 'logits' | null;
}

let requestCounter = 0;

export class LocalEngine implements Engine {
  private readonly opts: LocalEngineOptions;
  private readonly ort: Ort;
  private readonly queue = new SerialQueue();
  private readonly requests = new Map<string, AbortController>();
  private loaded: { model: LoadedModel; provider: AdapterFeedProvider } | null = null;
  private lost: DeviceLostError | null = null;
  private debug: Omit<EngineDebugState, 'queued' | 'inputNames'> = {
    lastKvLocations: [],
    lastPrefillLogits: null,
    lastGraph: null,
    lastBatchRows: 0,
  };
  private store: AdapterStore | null | undefined;
  private readonly training: TrainingManager;
  private readonly batcher = new Batcher({
    queue: this.queue,
    model: () => this.requireModel('generate'),
    lost: () => this.lost,
    store: () => this.adapterStore(),
    debug: this.debug,
  });

  constructor(opts: LocalEngineOptions = {}) {
    this.opts = opts;
    this.training = new TrainingManager({
      queue: this.queue,
      model: (why) => this.requireModel(why).model,
      store: () => this.requireStore(),
      forgetAdapter: (name) => this.forgetAdapter(name),
      adoptAdapter: (name, version, feeds) =>
        this.loaded?.provider.adopt?.(name, version, this.loaded.model.targets, feeds) ?? false,
      ...(opts.checkpointStore ? { checkpoints: opts.checkpointStore } : {}),
    });
    this.store = opts.adapterStore;
    this.ort = opts.ort ?? (ortWebgpu as unknown as Ort);
    const config = getWebLoraConfig();
    this.ort.env.wasm.wasmPaths = opts.wasmPaths ?? config.wasmPaths;
    const threads = opts.numThreads ?? config.numThreads;
    if (threads !== undefined) this.ort.env.wasm.numThreads = threads;
  }

  // ---------------------------------------------------------------- load

  loadModel(source?: ModelSource, opts: LoadOptions = {}): Promise<LoadReport> {
    return this.queue.enqueue(() => this.load(source ?? getWebLoraConfig().defaultModel, opts));
  }

  private async load(source: ModelSource, opts: LoadOptions): Promise<LoadReport> {
    let mine: LoadedModel | null = null;
    const model = await loadModel(
      this.ort,
      source,
      opts,
      {
        ...(this.opts.files ? { files: this.opts.files } : {}),
        ...(this.opts.baseGraphForNoAdapter !== undefined
          ? { baseGraphForNoAdapter: this.opts.baseGraphForNoAdapter }
          : {}),
        ...(this.opts.fuseDecoder === false ? { fuse: false } : {}),
        beforeSessions: () => this.release(),
        onDeviceLost: (error, info) => {
          if (!mine || this.loaded?.model !== mine) return; // an older model's device
          this.lost = error;
          for (const ac of this.requests.values()) ac.abort();
          callQuietly(opts.onDeviceLost, info);
        },
      },
      (p: LoadProgress) => callQuietly(opts.onProgress, p),
    );
    mine = model;
    this.lost = null;
    const { ort, backend, targets, device, gates } = model;
    try {
      const provider = this.makeProvider({ ort, backend, targets, device, ...(gates ? { gates } : {}) });
      this.loaded = { model, provider };
    } catch (e) {
      await model.release();
      throw e;
    }
    const total = model.report.modelBytes;
    callQuietly(opts.onProgress, { stage: 'ready', loaded: total, total });
    return model.report;
  }

  private makeProvider(ctx: Parameters<AdapterProviderFactory>[0]): AdapterFeedProvider {
    if (this.opts.adapterProvider) return this.opts.adapterProvider(ctx);
    const store = this.adapterStore();
    if (!store) return noStoreProvider();
    return withStoreGates(storeAdapterProvider(store, this.opts.adapterCacheBytes)(ctx), store, ctx);
  }

  /** The store, opened on first use (so an engine in Node, without IndexedDB, never touches it). */
  private adapterStore(): AdapterStore | null {
    if (this.store === undefined) {
      this.store = typeof indexedDB === 'undefined' ? null : new AdapterStore();
    }
    return this.store;
  }

  private requireStore(): AdapterStore {
    const s = this.adapterStore();
    if (!s) {
      throw new UnsupportedError(
        'this engine has no adapter store (adapterStore: null, or no IndexedDB in this context)',
        {
          feature: 'indexeddb',
        },
      );
    }
    return s;
  }

  private requireModel(why: string): { model: LoadedModel; provider: AdapterFeedProvider } {
    if (!this.loaded)
      throw new NoModelError(`no model loaded: call loadModel first (${why})`, { state: 'no-model' });
    return this.loaded;
  }

  // ---------------------------------------------------------------- generate

  async generate(request: GenerateRequest, onToken?: (delta: TokenDelta) => void): Promise<GenerateResult> {
    const id = request.requestId ?? `local-${++requestCounter}`;
    if (this.requests.has(id)) {
      throw new InvalidOptionError(`requestId "${id}" is already in use by a running or queued request`, {
        option: 'requestId',
        value: id,
      });
    }
    const ac = new AbortController();
    const outer = request.signal;
    const onOuterAbort = (): void => ac.abort();
    if (outer?.aborted) ac.abort();
    else outer?.addEventListener('abort', onOuterAbort, { once: true });
    this.requests.set(id, ac);
    try {
      return await this.batcher.generate(request, ac.signal, onToken);
    } catch (e) {
      if (e instanceof AbortError && e.data.queued === true) {
        if (this.lost) throw this.lost;
        return abortedResult();
      }
      throw e;
    } finally {
      outer?.removeEventListener('abort', onOuterAbort);
      this.requests.delete(id);
    }
  }

  async abort(requestId: string): Promise<boolean> {
    const ac = this.requests.get(requestId);
    if (!ac) return false;
    ac.abort();
    return true;
  }

  async info(): Promise<LoadReport | null> {
    return this.loaded?.model.report ?? null;
  }

  /** Diagnostics for tests (KV tensor locations of the last step, queue depth). */
  debugState(): EngineDebugState {
    return {
      ...this.debug,
      lastKvLocations: [...this.debug.lastKvLocations],
      queued: this.queue.pending + this.batcher.waiting,
      inputNames: this.loaded ? [...this.loaded.model.graph.session.inputNames] : [],
    };
  }

  /**
   * Logits (T, V) of `prompt` under each selection, all in one batched forward (batch-score.ts; `promptNll`
   * turns a row into the prompt's NLL). Internal: for adapter routing, not part of the Engine contract.
   */
  scoreAdapters(prompt: string, selections: readonly AdapterSelection[]): Promise<Float32Array[]> {
    return this.queue.enqueue(async () => {
      const { model: m, provider } = this.requireModel('scoreAdapters');
      return scoreSelections(m, provider, m.tokenizer.encode(prompt), selections);
    });
  }

  // ---------------------------------------------------------------- dispose

  async dispose(): Promise<void> {
    this.training.pauseAll(); // a running run checkpoints and stops; queued ones end as 'paused' too
    this.queue.cancelWaiting('engine disposed');
    for (const ac of this.requests.values()) ac.abort();
    await this.queue.enqueue(() => this.release());
  }

  private async release(): Promise<void> {
    const l = this.loaded;
    this.loaded = null;
    if (!l) return;
    l.provider.dispose?.();
    await l.model.release();
  }

  // ---------------------------------------------------------------- adapters

  async importAdapter(input: AdapterImportInput, opts: AdapterImportOptions = {}): Promise<AdapterInfo> {
    const store = this.requireStore();
    const model = this.modelInfo('adapters are validated against the loaded model');
    const name = opts.name ?? defaultAdapterName(input);
    const progress = (stage: AdapterImportProgress['stage']): void =>
      callQuietly(opts.onProgress, { stage, name });
    progress('read');
    const raw = await readAdapterInput(input);
    progress('validate');
    const imported = importPeftAdapter(raw, model, {
      allowBaseModelMismatch: opts.allowBaseModelMismatch ?? false,
    });
    progress('store');
    const meta = await store.save(name, imported, model.id, {
      overwrite: opts.overwrite ?? false,
      source: 'import',
    });
    this.forgetAdapter(name); // an overwritten adapter's old tensors
    this.prepack(store, name);
    progress('done');
    return meta;
  }

  /**
   * Stores the adapter's feeds in the loaded model's layout (AdapterStore.loadPackedFeeds) in the
   * background, so its first cold swap reads one packed value instead of parsing the PEFT files.
   */
  private prepack(store: AdapterStore, name: string): void {
    const targets = this.loaded?.model.targets;
    if (targets) store.loadPackedFeeds(name, targets).catch(() => {});
  }

  listAdapters(): Promise<AdapterInfo[]> {
    return Promise.resolve().then(() => this.requireStore().list());
  }

  async renameAdapter(from: string, to: string): Promise<AdapterInfo> {
    const meta = await this.requireStore().rename(from, to);
    this.forgetAdapter(from);
    return meta;
  }

  async deleteAdapter(name: string): Promise<void> {
    await this.requireStore().delete(name);
    this.forgetAdapter(name);
  }

  async exportAdapter(name: string): Promise<PeftFiles> {
    return this.requireStore().export(name);
  }

  async adapterStats(): Promise<AdapterStats> {
    return (
      this.loaded?.provider.stats?.() ?? {
        bytesHeld: 0,
        entries: 0,
        hits: 0,
        misses: 0,
        uploads: 0,
        evictions: 0,
        budgetBytes: this.opts.adapterCacheBytes ?? DEFAULT_ADAPTER_CACHE_BYTES,
      }
    );
  }

  /** Merge/truncate (adapters/derive.ts): the result is validated against the loaded model and stored. */
  async mergeAdapters(
    opts: MergeAdaptersOptions,
    onProgress?: (p: AdapterDeriveProgress) => void,
  ): Promise<AdapterInfo> {
    const model = this.modelInfo('merged adapters are validated against the loaded model');
    const meta = await mergeStoredAdapters(this.requireStore(), model, opts, (p) =>
      callQuietly(onProgress, p),
    );
    this.forgetAdapter(meta.name); // an overwritten adapter's old tensors
    return meta;
  }

  async truncateAdapter(
    name: string,
    rank: number | RankBudget,
    opts: TruncateAdapterOptions = {},
  ): Promise<AdapterInfo> {
    const model = this.modelInfo('truncated adapters are validated against the loaded model');
    const meta = await truncateStoredAdapter(this.requireStore(), model, name, rank, opts);
    this.forgetAdapter(meta.name);
    return meta;
  }

  private modelInfo(why: string): AdapterModelInfo {
    const { model: m } = this.requireModel(why);
    return { id: m.report.modelId, aliases: m.report.modelAliases, targets: m.targets };
  }

  private forgetAdapter(name: string): void {
    this.loaded?.provider.forget?.(name);
  }

  // ---------------------------------------------------------------- training (engine/train.ts)

  train(opts: TrainOptions, onProgress?: (p: TrainProgress) => void): Promise<TrainResult> {
    return this.training.train(opts, onProgress);
  }

  pauseTraining(trainId: string): Promise<boolean> {
    return this.training.pause(trainId);
  }

  cancelTraining(trainId: string): Promise<boolean> {
    return this.training.cancel(trainId);
  }

  resumeTraining(trainId: string, onProgress?: (p: TrainProgress) => void): Promise<TrainResult> {
    return this.training.resume(trainId, onProgress);
  }

  listCheckpoints(): Promise<TrainCheckpointInfo[]> {
    return this.training.list();
  }

  deleteCheckpoint(trainId: string): Promise<void> {
    return this.training.deleteCheckpoint(trainId);
  }

  trainGates(opts: GateTrainRequest, onProgress?: (p: GateTrainProgress) => void): Promise<GateTrainResult> {
    return this.training.trainGates(opts, onProgress); // engine/gates.ts
  }
}
