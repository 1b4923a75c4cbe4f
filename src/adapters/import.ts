/**
 * Import of Hugging Face PEFT LoRA adapters, unchanged, and validation against the loaded model BEFORE
 * anything is stored. Inputs: `adapter_config.json` + `adapter_model.safetensors` bytes (from files, URLs
 * or drag-drop), or one `.safetensors` whose `__metadata__` holds the config JSON under `adapter_config`.
 * Every malformed input fails with its own typed error (src/errors.ts) carrying structured data:
 * safetensors framing (truncated, header bounds, header JSON, offsets), config (AdapterConfigError),
 * rank 0 / > 64 (AdapterRankError), NaN/Inf (AdapterValueError), shapes (AdapterShapeError), unknown
 * modules (AdapterModuleError), other base model (AdapterBaseModelError). The PEFT math itself
 * (scale, rank_pattern, alpha_pattern, padding) is peft.ts; this file adds checks, never other math.
 * Also here: writing adapters created in-app as PEFT files. Not here: storage (store.ts), GPU (gpu-cache.ts).
 */
import {
  AdapterBaseModelError,
  AdapterConfigError,
  AdapterFormatError,
  AdapterModuleError,
  AdapterRankError,
  AdapterShapeError,
  AdapterValueError,
  NotSafetensorsError,
  SafetensorsError,
  SafetensorsHeaderBoundsError,
  SafetensorsHeaderJsonError,
  SafetensorsOffsetError,
  SafetensorsTruncatedError,
} from '../errors.ts';
import type { LoraTarget } from '../model/inject-lora.ts';
import { moduleShape } from './packed.ts';
import {
  locateModule,
  MAX_LORA_RANK,
  PEFT_KEY_RE,
  type PeftFeeds,
  type PeftLoraConfig,
  parsePeftConfig,
  patternValue,
  peftToFeeds,
} from './peft.ts';
import { type Dtype, parseSafetensors, readFloat32, type Safetensors } from './safetensors.ts';

export const CONFIG_FILE = 'adapter_config.json';
export const WEIGHTS_FILE = 'adapter_model.safetensors';
/** `__metadata__` keys a single-file adapter may carry its config under (first found wins). */
export const CONFIG_METADATA_KEYS = ['adapter_config', 'adapter_config.json', 'peft_config'] as const;
const FLOAT_DTYPES: readonly Dtype[] = ['F32', 'F16', 'BF16', 'F64'];

/** The two PEFT files, exactly as `peft` writes them (and as export returns them). */
export interface PeftFiles {
  'adapter_config.json': Uint8Array;
  'adapter_model.safetensors': Uint8Array;
}

/** What the adapter is checked against. */
export interface AdapterModelInfo {
  /** The loaded model's id: a Hub id ("org/name"), a folder name or URL ("…/weblora-shakespeare/"). */
  id: string;
  /** Other names adapters may declare for this model (e.g. the checkpoint folder it was exported from). */
  aliases?: readonly string[];
  /** The LoRA targets of the injected graph (src/model/inject-lora.ts). */
  targets: readonly LoraTarget[];
}

export interface ImportInput {
  /** adapter_config.json bytes or text; omit for a single-file adapter (config in `__metadata__`). */
  config?: Uint8Array | string;
  /** adapter_model.safetensors (or the single-file adapter) bytes. */
  weights: Uint8Array;
}

export interface ImportOptions {
  /** Accept an adapter whose base_model_name_or_path does not match the model (user override). */
  allowBaseModelMismatch?: boolean;
}

export interface AdapterSummary {
  baseModel: string | null;
  /** True when the declared base model matched (false: none declared, or overridden). */
  baseModelMatched: boolean;
  r: number;
  loraAlpha: number;
  useRslora: boolean;
  /** Largest module rank = the R of this adapter's feeds. */
  rank: number;
  /** Covered modules, e.g. ["down_proj", "q_proj"], and layers. */
  modules: string[];
  layers: number[];
  /** Number of adapted (layer, module) pairs. */
  moduleCount: number;
  dtypes: Dtype[];
  /** Bytes of both files. */
  bytes: number;
}

export interface ImportedAdapter {
  config: PeftLoraConfig;
  files: PeftFiles;
  layout: 'two-file' | 'single-file';
  summary: AdapterSummary;
  /** Feeds for the model's targets (validation computes them anyway; callers may reuse them). */
  feeds: PeftFeeds;
}

// ---------------------------------------------------------------------------------------------
// Base-model matching

/**
 * Matching rule for `base_model_name_or_path`: both sides reduced to their last path segment (split on
 * "/" and "\\", trailing separators dropped, so Hub ids, local folders and URLs compare by model name),
 * compared case-insensitively; the adapter matches when that equals the key of the model id or of any
 * alias. An adapter that declares nothing (null / "") is accepted with `baseModelMatched: false`.
 */
export function baseModelKey(nameOrPath: string): string {
  const parts = nameOrPath
    .trim()
    .split(/[\\/]+/)
    .filter((p) => p.length > 0);
  return (parts[parts.length - 1] ?? '').toLowerCase();
}

export function checkBaseModel(
  declared: string | null,
  model: Pick<AdapterModelInfo, 'id' | 'aliases'>,
  opts: ImportOptions = {},
): boolean {
  if (declared === null || declared.trim() === '') return false;
  const key = baseModelKey(declared);
  const accepted = [model.id, ...(model.aliases ?? [])].map(baseModelKey);
  if (accepted.includes(key)) return true;
  if (opts.allowBaseModelMismatch) return false;
  throw new AdapterBaseModelError(
    `the adapter was trained for base model "${declared}" but the loaded model is "${model.id}" ` +
      `(compared by last path segment: "${key}" vs ${accepted.map((a) => `"${a}"`).join(', ')}); ` +
      'load the matching model, or import with allowBaseModelMismatch if you know they are the same weights',
    { declared, model: model.id, aliases: model.aliases ?? [], rule: 'last-path-segment, case-insensitive' },
  );
}

// ---------------------------------------------------------------------------------------------
// safetensors with specific errors

/** parseSafetensors, with its `data.reason` mapped to a specific SafetensorsError subclass. */
export function parseAdapterSafetensors(bytes: Uint8Array): Safetensors {
  try {
    return parseSafetensors(bytes);
  } catch (e) {
    if (!(e instanceof SafetensorsError)) throw e;
    throw classifySafetensorsError(e, bytes);
  }
}

/**
 * True when `bytes` start like a safetensors file: a little-endian u64 header length that fits the file,
 * or a JSON object (`{`) right after the 8 length bytes. A file with only one of the two is a damaged
 * safetensors file (its specific error applies); one with neither is something else.
 */
export function looksLikeSafetensors(bytes: Uint8Array): boolean {
  if (bytes.length < 8) return true; // too short to tell: reported as truncated
  const n = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (n <= BigInt(bytes.length - 8)) return true;
  let i = 8;
  while (
    i < bytes.length &&
    (bytes[i] === 0x20 || bytes[i] === 0x0a || bytes[i] === 0x0d || bytes[i] === 0x09)
  )
    i++;
  return bytes[i] === 0x7b; // '{'
}

/** The first bytes as text, for a message (non-printable characters as '.'). */
function previewText(bytes: Uint8Array): string {
  return Array.from(bytes.subarray(0, 16), (b) =>
    b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.',
  ).join('');
}

function classifySafetensorsError(e: SafetensorsError, bytes: Uint8Array): SafetensorsError {
  const reason = String(e.data.reason ?? '');
  const data = { ...e.data, fileBytes: bytes.length };
  if (!looksLikeSafetensors(bytes) && reason !== 'truncated') {
    return new NotSafetensorsError(
      `not a safetensors file: its first bytes ${JSON.stringify(previewText(bytes))} are neither a header length ` +
        'nor a JSON header (a PEFT adapter is adapter_model.safetensors, optionally with adapter_config.json)',
      { ...data, reason: 'not-safetensors', detail: e.message },
    );
  }
  switch (reason) {
    case 'truncated':
      return new SafetensorsTruncatedError(e.message, data);
    case 'header-too-large':
    case 'header-beyond-file':
      return new SafetensorsHeaderBoundsError(e.message, data);
    case 'header-not-utf8':
    case 'header-not-json':
    case 'header-not-object':
    case 'bad-metadata':
    case 'bad-entry':
    case 'bad-dtype':
    case 'bad-shape':
      return new SafetensorsHeaderJsonError(e.message, data);
    case 'offset-out-of-range': {
      const missing = truncatedBy(bytes);
      if (missing > 0) {
        return new SafetensorsTruncatedError(
          `safetensors: file is truncated: its header describes ${missing} more data bytes than the file has ` +
            '(incomplete download or copy?)',
          { ...data, reason: 'truncated', missingBytes: missing },
        );
      }
      return new SafetensorsOffsetError(e.message, data);
    }
    case 'overlap':
    case 'hole':
    case 'bad-offsets':
    case 'size-mismatch':
      return new SafetensorsOffsetError(e.message, data);
    default:
      return e;
  }
}

/**
 * > 0 when the header's tensors tile [0, end) without gaps or overlaps but `end` lies past the file's
 * data section: the file was cut short. 0 otherwise (then an offset is simply wrong).
 */
function truncatedBy(bytes: Uint8Array): number {
  try {
    const n = Number(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(0, true));
    const h = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Record<
      string,
      { data_offsets?: [number, number] }
    >;
    const spans = Object.entries(h)
      .filter(([k]) => k !== '__metadata__')
      .map(([, v]): [number, number] => v.data_offsets ?? [0, 0])
      .sort((a, b) => a[0] - b[0]);
    let pos = 0;
    for (const [b, e] of spans) {
      if (b !== pos) return 0;
      pos = e;
    }
    return Math.max(0, pos - (bytes.length - 8 - n));
  } catch {
    return 0;
  }
}

// ---------------------------------------------------------------------------------------------
// config

const utf8 = (b: Uint8Array): string => new TextDecoder('utf-8').decode(b);

/**
 * parsePeftConfig with AdapterConfigError (AdapterRankError for r / rank_pattern values). A parsed object
 * is first round-tripped through JSON text, so exactly what an adapter_config.json can hold is accepted.
 */
export function parseAdapterConfig(json: string | unknown): PeftLoraConfig {
  let text: string | undefined;
  if (typeof json === 'string') text = json;
  else {
    try {
      text = JSON.stringify(json);
    } catch (e) {
      throw new AdapterConfigError(
        `${CONFIG_FILE}: value is not JSON-serializable (${(e as Error).message})`,
        {
          file: CONFIG_FILE,
          reason: 'not-json',
        },
      );
    }
    if (text === undefined) {
      throw new AdapterConfigError(`${CONFIG_FILE}: value is not JSON`, {
        file: CONFIG_FILE,
        reason: 'not-json',
      });
    }
  }
  let cfg: PeftLoraConfig;
  try {
    cfg = parsePeftConfig(text);
  } catch (e) {
    if (!(e instanceof AdapterFormatError)) throw e;
    const field = e.data.field;
    if (field === 'r' || field === 'rank_pattern') {
      throw new AdapterRankError(`${e.message} (LoRA ranks must be 1..${MAX_LORA_RANK})`, {
        ...e.data,
        max: MAX_LORA_RANK,
      });
    }
    throw new AdapterConfigError(e.message, { ...e.data, file: CONFIG_FILE });
  }
  const ranks = [cfg.r, ...Object.values(cfg.rankPattern)];
  const over = ranks.find((r) => r > MAX_LORA_RANK);
  if (over !== undefined) {
    throw new AdapterRankError(
      `${CONFIG_FILE}: rank ${over} is above the engine limit of ${MAX_LORA_RANK}; retrain with r <= ${MAX_LORA_RANK}`,
      { field: 'r', rank: over, max: MAX_LORA_RANK },
    );
  }
  return cfg;
}

// ---------------------------------------------------------------------------------------------
// tensors vs model

/**
 * Checks every tensor against the model and config with a specific error each; the remaining PEFT rules
 * (target_modules, layers_to_transform, duplicate modules, missing A/B) are peftToFeeds'.
 */
function validateTensors(cfg: PeftLoraConfig, st: Safetensors, targets: readonly LoraTarget[]): void {
  const modules = [...new Set(targets.map((t) => t.module))];
  const maxLayer = Math.max(-1, ...targets.map((t) => t.layer));
  for (const [key, t] of st.tensors) {
    const m = PEFT_KEY_RE.exec(key);
    if (!m?.[1] || !m[2]) {
      throw new AdapterFormatError(
        `${WEIGHTS_FILE}: unsupported tensor "${key}"; expected PEFT LoRA keys ` +
          '"base_model.model.<module path>.lora_A.weight" / ".lora_B.weight"',
        { tensor: key },
      );
    }
    const path = m[1];
    const which = m[2] as 'A' | 'B';
    const loc = locateModule(path, cfg);
    // q/k/v modules on a packed qkv_proj target, or packed PEFT modules on split targets (packed.ts)
    const target = loc ? moduleShape(loc.layer, loc.module, targets) : null;
    if (!loc || !target) {
      throw new AdapterModuleError(
        `adapter module ${path} is not a LoRA target of this model (modules: ${modules.join(', ')}; layers 0..${maxLayer})`,
        { tensor: key, module: path, layer: loc?.layer ?? null, name: loc?.module ?? null, targets: modules },
      );
    }
    if (!FLOAT_DTYPES.includes(t.dtype)) {
      throw new AdapterFormatError(`${key} has dtype ${t.dtype}; LoRA weights must be F32, F16 or BF16`, {
        tensor: key,
        dtype: t.dtype,
      });
    }
    const want = which === 'A' ? `[r, ${target.in}]` : `[${target.out}, r]`;
    const [d0, d1] = t.shape;
    const fits = t.shape.length === 2 && (which === 'A' ? d1 === target.in : d0 === target.out);
    if (!fits || d0 === undefined || d1 === undefined) {
      throw new AdapterShapeError(
        `${key} has shape ${JSON.stringify(t.shape)} but the model's ${target.label} in layer ${loc.layer} ` +
          `maps ${target.in} → ${target.out}, so lora_${which} must be ${want}; was the adapter trained for another model?`,
        { tensor: key, shape: t.shape, expected: which === 'A' ? [null, target.in] : [target.out, null] },
      );
    }
    const rank = which === 'A' ? d0 : d1;
    if (rank < 1 || rank > MAX_LORA_RANK) {
      throw new AdapterRankError(`${key} has rank ${rank}; LoRA ranks must be 1..${MAX_LORA_RANK}`, {
        tensor: key,
        rank,
        max: MAX_LORA_RANK,
      });
    }
    const configRank = patternValue(cfg.rankPattern, path) ?? cfg.r;
    if (rank !== configRank) {
      throw new AdapterRankError(
        `${key} has rank ${rank} but ${CONFIG_FILE} gives module ${path} rank ${configRank} (r or rank_pattern)`,
        { tensor: key, rank, configRank },
      );
    }
    const v = readFloat32(t);
    for (let i = 0; i < v.length; i++) {
      if (!Number.isFinite(v[i]!)) {
        throw new AdapterValueError(`${key} holds a non-finite value (${v[i]}) at flat index ${i}`, {
          tensor: key,
          index: i,
          value: String(v[i]),
        });
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// import

/**
 * Validate a PEFT adapter against the model. Pure: stores nothing. Throws the specific typed errors
 * listed in the file header; on success returns the files exactly as given (for a single-file
 * adapter: the config text from `__metadata__` and the original .safetensors bytes).
 */
export function importPeftAdapter(
  input: ImportInput,
  model: AdapterModelInfo,
  opts: ImportOptions = {},
): ImportedAdapter {
  const st = parseAdapterSafetensors(input.weights);
  let configBytes: Uint8Array;
  let layout: ImportedAdapter['layout'];
  if (input.config !== undefined) {
    configBytes = typeof input.config === 'string' ? new TextEncoder().encode(input.config) : input.config;
    layout = 'two-file';
  } else {
    const key = CONFIG_METADATA_KEYS.find((k) => st.metadata[k] !== undefined);
    if (!key) {
      throw new AdapterConfigError(
        `no ${CONFIG_FILE} given and the .safetensors __metadata__ has no adapter config ` +
          `(looked for ${CONFIG_METADATA_KEYS.join(', ')}); provide adapter_config.json alongside it`,
        { file: CONFIG_FILE, reason: 'missing', metadataKeys: Object.keys(st.metadata) },
      );
    }
    configBytes = new TextEncoder().encode(st.metadata[key]!);
    layout = 'single-file';
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(configBytes);
  } catch {
    throw new AdapterConfigError(`${CONFIG_FILE} is not UTF-8 text`, {
      file: CONFIG_FILE,
      reason: 'not-utf8',
    });
  }
  const config = parseAdapterConfig(text);
  const matched = checkBaseModel(config.baseModelNameOrPath, model, opts);
  validateTensors(config, st, model.targets);
  const feeds = peftToFeeds(config, st.tensors, model.targets as LoraTarget[]);
  const dtypes = [...new Set([...st.tensors.values()].map((t) => t.dtype))].sort();
  return {
    config,
    files: { [CONFIG_FILE]: configBytes, [WEIGHTS_FILE]: input.weights } as PeftFiles,
    layout,
    feeds,
    summary: {
      baseModel: config.baseModelNameOrPath,
      baseModelMatched: matched,
      r: config.r,
      loraAlpha: config.loraAlpha,
      useRslora: config.useRslora,
      rank: feeds.rank,
      modules: [...new Set(feeds.modules.map((m) => m.module))].sort(),
      layers: [...new Set(feeds.modules.map((m) => m.layer))].sort((a, b) => a - b),
      moduleCount: feeds.modules.length,
      dtypes,
      bytes: configBytes.byteLength + input.weights.byteLength,
    },
  };
}

/** Feeds of already-validated stored files (the cold path of the GPU cache): parse + peftToFeeds. */
export function feedsFromFiles(files: PeftFiles, targets: readonly LoraTarget[]): PeftFeeds {
  const st = parseAdapterSafetensors(files[WEIGHTS_FILE]);
  const config = parseAdapterConfig(utf8(files[CONFIG_FILE]));
  return peftToFeeds(config, st.tensors, targets as LoraTarget[]);
}
