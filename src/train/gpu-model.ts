/**
 * The WebGPU training backend: `TrainBackend` (types.ts) over the WGSL kernels in shaders/, on a
 * GPUDevice passed in (the engine passes onnxruntime-web's, so a trained adapter can feed inference
 * straight from GPU buffers, see gpu-feeds.ts; tests may use requestTrainDevice). Same math as the CPU
 * reference (cpu-model.ts + optim.ts) op for op, in fp32 with f32 sums. Frozen weights are uploaded once
 * (4-bit MatMulNBits blocks stay 4-bit: dequantized inside the matmul kernels); activations live in one
 * ShapePlan per (B, T) (gpu-plan.ts) and are reused; the LoRA gradient buffer and the AdamW moments are
 * allocated on first use (gradients packed 16-bit "g16", f16.ts; moments packed f16). All LoRA A/B live
 * in ONE buffer (each module's [A | B] at an aligned offset),
 * so gradient norm, clipping and AdamW are three dispatches over everything. One readback per call:
 * the per-row losses (accumulate / evalLoss) or the gradient norm (step).
 * Optional activation recomputation (`recompute`, gpu-plan.ts). Not here: the trainer loop, schedules,
 * data (trainer.ts); fp16.
 */
import { DeviceLostError, InvalidOptionError, UnsupportedError } from '../errors.ts';
import { MODULE_ORDER, type ModuleName } from '../model/targets.ts';
import type { Batch, FrozenWeights, LoraModule } from './cpu-model.ts';
import { packF16Scaled, packMoments, unpackG16, unpackMoments } from './f16.ts';
import { prepareBatch, validateModules } from './gpu-batch.ts';
import { type Cmd, GpuKernels, requireLimit, type ShaderName, wg64 } from './gpu-kernels.ts';
import { f16Embedding, packQ4ForGpu } from './gpu-layout.ts';
import { type GpuLinear, type GpuSlot, type PlanCtx, ShapePlan } from './gpu-plan.ts';
import type { AdamWOptions } from './optim.ts';
import type { FrozenLinear } from './ref/linear.ts';
import type { TrainBackend, TrainState } from './types.ts';

export interface GpuTrainOptions {
  /** AdamW hyper-parameters (lr comes with each step); defaults as optim.ts AdamW (wd 0.01). */
  adam?: Omit<AdamWOptions, 'lr'>;
  /** Activation recomputation (gpu-plan.ts): one layer's activations instead of L; default false. */
  recompute?: boolean;
}

/** Every entry point of every kernel (compiled up front, inside one validation error scope). */
const ENTRIES: Record<ShaderName, string[]> = {
  embedding: ['main'],
  rmsnorm: ['main'],
  rmsnorm_backward: ['main'],
  matmul_lora: ['lora_xa', 'main'],
  matmul_lora_backward: ['lora_dxa', 'lora_db', 'lora_da', 'dinp_main'],
  matmul_q4_lora: ['lora_xa', 'main'],
  matmul_q4_lora_backward: ['lora_dxa', 'lora_db', 'lora_da', 'dinp_main'],
  rope: ['main'],
  rope_backward: ['main'],
  attention: ['main'],
  attention_backward: ['dscores', 'dkv_main'],
  swiglu: ['main'],
  swiglu_backward: ['main'],
  residual: ['main'],
  crossentropy: ['main'],
  gradnorm: ['partial', 'finish'],
  adamw: ['main'],
  lora_feeds: ['main'],
};

const GRADNORM_CHUNK = 4096;
/** Shapes whose activations stay allocated (train + eval + a ragged last batch); older ones are freed. */
const MAX_PLANS = 3;
const ADAM_TYPES = 'uuuufffffffffuuu';

export class GpuTrainBackend implements TrainBackend {
  readonly device = 'webgpu' as const;
  /** @internal pipelines and buffers (gpu-feeds.ts writes inference feeds through them). */
  readonly kernels: GpuKernels;
  /** @internal where each module's [A | B] lives in `lora`, in the backend's module order. */
  readonly slots: GpuSlot[];
  /** @internal all LoRA A/B: (n) floats. */
  readonly lora: GPUBuffer;
  readonly n: number;
  private readonly ctx: PlanCtx;
  private readonly plans = new Map<string, ShapePlan>();
  private grads: GPUBuffer | null = null;
  /** AdamW m and v, packed f16 at a power-of-two scale (adamw.wgsl): (n) u32. */
  private moments: GPUBuffer | null = null;
  private step_ = 0;
  private readonly adam: Required<Omit<AdamWOptions, 'lr'>>;
  private opt: {
    partials: GPUBuffer;
    stats: GPUBuffer;
    statsRead: GPUBuffer;
    gnParams: GPUBuffer;
    adamParams: GPUBuffer;
  } | null = null;
  private disposed = false;
  private lost: GPUDeviceLostInfo | null = null;
  private tail: Promise<unknown> = Promise.resolve();

  /** Uploads the frozen weights and the modules' current A/B and compiles every kernel. */
  static async create(
    gpu: GPUDevice,
    weights: FrozenWeights,
    modules: LoraModule[],
    opts: GpuTrainOptions = {},
  ): Promise<GpuTrainBackend> {
    gpu.pushErrorScope('validation');
    let b: GpuTrainBackend | null = null;
    let thrown: unknown = null;
    try {
      b = new GpuTrainBackend(gpu, weights, modules, opts);
    } catch (e) {
      thrown = e;
    }
    const err = await gpu.popErrorScope();
    if (thrown || err || !b) {
      b?.dispose();
      if (thrown) throw thrown;
      throw new UnsupportedError(
        `WebGPU training backend: the kernels do not validate on this device: ${err?.message}`,
        {
          feature: 'webgpu-training-kernels',
        },
      );
    }
    await gpu.queue.onSubmittedWorkDone();
    return b;
  }

  private constructor(
    gpu: GPUDevice,
    readonly weights: FrozenWeights,
    readonly modules: LoraModule[],
    opts: GpuTrainOptions,
  ) {
    validateModules(weights, modules);
    gpu.lost.then((info) => {
      if (info.reason !== 'destroyed') this.lost = info;
    });
    const k = new GpuKernels(gpu);
    this.kernels = k;
    const a = opts.adam ?? {};
    this.adam = {
      beta1: a.beta1 ?? 0.9,
      beta2: a.beta2 ?? 0.999,
      eps: a.eps ?? 1e-8,
      weightDecay: a.weightDecay ?? 0.01,
    };
    for (const [name, entries] of Object.entries(ENTRIES))
      for (const e of entries) k.pipeline(name as ShaderName, e);
    const { config: c } = weights;
    const f32Lin = (K: number, O: number, buf: GPUBuffer, wInv?: number): GpuLinear => {
      return { kind: 'f32', K, O, buf, bs: 0, nb: 0, scalesOffset: 0, zpOffset: 0, wInv };
    };
    const lin = (w: FrozenLinear, label: string): GpuLinear => {
      if (w.kind === 'f32') {
        requireLimit(gpu, 'maxStorageBufferBindingSize', w.w.byteLength, label);
        return f32Lin(w.K, w.O, k.upload(w.w, label));
      }
      const q = packQ4ForGpu(w);
      return {
        kind: 'q4',
        K: w.K,
        O: w.O,
        buf: k.upload(q.words, label),
        bs: w.blockSize,
        nb: q.nb,
        scalesOffset: q.scalesOffset,
        zpOffset: q.zpOffset,
        scaleInv: q.scaleInv,
      };
    };
    // On a 4-bit base, the embedding (and a tied lm_head) as f16 pairs at a power-of-two scale: half
    // the bytes, each weight within 2^-11 relative (f16.ts packF16Scaled; gpu-layout.ts f16Embedding).
    const emb = f16Embedding(weights) ? packF16Scaled(weights.embed) : null;
    const embData = emb?.words ?? weights.embed;
    requireLimit(gpu, 'maxStorageBufferBindingSize', embData.byteLength, 'the embedding table');
    const embed = k.upload(embData, emb ? 'embed (f16)' : 'embed');
    const layers = weights.layers.map((l, i) => ({
      inputNorm: k.upload(l.inputNorm, `input norm ${i}`),
      postNorm: k.upload(l.postNorm, `post norm ${i}`),
      proj: Object.fromEntries(MODULE_ORDER.map((m) => [m, lin(l.proj[m], `${m} ${i}`)])) as Record<
        ModuleName,
        GpuLinear
      >,
    }));
    const lmHead = weights.tied ? f32Lin(c.C, c.V, embed, emb?.inv) : lin(weights.lmHead, 'lm_head');
    let off = 0;
    this.slots = modules.map((m) => {
      const { K, O } = weights.layers[m.layer]!.proj[m.module];
      const len = m.branch.R * (K + O);
      const s: GpuSlot = {
        layer: m.layer,
        module: m.module,
        path: m.path,
        R: m.branch.R,
        scale: m.branch.scale,
        K,
        O,
        off,
        len,
      };
      if ((s.R * K) % 2)
        throw new UnsupportedError(`${m.path}: rank × input size ${s.R} × ${K} is odd (packed gradients)`, {
          limit: 'packed gradients',
        });
      // 2 · alignFloats: the g16 gradient buffer (2 bytes per element) is bound at off · 2 bytes.
      off += Math.ceil(len / (2 * k.alignFloats)) * 2 * k.alignFloats;
      return s;
    });
    this.n = Math.max(off, 4); // even (g16 pairs)
    this.lora = k.buffer(this.n, 'lora A|B');
    this.writeLora(modules.map((m) => m.branch));
    this.ctx = {
      k,
      cfg: c,
      embed,
      embedInv: emb?.inv ?? 0,
      layers,
      finalNorm: k.upload(weights.finalNorm, 'final norm'),
      lmHead,
      slots: this.slots,
      lora: this.lora,
      minLayer: modules.length ? Math.min(...modules.map((m) => m.layer)) : c.L,
      dummyRo: k.buffer(4, 'unused (read)'),
      dummyRw: [0, 1, 2].map((i) => k.buffer(4, `unused (write ${i})`)),
      recompute: opts.recompute ?? false,
    };
  }

  private writeLora(branches: { A: ArrayLike<number>; B: ArrayLike<number> }[]): void {
    const all = new Float32Array(this.n);
    branches.forEach((b, i) => {
      const s = this.slots[i]!;
      all.set(b.A, s.off);
      all.set(b.B, s.off + b.A.length);
    });
    this.kernels.device.queue.writeBuffer(this.lora, 0, all);
  }

  /**
   * GPU bytes this backend holds: frozen weights (4-bit stays 4-bit), LoRA weights, gradients and
   * moments once allocated, and the activations of the kept shape plans.
   */
  get gpuBytes(): number {
    return this.kernels.bytesAllocated;
  }

  private check(): void {
    if (this.lost)
      throw new DeviceLostError(
        `the GPU device was lost (${this.lost.reason}: ${this.lost.message}); training cannot continue on it`,
        {
          reason: this.lost.reason,
        },
      );
    if (this.disposed) throw new InvalidOptionError('the training backend was disposed', {});
  }

  private plan(B: number, T: number): ShapePlan {
    this.check();
    const key = `${B}x${T}`;
    let p = this.plans.get(key);
    if (p) {
      this.plans.delete(key); // Map order = recency
    } else {
      p = new ShapePlan(this.ctx, B, T);
      for (const [k, old] of this.plans) {
        if (this.plans.size < MAX_PLANS) break;
        old.destroy();
        this.plans.delete(k);
      }
    }
    this.plans.set(key, p);
    return p;
  }

  private ensureGrads(): GPUBuffer {
    this.grads ??= this.kernels.buffer(this.n / 2, 'lora grads (packed g16)');
    return this.grads;
  }

  /** Uploads a batch's inputs into its shape's plan. */
  private load(batch: Batch, weight: number | null) {
    const x = prepareBatch(batch, this.weights);
    const p = this.plan(x.B, x.T);
    const q = this.kernels.device.queue;
    q.writeBuffer(p.tokens, 0, x.ids);
    q.writeBuffer(p.cos, 0, x.cos);
    q.writeBuffer(p.sin, 0, x.sin);
    q.writeBuffer(p.keyMask, 0, x.keyMask);
    q.writeBuffer(p.targets, 0, x.targets);
    q.writeBuffer(
      p.rowWeights,
      0,
      Float32Array.from(x.weights, (w) => w * (weight ?? 0)),
    );
    return { x, p };
  }

  /** Forward (+ backward with row weights scaled by `weight`); returns the masked mean loss. */
  private async run(batch: Batch, weight: number | null): Promise<number> {
    const { x, p } = this.load(batch, weight);
    const q = this.kernels.device.queue;
    const enc = this.kernels.device.createCommandEncoder();
    this.kernels.encode(enc, p.forward);
    const train = weight !== null && this.slots.length > 0;
    this.kernels.encode(enc, train ? p.ceTrain : p.ceEval);
    enc.copyBufferToBuffer(p.losses, 0, p.lossRead, 0, x.N * 4);
    if (train) this.kernels.encode(enc, p.backward(this.ensureGrads()));
    q.submit([enc.finish()]);
    await p.lossRead.mapAsync(GPUMapMode.READ);
    const losses = new Float32Array(p.lossRead.getMappedRange(0, x.N * 4).slice(0));
    p.lossRead.unmap();
    let loss = 0;
    for (let i = 0; i < x.N; i++) if (x.weights[i]) loss += x.weights[i]! * losses[i]!;
    return loss;
  }

  /** Runs GPU calls one after another (a staging buffer cannot be mapped twice at once). */
  private serial<T>(f: () => Promise<T>): Promise<T> {
    const r = this.tail.then(f, f);
    this.tail = r.catch(() => {});
    return r;
  }

  accumulate(batch: Batch, weight: number): Promise<number> {
    return this.serial(() => this.run(batch, weight));
  }

  evalLoss(batch: Batch): Promise<number> {
    return this.serial(() => this.run(batch, null));
  }

  step(lr: number, maxGradNorm: number): Promise<{ gradNorm: number }> {
    return this.serial(() => this.stepNow(lr, maxGradNorm));
  }

  private async stepNow(lr: number, maxGradNorm: number): Promise<{ gradNorm: number }> {
    this.check();
    const k = this.kernels;
    const grads = this.ensureGrads();
    this.moments ??= k.buffer(this.n, 'adam m|v (packed f16)');
    const P = Math.ceil(this.n / GRADNORM_CHUNK);
    const o = this.ensureOpt();
    this.step_++;
    const { beta1: b1, beta2: b2, eps, weightDecay: wd } = this.adam;
    const clip = Number.isFinite(maxGradNorm) ? 1 : 0;
    k.writeUniform(o.gnParams, [this.n, GRADNORM_CHUNK, P, clip, clip ? maxGradNorm : 0], 'uuuuf');
    const stepSize = lr / (1 - b1 ** this.step_);
    const bc2sqrt = Math.sqrt(1 - b2 ** this.step_);
    k.writeUniform(
      o.adamParams,
      [this.n, 0, 0, 0, lr, b1, b2, eps, wd, stepSize, bc2sqrt, 1 - b1, 1 - b2],
      ADAM_TYPES,
    );
    const gn = k.bindGroup('gradnorm', [o.partials, o.stats, grads, o.gnParams]);
    const ad = k.bindGroup('adamw', [this.lora, this.moments, grads, o.stats, o.adamParams]);
    const enc = k.device.createCommandEncoder();
    k.encode(enc, [
      k.cmd('gradnorm', 'partial', gn, P),
      k.cmd('gradnorm', 'finish', gn, 1),
      k.cmd('adamw', 'main', ad, wg64(this.n)),
      { kind: 'clear', label: 'zero grads', buffer: grads, offset: 0, size: grads.size },
    ]);
    enc.copyBufferToBuffer(o.stats, 0, o.statsRead, 0, 8);
    k.device.queue.submit([enc.finish()]);
    await o.statsRead.mapAsync(GPUMapMode.READ);
    const gradNorm = new Float32Array(o.statsRead.getMappedRange(0, 8))[0]!;
    o.statsRead.unmap();
    return { gradNorm };
  }

  private ensureOpt(): NonNullable<GpuTrainBackend['opt']> {
    const k = this.kernels;
    this.opt ??= {
      partials: k.buffer(Math.ceil(this.n / GRADNORM_CHUNK), 'grad norm partials'),
      stats: k.buffer(8, 'grad norm stats, moment scales'), // [norm, coef, S, S_prev, gmax]
      statsRead: k.staging(2, 'grad norm read'),
      gnParams: k.uniform([0, 0, 0, 0, 0], 'uuuuf'),
      adamParams: k.uniform(new Array(16).fill(0), ADAM_TYPES),
    };
    return this.opt;
  }

  /**
   * @internal Uploads `batch` and returns one training pass's commands (forward, loss with dlogits,
   * backward) without running them: gpu-profile.ts times them one by one.
   */
  commandsFor(batch: Batch): Cmd[] {
    const { p } = this.load(batch, 1);
    return [...p.forward, ...p.ceTrain, ...(this.slots.length ? p.backward(this.ensureGrads()) : [])];
  }

  /** The accumulated gradients (dA, dB of each module, in module order), for tests and diagnostics. */
  readGrads(): Promise<Float32Array[]> {
    return this.serial(() => this.readGradsNow());
  }

  private async readGradsNow(): Promise<Float32Array[]> {
    const words = await this.kernels.read(this.ensureGrads(), this.n / 2);
    const all = unpackG16(new Uint32Array(words.buffer, words.byteOffset, this.n / 2), this.n);
    return this.slots.flatMap((s) => [
      all.slice(s.off, s.off + s.R * s.K),
      all.slice(s.off + s.R * s.K, s.off + s.len),
    ]);
  }

  snapshot(): Promise<TrainState> {
    return this.serial(() => this.snapshotNow());
  }

  restore(state: TrainState): Promise<void> {
    return this.serial(() => this.restoreNow(state));
  }

  private async snapshotNow(): Promise<TrainState> {
    const k = this.kernels;
    const lora = await k.read(this.lora, this.n);
    let mv: [Float32Array, Float32Array] | null = null;
    if (this.moments && this.opt) {
      const S = (await k.read(this.opt.stats, 3))[2]!;
      const packed = await k.read(this.moments, this.n);
      mv = unpackMoments(new Uint32Array(packed.buffer, packed.byteOffset, this.n), S);
    }
    const split = (all: Float32Array) =>
      this.slots.flatMap((s) => [
        all.slice(s.off, s.off + s.R * s.K),
        all.slice(s.off + s.R * s.K, s.off + s.len),
      ]);
    const ab = split(lora);
    return {
      step: this.step_,
      modules: this.slots.map((s, i) => ({
        path: s.path,
        layer: s.layer,
        module: s.module,
        R: s.R,
        A: ab[2 * i]!,
        B: ab[2 * i + 1]!,
      })),
      adam: mv ? { m: split(mv[0]!), v: split(mv[1]!) } : null,
    };
  }

  private async restoreNow(state: TrainState): Promise<void> {
    if (state.modules.length !== this.slots.length)
      throw new InvalidOptionError(
        `state has ${state.modules.length} modules, this backend trains ${this.slots.length}`,
        {},
      );
    state.modules.forEach((m, i) => {
      const s = this.slots[i]!;
      if (m.path !== s.path || m.R !== s.R || m.A.length !== s.R * s.K || m.B.length !== s.O * s.R)
        throw new InvalidOptionError(
          `state module ${i} (${m.path}, rank ${m.R}) does not match ${s.path} (rank ${s.R})`,
          { index: i },
        );
    });
    this.writeLora(state.modules);
    const q = this.kernels.device.queue;
    if (state.adam) {
      this.moments ??= this.kernels.buffer(this.n, 'adam m|v (packed f16)');
      const pack = (xs: ArrayLike<number>[]) => {
        const all = new Float32Array(this.n);
        this.slots.forEach((s, i) => {
          all.set(xs[2 * i]!, s.off);
          all.set(xs[2 * i + 1]!, s.off + s.R * s.K);
        });
        return all;
      };
      const { packed, S, gmax } = packMoments(pack(state.adam.m), pack(state.adam.v));
      q.writeBuffer(this.moments, 0, packed);
      // As if gradnorm's `finish` had just stored them: the next step reads them at S.
      q.writeBuffer(this.ensureOpt().stats, 0, Float32Array.of(0, 0, S, 0, gmax));
    } else {
      if (this.moments) this.kernels.free(this.moments);
      this.moments = null;
      if (this.opt) q.writeBuffer(this.opt.stats, 0, new Float32Array(8));
    }
    if (this.grads) {
      const enc = this.kernels.device.createCommandEncoder();
      enc.clearBuffer(this.grads);
      q.submit([enc.finish()]);
    }
    this.step_ = state.step;
    await q.onSubmittedWorkDone();
  }

  dispose(): void {
    this.disposed = true;
    this.plans.clear();
    this.kernels.destroy();
  }
}
