/**
 * weblora's public surface: the one entry other code imports. Internal modules never import this file;
 * they import each other directly. Grouped by layer: errors, engine (worker or in-thread), adapters,
 * model graph passes, environment. The web component has its own entry (src/element/index.ts), since
 * importing it registers <weblora-chat>.
 */

// Gated mixes: per-token routing gates over stored adapters (MeteoRA-style).
export {
  type GatedMix,
  type GatedMixFiles,
  type GateExpert,
  gateFeeds,
  parseGatedMix,
  serializeGatedMix,
} from './adapters/gated.ts';
export { type GatedMixInfo, GatedMixStore } from './adapters/gated-store.ts';
export { importPeftAdapter } from './adapters/import.ts';
export { inputFromFiles, inputFromUrl } from './adapters/import-sources.ts';
export { mixFeeds } from './adapters/mix.ts';
export { parsePeftConfig, peftToFeeds } from './adapters/peft.ts';
export { buildPeftFiles } from './adapters/peft-writer.ts';
export { parseSafetensors, writeSafetensors } from './adapters/safetensors.ts';
export { AdapterStore } from './adapters/store.ts';
export type { AdapterFeedProvider, AdapterSelection, AdapterStats } from './adapters/types.ts';
export { configureWebLora, getWebLoraConfig, type WebLoraConfig } from './config.ts';
export {
  createWorkerEngine,
  type WorkerEngine,
  type WorkerEngineOptions,
  wrapWorkerEngine,
} from './engine/client.ts';
export { DEFAULT_MAX_NEW_TOKENS } from './engine/decode.ts';
export { DEFAULT_ADAPTER_CACHE_BYTES, LocalEngine, type LocalEngineOptions } from './engine/engine.ts';
export { type DownloadEstimate, estimateDownload } from './engine/estimate.ts';
export type { GateTrainProgress, GateTrainRequest, GateTrainResult } from './engine/gates.ts';
export { BASE_SESSION_MAX_BYTES } from './engine/load.ts';
export { deleteCachedModel, fetchModelFiles, listCachedModels } from './engine/model-files.ts';
export {
  type AdapterRequest,
  type AutoAdapterOptions,
  DEFAULT_ROUTE_TEMPERATURE,
  type RoutingReport,
} from './engine/route.ts';
export { createSampler, type SamplingOptions, stopStringMatcher } from './engine/sampling.ts';
export type {
  AdapterDeriveProgress,
  AdapterImportInput,
  AdapterImportOptions,
  AdapterImportProgress,
  AdapterInfo,
  Backend,
  BackendPreference,
  ChatMessage,
  Engine,
  FinishReason,
  GenerateRequest,
  GenerateResult,
  GenerateTimings,
  LoadOptions,
  LoadProgress,
  LoadReport,
  MergeAdaptersOptions,
  ModelSource,
  RankBudget,
  TokenDelta,
  TrainCheckpointInfo,
  TrainDataFormat,
  TrainDevice,
  TrainMetadata,
  TrainOptions,
  TrainProgress,
  TrainResult,
  TruncateAdapterOptions,
} from './engine/types.ts';
export { type Capabilities, detectCapabilities } from './env.ts';
export {
  AbortError,
  AdapterBaseModelError,
  AdapterConfigError,
  AdapterFormatError,
  AdapterMismatchError,
  AdapterModuleError,
  AdapterNameConflictError,
  AdapterNotFoundError,
  AdapterRankError,
  AdapterShapeError,
  AdapterValueError,
  AmbiguousTargetError,
  DeviceLostError,
  DtypeUnavailableError,
  type ErrorData,
  type ErrorName,
  FetchError,
  InvalidOptionError,
  ModelFormatError,
  ModelPackageError,
  NoModelError,
  NoTargetsError,
  NothingAtUrlError,
  NotSafetensorsError,
  QuotaError,
  reviveError,
  SafetensorsError,
  SafetensorsHeaderBoundsError,
  SafetensorsHeaderJsonError,
  SafetensorsOffsetError,
  SafetensorsTruncatedError,
  type SerializedError,
  serializeError,
  TrainCheckpointError,
  TrainDataError,
  UnknownTargetError,
  UnsupportedError,
  UnsupportedModelError,
  WebLoraError,
} from './errors.ts';
export { WASM_DEQUANTIZE_MAX_BYTES, type WasmDequantize } from './model/dequantize.ts';
export { GATE_EXPAND_INPUT, type GateSite, gateInputName } from './model/inject-gates.ts';
export {
  type InjectOptions,
  injectLora,
  LORA_BRANCH_DTYPE_DEFAULT,
  LORA_MODULES,
  LORA_RANK_DIM,
  type LoraBranchDtype,
  type LoraBranchOp,
  type LoraModule,
  type LoraTarget,
  loraBranchOpFor,
  loraInputName,
  PACKED_LORA_DEFAULT,
  type PackedLoraMode,
} from './model/inject-lora.ts';
export { type DecoderLayout, detectLayout, type WeightFormat } from './model/layout.ts';
export { decodeModel, encodeModel } from './model/onnx-io.ts';
export { MODEL_DTYPES, modelFileName, normalizeModelUrl } from './model/package.ts';
export { type QuantizeOptions, type QuantizeReport, quantize } from './model/quantize.ts';
export { MAX_DATA_BYTES, MAX_EXAMPLES } from './train/data.ts';
