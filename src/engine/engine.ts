/**
 * LocalEngine: the in-thread `Engine` (types.ts) — the worker (worker.ts) runs one of these too.
 * loadModel fetches a package (model-files.ts, cached), injects LoRA inputs into the graph
 * (inject-lora.ts) and builds an onnxruntime-web session on WebGPU (else wasm); unless
 * `baseGraphForNoAdapter: false`, a second session of the original, un-injected graph (same file, same
 * EP and options, on webgpu the same ORT GPUDevice) serves every request whose adapter selection
 * resolves to "no adapter", so the base model pays nothing for the 2 extra MatMuls + Add per target.
 * generate runs its own
 * KV-cached decode loop: on webgpu every `present.*` output stays on the GPU (`preferredOutputLocation`
 * 'gpu-buffer') and is fed back as `past_key_values.*` next step, only the logits row comes to the CPU
 * for sampling (sampling.ts). Requests run one at a time through a SerialQueue (one KV cache).
 * Abort is cooperative: checked before every forward pass, so it takes effect within one decode step
 * and is reported as finishReason 'abort', not as an error. Adapters: import/list/rename/delete/export
 * go to an IndexedDB AdapterStore (adapters/store.ts, validated against the loaded model first), and
 * per request an AdapterFeedProvider (adapters/provider.ts: LRU cache, GPU buffers on ORT's own device)
 * turns the selection into LoRA feeds. It deliberately does no batching, prefix caching or speculative
 * decoding.
 */
import * as ortWebgpu from 'onnxruntime-web/webgpu';
import {
  type ImportInput,
  importPeftAdapter,
  inputFromFiles,
  inputFromUrl,
  type PeftFiles,
} from '../adapters/import.ts';
import { createAdapterProvider } from '../adapters/provider.ts';
import { AdapterStore } from '../adapters/store.ts';
import { detectCapabilities } from '../env.ts';
import {
  AbortError,
  AdapterMismatchError,
  DeviceLostError,
  InvalidOptionError,
  ModelPackageError,
  UnsupportedError,
  WebLoraError,
} from '../errors.ts';
import { injectLora, type LoraTarget, loraBranchOpFor } from '../model/inject-lora.ts';
import { decodeModel, encodeModel, graphOf, outputsOf } from '../model/onnx-io.ts';
import { type ModelDtype, modelFileName, parseGenerationConfig, parseModelConfig } from '../model/package.ts';
import { renderChat, specialTokensOf } from './chat.ts';
import {
  type FetchModelFilesOptions,
  fetchModelFiles,
  localFilesSource,
  type ModelFileProgress,
  type ModelFileSpec,
} from './model-files.ts';
import { SerialQueue } from './queue.ts';
import { createSampler, type StopStringMatcher, stopStringMatcher } from './sampling.ts';
import { type KvLayout, kvLayoutFromNames, type Ort, type OrtTensor, stepFeeds } from './session.ts';
import { TextTokenizer } from './tokenizer.ts';
import type {
  AdapterFeedProvider,
  AdapterFeeds,
  AdapterImportInput,
  AdapterImportOptions,
  AdapterImportProgress,
  AdapterInfo,
  AdapterProviderFactory,
  AdapterSelection,
  AdapterStats,
  Backend,
  DeviceLostInfo,
  Engine,
  FinishReason,
  GenerateRequest,
  GenerateResult,
  LoadOptions,
  LoadProgress,
  LoadReport,
  ModelSource,
  TokenDelta,
} from './types.ts';

const BASE_URL: string = import.meta.env?.BASE_URL ?? '/';
/** The demo model shipped with the app, on our own origin. */
export const DEFAULT_MODEL_URL = `${BASE_URL}models/weblora-shakespeare/`;
export const DEFAULT_MAX_NEW_TOKENS = 128;
/** Default byte budget of the adapter feed cache (GPU buffers on webgpu, tensor data on wasm). */
export const DEFAULT_ADAPTER_CACHE_BYTES = 64 * 1024 * 1024;

const JSON_FILES: ModelFileSpec[] = [
  { path: 'config.json' },
  { path: 'tokenizer.json' },
  { path: 'tokenizer_config.json' },
  { path: 'generation_config.json', optional: true },
];

export interface LocalEngineOptions {
  /** The ORT module; default `onnxruntime-web/webgpu` (webgpu + wasm EPs). */
  ort?: Ort;
  /** Where ORT's wasm runtime files are served; default `BASE_URL + 'ort/'` on this origin. */
  wasmPaths?: string;
  /** ORT wasm threads (ORT itself uses 1 unless the page is cross-origin isolated). */
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
  /** Passed to fetchModelFiles (Cache Storage bucket, injectable fetch, useCache). */
  files?: Pick<FetchModelFilesOptions, 'cacheName' | 'useCache' | 'fetch'>;
  /**
   * Default true: also build a session of the original, un-injected graph and run "no adapter"
   * requests (the provider returned the engine's `baseFeeds`: null, [], an all-zero mix) on it — faster
   * (no LoRA branch at all), but the model's weights are held twice (wasm heap / GPU buffers). false:
   * one session; "no adapter" runs the injected graph with the zero `baseFeeds` (same tokens).
   */
  baseGraphForNoAdapter?: boolean;
}

/** Internal state exposed for tests and diagnostics; not part of the Engine contract. */
export interface EngineDebugState {
  /** `tensor.location` of each KV tensor the last decode step produced (e.g. 'gpu-buffer'). */
  lastKvLocations: string[];
  /** Requests waiting behind the running one. */
  queued: number;
  /** Session input names (incl. `lora.*`). */
  inputNames: string[];
  /** Logits row of the last request's first generated token (its prompt forward pass), or null. */
  lastPrefillLogits: Float32Array | null;
  /** Which session ran the last request: the un-injected 'base' graph or the LoRA-'injected' one. */
  lastGraph: 'base' | 'injected' | null;
}

interface Loaded {
  ort: Ort;
  session: ortWebgpu.InferenceSession;
  /** The un-injected graph's session (baseGraphForNoAdapter), or null. */
  baseSession: ortWebgpu.InferenceSession | null;
  /** The feeds meaning "no adapter"; a provider returning exactly this object selects `baseSession`. */
  baseFeeds: Record<string, OrtTensor>;
  backend: Backend;
  layout: KvLayout;
  hasPositionIds: boolean;
  loraInputs: string[];
  targets: LoraTarget[];
  tokenizer: TextTokenizer;
  specialTokens: Record<string, string>;
  eosIds: Set<number>;
  bosId: number | null;
  maxPositions: number;
  provider: AdapterFeedProvider;
  disposeBase: () => void;
  report: LoadReport;
}

/** The session a request runs on and the LoRA feeds it needs (none for the un-injected graph). */
interface Graph {
  session: ortWebgpu.InferenceSession;
  loraFeeds: Record<string, OrtTensor>;
}

/** Rank-0 LoRA feeds: every `lora.*.A` [in, 0] and `.B` [0, out] — the graph then equals the base model. */
export function rankZeroFeeds(ort: Ort, targets: readonly LoraTarget[]): Record<string, OrtTensor> {
  const feeds: Record<string, OrtTensor> = {};
  for (const t of targets) {
    feeds[t.inputA] = new ort.Tensor('float32', new Float32Array(0), [t.in, 0]);
    feeds[t.inputB] = new ort.Tensor('float32', new Float32Array(0), [0, t.out]);
  }
  return feeds;
}

/**
 * Feeds that make the LoRA branch a no-op ("no adapter"), made once per loaded model.
 * wasm: rank-0 empty tensors (no work at all). webgpu: onnxruntime-web 1.30's WebGPU EP cannot bind
 * zero-size inputs (createBindGroup fails: "Required member is undefined"), so there the base model is
 * rank 1 with all-zero A and B — x·0·0 adds exactly +0 — held in GPU buffers (WebGPU zero-fills new
 * buffers), so nothing is uploaded per step. `dispose` frees those buffers.
 */
export function baseModelFeeds(
  ort: Ort,
  targets: readonly LoraTarget[],
  device: GPUDevice | null,
): { feeds: Record<string, OrtTensor>; dispose(): void } {
  if (!device) return { feeds: rankZeroFeeds(ort, targets), dispose: () => {} };
  const feeds: Record<string, OrtTensor> = {};
  const zeros = (n: number, dims: number[]): OrtTensor => {
    const buffer = device.createBuffer({
      size: Math.max(16, Math.ceil((n * 4) / 16) * 16),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    return ort.Tensor.fromGpuBuffer(buffer, { dataType: 'float32', dims, dispose: () => buffer.destroy() });
  };
  for (const t of targets) {
    feeds[t.inputA] = zeros(t.in, [t.in, 1]); // (in, R=1)
    feeds[t.inputB] = zeros(t.out, [1, t.out]); // (R=1, out)
  }
  return {
    feeds,
    dispose: () => {
      for (const f of Object.values(feeds)) f.dispose();
    },
  };
}

/**
 * The provider used when none is installed: `null` (no adapter) → `base` (baseModelFeeds); any named
 * adapter or mix → UnsupportedError, since nothing can resolve names without the adapter store.
 */
export function defaultAdapterProvider(base: Record<string, OrtTensor>): AdapterFeedProvider {
  return {
    async feedsFor(selection: AdapterSelection): Promise<AdapterFeeds> {
      if (selection !== null && selection !== undefined) {
        throw new UnsupportedError(
          'adapter requested but no adapter provider is installed in this engine; generate with adapter: null ' +
            'or create the engine with an adapterProvider',
          { adapter: selection },
        );
      }
      return { feeds: base, release: () => {} };
    },
  };
}

/**
 * The engine's default provider factory: adapters from `store` through an LRU feed cache of
 * `budgetBytes` — GPU buffers on ORT's own device on webgpu (a hot adapter uploads nothing), CPU
 * tensors on wasm. "No adapter" (null, [], all-zero mix weights) is always the engine's `baseFeeds`:
 * rank-1 zeros on webgpu, never the zero-size inputs onnxruntime-web 1.30's WebGPU EP cannot bind.
 */
export function storeAdapterProvider(
  store: AdapterStore,
  budgetBytes: number = DEFAULT_ADAPTER_CACHE_BYTES,
): AdapterProviderFactory {
  return (ctx) =>
    createAdapterProvider({
      store,
      ort: ctx.ort,
      budgetBytes,
      backend: ctx.backend,
      ...(ctx.device ? { device: ctx.device } : {}),
      baseFeeds: ctx.baseFeeds,
    });
}

/**
 * Calls `onLost` when `device` is lost for any reason but an intentional `destroy()` (reason
 * 'destroyed'), which is how ORT and tests release a device on purpose.
 */
export function watchDeviceLost(
  device: Pick<GPUDevice, 'lost'>,
  onLost: (info: DeviceLostInfo) => void,
): void {
  device.lost.then(
    (info) => {
      if (info.reason === 'destroyed') return;
      onLost({ reason: String(info.reason ?? 'unknown'), message: info.message });
    },
    () => {},
  );
}

function callQuietly<A>(fn: ((a: A) => unknown) | undefined, arg: A): void {
  if (!fn) return;
  try {
    const r = fn(arg);
    // A Comlink-proxied callback returns a promise; never await it (it would cost a round trip per token).
    if (r && typeof (r as Promise<unknown>).catch === 'function') (r as Promise<unknown>).catch(() => {});
  } catch (e) {
    console.warn('weblora: callback threw', e);
  }
}

function parseJson(bytes: Uint8Array | undefined, file: string): unknown {
  if (!bytes) throw new ModelPackageError(`the model package lacks ${file}`, { file });
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new ModelPackageError(`${file} is not valid JSON: ${String(e)}`, { file });
  }
}

let yieldChannel: MessageChannel | null = null;
const yieldWaiters: (() => void)[] = [];

/**
 * Lets queued tasks (messages, input, rendering) run before the next step: a MessageChannel hop, i.e. a
 * plain task behind those already queued. Not scheduler.yield(), whose continuation is prioritized
 * ahead of pending messages and so would not let an abort message in.
 */
export function yieldToEventLoop(): Promise<void> {
  if (!yieldChannel) {
    // One channel for the whole thread: a new MessageChannel per decode step costs more than the turn.
    yieldChannel = new MessageChannel();
    yieldChannel.port1.onmessage = () => yieldWaiters.shift()?.();
    // Node: an open port with a listener would keep the process alive.
    (yieldChannel.port1 as { unref?: () => void }).unref?.();
  }
  const ch = yieldChannel;
  return new Promise((resolve) => {
    yieldWaiters.push(resolve);
    ch.port2.postMessage(null);
  });
}

let requestCounter = 0;

export class LocalEngine implements Engine {
  private readonly opts: LocalEngineOptions;
  private readonly ort: Ort;
  private readonly queue = new SerialQueue();
  private readonly requests = new Map<string, AbortController>();
  private loaded: Loaded | null = null;
  private lost: DeviceLostError | null = null;
  private lastKvLocations: string[] = [];
  private lastPrefillLogits: Float32Array | null = null;
  private lastGraph: 'base' | 'injected' | null = null;
  private store: AdapterStore | null | undefined;

  constructor(opts: LocalEngineOptions = {}) {
    this.opts = opts;
    this.store = opts.adapterStore;
    this.ort = opts.ort ?? (ortWebgpu as unknown as Ort);
    const here = typeof location === 'undefined' ? undefined : location.href;
    const wasmPaths = opts.wasmPaths ?? (here ? new URL(`${BASE_URL}ort/`, here).href : undefined);
    if (wasmPaths) this.ort.env.wasm.wasmPaths = wasmPaths;
    if (opts.numThreads !== undefined) this.ort.env.wasm.numThreads = opts.numThreads;
  }

  // ---------------------------------------------------------------- load

  loadModel(source: ModelSource = DEFAULT_MODEL_URL, opts: LoadOptions = {}): Promise<LoadReport> {
    return this.queue.enqueue(() => this.load(source, opts));
  }

  private async load(source: ModelSource, opts: LoadOptions): Promise<LoadReport> {
    const t0 = performance.now();
    const ort = this.ort;
    const progress = (p: LoadProgress): void => callQuietly(opts.onProgress, p);

    // 1. Files (q4 when present unless a dtype is forced).
    const { files, dtype } = await this.fetchFiles(source, opts.dtype, progress);
    const modelPath = modelFileName(dtype);
    const modelBytes = files.get(modelPath)!;
    const configJson = parseJson(files.get('config.json'), 'config.json');
    const config = parseModelConfig(configJson);
    const modelId = opts.modelId ?? modelIdOf(source);
    const modelAliases = aliasesOf(configJson, opts.modelAliases, modelId);
    const genJson = files.get('generation_config.json');
    const gen = genJson ? parseGenerationConfig(parseJson(genJson, 'generation_config.json')) : null;
    const tokenizerConfig = parseJson(files.get('tokenizer_config.json'), 'tokenizer_config.json') as Record<
      string,
      unknown
    >;
    const tokenizer = TextTokenizer.fromJSON(
      parseJson(files.get('tokenizer.json'), 'tokenizer.json'),
      tokenizerConfig,
      config.eosTokenIds[0],
    );

    // 2. Backend: webgpu when available (or asked for), else wasm. It picks the LoRA branch operator.
    const caps = await detectCapabilities();
    const want = opts.backend ?? 'auto';
    if (want === 'webgpu' && !caps.webgpu) {
      throw new UnsupportedError('backend "webgpu" was requested but this browser offers no WebGPU adapter', {
        feature: 'webgpu',
      });
    }
    let backend: Backend = want === 'wasm' || !caps.webgpu ? 'wasm' : 'webgpu';

    // 3. LoRA inputs into the graph.
    progress({ stage: 'prepare', loaded: modelBytes.byteLength, total: modelBytes.byteLength });
    const decoded = decodeModel(modelBytes);
    const inject = (b: Backend) => injectLora(decoded, { branchOp: loraBranchOpFor(b) });
    let { model, targets } = inject(backend);
    const presentNames = outputsOf(graphOf(model))
      .map((o) => o.name)
      .filter((n) => n.startsWith('present.'));
    let injected = encodeModel(model);

    // 4. Session.
    progress({ stage: 'session', loaded: modelBytes.byteLength, total: modelBytes.byteLength });
    // The new package is valid: only now free the old model (a failed fetch keeps it usable).
    await this.release();
    let session: ortWebgpu.InferenceSession;
    try {
      session = await this.createSession(injected, backend, presentNames);
    } catch (e) {
      if (want !== 'auto' || backend !== 'webgpu') throw e;
      console.warn('weblora: WebGPU session failed, falling back to wasm', e);
      backend = 'wasm';
      ({ model, targets } = inject(backend));
      injected = encodeModel(model);
      session = await this.createSession(injected, backend, presentNames);
    }

    let disposeBase = (): void => {};
    let baseSession: ortWebgpu.InferenceSession | null = null;
    try {
      const layout = kvLayoutFromNames(session.inputNames, session.outputNames, config);
      if (this.opts.baseGraphForNoAdapter ?? true) {
        // The original bytes, same EP/options (on webgpu ORT shares its one GPUDevice between sessions).
        try {
          baseSession = await this.createSession(modelBytes, backend, presentNames);
        } catch (e) {
          console.warn('weblora: the un-injected base session failed; "no adapter" uses the LoRA graph', e);
        }
      }
      let device: GPUDevice | null = null;
      let adapterInfo: LoadReport['adapterInfo'] = null;
      if (backend === 'webgpu') {
        device = (await ort.env.webgpu.device) as GPUDevice;
        const info = device.adapterInfo ?? (ort.env.webgpu.adapter as GPUAdapter | undefined)?.info;
        if (info) {
          adapterInfo = {
            vendor: info.vendor,
            architecture: info.architecture,
            device: info.device,
            description: info.description,
          };
        }
        this.lost = null;
        watchDeviceLost(device, (info) => {
          if (this.loaded?.session !== session) return; // an older session's device
          this.lost = new DeviceLostError(
            `the GPU device was lost (${info.reason}: ${info.message}); reload the model (or the page) to continue`,
            { reason: info.reason, message: info.message },
          );
          for (const ac of this.requests.values()) ac.abort();
          callQuietly(opts.onDeviceLost, info);
        });
      }
      const eos = new Set([...config.eosTokenIds, ...(gen?.eosTokenIds ?? []), tokenizer.eosTokenId]);
      const report: LoadReport = {
        backend,
        adapterInfo,
        dtype,
        config: {
          modelType: config.modelType,
          vocabSize: config.vocabSize,
          hiddenSize: config.hiddenSize,
          numLayers: config.numLayers,
          numHeads: config.numHeads,
          numKvHeads: config.numKvHeads,
          headDim: config.headDim,
          maxPositionEmbeddings: config.maxPositionEmbeddings,
          eosTokenIds: [...eos],
          hasChatTemplate: tokenizer.chatTemplate !== null,
        },
        modelBytes: modelBytes.byteLength,
        baseSession: baseSession !== null,
        sessionBytes: injected.byteLength + (baseSession ? modelBytes.byteLength : 0),
        targets,
        targetCount: targets.length,
        loraBranchOp: loraBranchOpFor(backend),
        loadMs: 0,
        modelId,
        modelAliases,
      };
      const base = baseModelFeeds(ort, targets, device);
      disposeBase = base.dispose;
      const provider = this.makeProvider({ ort, backend, targets, device, baseFeeds: base.feeds });
      this.loaded = {
        ort,
        session,
        baseSession,
        baseFeeds: base.feeds,
        backend,
        layout,
        hasPositionIds: session.inputNames.includes('position_ids'),
        loraInputs: session.inputNames.filter((n) => n.startsWith('lora.')),
        targets,
        tokenizer,
        specialTokens: specialTokensOf(tokenizerConfig),
        eosIds: eos,
        bosId: config.bosTokenId,
        maxPositions: config.maxPositionEmbeddings,
        provider,
        disposeBase: base.dispose,
        report,
      };
      report.loadMs = performance.now() - t0;
      progress({ stage: 'ready', loaded: modelBytes.byteLength, total: modelBytes.byteLength });
      return report;
    } catch (e) {
      disposeBase();
      await baseSession?.release().catch(() => {});
      await session.release().catch(() => {});
      throw e;
    }
  }

  private makeProvider(ctx: Parameters<AdapterProviderFactory>[0]): AdapterFeedProvider {
    if (this.opts.adapterProvider) return this.opts.adapterProvider(ctx);
    const store = this.adapterStore();
    if (!store) return defaultAdapterProvider(ctx.baseFeeds);
    return storeAdapterProvider(store, this.opts.adapterCacheBytes)(ctx);
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
        { feature: 'indexeddb' },
      );
    }
    return s;
  }

  private async fetchFiles(
    source: ModelSource,
    forced: ModelDtype | undefined,
    progress: (p: LoadProgress) => void,
  ): Promise<{ files: Map<string, Uint8Array>; dtype: ModelDtype }> {
    const specsFor = (dtype: ModelDtype | undefined): ModelFileSpec[] =>
      dtype
        ? [...JSON_FILES, { path: modelFileName(dtype) }]
        : [...JSON_FILES, { path: modelFileName('q4'), optional: true }];

    if (typeof source !== 'string') {
      if (!Array.isArray(source)) {
        throw new InvalidOptionError('model source must be a base URL or an array of Files', {
          option: 'source',
        });
      }
      let files = await localFilesSource(source, specsFor(forced));
      let dtype: ModelDtype = forced ?? 'q4';
      if (!files.has(modelFileName(dtype))) {
        dtype = 'fp32';
        files = await localFilesSource(source, specsFor('fp32'));
      }
      let loaded = 0;
      for (const [path, bytes] of files) {
        loaded += bytes.byteLength;
        progress({
          stage: 'download',
          file: path,
          fileLoaded: bytes.byteLength,
          fileTotal: bytes.byteLength,
          loaded,
          total: null,
        });
      }
      return { files, dtype };
    }

    let offset = 0;
    let offsetTotal: number | null = 0;
    const onProgress = (p: ModelFileProgress): void =>
      progress({
        stage: 'download',
        file: p.file,
        fileLoaded: p.loaded,
        fileTotal: p.total,
        loaded: offset + p.overallLoaded,
        total: p.overallTotal !== null && offsetTotal !== null ? offsetTotal + p.overallTotal : null,
      });
    const fileOpts: FetchModelFilesOptions = { ...this.opts.files, onProgress };
    const files = await fetchModelFiles(source, specsFor(forced), fileOpts);
    if (forced) return { files, dtype: forced };
    if (files.has(modelFileName('q4'))) return { files, dtype: 'q4' };
    for (const b of files.values()) offset += b.byteLength;
    offsetTotal = offset;
    const more = await fetchModelFiles(source, [{ path: modelFileName('fp32') }], fileOpts);
    for (const [k, v] of more) files.set(k, v);
    return { files, dtype: 'fp32' };
  }

  private createSession(
    bytes: Uint8Array,
    backend: Backend,
    presentNames: string[],
  ): Promise<ortWebgpu.InferenceSession> {
    const options: ortWebgpu.InferenceSession.SessionOptions = {
      executionProviders: [backend],
      // Severity 3 (error): ORT otherwise warns that shape ops run on the CPU, which is by design.
      logSeverityLevel: 3,
    };
    if (backend === 'webgpu') {
      // KV stays on the GPU between steps; only the logits row is read back for sampling.
      const where: Record<string, 'gpu-buffer' | 'cpu'> = { logits: 'cpu' };
      for (const n of presentNames) where[n] = 'gpu-buffer';
      options.preferredOutputLocation = where;
    }
    return this.ort.InferenceSession.create(bytes, options);
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
      return await this.queue.enqueue(() => this.run(request, ac.signal, onToken), ac.signal);
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
    return this.loaded?.report ?? null;
  }

  /** Diagnostics for tests (KV tensor locations of the last step, queue depth). */
  debugState(): EngineDebugState {
    return {
      lastKvLocations: [...this.lastKvLocations],
      queued: this.queue.pending,
      inputNames: this.loaded ? [...this.loaded.session.inputNames] : [],
      lastPrefillLogits: this.lastPrefillLogits,
      lastGraph: this.lastGraph,
    };
  }

  private async run(
    req: GenerateRequest,
    signal: AbortSignal,
    onToken?: (delta: TokenDelta) => void,
  ): Promise<GenerateResult> {
    if (this.lost) throw this.lost;
    const m = this.loaded;
    if (!m) throw new WebLoraError('no model loaded: call loadModel first', { state: 'no-model' });

    // Prompt → ids.
    if ((req.prompt === undefined) === (req.messages === undefined)) {
      throw new InvalidOptionError('pass exactly one of `prompt` or `messages`', { option: 'prompt' });
    }
    const text =
      req.messages !== undefined
        ? renderChat(m.tokenizer.chatTemplate, req.messages, { specialTokens: m.specialTokens })
        : req.prompt!;
    if (typeof text !== 'string')
      throw new InvalidOptionError('prompt must be a string', { option: 'prompt' });
    let ids = m.tokenizer.encode(text);
    if (ids.length === 0) {
      if (m.bosId === null) {
        throw new InvalidOptionError('the prompt is empty and the model has no bos token to start from', {
          option: 'prompt',
        });
      }
      ids = [m.bosId];
    }
    if (ids.length >= m.maxPositions) {
      throw new InvalidOptionError(
        `the prompt has ${ids.length} tokens; this model's context is ${m.maxPositions} (max_position_embeddings)`,
        { option: 'prompt', promptTokens: ids.length, maxPositions: m.maxPositions },
      );
    }
    const wanted = req.maxNewTokens ?? DEFAULT_MAX_NEW_TOKENS;
    if (!Number.isInteger(wanted) || wanted < 0) {
      throw new InvalidOptionError(`maxNewTokens = ${wanted} is invalid: an integer ≥ 0`, {
        option: 'maxNewTokens',
        value: wanted,
      });
    }
    const maxNew = Math.min(wanted, m.maxPositions - ids.length);
    const sampler = createSampler({
      temperature: req.temperature,
      topK: req.topK,
      topP: req.topP,
      repetitionPenalty: req.repetitionPenalty,
      seed: req.seed,
    });
    const matcher: StopStringMatcher | null = req.stop?.length ? stopStringMatcher(req.stop) : null;

    const adapter = await m.provider.feedsFor(req.adapter ?? null, m.targets);
    try {
      // "No adapter" is whatever the provider resolves to the engine's own baseFeeds (null, [], an
      // all-zero mix; names were validated first): the un-injected session, which needs no LoRA feeds.
      const useBase = m.baseSession !== null && adapter.feeds === m.baseFeeds;
      const missing = useBase ? [] : m.loraInputs.filter((n) => !(n in adapter.feeds));
      if (missing.length > 0) {
        throw new AdapterMismatchError(
          `adapter provider gave no tensor for ${missing.length} LoRA input(s), e.g. ${missing[0]}`,
          { missing: missing.slice(0, 10) },
        );
      }
      const graph = useBase
        ? { session: m.baseSession!, loraFeeds: {} }
        : { session: m.session, loraFeeds: adapter.feeds };
      this.lastGraph = useBase ? 'base' : 'injected';
      return await this.decodeLoop(m, ids, maxNew, sampler, matcher, graph, signal, onToken);
    } catch (e) {
      if (this.lost) throw this.lost;
      throw e;
    } finally {
      adapter.release();
    }
  }

  private async decodeLoop(
    m: Loaded,
    promptIds: number[],
    maxNew: number,
    sampler: ReturnType<typeof createSampler>,
    matcher: StopStringMatcher | null,
    graph: Graph,
    signal: AbortSignal,
    onToken?: (delta: TokenDelta) => void,
  ): Promise<GenerateResult> {
    const { ort } = m;
    const { numKvHeads, headDim, pastNames } = m.layout;
    let past = new Map<string, OrtTensor>();
    for (const n of pastNames) {
      past.set(n, new ort.Tensor('float32', new Float32Array(0), [1, numKvHeads, 0, headDim]));
    }
    let pastLen = 0;
    let input = promptIds;
    const history = [...promptIds];
    const generated: number[] = [];
    let decoded = ''; // tokenizer text of `generated` already turned into deltas
    let text = '';
    let finish: FinishReason = 'length';
    let prefillMs = 0;
    let decodeMs = 0;
    try {
      for (let step = 0; step < maxNew; step++) {
        // ORT's wasm run resolves through microtasks only: without a macrotask turn here, an
        // abort message (worker) or a paint (page) would wait for the whole generation.
        if (step > 0) await yieldToEventLoop();
        if (signal.aborted) {
          finish = 'abort';
          break;
        }
        const t0 = performance.now();
        const { logits, present } = await this.forward(m, graph, input, past, pastLen);
        for (const t of past.values()) t.dispose();
        past = present;
        pastLen += input.length;
        const next = sampler.next(logits, history);
        const dt = performance.now() - t0;
        if (step === 0) {
          prefillMs = dt;
          this.lastPrefillLogits = logits;
        } else decodeMs += dt;
        generated.push(next);
        history.push(next);

        const isEos = m.eosIds.has(next);
        const last = isEos || step === maxNew - 1;
        // Incremental detokenization: decode everything, emit the new suffix; hold back a trailing
        // U+FFFD (a multi-byte character whose remaining bytes come with the next token).
        let piece = '';
        const full = m.tokenizer.decode(generated);
        if (last || !full.endsWith('\uFFFD')) {
          piece = full.startsWith(decoded)
            ? full.slice(decoded.length)
            : full.slice(Math.min(decoded.length, full.length));
          decoded = full;
        }
        let visible = piece;
        if (matcher) {
          const r = matcher.push(piece);
          visible = r.text;
          if (r.stopped) finish = 'stop';
          else if (last) visible += matcher.flush();
        }
        text += visible;
        callQuietly(onToken, { tokenId: next, text: visible });
        if (finish === 'stop') break;
        if (isEos) {
          finish = 'eos';
          break;
        }
        input = [next];
      }
    } finally {
      for (const t of past.values()) t.dispose();
    }
    if (finish === 'abort' && this.lost) throw this.lost;
    const decodeSteps = Math.max(0, generated.length - 1);
    return {
      text,
      tokenIds: generated,
      finishReason: finish,
      timings: {
        prefillMs,
        decodeMs,
        tokensPerSecond: decodeSteps > 0 && decodeMs > 0 ? (decodeSteps * 1000) / decodeMs : 0,
        promptTokens: promptIds.length,
      },
    };
  }

  /** One forward pass of `ids` after `pastLen` cached positions; returns the last row of logits. */
  private async forward(
    m: Loaded,
    { session, loraFeeds }: Graph,
    ids: number[],
    past: Map<string, OrtTensor>,
    pastLen: number,
  ): Promise<{ logits: Float32Array; present: Map<string, OrtTensor> }> {
    const feeds: Record<string, OrtTensor> = {
      ...loraFeeds,
      ...stepFeeds(m.ort, ids, pastLen, m.hasPositionIds),
    };
    for (const [n, t] of past) feeds[n] = t;
    const out = await session.run(feeds, ['logits', ...m.layout.presentNames]);
    const logitsT = out.logits!;
    const V = logitsT.dims[logitsT.dims.length - 1]!;
    const all = (await logitsT.getData()) as Float32Array;
    const T = ids.length;
    const logits = all.slice((T - 1) * V, T * V);
    logitsT.dispose();
    const present = new Map<string, OrtTensor>();
    m.layout.presentNames.forEach((o, i) => {
      present.set(m.layout.pastNames[i]!, out[o]!);
    });
    this.lastKvLocations = [...present.values()].map((t) => t.location);
    return { logits, present };
  }

  // ---------------------------------------------------------------- dispose

  async dispose(): Promise<void> {
    this.queue.cancelWaiting('engine disposed');
    for (const ac of this.requests.values()) ac.abort();
    await this.queue.enqueue(() => this.release());
  }

  private async release(): Promise<void> {
    const m = this.loaded;
    this.loaded = null;
    if (!m) return;
    m.provider.dispose?.();
    m.disposeBase();
    try {
      await m.baseSession?.release();
    } finally {
      await m.session.release();
    }
  }

  // ---------------------------------------------------------------- adapters

  async importAdapter(input: AdapterImportInput, opts: AdapterImportOptions = {}): Promise<AdapterInfo> {
    const store = this.requireStore();
    const m = this.loaded;
    if (!m) {
      throw new WebLoraError('no model loaded: adapters are validated against the loaded model', {
        state: 'no-model',
      });
    }
    const name = opts.name ?? defaultAdapterName(input);
    const progress = (stage: AdapterImportProgress['stage']): void =>
      callQuietly(opts.onProgress, { stage, name });
    progress('read');
    const raw = await readImportInput(input);
    progress('validate');
    const imported = importPeftAdapter(
      raw,
      { id: m.report.modelId, aliases: m.report.modelAliases, targets: m.targets },
      { allowBaseModelMismatch: opts.allowBaseModelMismatch ?? false },
    );
    progress('store');
    const meta = await store.save(name, imported, m.report.modelId, {
      overwrite: opts.overwrite ?? false,
      source: 'import',
    });
    this.forgetAdapter(name); // an overwritten adapter's old tensors
    progress('done');
    return meta;
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

  private forgetAdapter(name: string): void {
    this.loaded?.provider.forget?.(name);
  }
}

/** Last non-empty path segment of a URL or path ("…/weblora-shakespeare/" → "weblora-shakespeare"). */
function lastSegment(path: string): string {
  const clean = path.replace(/[?#].*$/, '');
  const parts = clean.split(/[\\/]+/).filter((p) => p.length > 0);
  return parts[parts.length - 1] ?? '';
}

/** The default model id: the source URL's last path segment, or the picked folder's name. */
function modelIdOf(source: ModelSource): string {
  if (typeof source === 'string') return lastSegment(source) || source;
  for (const f of source) {
    const rel = f.webkitRelativePath;
    if (rel?.includes('/')) return rel.split('/')[0]!;
  }
  return 'local-model';
}

function aliasesOf(configJson: unknown, extra: readonly string[] | undefined, id: string): string[] {
  const out = new Set<string>(extra ?? []);
  const c = configJson as Record<string, unknown> | null;
  for (const k of ['_name_or_path', 'name_or_path']) {
    const v = c?.[k];
    if (typeof v === 'string' && v.trim() !== '') out.add(v);
  }
  out.delete(id);
  return [...out];
}

/** Name for an import without `opts.name`: the adapter's folder (or single file) name. */
export function defaultAdapterName(input: AdapterImportInput): string {
  const strip = (n: string): string => n.replace(/\.safetensors$/i, '');
  const generic = (n: string): boolean => n === '' || n === 'adapter_model' || n === 'adapter_config.json';
  if ('files' in input && Array.isArray(input.files)) {
    const st = input.files.find((f) => f.name.toLowerCase().endsWith('.safetensors'));
    if (st) {
      const segs = (st.webkitRelativePath || '').split('/').filter(Boolean);
      if (segs.length >= 2) return segs[segs.length - 2]!;
      if (!generic(strip(st.name))) return strip(st.name);
    }
  } else if ('url' in input && typeof input.url === 'string') {
    const segs = input.url
      .replace(/[?#].*$/, '')
      .split('/')
      .filter(Boolean)
      .filter((s) => !/^(resolve|main)$/.test(s));
    const last = segs[segs.length - 1] ?? '';
    if (/\.safetensors$/i.test(last)) {
      if (!generic(strip(last))) return strip(last);
      if (segs.length >= 2) return segs[segs.length - 2]!;
    } else if (last && !/^https?:$/.test(last)) return last;
  }
  throw new InvalidOptionError('give the adapter a name (opts.name): none can be derived from this input', {
    option: 'name',
  });
}

async function readImportInput(input: AdapterImportInput): Promise<ImportInput> {
  if (input && 'files' in input && Array.isArray(input.files)) return inputFromFiles(input.files);
  if (input && 'url' in input && typeof input.url === 'string') return inputFromUrl(input.url);
  if (input && 'weights' in input && input.weights instanceof Uint8Array) {
    return input.config === undefined
      ? { weights: input.weights }
      : { config: input.config, weights: input.weights };
  }
  throw new InvalidOptionError(
    'adapter input must be { files }, { url } or { config?, weights: Uint8Array }',
    {
      option: 'input',
    },
  );
}

function abortedResult(): GenerateResult {
  return {
    text: '',
    tokenIds: [],
    finishReason: 'abort',
    timings: { prefillMs: 0, decodeMs: 0, tokensPerSecond: 0, promptTokens: 0 },
  };
}
