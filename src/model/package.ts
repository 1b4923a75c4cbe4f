/**
 * A model package is a folder in the Hugging Face ONNX layout (what Optimum exports and transformers.js
 * reads): config.json, generation_config.json, tokenizer.json, tokenizer_config.json and
 * onnx/model.onnx (fp32) or onnx/model_q4.onnx. This file validates the JSON files into typed objects
 * (throwing ModelPackageError with the offending file and field) and fetches a package with byte-level
 * progress. It deliberately knows nothing about ONNX graphs or sessions.
 */
import { FetchError, ModelPackageError } from '../errors.ts';

/** The decoder-only (Llama-style) config fields the engine relies on. */
export interface ModelConfig {
  modelType: string;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  maxPositionEmbeddings: number;
  bosTokenId: number | null;
  /** All ids that end generation (config.json allows a number or a list). */
  eosTokenIds: number[];
  /** The parsed JSON as read, for fields this interface does not name. */
  raw: Record<string, unknown>;
}

export interface GenerationConfig {
  eosTokenIds: number[];
  doSample: boolean;
  maxLength: number | null;
}

/** Weight formats a package may ship, named as transformers.js names them (utils/dtypes.js). */
export type ModelDtype = 'fp32' | 'fp16' | 'q4' | 'q4f16';
export const MODEL_DTYPES: readonly ModelDtype[] = ['fp32', 'fp16', 'q4', 'q4f16'];

export function isModelDtype(v: unknown): v is ModelDtype {
  return typeof v === 'string' && (MODEL_DTYPES as readonly string[]).includes(v);
}

/**
 * Path of the ONNX file for a dtype, relative to the package root (transformers.js naming):
 * onnx/model.onnx, onnx/model_fp16.onnx, onnx/model_q4.onnx, onnx/model_q4f16.onnx.
 */
export function modelFileName(dtype: ModelDtype): string {
  return dtype === 'fp32' ? 'onnx/model.onnx' : `onnx/model_${dtype}.onnx`;
}

/**
 * Number of external-data chunks config.json declares for a model file
 * (`transformers.js_config.use_external_data_format`, as transformers.js' model-loader reads it): a
 * number = that many chunks, true = 1, false = 0; an object maps file names (`model_q4f16.onnx` or
 * `model_q4f16`) to either. null when the config does not say (then the graph's own external_data
 * references decide: externalDataLocations in onnx-io.ts).
 */
export function externalDataChunksOf(configJson: unknown, modelFile: string): number | null {
  const tjs = (configJson as Record<string, unknown> | null)?.['transformers.js_config'];
  let v = (tjs as Record<string, unknown> | undefined)?.use_external_data_format;
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
    const base = modelFile.slice(modelFile.lastIndexOf('/') + 1);
    const o = v as Record<string, unknown>;
    v = o[base] ?? o[base.replace(/\.onnx$/, '')];
  }
  if (typeof v === 'boolean') return v ? 1 : 0;
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return v;
  return null;
}

/** Chunk paths of a model file's external data: `<file>_data`, `<file>_data_1`, … (transformers.js). */
export function externalDataFileNames(modelFile: string, chunks: number): string[] {
  return Array.from({ length: chunks }, (_, i) => `${modelFile}_data${i === 0 ? '' : `_${i}`}`);
}

/**
 * Normalises a model folder URL. Hugging Face hub URLs become resolve URLs: `https://huggingface.co/<org>/<repo>`
 * → `…/<org>/<repo>/resolve/main/`, `…/tree/<rev>/<dir>` and `…/blob/<rev>/<dir>` → `…/resolve/<rev>/<dir>/`
 * (hf.co too). Every other URL (same origin, another CORS host, a relative path) is returned with a
 * trailing slash and without query/hash on hub URLs; it is not resolved against a location here.
 */
export function normalizeModelUrl(input: string): string {
  const raw = input.trim();
  let u: URL | null = null;
  try {
    u = new URL(raw);
  } catch {
    u = null;
  }
  if (
    u &&
    (u.hostname === 'huggingface.co' || u.hostname === 'hf.co' || u.hostname === 'www.huggingface.co')
  ) {
    const parts = u.pathname.split('/').filter((p) => p.length > 0);
    // A dataset/space URL is not a model repo: leave it alone.
    if (parts.length >= 2 && parts[0] !== 'datasets' && parts[0] !== 'spaces') {
      const [org, repo, kind, rev, ...rest] = parts;
      let tail: string;
      if ((kind === 'resolve' || kind === 'tree' || kind === 'blob') && rev) {
        tail = `resolve/${rev}/${rest.map((p) => `${p}/`).join('')}`;
      } else if (kind === undefined) {
        tail = 'resolve/main/';
      } else {
        tail = `${parts.slice(2).join('/')}/`;
      }
      return `https://huggingface.co/${org}/${repo}/${tail}`;
    }
  }
  const noSuffix = raw.replace(/[?#].*$/, '');
  return noSuffix.endsWith('/') ? noSuffix : `${noSuffix}/`;
}

function asObject(json: unknown, file: string): Record<string, unknown> {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ModelPackageError(`${file} must hold a JSON object`, { file });
  }
  return json as Record<string, unknown>;
}

function int(o: Record<string, unknown>, key: string, file: string, fallback?: number): number {
  const v = o[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
    throw new ModelPackageError(
      `${file}: field "${key}" must be a non-negative integer (got ${JSON.stringify(v)})`,
      {
        file,
        field: key,
        value: v,
      },
    );
  }
  return v;
}

function idList(v: unknown, file: string, field: string): number[] {
  if (v === undefined || v === null) return [];
  const list = Array.isArray(v) ? v : [v];
  for (const x of list) {
    if (typeof x !== 'number' || !Number.isInteger(x) || x < 0) {
      throw new ModelPackageError(`${file}: field "${field}" must be a token id or a list of them`, {
        file,
        field,
        value: v,
      });
    }
  }
  return list as number[];
}

/** Validates config.json. Throws ModelPackageError naming the missing or malformed field. */
export function parseModelConfig(json: unknown): ModelConfig {
  const file = 'config.json';
  const o = asObject(json, file);
  const modelType = o.model_type;
  if (typeof modelType !== 'string') {
    throw new ModelPackageError(`${file}: field "model_type" is missing`, { file, field: 'model_type' });
  }
  const hiddenSize = int(o, 'hidden_size', file);
  const numHeads = int(o, 'num_attention_heads', file);
  const numKvHeads = int(o, 'num_key_value_heads', file, numHeads);
  const headDim = int(o, 'head_dim', file, numHeads > 0 ? Math.floor(hiddenSize / numHeads) : 0);
  if (numHeads === 0 || numKvHeads === 0 || numHeads % numKvHeads !== 0) {
    throw new ModelPackageError(
      `${file}: num_attention_heads (${numHeads}) must be a positive multiple of num_key_value_heads (${numKvHeads})`,
      { file, field: 'num_key_value_heads' },
    );
  }
  const bos = o.bos_token_id;
  return {
    modelType,
    vocabSize: int(o, 'vocab_size', file),
    hiddenSize,
    intermediateSize: int(o, 'intermediate_size', file, 0),
    numLayers: int(o, 'num_hidden_layers', file),
    numHeads,
    numKvHeads,
    headDim,
    maxPositionEmbeddings: int(o, 'max_position_embeddings', file, 2048),
    bosTokenId: typeof bos === 'number' ? bos : null,
    eosTokenIds: idList(o.eos_token_id, file, 'eos_token_id'),
    raw: o,
  };
}

/** Validates generation_config.json (every field optional). */
export function parseGenerationConfig(json: unknown): GenerationConfig {
  const file = 'generation_config.json';
  const o = asObject(json, file);
  const maxLength = o.max_length;
  return {
    eosTokenIds: idList(o.eos_token_id, file, 'eos_token_id'),
    doSample: o.do_sample === true,
    maxLength: typeof maxLength === 'number' ? maxLength : null,
  };
}

export interface ModelPackage {
  baseUrl: string;
  config: ModelConfig;
  generationConfig: GenerationConfig | null;
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
  /** The ONNX file's bytes. */
  model: Uint8Array;
  dtype: ModelDtype;
}

export interface FetchProgress {
  file: string;
  loaded: number;
  /** From Content-Length; null when the server does not send it. */
  total: number | null;
}

export interface FetchPackageOptions {
  dtype?: ModelDtype;
  onProgress?: (p: FetchProgress) => void;
  signal?: AbortSignal;
  fetch?: typeof fetch;
}

/** Fetches one file's bytes, reporting progress per received chunk. */
export async function fetchBytes(
  url: string,
  opts: {
    onProgress?: (loaded: number, total: number | null) => void;
    signal?: AbortSignal;
    fetch?: typeof fetch;
  } = {},
): Promise<Uint8Array> {
  const f = opts.fetch ?? fetch;
  let res: Response;
  try {
    res = await f(url, opts.signal ? { signal: opts.signal } : {});
  } catch (e) {
    throw new FetchError(`could not fetch ${url}: ${String(e)}`, { url });
  }
  if (!res.ok)
    throw new FetchError(`could not fetch ${url}: HTTP ${res.status}`, { url, status: res.status });
  const len = res.headers.get('content-length');
  const total = len !== null && /^\d+$/.test(len) ? Number(len) : null;
  if (!res.body) {
    const buf = new Uint8Array(await res.arrayBuffer());
    opts.onProgress?.(buf.byteLength, total ?? buf.byteLength);
    return buf;
  }
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let loaded = 0;
  opts.onProgress?.(0, total);
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.byteLength;
    opts.onProgress?.(loaded, total);
  }
  const out = new Uint8Array(loaded);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.byteLength;
  }
  return out;
}

async function fetchJson(url: string, file: string, f: typeof fetch, signal?: AbortSignal): Promise<unknown> {
  const bytes = await fetchBytes(url, signal ? { fetch: f, signal } : { fetch: f });
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new ModelPackageError(`${file} is not valid JSON: ${String(e)}`, { file, url });
  }
}

/** Fetches and validates a whole package from `baseUrl` (ending in '/'). */
export async function fetchModelPackage(
  baseUrl: string,
  opts: FetchPackageOptions = {},
): Promise<ModelPackage> {
  const base = baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`;
  const f = opts.fetch ?? fetch.bind(globalThis);
  const dtype = opts.dtype ?? 'fp32';
  const [configJson, tokenizerJson, tokenizerConfig] = await Promise.all([
    fetchJson(`${base}config.json`, 'config.json', f, opts.signal),
    fetchJson(`${base}tokenizer.json`, 'tokenizer.json', f, opts.signal),
    fetchJson(`${base}tokenizer_config.json`, 'tokenizer_config.json', f, opts.signal),
  ]);
  let generationConfig: GenerationConfig | null = null;
  try {
    generationConfig = parseGenerationConfig(
      await fetchJson(`${base}generation_config.json`, 'generation_config.json', f, opts.signal),
    );
  } catch (e) {
    if (!(e instanceof FetchError)) throw e; // optional file: absent is fine, malformed is not
  }
  const file = modelFileName(dtype);
  const model = await fetchBytes(`${base}${file}`, {
    fetch: f,
    ...(opts.signal ? { signal: opts.signal } : {}),
    onProgress: (loaded, total) => opts.onProgress?.({ file, loaded, total }),
  });
  return {
    baseUrl: base,
    config: parseModelConfig(configJson),
    generationConfig,
    tokenizerJson: asObject(tokenizerJson, 'tokenizer.json'),
    tokenizerConfig: asObject(tokenizerConfig, 'tokenizer_config.json'),
    model,
    dtype,
  };
}
