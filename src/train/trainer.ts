/**
 * The training loop over a `TrainBackend` (types.ts), device-agnostic: options resolved and checked,
 * steps of `gradAccumSteps` token-weighted micro-batches, HF's warmup + cosine schedule (optim.ts
 * `lrAt`), global-norm clipping, eval loss at the start, every `evalEvery` steps and at the end,
 * progress with tokens/s and ETA, and pause/cancel flags checked between steps (after yielding to the
 * event loop so the messages that set them get in). The position in the data is one integer — micro-
 * batches consumed — because data.ts's BatchSchedule recomputes the order from the seed; with the
 * backend's TrainState that is all a checkpoint needs to continue bit-for-bit. Storage (IndexedDB, the
 * adapter store) is the caller's, through `LoopHooks`.
 */
import { InvalidOptionError } from '../errors.ts';
import { MODULE_ORDER, type ModuleName } from '../model/targets.ts';
import type { Batch } from './cpu-model.ts';
import { type BatchSchedule, realTokenCount, targetCount } from './data.ts';
import { lrAt } from './optim.ts';
import type { TrainBackend, TrainMetadata, TrainOptions, TrainProgress, TrainState } from './types.ts';

/** Every option with its default filled in (steps = the planned optimizer steps once data is known). */
export type ResolvedTrainOptions = TrainMetadata['options'];

export const TRAIN_DEFAULTS = {
  rank: 8,
  lr: 2e-3,
  weightDecay: 0,
  maxGradNorm: 1,
  batchSize: 4,
  gradAccumSteps: 1,
  seqLen: 128,
  seed: 0,
  evalSplit: 0.1,
  evalEvery: 20,
  checkpointEvery: 25,
} as const;

function bad(option: string, value: unknown, rule: string): never {
  throw new InvalidOptionError(`train: ${option} = ${JSON.stringify(value)} is invalid: ${rule}`, {
    option,
    value,
  });
}

const isInt = (x: unknown, min: number, max = Number.MAX_SAFE_INTEGER): x is number =>
  typeof x === 'number' && Number.isInteger(x) && x >= min && x <= max;
const isNum = (x: unknown, min: number, max = Number.POSITIVE_INFINITY): x is number =>
  typeof x === 'number' && Number.isFinite(x) && x >= min && x <= max;

/**
 * Checks every option and fills the defaults that do not depend on the data. `steps` is 0 and
 * `warmupSteps` -1 until `planSteps` knows the data (when neither was given).
 */
export function resolveTrainOptions(
  o: TrainOptions,
  model: { numLayers: number; maxPositions: number },
): ResolvedTrainOptions {
  if (typeof o !== 'object' || o === null) bad('options', o, 'an object');
  if (typeof o.name !== 'string' || o.name.trim() === '' || o.name !== o.name.trim() || o.name.length > 200)
    bad('name', o.name, 'a non-empty adapter name without leading/trailing spaces');
  const rank = o.rank ?? TRAIN_DEFAULTS.rank;
  if (!isInt(rank, 1, 64)) bad('rank', rank, 'an integer in 1..64');
  const alpha = o.alpha ?? 2 * rank;
  if (!isNum(alpha, Number.MIN_VALUE)) bad('alpha', alpha, 'a positive number');
  const targets = o.targets ?? [...MODULE_ORDER];
  if (!Array.isArray(targets) || targets.length === 0 || targets.some((t) => !MODULE_ORDER.includes(t)))
    bad('targets', targets, `a non-empty list of ${MODULE_ORDER.join(', ')}`);
  if (new Set(targets).size !== targets.length) bad('targets', targets, 'no duplicates');
  const layers = o.layers ?? Array.from({ length: model.numLayers }, (_, i) => i);
  if (
    !Array.isArray(layers) ||
    layers.length === 0 ||
    layers.some((l) => !isInt(l, 0, model.numLayers - 1)) ||
    new Set(layers).size !== layers.length
  )
    bad('layers', layers, `distinct layer indices in 0..${model.numLayers - 1}`);
  if (o.steps !== undefined && o.epochs !== undefined)
    bad('steps', o.steps, 'give steps or epochs, not both');
  if (o.steps !== undefined && !isInt(o.steps, 1)) bad('steps', o.steps, 'an integer ≥ 1');
  if (o.epochs !== undefined && !isNum(o.epochs, Number.MIN_VALUE, 1e6))
    bad('epochs', o.epochs, 'a positive number');
  const lr = o.lr ?? TRAIN_DEFAULTS.lr;
  if (!isNum(lr, Number.MIN_VALUE, 1)) bad('lr', lr, 'a number in (0, 1]');
  if (o.warmupSteps !== undefined && !isInt(o.warmupSteps, 0))
    bad('warmupSteps', o.warmupSteps, 'an integer ≥ 0');
  const weightDecay = o.weightDecay ?? TRAIN_DEFAULTS.weightDecay;
  if (!isNum(weightDecay, 0, 1)) bad('weightDecay', weightDecay, 'a number in [0, 1]');
  const maxGradNorm = o.maxGradNorm ?? TRAIN_DEFAULTS.maxGradNorm;
  if (!isNum(maxGradNorm, 0)) bad('maxGradNorm', maxGradNorm, 'a number ≥ 0 (0: no clipping)');
  const batchSize = o.batchSize ?? TRAIN_DEFAULTS.batchSize;
  if (!isInt(batchSize, 1, 1024)) bad('batchSize', batchSize, 'an integer in 1..1024');
  const gradAccumSteps = o.gradAccumSteps ?? TRAIN_DEFAULTS.gradAccumSteps;
  if (!isInt(gradAccumSteps, 1, 1024)) bad('gradAccumSteps', gradAccumSteps, 'an integer in 1..1024');
  const seqLen = o.seqLen ?? Math.min(TRAIN_DEFAULTS.seqLen, model.maxPositions);
  if (!isInt(seqLen, 2, model.maxPositions))
    bad('seqLen', seqLen, `an integer in 2..${model.maxPositions} (the model's context)`);
  const seed = o.seed ?? TRAIN_DEFAULTS.seed;
  if (!isInt(seed, -(2 ** 31), 2 ** 32 - 1)) bad('seed', seed, 'a 32-bit integer');
  const evalSplit = o.evalSplit ?? TRAIN_DEFAULTS.evalSplit;
  if (!isNum(evalSplit, 0, 0.5)) bad('evalSplit', evalSplit, 'a number in [0, 0.5]');
  const evalEvery = o.evalEvery ?? TRAIN_DEFAULTS.evalEvery;
  if (!isInt(evalEvery, 0)) bad('evalEvery', evalEvery, 'an integer ≥ 0 (0: only at start and end)');
  const checkpointEvery = o.checkpointEvery ?? TRAIN_DEFAULTS.checkpointEvery;
  if (!isInt(checkpointEvery, 0))
    bad('checkpointEvery', checkpointEvery, 'an integer ≥ 0 (0: only on pause)');
  const device = o.device ?? 'auto';
  if (!['auto', 'webgpu', 'cpu'].includes(device)) bad('device', device, 'auto, webgpu or cpu');
  const recompute = o.recompute ?? false;
  if (typeof recompute !== 'boolean') bad('recompute', recompute, 'true or false');
  const format = o.format ?? 'auto';
  if (!['auto', 'text', 'jsonl'].includes(format)) bad('format', format, 'auto, text or jsonl');
  return {
    name: o.name,
    format,
    rank,
    alpha,
    targets: MODULE_ORDER.filter((m) => targets.includes(m)) as ModuleName[],
    layers: [...layers].sort((a, b) => a - b),
    steps: o.steps ?? 0,
    epochs: o.epochs ?? (o.steps === undefined ? 1 : 0),
    lr,
    warmupSteps: o.warmupSteps ?? -1,
    weightDecay,
    maxGradNorm,
    batchSize,
    gradAccumSteps,
    seqLen,
    seed,
    evalSplit,
    evalEvery,
    checkpointEvery,
    device,
    recompute,
  };
}

/** Fills `steps` (from epochs when not given) and `warmupSteps` (5 % of the steps) once the data is known. */
export function planSteps(o: ResolvedTrainOptions, microPerEpoch: number): ResolvedTrainOptions {
  const steps = o.steps > 0 ? o.steps : Math.max(1, Math.ceil((o.epochs * microPerEpoch) / o.gradAccumSteps));
  const epochs = o.epochs > 0 ? o.epochs : (steps * o.gradAccumSteps) / microPerEpoch;
  const warmupSteps = o.warmupSteps >= 0 ? o.warmupSteps : Math.round(0.05 * steps);
  return { ...o, steps, epochs, warmupSteps };
}

// ---------------------------------------------------------------- loop

/** Where a run stands: all a checkpoint needs besides the backend's TrainState. */
export interface TrainCursor {
  /** Optimizer steps done. */
  step: number;
  /** Micro-batches consumed (the data position; BatchSchedule recomputes the order from the seed). */
  micro: number;
  initialEvalLoss: number | null;
  lastLoss: number | null;
  lastEvalLoss: number | null;
}

export const START_CURSOR: TrainCursor = {
  step: 0,
  micro: 0,
  initialEvalLoss: null,
  lastLoss: null,
  lastEvalLoss: null,
};

/** Set from outside (pauseTraining / cancelTraining); read between steps. */
export interface TrainControl {
  pause: boolean;
  cancel: boolean;
}

export interface LoopHooks {
  progress(p: Omit<TrainProgress, 'trainId' | 'device'>): void;
  /** Persist state + cursor (IndexedDB). */
  checkpoint(state: TrainState, cursor: TrainCursor): Promise<void>;
  /** Lets queued messages (pause, cancel) run; decode.ts yieldToEventLoop in the engine. */
  yieldNow(): Promise<void>;
}

export interface LoopResult {
  status: 'done' | 'paused' | 'cancelled';
  cursor: TrainCursor;
}

/** Token-weighted mean loss over the eval batches (null when there are none). */
export async function evalLoss(backend: TrainBackend, batches: readonly Batch[]): Promise<number | null> {
  let sum = 0;
  let n = 0;
  for (const b of batches) {
    const c = targetCount(b);
    if (!c) continue;
    sum += c * (await backend.evalLoss(b));
    n += c;
  }
  return n ? sum / n : null;
}

/**
 * Runs optimizer steps from `cursor` until `o.steps`, a pause or a cancel. The backend must already
 * hold the state that goes with `cursor` (fresh init, or restored from a checkpoint).
 */
export async function trainLoop(
  backend: TrainBackend,
  o: ResolvedTrainOptions,
  schedule: BatchSchedule,
  evalSet: readonly Batch[],
  control: TrainControl,
  start: TrainCursor,
  hooks: LoopHooks,
): Promise<LoopResult> {
  const cur: TrainCursor = { ...start };
  const total = o.steps;
  const t0 = performance.now();
  let tokens = 0;
  let stepsTimed = 0;
  const sched = { lr: o.lr, warmup: o.warmupSteps, total };
  const emit = (stage: TrainProgress['stage']): void => {
    const ms = performance.now() - t0;
    hooks.progress({
      stage,
      step: cur.step,
      totalSteps: total,
      epoch: Math.round((cur.micro / schedule.perEpoch) * 1000) / 1000,
      loss: cur.lastLoss,
      evalLoss: cur.lastEvalLoss,
      lr: lrAt(Math.min(cur.step, total), sched),
      tokensPerSecond: ms > 0 ? (tokens * 1000) / ms : 0,
      etaMs: stepsTimed ? ((total - cur.step) * ms) / stepsTimed : null,
    });
  };
  const runEval = async (): Promise<void> => {
    if (!evalSet.length) return;
    cur.lastEvalLoss = await evalLoss(backend, evalSet);
    if (cur.step === 0 && cur.initialEvalLoss === null) cur.initialEvalLoss = cur.lastEvalLoss;
    emit('eval');
  };
  const checkpoint = async (): Promise<void> => {
    await hooks.checkpoint(await backend.snapshot(), { ...cur });
    emit('checkpoint');
  };

  /** Pause / cancel, read after yielding to the event loop; null: go on. */
  const stopped = async (): Promise<LoopResult | null> => {
    await hooks.yieldNow();
    if (control.cancel) return { status: 'cancelled', cursor: cur };
    if (!control.pause) return null;
    await checkpoint();
    return { status: 'paused', cursor: cur };
  };
  if (cur.step === 0 && cur.initialEvalLoss === null) {
    const early = await stopped(); // a run paused or cancelled while it was queued does no work
    if (early) return early;
    await runEval();
  }
  while (cur.step < total) {
    const stop = await stopped();
    if (stop) return stop;
    const micro = Array.from({ length: o.gradAccumSteps }, (_, i) => schedule.batch(cur.micro + i));
    const counts = micro.map(targetCount);
    const all = counts.reduce((a, b) => a + b, 0);
    let loss = 0;
    for (let i = 0; i < micro.length; i++) {
      const w = all ? counts[i]! / all : 0;
      const l = await backend.accumulate(micro[i]!, w);
      loss += w * l;
      tokens += realTokenCount(micro[i]!);
    }
    await backend.step(lrAt(cur.step, sched), o.maxGradNorm);
    cur.step++;
    cur.micro += micro.length;
    cur.lastLoss = loss;
    stepsTimed++;
    emit('train');
    if (cur.step < total) {
      if (o.evalEvery > 0 && cur.step % o.evalEvery === 0) await runEval();
      if (o.checkpointEvery > 0 && cur.step % o.checkpointEvery === 0) await checkpoint();
    }
  }
  await runEval();
  return { status: 'done', cursor: cur };
}
