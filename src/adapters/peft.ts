/**
 * PEFT LoRA adapters (adapter_config.json + adapter_model.safetensors, as `peft` saves them) mapped to the
 * graph inputs of our LoRA-injected model. PEFT computes y = W x + scale · B (A x) with lora_A.weight
 * [r, in], lora_B.weight [out, r], scale = lora_alpha / r (lora_alpha / √r with rsLoRA, Kalajdzievski 2023,
 * arXiv:2312.03732), `rank_pattern` / `alpha_pattern` overriding r / alpha per module. The injected graph
 * (src/model/inject-lora.ts) computes Y + (X·A)·B with A [in, R], B [R, out], no scale, one rank R shared by
 * all inputs; so feeds are Aᵀ and scale·Bᵀ, zero-padded to the largest rank (zero columns of A / rows of B
 * add exactly nothing), and zeros for targets the adapter does not cover.
 * Packed projections map exactly both ways: by default (inject-lora.ts PACKED_LORA_DEFAULT 'per-part') a
 * packed graph projection (builder `qkv_proj`) has one target per part, so q/k/v modules map 1:1 and a
 * uniform-rank adapter's feeds hold exactly its factors; onto a 'block-diagonal' packed target they give
 * A = [A_q | A_k | A_v] along the rank and a block-diagonal B (zero blocks where the adapter has no module),
 * rank 3r, to which every other target is then padded; Phi-3's packed PEFT modules (`qkv_proj`, `gate_up_proj`) onto split graph targets
 * share A and slice B by rows (Q, K, V; gate, up), as onnxruntime-genai's builder does; onto a packed target
 * they map directly.
 * Not supported (rejected with a typed error, never silently ignored): DoRA, LoRA biases, modules_to_save,
 * layer_replication, embedding LoRA. `fan_in_fan_out` only says the *base* layer stores W as [in, out]
 * (GPT-2 Conv1D); PEFT keeps lora_A [r, in] / lora_B [out, r] either way, so it changes nothing here.
 */
import { AdapterFormatError, AdapterMismatchError } from '../errors.ts';
import { loraInputName } from '../model/inject-lora.ts';
import { type Destination, destinationsOf } from './packed.ts';
import { readFloat32, type TensorView } from './safetensors.ts';
import type { CpuFeeds, LoraFeed } from './types.ts';

/** Largest LoRA rank the engine accepts (per module, after rank_pattern). */
export const MAX_LORA_RANK = 64;

/** PEFT's default `layers_pattern` candidates (peft.utils.constants.COMMON_LAYERS_PATTERN). */
const COMMON_LAYERS_PATTERN = ['layers', 'h', 'block', 'blocks', 'layer'];

export interface PeftLoraConfig {
  peftType: 'LORA';
  taskType: string | null;
  baseModelNameOrPath: string | null;
  r: number;
  loraAlpha: number;
  /** null: not stated (the tensors decide); string: a regex that must match the whole module path. */
  targetModules: string[] | string | null;
  useRslora: boolean;
  /** Module-path pattern → rank; insertion order matters (first match wins, as in PEFT). */
  rankPattern: Record<string, number>;
  /** Module-path pattern → alpha; insertion order matters (first match wins, as in PEFT). */
  alphaPattern: Record<string, number>;
  fanInFanOut: boolean;
  loraDropout: number;
  layersToTransform: number[] | null;
  layersPattern: string[] | null;
  /** The parsed JSON as read. */
  raw: Record<string, unknown>;
}

/** A LoRA-able projection of the model: `lora.${layer}.${module}.A|B` are its graph inputs. */
export interface LoraTarget {
  layer: number;
  module: string;
  in: number;
  out: number;
  /** Packed projection (e.g. `qkv_proj`): the output columns of each module inside it. */
  parts?: readonly { module: string; offset: number; size: number }[];
}

/**
 * `rank`: the shared rank R of every feed (max module rank in use). `feeds`: graph input name → tensor,
 * A [in, R], B [R, out]; one pair per target, covered or not.
 */
export interface PeftFeeds extends CpuFeeds {
  /** Per covered module: its PEFT path, rank and scale (for display and debugging). */
  modules: { layer: number; module: string; path: string; rank: number; scale: number }[];
}

function bad(message: string, data: Record<string, unknown> = {}): never {
  throw new AdapterFormatError(`adapter_config.json: ${message}`, data);
}

function compilePattern(key: string, field: string): RegExp {
  try {
    return new RegExp(`^(?:.*\\.)?(?:${key})$`);
  } catch (e) {
    return bad(
      `${field} key ${JSON.stringify(key)} is not a valid regular expression (${(e as Error).message})`,
      {
        field,
        key,
      },
    );
  }
}

/**
 * PEFT's pattern lookup (peft.utils.other.get_pattern_key): the first key k, in the object's order, for
 * which Python's `re.match(rf"(.*\.)?({k})$", path)` succeeds, i.e. k matches a dot-delimited suffix of
 * the module path ("v_proj", "layers.3.self_attn.o_proj" and the full "model.layers.3.self_attn.o_proj"
 * all match model.layers.3.self_attn.o_proj). Keys are regexes. Returns undefined when none matches.
 */
export function patternValue(patterns: Record<string, number>, path: string): number | undefined {
  for (const [k, v] of Object.entries(patterns)) {
    if (compilePattern(k, 'pattern').test(path)) return v;
  }
  return undefined;
}

function numberMap(
  v: unknown,
  field: string,
  check: (x: number) => boolean,
  what: string,
): Record<string, number> {
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v))
    bad(`${field} must be an object (got ${JSON.stringify(v)})`, { field });
  const out: Record<string, number> = {};
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
    if (typeof x !== 'number' || !check(x)) {
      bad(`${field}[${JSON.stringify(k)}] must be ${what} (got ${JSON.stringify(x)})`, {
        field,
        key: k,
        value: x,
      });
    }
    compilePattern(k, field);
    out[k] = x;
  }
  return out;
}

function bool(o: Record<string, unknown>, key: string, fallback: boolean): boolean {
  const v = o[key] ?? fallback;
  if (typeof v !== 'boolean')
    bad(`${key} must be true or false (got ${JSON.stringify(v)})`, { field: key, value: v });
  return v;
}

function isPosInt(x: unknown): x is number {
  return typeof x === 'number' && Number.isInteger(x) && x > 0;
}

/**
 * Parse and validate adapter_config.json (text or parsed JSON). Missing optional fields take PEFT's
 * defaults (r 8, lora_alpha 8, ...); fields that would change the math in ways we cannot apply are
 * rejected with AdapterFormatError naming the field.
 */
export function parsePeftConfig(json: string | unknown): PeftLoraConfig {
  let o: unknown = json;
  if (typeof json === 'string') {
    try {
      o = JSON.parse(json);
    } catch (e) {
      bad(`not valid JSON (${(e as Error).message})`);
    }
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) bad('must hold a JSON object');
  const c = o as Record<string, unknown>;
  if (c.peft_type !== 'LORA') {
    bad(`peft_type must be "LORA" (got ${JSON.stringify(c.peft_type)}); only LoRA adapters are supported`, {
      field: 'peft_type',
      value: c.peft_type,
    });
  }
  const r = c.r ?? 8;
  if (!isPosInt(r))
    bad(`r must be a positive integer (got ${JSON.stringify(c.r)})`, { field: 'r', value: c.r });
  const loraAlpha = c.lora_alpha ?? 8;
  if (typeof loraAlpha !== 'number' || !Number.isFinite(loraAlpha)) {
    bad(`lora_alpha must be a finite number (got ${JSON.stringify(c.lora_alpha)})`, { field: 'lora_alpha' });
  }
  let targetModules: string[] | string | null = null;
  const tm = c.target_modules;
  if (typeof tm === 'string') {
    if (tm !== 'all-linear') compilePattern(tm, 'target_modules');
    targetModules = tm;
  } else if (Array.isArray(tm)) {
    if (!tm.every((x) => typeof x === 'string'))
      bad('target_modules must be a list of strings', { field: 'target_modules' });
    targetModules = tm as string[];
  } else if (tm !== undefined && tm !== null) {
    bad(`target_modules must be a list of names or a regex string (got ${JSON.stringify(tm)})`, {
      field: 'target_modules',
    });
  }
  const taskType = c.task_type ?? null;
  if (taskType !== null && typeof taskType !== 'string')
    bad('task_type must be a string', { field: 'task_type' });
  const base = c.base_model_name_or_path ?? null;
  if (base !== null && typeof base !== 'string') {
    bad('base_model_name_or_path must be a string', { field: 'base_model_name_or_path' });
  }
  const loraDropout = c.lora_dropout ?? 0;
  if (typeof loraDropout !== 'number' || !(loraDropout >= 0 && loraDropout < 1)) {
    bad(`lora_dropout must be a number in [0, 1) (got ${JSON.stringify(c.lora_dropout)})`, {
      field: 'lora_dropout',
    });
  }
  const bias = c.bias ?? 'none';
  if (bias !== 'none') {
    bad(`bias "${String(bias)}" is not supported: weblora adapters carry no bias terms (use bias "none")`, {
      field: 'bias',
      value: bias,
    });
  }
  if (bool(c, 'use_dora', false)) bad('use_dora: DoRA adapters are not supported', { field: 'use_dora' });
  const mts = c.modules_to_save;
  if (mts !== undefined && mts !== null && !(Array.isArray(mts) && mts.length === 0)) {
    bad(`modules_to_save ${JSON.stringify(mts)} is not supported (it stores full weights, not LoRA)`, {
      field: 'modules_to_save',
    });
  }
  if (c.layer_replication !== undefined && c.layer_replication !== null) {
    bad('layer_replication is not supported', { field: 'layer_replication' });
  }
  let layersToTransform: number[] | null = null;
  const ltt = c.layers_to_transform;
  if (typeof ltt === 'number') layersToTransform = [ltt];
  else if (Array.isArray(ltt)) layersToTransform = ltt as number[];
  else if (ltt !== undefined && ltt !== null) bad('layers_to_transform must be an integer, a list or null');
  if (layersToTransform && !layersToTransform.every((x) => Number.isInteger(x) && x >= 0)) {
    bad(`layers_to_transform must hold non-negative integers (got ${JSON.stringify(ltt)})`, {
      field: 'layers_to_transform',
    });
  }
  let layersPattern: string[] | null = null;
  const lp = c.layers_pattern;
  if (typeof lp === 'string') layersPattern = [lp];
  else if (Array.isArray(lp) && lp.every((x) => typeof x === 'string')) layersPattern = lp as string[];
  else if (lp !== undefined && lp !== null) bad('layers_pattern must be a string, a list of strings or null');
  return {
    peftType: 'LORA',
    taskType: taskType as string | null,
    baseModelNameOrPath: base as string | null,
    r,
    loraAlpha,
    targetModules,
    useRslora: bool(c, 'use_rslora', false),
    rankPattern: numberMap(
      c.rank_pattern,
      'rank_pattern',
      (x) => Number.isInteger(x) && x > 0,
      'a positive integer',
    ),
    alphaPattern: numberMap(c.alpha_pattern, 'alpha_pattern', Number.isFinite, 'a finite number'),
    fanInFanOut: bool(c, 'fan_in_fan_out', false),
    loraDropout,
    layersToTransform,
    layersPattern,
    raw: c,
  };
}

/** PEFT's target_modules rule (check_target_module_exists): list → exact or ".name" suffix; str → fullmatch. */
function targeted(cfg: PeftLoraConfig, path: string): boolean {
  const tm = cfg.targetModules;
  if (tm === null || tm === 'all-linear') return true;
  if (typeof tm === 'string') return new RegExp(`^(?:${tm})$`).test(path);
  return tm.some((t) => path === t || path.endsWith(`.${t}`));
}

/** A PEFT LoRA tensor key: `base_model.model.<module path>.lora_A|B.weight`. */
export const PEFT_KEY_RE = /^base_model\.model\.(.+)\.lora_([AB])\.weight$/;

/** Layer index and module name of a module path, using layers_pattern (or PEFT's defaults). */
export function locateModule(path: string, cfg: PeftLoraConfig): { layer: number; module: string } | null {
  const pats = (cfg.layersPattern ?? COMMON_LAYERS_PATTERN).map((p) =>
    p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'),
  );
  const m = new RegExp(`(?:^|\\.)(?:${pats.join('|')})\\.(\\d+)\\.(?:.+\\.)?([^.]+)$`).exec(path);
  if (!m?.[1] || !m[2]) return null;
  return { layer: Number(m[1]), module: m[2] };
}

interface ModuleWeights {
  path: string;
  A?: [string, TensorView];
  B?: [string, TensorView];
}

/**
 * Map a PEFT adapter to the injected graph's feeds for `targets` (every LoRA input the graph declares).
 * Throws AdapterFormatError for files that break PEFT's rules (bad keys, A/B rank disagreement, rank not
 * what the config says, non-finite values) and AdapterMismatchError for a valid adapter that does not fit
 * this model (unknown module or layer, wrong in/out, rank above MAX_LORA_RANK).
 */
export function peftToFeeds(
  cfg: PeftLoraConfig,
  tensors: Map<string, TensorView>,
  targets: LoraTarget[],
): PeftFeeds {
  const byModule = new Map<string, ModuleWeights>();
  for (const [key, t] of tensors) {
    const m = PEFT_KEY_RE.exec(key);
    if (!m?.[1] || !m[2]) {
      throw new AdapterFormatError(
        `adapter_model.safetensors: unsupported tensor "${key}"; expected PEFT LoRA keys ` +
          '"base_model.model.<module path>.lora_A.weight" / ".lora_B.weight"',
        { tensor: key },
      );
    }
    const w = byModule.get(m[1]) ?? { path: m[1] };
    w[m[2] as 'A' | 'B'] = [key, t];
    byModule.set(m[1], w);
  }
  if (byModule.size === 0) {
    throw new AdapterFormatError('adapter_model.safetensors holds no LoRA tensors', {
      tensors: tensors.size,
    });
  }
  const modules: PeftFeeds['modules'] = [];
  // Per target (`layer.module`): the adapter modules writing into it, each a block of the rank.
  const blocks = new Map<
    string,
    { A: Float32Array; B: Float32Array; rank: number; scale: number; dest: Destination; path: string }[]
  >();
  for (const w of byModule.values()) {
    const path = w.path;
    if (!w.A || !w.B) {
      throw new AdapterFormatError(
        `module ${path} has lora_${w.A ? 'A' : 'B'} but no lora_${w.A ? 'B' : 'A'}`,
        {
          module: path,
        },
      );
    }
    const loc = locateModule(path, cfg);
    const dests = loc && destinationsOf(loc.layer, loc.module, targets);
    if (!loc || !dests || dests.length === 0) {
      throw new AdapterMismatchError(
        `adapter module ${path} is not a LoRA target of this model (targets: ${[...new Set(targets.map((t) => t.module))].join(', ')}; ` +
          `layers 0..${Math.max(-1, ...targets.map((t) => t.layer))})`,
        { module: path },
      );
    }
    if (!targeted(cfg, path)) {
      throw new AdapterFormatError(
        `module ${path} has weights but is not in target_modules ${JSON.stringify(cfg.targetModules)}`,
        {
          module: path,
        },
      );
    }
    if (cfg.layersToTransform && !cfg.layersToTransform.includes(loc.layer)) {
      throw new AdapterFormatError(
        `module ${path} has weights but layer ${loc.layer} is not in layers_to_transform ${JSON.stringify(cfg.layersToTransform)}`,
        { module: path },
      );
    }
    const [aKey, a] = w.A;
    const [bKey, b] = w.B;
    for (const [k, t] of [w.A, w.B]) {
      if (!['F32', 'F16', 'BF16', 'F64'].includes(t.dtype)) {
        throw new AdapterFormatError(
          `${k} has dtype ${t.dtype}; LoRA weights must be F32, F16, BF16 or F64`,
          { tensor: k },
        );
      }
      if (t.shape.length !== 2) {
        throw new AdapterFormatError(`${k} has shape ${JSON.stringify(t.shape)}; LoRA weights are 2-D`, {
          tensor: k,
        });
      }
    }
    const [rA = 0, inA = 0] = a.shape;
    const [outB = 0, rB = 0] = b.shape;
    const target = dests[0]!.target;
    const wantOut = dests.reduce((n, d) => n + d.rows, 0);
    if (rA !== rB) {
      throw new AdapterFormatError(
        `${aKey} [${a.shape}] and ${bKey} [${b.shape}] disagree on the rank (${rA} vs ${rB})`,
        {
          module: path,
        },
      );
    }
    if (dests.some((d) => d.target.in !== inA) || outB !== wantOut) {
      throw new AdapterMismatchError(
        `module ${path}: adapter maps ${inA} → ${outB} but the model's ${loc.module} in layer ${loc.layer} maps ` +
          `${target.in} → ${wantOut} (lora_A must be [r, ${target.in}], lora_B [${wantOut}, r]); ` +
          'was the adapter trained for another base model?',
        { module: path, adapter: [inA, outB], model: [target.in, wantOut] },
      );
    }
    const rank = rA;
    const want = patternValue(cfg.rankPattern, path) ?? cfg.r;
    if (rank !== want) {
      throw new AdapterFormatError(
        `module ${path}: tensors have rank ${rank} but the config gives rank ${want}`,
        {
          module: path,
          tensorRank: rank,
          configRank: want,
        },
      );
    }
    if (rank === 0) throw new AdapterFormatError(`module ${path} has rank 0`, { module: path });
    if (rank > MAX_LORA_RANK) {
      throw new AdapterMismatchError(
        `module ${path} has rank ${rank}; the engine supports ranks up to ${MAX_LORA_RANK}`,
        {
          module: path,
          rank,
          max: MAX_LORA_RANK,
        },
      );
    }
    const A = readFloat32(a);
    const B = readFloat32(b);
    for (const [k, v] of [
      [aKey, A],
      [bKey, B],
    ] as const) {
      const i = v.findIndex((x) => !Number.isFinite(x));
      if (i >= 0)
        throw new AdapterFormatError(`${k} has a non-finite value (${v[i]}) at flat index ${i}`, {
          tensor: k,
          index: i,
        });
    }
    const alpha = patternValue(cfg.alphaPattern, path) ?? cfg.loraAlpha;
    const scale = cfg.useRslora ? alpha / Math.sqrt(rank) : alpha / rank;
    for (const dest of dests) {
      const id = `${dest.target.layer}.${dest.target.module}`;
      const list = blocks.get(id) ?? [];
      const clash = list.find(
        (x) =>
          x.dest.outOffset < dest.outOffset + dest.rows && dest.outOffset < x.dest.outOffset + x.dest.rows,
      );
      if (clash) {
        throw new AdapterFormatError(
          `two adapter modules map to layer ${loc.layer} ${loc.module} (${clash.path} and ${path})`,
          { module: path, other: clash.path },
        );
      }
      list.push({ A, B, rank, scale, dest, path });
      blocks.set(id, list);
    }
    modules.push({ layer: loc.layer, module: loc.module, path, rank, scale });
  }

  // Each target's rank is the sum of its blocks' (block-diagonal B); R is the largest, zero-padded.
  const R = Math.max(...[...blocks.values()].map((l) => l.reduce((n, x) => n + x.rank, 0)));
  const feeds = new Map<string, LoraFeed>();
  for (const t of targets) {
    const a = new Float32Array(t.in * R); // (in, R)
    const b = new Float32Array(R * t.out); // (R, out)
    let r0 = 0; // first rank column of the current block
    const list = (blocks.get(`${t.layer}.${t.module}`) ?? []).sort(
      (x, y) => x.dest.outOffset - y.dest.outOffset,
    );
    for (const w of list) {
      const { rank: r, dest } = w;
      for (let j = 0; j < r; j++) for (let i = 0; i < t.in; i++) a[i * R + r0 + j] = w.A[j * t.in + i]!;
      for (let o = 0; o < dest.rows; o++) {
        const src = (dest.rowStart + o) * r; // row of lora_B [outB, r]
        for (let j = 0; j < r; j++) b[(r0 + j) * t.out + dest.outOffset + o] = w.scale * w.B[src + j]!;
      }
      r0 += r;
    }
    feeds.set(loraInputName(t.layer, t.module, 'A'), { data: a, dims: [t.in, R] });
    feeds.set(loraInputName(t.layer, t.module, 'B'), { data: b, dims: [R, t.out] });
  }
  modules.sort((x, y) => x.layer - y.layer || x.module.localeCompare(y.module));
  return { rank: R, feeds, modules };
}
