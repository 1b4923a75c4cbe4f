/**
 * The training contract: what `Engine.train` takes and streams back (structured-cloneable, so it crosses
 * the worker boundary unchanged), and the seam between the trainer loop (trainer.ts) and the two places
 * the math can run — the CPU reference (cpu-model.ts + optim.ts) and the WebGPU kernels (shaders/).
 * Both implement `TrainBackend`; the trainer never knows which one it drives. Types only: no logic here.
 */
import type { ModuleName } from '../model/targets.ts';
import type { Batch } from './cpu-model.ts';

/**
 * How `data` is read. 'auto': JSONL when the first non-empty line is a JSON object (then every line must
 * be one; errors name the line), else plain text.
 */
export type TrainDataFormat = 'auto' | 'text' | 'jsonl';

/** Where the math runs. 'auto': WebGPU when the engine's model runs on webgpu, else the CPU path. */
export type TrainDevice = 'auto' | 'webgpu' | 'cpu';

/**
 * A training run. Data: plain text (language-model style: every token is a target), or JSONL with one
 * `{"prompt", "completion"}` (loss on completion tokens only) or `{"messages": [...]}` (chat template;
 * loss on assistant turns) object per line.
 */
export interface TrainOptions {
  /** Name of the adapter the run creates in the store (AdapterNameConflictError unless `overwrite`). */
  name: string;
  data: string;
  format?: TrainDataFormat;
  /** LoRA rank 1–64; default 8. */
  rank?: number;
  /** lora_alpha; default 2·rank (scale 2). */
  alpha?: number;
  /** Projections to adapt; default all seven. */
  targets?: ModuleName[];
  /** Layers to adapt; default all. */
  layers?: number[];
  /** Optimizer steps; exactly one of `steps` / `epochs` (default: 1 epoch). */
  steps?: number;
  epochs?: number;
  /** Peak learning rate; default 2e-3. */
  lr?: number;
  /** Warmup steps of the cosine schedule; default 5% of the steps. */
  warmupSteps?: number;
  /** AdamW weight decay; default 0. */
  weightDecay?: number;
  /** Global gradient-norm clip; default 1. */
  maxGradNorm?: number;
  /** Sequences per micro-batch; default 4. */
  batchSize?: number;
  /** Micro-batches per optimizer step; default 1. */
  gradAccumSteps?: number;
  /** Tokens per sequence (longer examples are cut, shorter padded); default 128, ≤ the model's context. */
  seqLen?: number;
  /** Seeds the LoRA init and the data shuffle: same seed + same data ⇒ same weights. Default 0. */
  seed?: number;
  /** Share of examples held out for the eval loss (0 = none); default 0.1. */
  evalSplit?: number;
  /** Eval loss every N steps (and at the end); default 20. */
  evalEvery?: number;
  /** Checkpoint to IndexedDB every N steps; default 25. 0: only on pause. */
  checkpointEvery?: number;
  device?: TrainDevice;
  /**
   * Activation recomputation: keep only each layer's input and recompute that layer's activations
   * just before its backward (activation memory ∝ one layer instead of all; ~one more forward). Same
   * gradients. Default false.
   */
  recompute?: boolean;
  /** Replace an adapter of the same name. */
  overwrite?: boolean;
  /** Id for pause/cancel (default: generated, reported in progress). */
  trainId?: string;
}

export interface TrainProgress {
  trainId: string;
  stage: 'prepare' | 'train' | 'eval' | 'checkpoint' | 'save' | 'done';
  /** Optimizer steps done / planned. */
  step: number;
  totalSteps: number;
  epoch: number;
  /** Mean train loss of the last step (nats per target token); null before the first. */
  loss: number | null;
  /** Latest eval loss; null when there is no eval split or none was computed yet. */
  evalLoss: number | null;
  lr: number;
  /** Target + context tokens processed per second over the run so far. */
  tokensPerSecond: number;
  /** Estimated time left; null until a step has been timed. */
  etaMs: number | null;
  device: 'webgpu' | 'cpu';
}

/** What `train` / `resumeTraining` resolve to. */
export interface TrainResult {
  trainId: string;
  /** 'done': the adapter is stored; 'paused': a checkpoint is stored (resume it); 'cancelled': nothing. */
  status: 'done' | 'paused' | 'cancelled';
  /** The stored adapter (status 'done'), else null. */
  adapter: { name: string } | null;
  steps: number;
  finalLoss: number | null;
  finalEvalLoss: number | null;
  /** Eval loss before the first step (the base model with the zero-initialized adapter). */
  initialEvalLoss: number | null;
  device: 'webgpu' | 'cpu';
  ms: number;
}

/** Metadata stored with a trained adapter (and with each checkpoint). */
export interface TrainMetadata {
  /** sha256 of the UTF-8 data. */
  dataSha256: string;
  dataExamples: number;
  /** The options as resolved (every default filled in), without the data. */
  options: Omit<Required<TrainOptions>, 'data' | 'trainId' | 'overwrite'>;
  steps: number;
  finalLoss: number | null;
  finalEvalLoss: number | null;
  device: 'webgpu' | 'cpu';
  modelId: string;
}

export interface TrainCheckpointInfo {
  trainId: string;
  name: string;
  modelId: string;
  step: number;
  totalSteps: number;
  savedAt: number;
  bytes: number;
}

// ---------------------------------------------------------------- trainer ↔ backend

/** LoRA weights and optimizer state copied to the CPU: checkpoints and the final adapter. */
export interface TrainState {
  /** Optimizer steps taken (AdamW's bias-correction t). */
  step: number;
  /** One entry per trained module, in the backend's module order. */
  modules: { path: string; layer: number; module: ModuleName; R: number; A: Float32Array; B: Float32Array }[];
  /**
   * AdamW moments per parameter (A then B of each module), or null before the first step. The CPU path
   * keeps them in float64 (optim.ts, as torch's fp32 AdamW is checked against it): a checkpoint must hold
   * them exactly for resume to equal an uninterrupted run, so float64 arrays are allowed here.
   */
  adam: { m: (Float32Array | Float64Array)[]; v: (Float32Array | Float64Array)[] } | null;
}

/**
 * The math of one run, on the CPU or the GPU. The trainer calls, per optimizer step:
 * `accumulate` for each micro-batch, then `step`. Gradients are token-weighted across micro-batches
 * (`weight` = the micro-batch's share of the step's target tokens), so accumulation equals one big batch.
 */
export interface TrainBackend {
  readonly device: 'webgpu' | 'cpu';
  /** Forward + backward of one micro-batch; adds weight·grad to the gradients; returns its mean loss. */
  accumulate(batch: Batch, weight: number): Promise<number>;
  /** Mean loss of a batch, no gradients. */
  evalLoss(batch: Batch): Promise<number>;
  /** Clips the accumulated gradients to `maxGradNorm`, applies AdamW with `lr`, zeroes the gradients. */
  step(lr: number, maxGradNorm: number): Promise<{ gradNorm: number }>;
  snapshot(): Promise<TrainState>;
  restore(state: TrainState): Promise<void>;
  dispose(): void;
}
