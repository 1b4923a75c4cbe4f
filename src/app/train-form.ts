/**
 * The Train panel's form logic, without the DOM: the fields as the page holds them (strings, and the
 * ticked targets), their defaults, and `readTrainForm`, which turns them into the engine's
 * `TrainOptions` or into a list of problems in words a user understands ("Steps must be a whole number
 * from 1 to 100000"), each naming its field so the panel can mark it. The engine validates again
 * (InvalidOptionError, TrainDataError with line numbers); this only catches what a form can know.
 * Also the small formatters the progress line uses (ETA, tokens/s). Pure: tested in
 * tests/browser/train-panel-logic.test.ts.
 */
import type { TrainDataFormat, TrainDevice, TrainOptions } from '../engine/types.ts';
import type { ModuleName } from '../model/targets.ts';

/** The seven projections, in the order the form shows them (src/model/targets.ts MODULE_ORDER). */
export const TARGETS: readonly ModuleName[] = [
  'q_proj',
  'k_proj',
  'v_proj',
  'o_proj',
  'gate_proj',
  'up_proj',
  'down_proj',
];

/** The form as the page holds it: every field as typed, the ticked targets. */
export interface TrainFormValues {
  name: string;
  data: string;
  format: string;
  rank: string;
  targets: string[];
  /** Blank = all layers; "3-5", "0, 2, 4" or "1-2, 5". */
  layers: string;
  steps: string;
  lr: string;
  batchSize: string;
  seqLen: string;
  /** Advanced; blank alpha = 2 × rank, blank warmup = 5 % of the steps. */
  alpha: string;
  warmup: string;
  weightDecay: string;
  evalSplit: string;
  seed: string;
  device: string;
  /** 'off' | 'on': activation recomputation (TrainOptions.recompute). */
  recompute: string;
}

export type TrainField = keyof TrainFormValues;

/** Defaults for a first run of your own data; the example (train-example.ts) sets its own. */
export const TRAIN_DEFAULTS: Omit<TrainFormValues, 'name' | 'data'> = {
  format: 'auto',
  rank: '4',
  targets: [...TARGETS],
  layers: '',
  steps: '60',
  lr: '0.005',
  batchSize: '8',
  seqLen: '64',
  alpha: '',
  warmup: '',
  weightDecay: '0',
  evalSplit: '0.1',
  seed: '0',
  device: 'auto',
  recompute: 'off',
};

export interface FieldProblem {
  field: TrainField;
  message: string;
}

export interface TrainFormContext {
  /** Decoder layers of the loaded model (null: not loaded; layer numbers are then not range-checked). */
  numLayers: number | null;
  /** The model's context length (null: unknown). */
  maxPositions: number | null;
  /** Names already in the adapter store. */
  adapterNames: readonly string[];
}

export type TrainFormResult =
  | { ok: true; options: Omit<TrainOptions, 'trainId'> }
  | { ok: false; problems: FieldProblem[] };

const FORMATS: readonly TrainDataFormat[] = ['auto', 'text', 'jsonl'];
const DEVICES: readonly TrainDevice[] = ['auto', 'cpu', 'webgpu'];
export const MAX_STEPS = 100_000;

/**
 * Layer numbers from "3-5", "0, 2, 4" or "1-2, 5" (sorted, without duplicates); blank = all (undefined).
 * A string is the problem, in words.
 */
export function parseLayers(text: string, numLayers: number | null): number[] | undefined | string {
  const t = text.trim();
  if (t === '' || t.toLowerCase() === 'all') return undefined;
  const out = new Set<number>();
  const last = numLayers === null ? null : numLayers - 1;
  const range = last === null ? '' : ` (this model has layers 0–${last})`;
  for (const part of t.split(/[\s,]+/).filter(Boolean)) {
    const m = /^(\d+)(?:\s*[-–]\s*(\d+))?$/.exec(part);
    if (!m) return `Layers: “${part}” is not a layer number or a range like 3-5${range}.`;
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) return `Layers: the range “${part}” runs backwards; write it as ${b}-${a}.`;
    if (last !== null && b > last) return `Layers: ${b} does not exist${range}.`;
    for (let i = a; i <= b; i++) out.add(i);
  }
  return [...out].sort((x, y) => x - y);
}

/** A number typed into a field: null when blank or not a number. */
function num(s: string): number | null {
  const t = s.trim();
  if (t === '') return null;
  const n = Number(t);
  return Number.isFinite(n) ? n : null;
}

/** Eval loss about ten times per run (and at the start and end), at least every step. */
export function autoEvalEvery(steps: number): number {
  return Math.max(1, Math.ceil(steps / 10));
}

export function readTrainForm(v: TrainFormValues, ctx: TrainFormContext): TrainFormResult {
  const problems: FieldProblem[] = [];
  const bad = (field: TrainField, message: string): void => {
    problems.push({ field, message });
  };
  const int = (field: TrainField, label: string, lo: number, hi: number, blank?: number): number => {
    const n = num(v[field] as string);
    if (n === null && blank !== undefined && (v[field] as string).trim() === '') return blank;
    if (n === null || !Number.isInteger(n) || n < lo || n > hi) {
      bad(field, `${label} must be a whole number from ${lo} to ${hi}.`);
      return Number.NaN;
    }
    return n;
  };

  const name = v.name.trim();
  if (name === '') bad('name', 'Give the adapter a name.');
  else if (name.length > 100) bad('name', 'The adapter name is too long (at most 100 characters).');
  else if (ctx.adapterNames.includes(name))
    bad('name', `An adapter named “${name}” is already stored: choose another name or delete that one.`);

  if (v.data.trim() === '') bad('data', 'Paste or upload training data first (or fill in the example).');
  if (!FORMATS.includes(v.format as TrainDataFormat)) bad('format', 'Format must be auto, text or JSONL.');

  const rank = int('rank', 'Rank', 1, 64);
  const targets = TARGETS.filter((t) => v.targets.includes(t));
  if (targets.length === 0) bad('targets', 'Tick at least one target projection.');
  const layers = parseLayers(v.layers, ctx.numLayers);
  if (typeof layers === 'string') bad('layers', layers);
  const steps = int('steps', 'Steps', 1, MAX_STEPS);

  const lr = num(v.lr);
  if (lr === null || lr <= 0 || lr > 1)
    bad('lr', 'Learning rate must be a number above 0 and at most 1 (e.g. 0.005).');
  const batchSize = int('batchSize', 'Batch size', 1, 256);
  const maxSeq = ctx.maxPositions ?? 4096;
  const seqLen = int('seqLen', 'Sequence length', 2, maxSeq);

  let alpha: number | undefined;
  if (v.alpha.trim() !== '') {
    const a = num(v.alpha);
    if (a === null || a <= 0 || a > 4096) bad('alpha', 'Alpha must be a number above 0 (blank: 2 × rank).');
    else alpha = a;
  }
  let warmupSteps: number | undefined;
  if (v.warmup.trim() !== '') {
    const w = int('warmup', 'Warmup steps', 0, MAX_STEPS);
    if (Number.isFinite(w) && Number.isFinite(steps) && w >= steps)
      bad('warmup', `Warmup steps must be fewer than the ${steps} steps.`);
    else if (Number.isFinite(w)) warmupSteps = w;
  }
  const weightDecay = num(v.weightDecay.trim() === '' ? '0' : v.weightDecay);
  if (weightDecay === null || weightDecay < 0 || weightDecay > 1)
    bad('weightDecay', 'Weight decay must be a number from 0 to 1.');
  const evalSplit = num(v.evalSplit.trim() === '' ? '0' : v.evalSplit);
  if (evalSplit === null || evalSplit < 0 || evalSplit > 0.5)
    bad('evalSplit', 'Eval split must be a share from 0 (no eval loss) to 0.5, e.g. 0.1 for 10 %.');
  const seed = int('seed', 'Seed', 0, 2 ** 31 - 1, 0);
  if (!DEVICES.includes(v.device as TrainDevice)) bad('device', 'Device must be auto, CPU or WebGPU.');
  if (v.recompute !== 'off' && v.recompute !== 'on')
    bad('recompute', 'Recompute activations must be off or on.');

  if (problems.length) return { ok: false, problems };
  return {
    ok: true,
    options: {
      name,
      data: v.data,
      format: v.format as TrainDataFormat,
      rank,
      ...(alpha !== undefined ? { alpha } : {}),
      targets,
      ...(Array.isArray(layers) ? { layers } : {}),
      steps,
      lr: lr!,
      ...(warmupSteps !== undefined ? { warmupSteps } : {}),
      weightDecay: weightDecay!,
      batchSize,
      seqLen,
      seed,
      evalSplit: evalSplit!,
      evalEvery: autoEvalEvery(steps),
      device: v.device as TrainDevice,
      recompute: v.recompute === 'on',
    },
  };
}

/** "trained-1", or the next free "trained-N" when that is taken. */
export function freeName(stem: string, taken: readonly string[]): string {
  if (!taken.includes(stem)) return stem;
  for (let i = 2; ; i++) if (!taken.includes(`${stem}-${i}`)) return `${stem}-${i}`;
}

/** Time left as "m:ss" (or "h:mm:ss"); '—' while unknown. */
export function formatEta(ms: number | null): string {
  if (ms === null || !Number.isFinite(ms) || ms < 0) return '—';
  const s = Math.round(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

/** The first prompt of JSONL data (a sample for before/after), else the first 40 characters of text. */
export function samplePromptOf(data: string): string {
  const first = data.split(/\r?\n/).find((l) => l.trim() !== '') ?? '';
  try {
    const o = JSON.parse(first) as { prompt?: unknown; messages?: { role: string; content: string }[] };
    if (typeof o.prompt === 'string') return o.prompt;
    const user = Array.isArray(o.messages) ? o.messages.find((m) => m.role === 'user') : undefined;
    if (user && typeof user.content === 'string') return user.content;
  } catch {
    // plain text
  }
  return data.slice(0, 40);
}
