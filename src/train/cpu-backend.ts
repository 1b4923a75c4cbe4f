/**
 * The CPU training backend: `TrainBackend` (types.ts) over CpuLoraModel (forward/backward: ref/*.ts with
 * the linear layers and attention on the wasm SIMD GEMM), AdamW and clipGradNorm (optim.ts). What the trainer drives where
 * WebGPU is missing, and the oracle the WebGPU backend (gpu-model.ts) is compared with step for step.
 * Gradients accumulate token-weighted across `accumulate` calls (backward(weight)), exactly as
 * optim.ts accumulateGradients, and are zeroed by `step`. Snapshots copy A, B and the float64 AdamW
 * moments exactly, so restore + continue equals never stopping. Not here: the trainer loop, schedules,
 * data.
 */
import { TrainCheckpointError } from '../errors.ts';
import { type Batch, CpuLoraModel, type FrozenWeights, type LoraModule } from './cpu-model.ts';
import { AdamW, type AdamWOptions, clipGradNorm, loraParams } from './optim.ts';
import type { TrainBackend, TrainState } from './types.ts';

export interface CpuTrainOptions {
  /** AdamW hyper-parameters (lr comes with each step); defaults as optim.ts AdamW (wd 0.01). */
  adam?: Omit<AdamWOptions, 'lr'>;
  /** float64 activations (finite-difference tests). */
  f64?: boolean;
  /** Activation recomputation (CpuLoraModel): same gradients, activations of one layer at a time. */
  recompute?: boolean;
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
    this.model = new CpuLoraModel(weights, modules, {
      f64: opts.f64 ?? false,
      recompute: opts.recompute ?? false,
    });
    this.opt = new AdamW({ lr: 0, ...opts.adam });
  }

  async accumulate(batch: Batch, weight: number): Promise<number> {
    const loss = this.model.forward(batch);
    this.model.backward(weight); // gradients are allocated zeroed on first use, then zeroed by step()
    return loss;
  }

  async evalLoss(batch: Batch): Promise<number> {
    return this.model.forward(batch);
  }

  async step(lr: number, maxGradNorm: number): Promise<{ gradNorm: number }> {
    if (this.modules.some((m) => !m.branch.dA || !m.branch.dB)) this.model.zeroGrad();
    const params = loraParams(this.model);
    const gradNorm = clipGradNorm(params, maxGradNorm > 0 ? maxGradNorm : Number.POSITIVE_INFINITY);
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
      adam: st ? { m: st.m.map((x) => x.slice()), v: st.v.map((x) => x.slice()) } : null,
    };
  }

  async restore(state: TrainState): Promise<void> {
    const mods = this.modules;
    const bad = (why: string): never => {
      throw new TrainCheckpointError(`checkpoint does not fit this run: ${why}`, { reason: 'shape' });
    };
    if (state.modules.length !== mods.length)
      bad(`${state.modules.length} modules, the run has ${mods.length}`);
    state.modules.forEach((s, i) => {
      const m = mods[i]!;
      if (s.path !== m.path || s.R !== m.branch.R)
        bad(`module ${i} is ${s.path} r=${s.R}, expected ${m.path}`);
      if (s.A.length !== m.branch.A.length || s.B.length !== m.branch.B.length) bad(`${s.path}: A/B sizes`);
    });
    if (state.adam) {
      const { m, v } = state.adam;
      if (m.length !== 2 * mods.length || v.length !== 2 * mods.length) {
        bad(`${m.length} AdamW moments, expected ${2 * mods.length}`);
      }
      mods.forEach((mod, i) => {
        for (const [j, len] of [
          [2 * i, mod.branch.A.length],
          [2 * i + 1, mod.branch.B.length],
        ] as const) {
          if (m[j]!.length !== len || v[j]!.length !== len) bad(`${mod.path}: AdamW moment sizes`);
        }
      });
    }
    state.modules.forEach((s, i) => {
      mods[i]!.branch.A.set(s.A);
      mods[i]!.branch.B.set(s.B);
    });
    this.opt.load(state.step, state.adam);
    this.model.zeroGrad();
  }

  dispose(): void {
    this.model.dispose();
  }
}
