/**
 * `TrainBackend` (types.ts) on the CPU: the plain-TypeScript reference model (cpu-model.ts) with
 * optim.ts's AdamW and global-norm clipping — the path that trains where WebGPU is missing, and the one
 * the WebGPU backend (gpu-model.ts, GpuTrainBackend) must match step for step. Gradients accumulate
 * token-weighted across micro-batches and are zeroed by `step`. Snapshots copy A, B and the float64
 * AdamW moments exactly, so restore + continue equals never stopping. Not here: the loop (trainer.ts).
 */
import { TrainCheckpointError } from '../errors.ts';
import { type Batch, CpuLoraModel, type FrozenWeights, type LoraModule } from './cpu-model.ts';
import { AdamW, clipGradNorm, loraParams } from './optim.ts';
import type { TrainBackend, TrainState } from './types.ts';

export interface CpuBackendOptions {
  weightDecay: number;
}

export class CpuTrainBackend implements TrainBackend {
  readonly device = 'cpu' as const;
  readonly model: CpuLoraModel;
  private readonly opt: AdamW;

  constructor(weights: FrozenWeights, modules: LoraModule[], o: CpuBackendOptions) {
    this.model = new CpuLoraModel(weights, modules);
    this.opt = new AdamW({ lr: 0, weightDecay: o.weightDecay });
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
    const hasGrads = this.model.modules.every((m) => m.branch.dA && m.branch.dB);
    if (!hasGrads) this.model.zeroGrad();
    const params = loraParams(this.model);
    const gradNorm = clipGradNorm(params, maxGradNorm > 0 ? maxGradNorm : Number.POSITIVE_INFINITY);
    this.opt.step(params, lr);
    this.model.zeroGrad();
    return { gradNorm };
  }

  async snapshot(): Promise<TrainState> {
    const s = this.opt.state();
    return {
      step: this.opt.t,
      modules: this.model.modules.map((m) => ({
        path: m.path,
        layer: m.layer,
        module: m.module,
        R: m.branch.R,
        A: Float32Array.from(m.branch.A),
        B: Float32Array.from(m.branch.B),
      })),
      adam: s ? { m: s.m.map((x) => x.slice()), v: s.v.map((x) => x.slice()) } : null,
    };
  }

  async restore(state: TrainState): Promise<void> {
    const mods = this.model.modules;
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
      const n = 2 * mods.length;
      const { m, v } = state.adam;
      if (m.length !== n || v.length !== n) bad(`${m.length} AdamW moments, expected ${n}`);
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
    this.opt.restore(state.adam ? { t: state.step, m: state.adam.m, v: state.adam.v } : null);
    this.opt.t = state.step;
    this.model.zeroGrad();
  }

  dispose(): void {
    this.model.dispose();
  }
}
