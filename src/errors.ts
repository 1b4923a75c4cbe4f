/**
 * Typed errors for every failure a user can cause or meet. Each carries a stable `name`, an
 * actionable message and structured `data`, and survives `postMessage`: `serializeError` turns it into
 * a plain object and `reviveError` rebuilds the right subclass on the other side, so `instanceof`
 * works on the main thread. This file deliberately holds no recovery logic.
 */

export type ErrorData = Record<string, unknown>;

export class WebLoraError extends Error {
  readonly data: ErrorData;
  constructor(message: string, data: ErrorData = {}) {
    super(message);
    // Registry key, not `new.target.name`: minifiers rename classes, names must survive a build.
    this.name = errorNameOf(new.target);
    this.data = data;
  }
}

/** ONNX bytes that do not decode, or a graph whose structure a pass cannot handle. */
export class ModelFormatError extends WebLoraError {}
/**
 * A decoder layout weblora recognises but cannot serve LoRA on (e.g. int8 `MatMulInteger` or `MatMulBnb4`
 * projections); `data.layout` names it, `data.supported` lists what works instead.
 */
export class UnsupportedModelError extends ModelFormatError {}
/** A graph pass found no target it could apply to (e.g. no LoRA-able projections). */
export class NoTargetsError extends WebLoraError {}
/** A caller named targets (modules, layers) that the graph does not have. */
export class UnknownTargetError extends WebLoraError {}
/** Two or more nodes matched the same (layer, module) target, or a match was otherwise unclear. */
export class AmbiguousTargetError extends WebLoraError {}
/** Adapter files (PEFT config or safetensors) that break the format rules. */
export class AdapterFormatError extends WebLoraError {}
/** An adapter that is well-formed but does not fit the loaded model. */
export class AdapterMismatchError extends WebLoraError {}
/** A safetensors file that breaks the format rules. */
export class SafetensorsError extends WebLoraError {}
/** A model package (config.json, tokenizer.json, ...) that is missing files or fields. */
export class ModelPackageError extends WebLoraError {}
/** Network or storage failure while fetching model files. */
export class FetchError extends WebLoraError {}
/**
 * Nothing to import at a URL: HTTP 404/410, or an HTML page where a file belongs (many hosts, and Vite's
 * dev/preview servers, answer a missing path with the app's index.html). Data `{ url, status, htmlFallback? }`.
 */
export class NothingAtUrlError extends FetchError {}
/**
 * The browser's storage quota cannot hold the model files still to be downloaded (checked with
 * `navigator.storage.estimate()` before any byte is fetched; nothing is cached). Data `{ needed, available,
 * quota, usage }` in bytes.
 */
export class QuotaError extends FetchError {}
/**
 * The model has no file for the requested dtype. Data `{ dtype, file, available }`: `available` lists the
 * dtypes whose files the repo (or the picked folder) has.
 */
export class DtypeUnavailableError extends ModelPackageError {}
/** The GPU device was lost while in use (not destroyed on purpose). */
export class DeviceLostError extends WebLoraError {}
/** A request was cancelled by the caller. */
export class AbortError extends WebLoraError {}
/** WebGPU (or a feature/limit) required by the request is not available. */
export class UnsupportedError extends WebLoraError {}
/** An option value outside its documented range (negative temperature, top-p outside (0, 1], ...). */
export class InvalidOptionError extends WebLoraError {}
/** The call needs a loaded model and none is loaded: call loadModel first. */
export class NoModelError extends WebLoraError {}

// Specific adapter-import failures (src/adapters/import.ts, store.ts). Each subclasses the broad class a
// caller may already catch (SafetensorsError, AdapterFormatError, AdapterMismatchError).
/** A safetensors file shorter than its header says (cut-off download, partial copy). */
export class SafetensorsTruncatedError extends SafetensorsError {}
/**
 * Bytes that are not a safetensors file at all (no plausible length prefix and no JSON header where one
 * belongs): an HTML page, a .bin, a text file.
 */
export class NotSafetensorsError extends SafetensorsError {}
/** A safetensors header length beyond the file or above the 100 MB cap. */
export class SafetensorsHeaderBoundsError extends SafetensorsError {}
/** A safetensors header that is not UTF-8 JSON of the documented shape. */
export class SafetensorsHeaderJsonError extends SafetensorsError {}
/** Tensor data_offsets that overlap, leave holes, disagree with dtype×shape or point outside the data. */
export class SafetensorsOffsetError extends SafetensorsError {}
/** adapter_config.json that is not valid JSON, or a field with a wrong type/value (missing in a single-file adapter). */
export class AdapterConfigError extends AdapterFormatError {}
/** A LoRA rank of 0 or above the engine limit (64), or tensors whose rank disagrees with the config. */
export class AdapterRankError extends AdapterFormatError {}
/** A NaN or infinite value in a LoRA tensor. */
export class AdapterValueError extends AdapterFormatError {}
/** A LoRA tensor whose shape does not fit the model's projection (or is not [r, in] / [out, r]). */
export class AdapterShapeError extends AdapterMismatchError {}
/** Adapter weights for a module or layer the loaded model does not have as a LoRA target. */
export class AdapterModuleError extends AdapterMismatchError {}
/** The adapter declares another base_model_name_or_path than the loaded model. */
export class AdapterBaseModelError extends AdapterMismatchError {}
/** An adapter name already used in the store. */
export class AdapterNameConflictError extends WebLoraError {}
/** No adapter of that name in the store. */
export class AdapterNotFoundError extends WebLoraError {}

// Training (src/train/). Each carries `data.reason` (a stable code) and, for JSONL, the 1-based `data.line`.
/** Training data that is empty, too large, malformed, missing fields or leaves nothing to learn. */
export class TrainDataError extends WebLoraError {}
/** A stored training checkpoint that is missing, corrupt or does not fit the loaded model. */
export class TrainCheckpointError extends WebLoraError {}

const REGISTRY = {
  WebLoraError,
  ModelFormatError,
  UnsupportedModelError,
  NoTargetsError,
  UnknownTargetError,
  AmbiguousTargetError,
  AdapterFormatError,
  AdapterMismatchError,
  SafetensorsError,
  ModelPackageError,
  FetchError,
  NothingAtUrlError,
  QuotaError,
  DtypeUnavailableError,
  DeviceLostError,
  AbortError,
  UnsupportedError,
  InvalidOptionError,
  NoModelError,
  SafetensorsTruncatedError,
  NotSafetensorsError,
  SafetensorsHeaderBoundsError,
  SafetensorsHeaderJsonError,
  SafetensorsOffsetError,
  AdapterConfigError,
  AdapterRankError,
  AdapterValueError,
  AdapterShapeError,
  AdapterModuleError,
  AdapterBaseModelError,
  AdapterNameConflictError,
  AdapterNotFoundError,
  TrainDataError,
  TrainCheckpointError,
} as const;

export type ErrorName = keyof typeof REGISTRY;

function errorNameOf(ctor: abstract new (...args: never[]) => unknown): string {
  for (const [name, c] of Object.entries(REGISTRY)) if (c === ctor) return name;
  return ctor.name;
}

export interface SerializedError {
  __weblora_error__: true;
  name: string;
  message: string;
  data: ErrorData;
  stack?: string;
}

export function serializeError(e: unknown): SerializedError {
  if (e instanceof WebLoraError) {
    return { __weblora_error__: true, name: e.name, message: e.message, data: e.data, stack: e.stack };
  }
  if (e instanceof Error) {
    return { __weblora_error__: true, name: e.name, message: e.message, data: {}, stack: e.stack };
  }
  return { __weblora_error__: true, name: 'Error', message: String(e), data: {} };
}

export function reviveError(s: SerializedError): Error {
  const Ctor = (REGISTRY as Record<string, typeof WebLoraError>)[s.name];
  const err = Ctor ? new Ctor(s.message, s.data) : Object.assign(new Error(s.message), { name: s.name });
  if (s.stack) err.stack = s.stack;
  return err;
}
