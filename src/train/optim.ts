/**
 * Optimizer side of the trainer, PyTorch semantics so the CPU and GPU paths can be checked against
 * torch.optim.AdamW (Loshchilov & Hutter 2019, arXiv:1711.05101): decoupled weight decay
 * p ← p·(1 − lr·wd), bias-corrected moments, eps added after the bias-corrected sqrt. Also global-norm
 * clipping (torch.nn.utils.clip_grad_norm_), HF's linear-warmup + cosine schedule, and token-weighted
 * gradient accumulation. Moment buffers are allocated on the first step. No AMSGrad, no fused/foreach
 * variants, no parameter groups (one lr for all LoRA tensors).
 */
import { WebLoraError } from '../errors.ts';
import type { Batch, CpuLoraModel } from './cpu-model.ts';
import type { Buf } from './ref/types.ts';

export interface Param {
  value: Buf; // updated in place
  grad: Buf; // same length
}

export interface AdamWOptions {
  lr: number;
  beta1?: number; // 0.9
  beta2?: number; // 0.999
  eps?: number; // 1e-8
  weightDecay?: number; // 0.01 as torch.optim.AdamW
}

export class AdamW {
  private m: Float64Array[] | null = null;
  private v: Float64Array[] | null = null;
  /** Number of steps taken (the bias-correction t). */
  t = 0;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  lr: number;

  constructor(o: AdamWOptions) {
    this.lr = o.lr;
    this.beta1 = o.beta1 ?? 0.9;
    this.beta2 = o.beta2 ?? 0.999;
    this.eps = o.eps ?? 1e-8;
    this.weightDecay = o.weightDecay ?? 0.01;
  }

  /** One update of every param from its grad; `lr` overrides this.lr for this step (schedules). */
  step(params: Param[], lr = this.lr): void {
    if (!this.m || !this.v) {
      this.m = params.map((p) => new Float64Array(p.value.length));
      this.v = params.map((p) => new Float64Array(p.value.length));
    }
    this.t++;
    const { beta1: b1, beta2: b2, eps, weightDecay: wd } = this;
    const bc1 = 1 - b1 ** this.t;
    const bc2sqrt = Math.sqrt(1 - b2 ** this.t);
    const stepSize = lr / bc1;
    params.forEach((p, j) => {
      const m = this.m![j]!;
      const v = this.v![j]!;
      const { value, grad } = p;
      for (let i = 0; i < value.length; i++) {
        const g = grad[i]!;
        let x = value[i]!;
        if (wd) x *= 1 - lr * wd;
        m[i] = b1 * m[i]! + (1 - b1) * g;
        v[i] = b2 * v[i]! + (1 - b2) * g * g;
        x -= (stepSize * m[i]!) / (Math.sqrt(v[i]!) / bc2sqrt + eps);
        value[i] = x;
      }
    });
  }

  /** Restores `state()` output (a checkpoint); null moments: as before the first step, at step t. */
  load(t: number, moments: { m: ArrayLike<number>[]; v: ArrayLike<number>[] } | null): void {
    this.t = t;
    this.m = moments ? moments.m.map((x) => Float64Array.from(x)) : null;
    this.v = moments ? moments.v.map((x) => Float64Array.from(x)) : null;
  }

  /** Moments for checkpoints (null before the first step). */
  state(): { t: number; m: Float64Array[]; v: Float64Array[] } | null {
    return this.m && this.v ? { t: this.t, m: this.m, v: this.v } : null;
  }
}

/** The LoRA A/B tensors of a model with their gradients (after a backward). */
export function loraParams(model: CpuLoraModel): Param[] {
  return model.modules.flatMap((m) => {
    const { A, B, dA, dB } = m.branch;
    if (!dA || !dB) {
      throw new WebLoraError(`no gradients for ${m.path}: run backward() first`, { module: m.path });
    }
    return [
      { value: A, grad: dA },
      { value: B, grad: dB },
    ];
  });
}

/**
 * torch.nn.utils.clip_grad_norm_: total = ‖all grads‖₂; if total > maxNorm, every grad is scaled by
 * maxNorm / (total + 1e-6). Returns the norm before clipping.
 */
export function clipGradNorm(params: Param[], maxNorm: number): number {
  let ss = 0;
  for (const p of params) for (let i = 0; i < p.grad.length; i++) ss += p.grad[i]! * p.grad[i]!;
  const total = Math.sqrt(ss);
  const coef = maxNorm / (total + 1e-6);
  if (coef < 1) for (const p of params) for (let i = 0; i < p.grad.length; i++) p.grad[i]! *= coef;
  return total;
}

/**
 * transformers.get_cosine_schedule_with_warmup (num_cycles 0.5): lr·step/warmup during warmup (0 at
 * step 0), then lr·max(minRatio, ½(1 + cos(π·progress))). `step` is the number of updates done so far.
 */
export function lrAt(
  step: number,
  o: { lr: number; warmup: number; total: number; minRatio?: number },
): number {
  if (step < o.warmup) return (o.lr * step) / Math.max(1, o.warmup);
  const progress = (step - o.warmup) / Math.max(1, o.total - o.warmup);
  const f = 0.5 * (1 + Math.cos(Math.PI * Math.min(1, progress)));
  return o.lr * Math.max(o.minRatio ?? 0, f);
}

/**
 * One optimizer step's gradient from several micro-batches, weighted by target tokens so the result is
 * the gradient of the mean loss over all their target tokens (what one big batch would give).
 * Returns that mean loss. Two forwards per micro-batch are avoided by counting targets up front.
 */
export function accumulateGradients(model: CpuLoraModel, micro: Batch[]): number {
  const counts = micro.map((b) => {
    let n = 0;
    for (let r = 0; r < b.B; r++)
      for (let t = 1; t < b.T; t++) n += b.labelMask ? (b.labelMask[r * b.T + t] ? 1 : 0) : 1;
    return n;
  });
  const total = counts.reduce((a, b) => a + b, 0);
  model.zeroGrad();
  let loss = 0;
  micro.forEach((b, i) => {
    const share = total ? counts[i]! / total : 0;
    loss += share * model.forward(b);
    model.backward(share);
  });
  return loss;
}
