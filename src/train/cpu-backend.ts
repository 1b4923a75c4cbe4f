/**
 * The CPU training backend: `TrainBackend` (types.ts) over the plain-TypeScript reference —
 * CpuLoraModel (forward/backward), AdamW and clipGradNorm (optim.ts). What the trainer drives where
 * WebGPU is missing, and the oracle the WebGPU backend (gpu-model.ts) is compared with step for step.
 * Gradients accumulate token-weighted across `accumulate` calls (backward(weight)), exactly as
 * optim.ts accumulateGradients. Not here: the trainer loop, schedules, data.
 */
import { InvalidOptionError } from '../errors.ts';
import { type Batch, CpuLoraModel, type FrozenWeights, type LoraModule } from './cpu-model.ts';
import { AdamW, type AdamWOptions, clipGradNorm, loraParams } from './optim.ts';
import type { TrainBackend, TrainState } from './types.ts';

export interface CpuTrainOptions {
  /** AdamW hyper-parameters (lr comes with each step); defaults as optim.ts AdamW (wd 0.01). */
  adam?: Omit<AdamWOptions, 'lr'>;
  /** float64 activations (finite-difference tests). */
  f64?: boolean;
}

export class CpuTrainBackend implements TrainBackend {
  readonly device = 'cpu' as const;
  readonly model: CpuLoraModel;
  private readonly opt: AdamW;

  /** `modules` are trained in place (their A/B arrays are the live weights). */
  constructor(
    weights: FrozenWeights,
    readonly modules: LoraModule[],
    opts: CpuTrainOptions = {},
  ) {
    this.model = new CpuLoraModel(weights, modules, { f64: opts.f64 ?? false });
    this.opt = new AdamW({ lr: 0, ...opts.adam });
  }

  async accumulate(batch: Batch, weight: number): Promise<number> {
    const loss = this.model.forward(batch);
    this.model.backward(weight);
    return loss;
  }

  async evalLoss(batch: Batch): Promise<number> {
    return this.model.forward(batch);
  }

  async step(lr: number, maxGradNorm: number): Promise<{ gradNorm: number }> {
    for (const m of this.modules) if (!m.branch.dA || !m.branch.dB) this.model.zeroGrad();
    const params = loraParams(this.model);
    const gradNorm = clipGradNorm(params, maxGradNorm);
    this.opt.step(params, lr);
    this.model.zeroGrad();
    return { gradNorm };
  }

  async snapshot(): Promise<TrainState> {
    const st = this.opt.state();
    return {
      step: this.opt.t,
      modules: this.modules.map((m) => ({
        path: m.path,
        layer: m.layer,
        module: m.module,
        R: m.branch.R,
        A: Float32Array.from(m.branch.A),
        B: Float32Array.from(m.branch.B),
      })),
      adam: st
        ? { m: st.m.map((x) => Float32Array.from(x)), v: st.v.map((x) => Float32Array.from(x)) }
        : null,
    };
  }

  async restore(state: TrainState): Promise<void> {
    if (state.modules.length !== this.modules.length)
      throw new InvalidOptionError(
        `state has ${state.modules.length} modules, this backend trains ${this.modules.length}`,
        {},
      );
    state.modules.forEach((s, i) => {
      const m = this.modules[i]!;
      if (s.path !== m.path || s.A.length !== m.branch.A.length || s.B.length !== m.branch.B.length)
        throw new InvalidOptionError(
          `state module ${i} (${s.path}, rank ${s.R}) does not match ${m.path} (rank ${m.branch.R})`,
          { index: i },
        );
      m.branch.A.set(s.A);
      m.branch.B.set(s.B);
    });
    this.opt.load(state.step, state.adam);
    this.model.zeroGrad();
  }

  dispose(): void {
    this.model.dispose();
  }
}
