/**
 * The one `Engine` contract the UI codes against, implemented in-thread (`LocalEngine`, engine.ts) and
 * by the Web Worker proxy (`createWorkerEngine`, client.ts), plus every type that crosses it. Values
 * here are structured-cloneable (no classes, no functions except the callbacks, which the worker
 * proxy wraps with Comlink.proxy); the worker protocol built on them is protocol.ts. It also re-exports the
 * seam to the adapter subsystem (`AdapterFeedProvider`, src/adapters/types.ts); it deliberately holds
 * no logic.
 */

import type * as OrtModule from 'onnxruntime-web';
import type {
  AdapterDeriveProgress,
  MergeAdaptersOptions,
  RankBudget,
  TruncateAdapterOptions,
} from '../adapters/derive.ts';
import type { PeftFiles } from '../adapters/import.ts';
import type { StoredAdapterMeta } from '../adapters/store.ts';
import type {
  AdapterFeedProvider,
  AdapterFeeds,
  AdapterImportInput,
  AdapterSelection,
  AdapterStats,
} from '../adapters/types.ts';
import type { ChatMessage } from '../model/chat.ts';
import type { WasmDequantize } from '../model/dequantize.ts';
import type { FuseReport } from '../model/fuse-decoder.ts';
import type { GateSite } from '../model/inject-gates.ts';
import type { LoraBranchOp, LoraTarget, PackedLoraMode } from '../model/inject-lora.ts';
import type { DecoderLayout } from '../model/layout.ts';
import type { ModelDtype } from '../model/package.ts';
import type {
  TrainCheckpointInfo,
  TrainDataFormat,
  TrainDevice,
  TrainMetadata,
  TrainOptions,
  TrainProgress,
  TrainResult,
} from '../train/types.ts';
import type { GateTrainProgress, GateTrainRequest, GateTrainResult } from './gates.ts';
import type { AdapterRequest, AutoAdapterOptions, RoutingReport } from './route.ts';

export type {
  AdapterDeriveProgress,
  AdapterFeedProvider,
  AdapterFeeds,
  AdapterImportInput,
  AdapterRequest,
  AdapterSelection,
  AdapterStats,
  AutoAdapterOptions,
  ChatMessage,
  DecoderLayout,
  LoraTarget,
  MergeAdaptersOptions,
  ModelDtype,
  PeftFiles,
  RankBudget,
  RoutingReport,
  TrainCheckpointInfo,
  TrainDataFormat,
  TrainDevice,
  TrainMetadata,
  TrainOptions,
  TrainProgress,
  TrainResult,
  TruncateAdapterOptions,
};

export type Backend = 'webgpu' | 'wasm';
export type BackendPreference = 'auto' | Backend;

/**
 * Where a model comes from: the base URL of an HF-layout folder (absolute, or a path resolved against
 * the page/worker origin, e.g. `/models/weblora-shakespeare/`), or files the user picked (a folder
 * through `<input webkitdirectory>`; matched by their path inside the folder).
 */
export type ModelSource = string | File[];

export interface LoadProgress {
  /** download: bytes arriving; prepare: LoRA graph pass; session: ORT session creation; ready: done. */
  stage: 'download' | 'prepare' | 'session' | 'ready';
  /** The file this event is about (download stage). */
  file?: string;
  /** Bytes of `file` so far, and its size when known. */
  fileLoaded?: number;
  fileTotal?: number | null;
  /** Bytes of all files so far, and their sum when every size is known. */
  loaded: number;
  total: number | null;
  /** The file is read from Cache Storage (download stage). */
  fromCache?: boolean;
}

export interface DeviceLostInfo {
  reason: string;
  message: string;
}

export interface LoadOptions {
  /**
   * 'fp32' (onnx/model.onnx), 'fp16' (model_fp16.onnx), 'q4' (model_q4.onnx) or 'q4f16'
   * (model_q4f16.onnx). Default: q4 when the package has it, else fp32. A dtype whose file the package
   * lacks → DtypeUnavailableError listing the dtypes it has.
   */
  dtype?: ModelDtype;
  /**
   * Default 'auto': WebGPU on a hardware adapter when the session builds on it, else wasm (a software
   * adapter such as SwiftShader counts as none: backend-choice.ts). LoadReport.backendReason says why.
   */
  backend?: BackendPreference;
  onProgress?: (p: LoadProgress) => void;
  /** Called once when the GPU device is lost (not when destroyed on purpose); later calls throw DeviceLostError. */
  onDeviceLost?: (info: DeviceLostInfo) => void;
  /**
   * The id adapters' `base_model_name_or_path` is checked against (by last path segment, see
   * adapters/import.ts checkBaseModel). Default: the source URL's last path segment, or the picked
   * folder's name.
   */
  modelId?: string;
  /** More accepted base-model names (config.json `_name_or_path` is added automatically). */
  modelAliases?: string[];
  /**
   * Inject per-token routing gates (model/inject-gates.ts) so `generate` accepts `{ gated: name }`
   * selections (gated mixes). Default false: the ordinary graph, which pays nothing for gates.
   */
  gates?: boolean;
  /** How q/k/v adapters sit on a packed `qkv_proj` graph (inject-lora.ts); default PACKED_LORA_DEFAULT. */
  packedLora?: PackedLoraMode;
  /**
   * wasm only (webgpu runs 4-bit MatMulNBits natively): how many 4-bit projections become fp32 MatMuls
   * dequantized once at load (model/dequantize.ts). onnxruntime-web's wasm build has no 4-bit kernel, so a
   * MatMulNBits dequantizes its weight on every step (5–7× slower decode), but fp32 weights take 8× the
   * memory of the 4-bit blocks in a wasm heap capped at 4 GiB. 'auto' (default): largest weights first
   * (the lm_head first) while the fp32 bytes stay within 1 GiB (WASM_DEQUANTIZE_MAX_BYTES), the rest
   * stays 4-bit; 'always': every one (a ≥ 0.5B model may then not fit in the heap); 'never': none (the
   * 4-bit memory footprint, slower decode); a number: that budget in bytes. LoadReport.dequantizedAtLoad
   * says what was converted and kept. Anything else → InvalidOptionError.
   */
  wasmDequantize?: WasmDequantize;
}

export interface GpuAdapterSummary {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
}

export interface ModelSummary {
  modelType: string;
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  maxPositionEmbeddings: number;
  eosTokenIds: number[];
  hasChatTemplate: boolean;
}

/** Wall-clock ms of each phase of a model load (LoadReport.phases; engine/load-phases.ts). */
export interface LoadPhases {
  /** Every file read: downloads or Cache Storage reads, HEAD probes, size checks. */
  files: number;
  /** Protobuf decode of the ONNX file (weights stay views of the fetched bytes). */
  decode: number;
  /** The LoRA injection pass (inject-lora.ts). */
  inject: number;
  /** Encoding the injected graph (structure only: its weights go to onnxruntime-web as external data). */
  encode: number;
  /** Creating the injected session. */
  session: number;
  /** Creating the un-injected base session (0 when there is none). */
  baseSession: number;
  /** The rest: JSON and tokenizer parsing, backend detection, device setup. */
  other: number;
}

export interface LoadReport {
  backend: Backend;
  /**
   * Why `backend`, in one sentence for the user (backend-choice.ts), e.g. "auto chose wasm: the only
   * WebGPU adapter is SwiftShader …".
   */
  backendReason: string;
  /** The WebGPU adapter ORT runs on; null on wasm. */
  adapterInfo: GpuAdapterSummary | null;
  dtype: ModelDtype;
  /** The decoder layout found in the graph (model/layout.ts detectLayout). */
  layout: DecoderLayout;
  config: ModelSummary;
  /**
   * Size of the model as fetched: the ONNX file plus its external-data chunks (not counting the
   * injected copy or a second session).
   */
  modelBytes: number;
  /** External-data chunks (`model.onnx_data`, `_1`, …) passed to onnxruntime-web; 0 when none. */
  externalDataChunks: number;
  /** Bytes of those chunks (included in modelBytes). */
  externalDataBytes: number;
  /**
   * True when a second session of the original, un-injected graph serves "no adapter" requests
   * (LocalEngineOptions.baseGraphForNoAdapter, default on); its weights are then held twice.
   */
  baseSession: boolean;
  /**
   * Bytes handed to onnxruntime-web: the LoRA-injected graph and the weights it reads as external data
   * (the file's own, or dequantized fp32 ones on wasm: `dequantizedAtLoad`), plus the same for the base
   * graph when `baseSession` — roughly what the sessions hold in the wasm heap / GPU buffers.
   */
  sessionBytes: number;
  /** Projections that take LoRA inputs (`lora.{layer}.{module}.A|B`). */
  targets: LoraTarget[];
  targetCount: number;
  /** Operator of the LoRA branch in the injected graph: 'einsum' on webgpu, 'matmul' on wasm (inject-lora.ts). */
  loraBranchOp: LoraBranchOp;
  /**
   * What the decoder fusion rewrote (model/fuse-decoder.ts): RMSNorms, of which folded with their
   * residual Add, rotary sites and attentions without the repeat_kv copy; all 0 on graphs that already
   * use fused kernels (builder layout); null when LoadSettings.fuse is false.
   */
  fused: FuseReport | null;
  loadMs: number;
  /** Where `loadMs` went, per phase (ms). */
  phases: LoadPhases;
  /** What imported adapters are validated against (LoadOptions.modelId / modelAliases). */
  modelId: string;
  modelAliases: string[];
  /**
   * 4-bit MatMulNBits projections the engine turned into fp32 MatMuls at load (wasm only: onnxruntime-web
   * has no 4-bit wasm kernel; model/dequantize.ts): `nodes` converted and the `fp32Bytes` they cost,
   * `kept` nodes left 4-bit by the LoadOptions.wasmDequantize budget `maxBytes` (null: 'always') and the
   * `keptFp32Bytes` they would have cost, and the reason in a sentence; null when the graph has no
   * MatMulNBits to convert (webgpu, or a file without them).
   */
  dequantizedAtLoad: {
    nodes: number;
    fp32Bytes: number;
    kept: number;
    keptFp32Bytes: number;
    maxBytes: number | null;
    reason: string;
  } | null;
}

export interface GenerateRequest {
  /** Raw prompt text (encoded without special tokens). Exactly one of prompt / messages. */
  prompt?: string;
  /** Chat turns, rendered through the model's chat_template (ModelPackageError when it has none). */
  messages?: ChatMessage[];
  /**
   * null/absent = base model, a stored name, a weighted mix, or automatic choice per prompt: 'auto'
   * (every stored adapter of the model) or `{ auto: { candidates, mode, temperature, includeBase } }`
   * — route.ts scores the prompt under each candidate and picks or mixes; see GenerateResult.routing.
   */
  adapter?: AdapterRequest;
  /** Default 128; also capped by the model's max_position_embeddings (finishReason 'length'). */
  maxNewTokens?: number;
  /** 0 (default) = greedy. See sampling.ts for the exact semantics of each option. */
  temperature?: number;
  topK?: number;
  topP?: number;
  repetitionPenalty?: number;
  seed?: number;
  /** Generation ends before the first occurrence of any of these; the stop string is not returned. */
  stop?: string[];
  /** Id for `abort(requestId)`; the worker proxy makes one when absent. */
  requestId?: string;
  /** In-thread only (signals do not cross postMessage; the worker proxy maps it to abort(requestId)). */
  signal?: AbortSignal;
}

export interface TokenDelta {
  /** The token just generated. */
  tokenId: number;
  /**
   * New text it made visible; may be '' (an incomplete UTF-8 character, or text held back because it
   * could still become a stop string). All deltas of a request concatenate to the result's `text`.
   */
  text: string;
}

export type FinishReason = 'eos' | 'length' | 'stop' | 'abort';

export interface GenerateTimings {
  /** Prompt forward pass incl. the first token's logits read-back. */
  prefillMs: number;
  /** All later single-token steps. */
  decodeMs: number;
  /** Decode throughput: tokens after the first / decodeMs (0 when only one token was made). */
  tokensPerSecond: number;
  promptTokens: number;
  /**
   * The most requests (this one included) that decoded in one forward with this one (continuous
   * batching, batch.ts): 1 = it decoded alone. Absent on a result of a request that never started.
   */
  batchRows?: number;
}

export interface GenerateResult {
  text: string;
  /** Every generated id, including a final eos and the tokens that completed a stop string. */
  tokenIds: number[];
  finishReason: FinishReason;
  timings: GenerateTimings;
  /** Only for `adapter: 'auto'`: each candidate's prompt score and the adapters/weights chosen. */
  routing?: RoutingReport;
}

/** A stored adapter as `listAdapters`/`importAdapter` describe it (metadata only, no tensor bytes). */
export type AdapterInfo = StoredAdapterMeta;

export interface AdapterImportProgress {
  /** read: files/URL being read; validate: checked against the loaded model; store: written; done. */
  stage: 'read' | 'validate' | 'store' | 'done';
  name: string;
}

export interface AdapterImportOptions {
  /**
   * Store name. Default: the folder the files/URL came from (e.g. `…/shout/` → "shout"), or a single
   * file's name without `.safetensors`; bytes without a name are an InvalidOptionError.
   */
  name?: string;
  /** Replace an adapter of the same name (default: AdapterNameConflictError). */
  overwrite?: boolean;
  /** Accept an adapter whose base_model_name_or_path does not match the loaded model. */
  allowBaseModelMismatch?: boolean;
  onProgress?: (p: AdapterImportProgress) => void;
}

export interface Engine {
  /**
   * Default source: the demo model on this origin (`BASE_URL + 'models/weblora-shakespeare/'`).
   * Fetches (cached), validates, injects LoRA inputs and builds the ORT session. A model already
   * loaded is released first (after running requests finish). Throws FetchError, ModelPackageError,
   * ModelFormatError, UnsupportedError ('webgpu' asked for but unavailable).
   */
  loadModel(source?: ModelSource, opts?: LoadOptions): Promise<LoadReport>;
  /**
   * Generates for one request; concurrent calls decode together in one continuous batch (a request joins
   * at the next step and leaves when done; a gated model decodes one request at a time). Aborting (signal or
   * `abort(requestId)`) is not an error: the result comes back with finishReason 'abort' and the text
   * so far (empty when the request was still queued), within one decode step. Text held back at that
   * moment (a possible stop-string prefix, an incomplete UTF-8 character) is dropped, so `text` is
   * always the concatenation of the streamed deltas. `adapter` is chosen per call (null = base model;
   * a stored name; a weighted mix). Typed errors: InvalidOptionError (options, prompt, mix weights),
   * ModelPackageError (messages without chat_template), AdapterNotFoundError (no adapter of that name),
   * UnsupportedError (adapter on an engine without a store/provider), DeviceLostError, WebLoraError (no
   * model loaded).
   */
  generate(request: GenerateRequest, onToken?: (delta: TokenDelta) => void): Promise<GenerateResult>;
  /** Aborts a running or queued request; false when no such request is known (e.g. already done). */
  abort(requestId: string): Promise<boolean>;
  /** The report of the loaded model, or null. */
  info(): Promise<LoadReport | null>;
  /** Aborts all requests and releases the session. The engine can load again afterwards. */
  dispose(): Promise<void>;

  // -------------------------------------------------------------- adapters (IndexedDB store)

  /**
   * Reads and validates a PEFT LoRA adapter against the loaded model (base model name, modules, shapes,
   * rank, values), then stores it atomically; a failed import leaves the store unchanged. Throws the
   * adapter errors of adapters/import.ts, AdapterNameConflictError, FetchError (url), InvalidOptionError
   * (name), WebLoraError (no model loaded), UnsupportedError (engine without an adapter store).
   */
  importAdapter(input: AdapterImportInput, opts?: AdapterImportOptions): Promise<AdapterInfo>;
  /** Every stored adapter's metadata, by name. */
  listAdapters(): Promise<AdapterInfo[]>;
  /** Atomic; AdapterNotFoundError / AdapterNameConflictError. */
  renameAdapter(from: string, to: string): Promise<AdapterInfo>;
  /** Removes bytes and metadata (and cached tensors); AdapterNotFoundError when absent. */
  deleteAdapter(name: string): Promise<void>;
  /** The PEFT files exactly as imported. */
  exportAdapter(name: string): Promise<PeftFiles>;
  adapterStats(): Promise<AdapterStats>;
  /**
   * Merges stored adapters into a new stored adapter of rank `opts.rank` (adapters/merge.ts: LoRA-LEGO
   * unit clustering, or 'average' = mean ΔW at rank k), written as ordinary PEFT files (source 'in-app',
   * `derived` naming the parents), exportable. Progress: read, compute (per module), store, done.
   * Throws AdapterNotFoundError, InvalidOptionError (names, rank outside 1..64, method, seed),
   * AdapterMismatchError (parents stored for another model), AdapterShapeError (shapes disagree),
   * AdapterNameConflictError, NoModelError.
   */
  mergeAdapters(
    opts: MergeAdaptersOptions,
    onProgress?: (p: AdapterDeriveProgress) => void,
  ): Promise<AdapterInfo>;
  /**
   * Stores the best rank-k approximation of an adapter (adapters/truncate.ts; modules of rank ≤ k
   * unchanged) under `opts.name` (default `${name}-r${k}`). `rank` may be `{ budgetBytes }`: the largest
   * rank whose F32 weights fit. Same errors as mergeAdapters.
   */
  truncateAdapter(
    name: string,
    rank: number | RankBudget,
    opts?: TruncateAdapterOptions,
  ): Promise<AdapterInfo>;

  // -------------------------------------------------------------- training (src/train/, engine/train.ts)

  /**
   * Fine-tunes a LoRA adapter of the loaded model on `opts.data` (queued like generate: it holds the
   * model), streaming progress; the last event has stage 'done'. Status 'done': the adapter is stored
   * under `opts.name` (PEFT files + `train` metadata), usable by generate at once. 'paused': a
   * checkpoint is stored (resumeTraining). 'cancelled': nothing is stored. Throws TrainDataError (data),
   * InvalidOptionError (options, a trainId in use), AdapterNameConflictError (before training starts),
   * UnsupportedError (device 'webgpu' not available yet, no IndexedDB), NoModelError.
   */
  train(opts: TrainOptions, onProgress?: (p: TrainProgress) => void): Promise<TrainResult>;
  /** Asks a running or queued run to stop after its current step and checkpoint; false when unknown. */
  pauseTraining(trainId: string): Promise<boolean>;
  /**
   * Stops a running or queued run and removes its checkpoint (nothing stored); for a paused run, removes
   * its checkpoint. False when there is neither.
   */
  cancelTraining(trainId: string): Promise<boolean>;
  /**
   * Continues a run from its IndexedDB checkpoint (also in a new worker or tab, same model id);
   * TrainCheckpointError when there is none or it is corrupt.
   */
  resumeTraining(trainId: string, onProgress?: (p: TrainProgress) => void): Promise<TrainResult>;
  listCheckpoints(): Promise<TrainCheckpointInfo[]>;
  /** Removes a checkpoint (no error when there is none; InvalidOptionError while that run is running). */
  deleteCheckpoint(trainId: string): Promise<void>;
  /**
   * Trains per-token routing gates over stored adapters (engine/gates.ts, CPU) and stores the gated mix;
   * generate with it via `adapter: { gated: name }` on a model loaded with `gates: true`.
   */
  trainGates(opts: GateTrainRequest, onProgress?: (p: GateTrainProgress) => void): Promise<GateTrainResult>;
}

/** What the engine hands an adapter provider factory once a model is loaded. */
export interface AdapterProviderContext {
  ort: typeof OrtModule;
  backend: Backend;
  targets: readonly LoraTarget[];
  /** The GPUDevice ORT runs on (webgpu backend only): adapter tensors may live there. */
  device: GPUDevice | null;
  /** The gated graph's gate inputs (LoadOptions.gates), else absent. */
  gates?: readonly GateSite[];
}

export type AdapterProviderFactory = (ctx: AdapterProviderContext) => AdapterFeedProvider;
