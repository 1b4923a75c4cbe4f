/**
 * Training the routing gates of a gated mix over frozen adapters (MeteoRA-style; the model is
 * gate-model.ts): AdamW (optim.ts) on the gate W/b only, gradient-norm clipping, seeded micro-batches
 * from the ordinary training-data pipeline (data.ts: text or JSONL prompt/completion; the loss is on the
 * completion tokens). Gates start at zero, i.e. the uniform mix — every expert weighted 1/n — so "before"
 * is the static average. CPU only: the WebGPU trainer (gpu-model.ts) has no gate kernels. Not here:
 * storing the result (adapters/gated.ts, engine/gates.ts).
 */
import { InvalidOptionError } from '../errors.ts';
import type { Batch } from './cpu-model.ts';
import { BatchSchedule, type Example, evalBatches, targetCount } from './data.ts';
import type { CpuGatedModel, GateParams } from './gate-model.ts';
import { AdamW, clipGradNorm, type Param } from './optim.ts';

export interface GateTrainOptions {
  /** Optimizer steps (one micro-batch each); default 60. */
  steps?: number;
  /** Constant AdamW learning rate; default 2e-2 (the gate is small and starts uniform). */
  lr?: number;
  /** Sequences per step; default 4. */
  batchSize?: number;
  /** AdamW weight decay; default 0. */
  weightDecay?: number;
  /** Gradient-norm clip over all gate parameters; default 1. */
  maxGradNorm?: number;
  /** Seeds the batch order; default 0. */
  seed?: number;
}

export const GATE_TRAIN_DEFAULTS = {
  steps: 60,
  lr: 2e-2,
  batchSize: 4,
  weightDecay: 0,
  maxGradNorm: 1,
  seed: 0,
};

export function resolveGateTrainOptions(o: GateTrainOptions = {}): Required<GateTrainOptions> {
  const r = {
    ...GATE_TRAIN_DEFAULTS,
    ...Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)),
  };
  const pos = (k: keyof typeof r, int: boolean) => {
    const v = r[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0 || (int && !Number.isInteger(v)))
      throw new InvalidOptionError(
        `gate training: ${k} must be a positive ${int ? 'integer' : 'number'} (got ${v})`,
        {
          option: k,
          value: v,
        },
      );
  };
  pos('steps', true);
  pos('lr', false);
  pos('batchSize', true);
  pos('maxGradNorm', false);
  if (!(r.weightDecay >= 0)) throw new InvalidOptionError('gate training: weightDecay must be >= 0', {});
  if (!Number.isInteger(r.seed)) throw new InvalidOptionError('gate training: seed must be an integer', {});
  return r;
}

/** Zero (uniform-mix) gates for `layers`: W (n, C), b (n). */
export function zeroGates(layers: readonly number[], n: number, C: number): GateParams[] {
  return layers.map((layer) => ({
    layer,
    W: new Float32Array(n * C),
    b: new Float32Array(n),
    dW: null,
    db: null,
  }));
}

export interface GateStep {
  step: number;
  loss: number;
  gradNorm: number;
}

/** Runs the steps; `onStep` after each (await it to yield; return false to stop early). */
export async function trainGates(
  model: CpuGatedModel,
  train: readonly Example[],
  padId: number,
  options: GateTrainOptions = {},
  onStep?: (s: GateStep) => Promise<boolean | undefined> | boolean | undefined,
): Promise<GateStep[]> {
  const o = resolveGateTrainOptions(options);
  if (train.length === 0) throw new InvalidOptionError('gate training needs at least one example', {});
  const schedule = new BatchSchedule(train, o.batchSize, o.seed, padId);
  const adam = new AdamW({ lr: o.lr, weightDecay: o.weightDecay });
  const log: GateStep[] = [];
  for (let step = 0; step < o.steps; step++) {
    const batch = schedule.batch(step);
    model.zeroGrad();
    const loss = model.forward(batch);
    model.backward();
    const params: Param[] = model.gates.flatMap((g) => [
      { value: g.W, grad: g.dW! },
      { value: g.b, grad: g.db! },
    ]);
    const gradNorm = clipGradNorm(params, o.maxGradNorm);
    adam.step(params);
    const s = { step: step + 1, loss, gradNorm };
    log.push(s);
    if ((await onStep?.(s)) === false) break;
  }
  return log;
}

/** Mean loss over the completion tokens of `examples` (token-weighted across batches). */
export function gateEvalLoss(
  model: CpuGatedModel,
  examples: readonly Example[],
  padId: number,
  batchSize = 4,
): number {
  let sum = 0;
  let count = 0;
  for (const b of evalBatches(examples, batchSize, padId)) {
    const n = targetCount(b);
    sum += n * model.forward(b);
    count += n;
  }
  return count ? sum / count : 0;
}

/**
 * Routing share: for each example's completion tokens, the mean gate probability (over tokens and gated
 * layers) of expert `expert`. The gate at position t routes the prediction of token t+1, so the tokens
 * counted are those whose next token is a target.
 */
export function routingShare(
  model: CpuGatedModel,
  examples: readonly Example[],
  padId: number,
  expert: number,
): number {
  let sum = 0;
  let count = 0;
  for (const b of evalBatches(examples, 4, padId)) {
    model.forward(b);
    for (const g of model.gates) {
      const p = model.gateProbs(g.layer);
      forTargets(b, (i) => {
        sum += p[i * model.n + expert]!;
        count++;
      });
    }
  }
  return count ? sum / count : 0;
}

function forTargets(b: Batch, f: (i: number) => void): void {
  for (let r = 0; r < b.B; r++)
    for (let t = 0; t + 1 < b.T; t++) if (b.labelMask ? b.labelMask[r * b.T + t + 1] : 1) f(r * b.T + t);
}
