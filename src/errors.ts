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
    this.name = new.target.name;
    this.data = data;
  }
}

/** ONNX bytes that do not decode, or a graph whose structure a pass cannot handle. */
export class ModelFormatError extends WebLoraError {}
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
/** The GPU device was lost while in use (not destroyed on purpose). */
export class DeviceLostError extends WebLoraError {}
/** A request was cancelled by the caller. */
export class AbortError extends WebLoraError {}
/** WebGPU (or a feature/limit) required by the request is not available. */
export class UnsupportedError extends WebLoraError {}

const REGISTRY = {
  WebLoraError,
  ModelFormatError,
  NoTargetsError,
  UnknownTargetError,
  AmbiguousTargetError,
  AdapterFormatError,
  AdapterMismatchError,
  SafetensorsError,
  ModelPackageError,
  FetchError,
  DeviceLostError,
  AbortError,
  UnsupportedError,
} as const;

export type ErrorName = keyof typeof REGISTRY;

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
