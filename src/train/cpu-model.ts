/**
 * Whole-model forward and backward of the Llama-family decoder (scripts/py/model.py) on the CPU, built
 * from the src/train/ref layer functions, with the linear layers and attention on the WebAssembly SIMD
 * GEMM of wasm/ by default (`kernels: 'ref'` keeps everything plain TS, the oracle): the reference the
 * WebGPU trainer must match, and the fallback where WebGPU is missing. Only LoRA A/B receive gradients; the base (embedding, norms, projections,
 * lm_head) is frozen, so the backward stops at the lowest layer that holds a LoRA branch. Lifecycle as in
 * llm.c: `forward` (loss), `zeroGrad`, `backward`, then an optimizer `step` (optim.ts); gradient buffers
 * are allocated on the first backward. With `recompute`, the forward keeps only each layer's input and
 * the backward re-runs that layer's forward into one reused set of buffers just before its backward
 * (same operations in the same order: bit-identical gradients). Not here: KV cache, dropout,
 * base-weight gradients; left-padded rows need explicit `positions` (and their pads loss-masked).
 */
import { InvalidOptionError } from '../errors.ts';
import type { ModuleName } from '../model/targets.ts';
import { attentionBackward, attentionForward } from './ref/attention.ts';
import { crossEntropyBackward, crossEntropyForward } from './ref/crossentropy.ts';
import { embeddingForward } from './ref/embedding.ts';
import { type FrozenLinear, type LoraBranch, linearLoraBackward, linearLoraForward } from './ref/linear.ts';
import { rmsnormBackward, rmsnormForward } from './ref/rmsnorm.ts';
import { ropeBackward, ropeForward, ropeTables } from './ref/rope.ts';
import { swigluBackward, swigluForward } from './ref/swiglu.ts';
import { alloc, type Buf } from './ref/types.ts';
import { attentionBackwardWasm, attentionForwardWasm } from './wasm/attention.ts';
import { gemmModule } from './wasm/gemm.ts';
import { WASM_WEIGHT_BUDGET, wasmLinearFor, wasmWeightBytes } from './wasm/linear.ts';

/** Which implementation runs the linear layers (everything else is ref/*.ts either way). */
export type CpuKernels = 'wasm' | 'ref';

type LinearFwd = typeof linearLoraForward;
type LinearBwd = typeof linearLoraBackward;

export interface DecoderConfig {
  V: number; // vocab
  C: number; // hidden
  I: number; // MLP intermediate
  L: number; // layers
  H: number; // query heads
  Hkv: number; // key/value heads (H % Hkv == 0)
  D: number; // head dim
  eps: number; // RMSNorm epsilon
  ropeTheta: number;
}

export interface FrozenLayer {
  inputNorm: Float32Array; // (C)
  postNorm: Float32Array; // (C)
  proj: Record<ModuleName, FrozenLinear>; // q (H*D, C), k/v (Hkv*D, C), o (C, H*D), gate/up (I, C), down (C, I)
}

export interface FrozenWeights {
  config: DecoderConfig;
  embed: Float32Array; // (V, C)
  layers: FrozenLayer[];
  finalNorm: Float32Array; // (C)
  lmHead: FrozenLinear; // (V, C); shares `embed` when tied
  tied: boolean;
}

/** One trained LoRA branch; `path` is its PEFT module path (model.layers.{i}.self_attn.q_proj). */
export interface LoraModule {
  layer: number;
  module: ModuleName;
  path: string;
  branch: LoraBranch;
}

export interface Batch {
  B: number;
  T: number;
  tokens: ArrayLike<number>; // (B, T) token ids
  /**
   * (B, T) HF-labels style: 1 where token t is a prediction target (its loss, predicted at t−1, counts),
   * 0 for prompt or padding tokens. Position 0 is never a target. Default: all ones.
   */
  labelMask?: ArrayLike<number>;
  /** (B, T) 1 = real token, 0 = padding key (hidden from attention). Default: all visible. */
  attentionMask?: ArrayLike<number>;
  /** (B, T) RoPE positions. Default: 0..T-1 in every row. */
  positions?: ArrayLike<number>;
}

interface LayerActs {
  x: Buf; // (N, C) layer input (residual stream)
  rstd1: Buf; // (N)
  ln1: Buf; // (N, C)
  q: Buf; // (N, H*D) after RoPE
  k: Buf; // (N, Hkv*D) after RoPE
  v: Buf; // (N, Hkv*D)
  att: Buf; // (B, H, T, T)
  y: Buf; // (N, H*D) attention output (o_proj input)
  x2: Buf; // (N, C) residual after attention
  rstd2: Buf; // (N)
  ln2: Buf; // (N, C)
  gate: Buf; // (N, I)
  up: Buf; // (N, I)
  h: Buf; // (N, I) silu(gate)·up (down_proj input)
  xa: Partial<Record<ModuleName, Buf>>; // (N, R) per LoRA branch
}

interface Acts {
  batch: Batch;
  N: number;
  cos: Buf; // (N, D)
  sin: Buf; // (N, D)
  /** Every layer's activations; with recompute only `x` (the layer input) is kept per layer. */
  layers: (LayerActs | { x: Buf })[];
  xL: Buf; // (N, C) final residual
  rstdF: Buf; // (N)
  lnF: Buf; // (N, C)
  logits: Buf; // (N, V)
  targets: Int32Array; // (N)
  weights: Float64Array; // (N) mask / count
  count: number;
}

/**
 * Checks a batch against a vocabulary of V (positive B and T, B·T token ids in [0, V), masks and
 * positions of length B·T; InvalidOptionError otherwise) and returns its RoPE positions (default 0..T−1
 * in every row). Shared by the CPU model and the WebGPU trainer (gpu-batch.ts).
 */
export function checkBatch(batch: Batch, V: number): ArrayLike<number> {
  const { B, T, tokens } = batch;
  const N = B * T;
  if (!(Number.isInteger(B) && Number.isInteger(T) && B >= 1 && T >= 1))
    throw new InvalidOptionError(`batch shape B=${B}, T=${T} must be positive integers`, { B, T });
  if (tokens.length !== N)
    throw new InvalidOptionError(`tokens: expected B*T = ${N} ids, got ${tokens.length}`, { B, T });
  for (let i = 0; i < N; i++) {
    const t = tokens[i]!;
    if (!(Number.isInteger(t) && t >= 0 && t < V))
      throw new InvalidOptionError(`token id ${t} at ${i} is outside [0, ${V})`, { index: i, token: t });
  }
  for (const [name, m] of [
    ['labelMask', batch.labelMask],
    ['attentionMask', batch.attentionMask],
    ['positions', batch.positions],
  ] as const) {
    if (m && m.length !== N)
      throw new InvalidOptionError(`${name}: expected B*T = ${N} values, got ${m.length}`, { B, T });
  }
  return batch.positions ?? Int32Array.from({ length: N }, (_, i) => i % T);
}

export class CpuLoraModel {
  readonly modules: LoraModule[];
  private readonly byLayer: Map<number, Partial<Record<ModuleName, LoraBranch>>>;
  private readonly minLayer: number;
  private readonly f64: boolean;
  readonly recompute: boolean;
  /** 'wasm': SIMD GEMMs (wasm/linear.ts), the default; 'ref': ref/linear.ts (f64 mode, or no wasm SIMD). */
  readonly kernels: CpuKernels;
  private readonly linFwd: LinearFwd;
  private readonly linBwd: LinearBwd;
  private readonly attFwd: typeof attentionForward;
  private readonly attBwd: typeof attentionBackward;
  private acts: Acts | null = null;
  /** Recompute mode: the one layer's activation buffers, reused by every layer (keyed by N). */
  private scratch: { N: number; a: LayerActs } | null = null;

  /**
   * `f64`: float64 activations (finite-difference tests); default float32 like the GPU path.
   * `recompute`: activation recomputation (see the header); default false. `kernels`: default 'wasm'
   * where WebAssembly SIMD exists, except with `f64` or when the f32 copy of the weights would exceed
   * WASM_WEIGHT_BUDGET (then 'ref', which dequantizes row by row and holds no copy).
   */
  constructor(
    readonly weights: FrozenWeights,
    modules: LoraModule[],
    opts: { f64?: boolean; recompute?: boolean; kernels?: CpuKernels } = {},
  ) {
    this.modules = modules;
    this.f64 = opts.f64 ?? false;
    this.recompute = opts.recompute ?? false;
    const fits = wasmWeightBytes(weights) <= WASM_WEIGHT_BUDGET;
    this.kernels = !this.f64 && (opts.kernels ?? 'wasm') === 'wasm' && fits && gemmModule() ? 'wasm' : 'ref';
    if (this.kernels === 'wasm') {
      // One wasm memory per FrozenWeights: each weight is dequantized once for every model sharing it.
      const wl = wasmLinearFor(weights);
      this.linFwd = wl.forward.bind(wl);
      this.linBwd = wl.backward.bind(wl);
    } else {
      this.linFwd = linearLoraForward;
      this.linBwd = linearLoraBackward;
    }
    this.attFwd = attentionForward;
    this.attBwd = attentionBackward;
    if (this.kernels === 'wasm' && weights.config.D % 8 === 0) {
      const g = wasmLinearFor(weights).g;
      this.attFwd = (...a) => attentionForwardWasm(g, ...a);
      this.attBwd = (...a) => attentionBackwardWasm(g, ...a);
    }
    this.byLayer = new Map();
    const { config: c } = weights;
    for (const m of modules) {
      const w = weights.layers[m.layer]?.proj[m.module];
      if (!w) {
        throw new InvalidOptionError(
          `LoRA module ${m.path}: the model has no ${m.module} in layer ${m.layer}`,
          {
            layer: m.layer,
            module: m.module,
          },
        );
      }
      const { R, A, B } = m.branch;
      if (A.length !== R * w.K || B.length !== w.O * R) {
        throw new InvalidOptionError(
          `LoRA module ${m.path}: A must be [${R}, ${w.K}] and B [${w.O}, ${R}] (got ${A.length} and ${B.length} values)`,
          { path: m.path },
        );
      }
      const slot = this.byLayer.get(m.layer) ?? {};
      if (slot[m.module]) {
        throw new InvalidOptionError(`two LoRA modules for layer ${m.layer} ${m.module}`, { path: m.path });
      }
      slot[m.module] = m.branch;
      this.byLayer.set(m.layer, slot);
    }
    this.minLayer = modules.length ? Math.min(...modules.map((m) => m.layer)) : c.L;
  }

  private buf(n: number): Buf {
    return alloc(n, this.f64);
  }

  /** Logits (N, V) of the last forward. */
  get logits(): Buf {
    if (!this.acts) throw new InvalidOptionError('no forward pass yet', {});
    return this.acts.logits;
  }

  /** Number of target tokens the last forward's loss averaged over. */
  get targetCount(): number {
    return this.acts?.count ?? 0;
  }

  /** Forward pass; returns the masked mean cross-entropy (0 when no token is a target). */
  forward(batch: Batch): number {
    const { config: c } = this.weights;
    const { B, T, tokens } = batch;
    const N = B * T;
    const { C, D, V } = c;
    const positions = checkBatch(batch, V);
    const cos = this.buf(N * D);
    const sin = this.buf(N * D);
    ropeTables(cos, sin, positions, N, D, c.ropeTheta);

    let x = this.buf(N * C);
    embeddingForward(x, tokens, this.weights.embed, N, C);
    const layers: Acts['layers'] = [];
    for (let l = 0; l < c.L; l++) {
      const a = this.recompute ? this.layerActs(N, B, T) : this.newLayerActs(N, B, T);
      const x3 = this.buf(N * C);
      this.layerForward(l, x, a, x3, { batch, N, cos, sin });
      layers.push(this.recompute ? { x } : a);
      x = x3;
    }
    const rstdF = this.buf(N);
    const lnF = this.buf(N * C);
    rmsnormForward(lnF, rstdF, x, this.weights.finalNorm, N, C, c.eps);
    const logits = this.buf(N * V);
    this.linFwd(logits, null, lnF, this.weights.lmHead, null, N);

    const targets = new Int32Array(N); // (N) next token; unused where weights are 0
    const weights = new Float64Array(N); // (N)
    let count = 0;
    for (let b = 0; b < B; b++) {
      for (let t = 0; t + 1 < T; t++) {
        const i = b * T + t;
        targets[i] = tokens[i + 1]!;
        const m = batch.labelMask ? batch.labelMask[i + 1]! : 1;
        if (m) {
          weights[i] = 1;
          count++;
        }
      }
    }
    const losses = new Float64Array(N); // (N)
    crossEntropyForward(losses, logits, targets, N, V);
    let loss = 0;
    for (let i = 0; i < N; i++) {
      if (count) weights[i]! /= count;
      loss += weights[i]! * losses[i]!;
    }
    this.acts = { batch, N, cos, sin, layers, xL: x, rstdF, lnF, logits, targets, weights, count };
    return loss;
  }

  private newLayerActs(N: number, B: number, T: number): LayerActs {
    const { C, H, Hkv, D, I } = this.weights.config;
    return {
      x: this.buf(0),
      rstd1: this.buf(N),
      ln1: this.buf(N * C),
      q: this.buf(N * H * D),
      k: this.buf(N * Hkv * D),
      v: this.buf(N * Hkv * D),
      att: this.buf(B * H * T * T),
      y: this.buf(N * H * D),
      x2: this.buf(N * C),
      rstd2: this.buf(N),
      ln2: this.buf(N * C),
      gate: this.buf(N * I),
      up: this.buf(N * I),
      h: this.buf(N * I),
      xa: {},
    };
  }

  /** Recompute mode: the shared one-layer buffers for this batch shape. */
  private layerActs(N: number, B: number, T: number): LayerActs {
    if (this.scratch?.N !== N || this.scratch.a.att.length !== B * this.weights.config.H * T * T)
      this.scratch = { N, a: this.newLayerActs(N, B, T) };
    return this.scratch.a;
  }

  /** Layer `l` on input `x`: fills `a` (every activation its backward reads) and writes `out` (N, C). */
  private layerForward(
    l: number,
    x: Buf,
    a: LayerActs,
    out: Buf,
    ctx: Pick<Acts, 'batch' | 'N' | 'cos' | 'sin'>,
  ): void {
    const { config: c } = this.weights;
    const { batch, N, cos, sin } = ctx;
    const { B, T } = batch;
    const { C, H, Hkv, D, I } = c;
    const W = this.weights.layers[l]!;
    const lora = this.byLayer.get(l) ?? {};
    const xa: LayerActs['xa'] = {};
    const lin = (o: Buf, inp: Buf, mod: ModuleName) => {
      const br = lora[mod] ?? null;
      if (br) xa[mod] = a.xa[mod]?.length === N * br.R ? a.xa[mod] : this.buf(N * br.R);
      this.linFwd(o, xa[mod] ?? null, inp, W.proj[mod], br, N);
    };
    a.x = x;
    rmsnormForward(a.ln1, a.rstd1, x, W.inputNorm, N, C, c.eps);
    lin(a.q, a.ln1, 'q_proj');
    lin(a.k, a.ln1, 'k_proj');
    lin(a.v, a.ln1, 'v_proj');
    ropeForward(a.q, a.q, cos, sin, N, H, D);
    ropeForward(a.k, a.k, cos, sin, N, Hkv, D);
    this.attFwd(a.y, a.att, a.q, a.k, a.v, batch.attentionMask ?? null, B, T, H, Hkv, D);
    lin(a.x2, a.y, 'o_proj');
    for (let i = 0; i < N * C; i++) a.x2[i]! += x[i]!;
    rmsnormForward(a.ln2, a.rstd2, a.x2, W.postNorm, N, C, c.eps);
    lin(a.gate, a.ln2, 'gate_proj');
    lin(a.up, a.ln2, 'up_proj');
    swigluForward(a.h, a.gate, a.up, N * I);
    lin(out, a.h, 'down_proj');
    for (let i = 0; i < N * C; i++) out[i]! += a.x2[i]!;
    a.xa = xa;
  }

  /** Zero the LoRA gradients (allocating them on first use). */
  zeroGrad(): void {
    for (const m of this.modules) {
      const br = m.branch;
      if (!br.dA) br.dA = this.buf(br.A.length);
      else br.dA.fill(0);
      if (!br.dB) br.dB = this.buf(br.B.length);
      else br.dB.fill(0);
    }
  }

  /**
   * Backward of the last forward's loss times `lossScale` (e.g. this micro-batch's share of the target
   * tokens under gradient accumulation). LoRA gradients accumulate (+=); call zeroGrad first.
   */
  backward(lossScale = 1): void {
    const acts = this.acts;
    if (!acts) throw new InvalidOptionError('backward() before forward()', {});
    if (!this.modules.length) return;
    for (const { branch: br } of this.modules) {
      // Allocate on first use without touching gradients already being accumulated.
      if (!br.dA) br.dA = this.buf(br.A.length);
      if (!br.dB) br.dB = this.buf(br.B.length);
    }
    const { config: c } = this.weights;
    const { N, batch } = acts;
    const { B, T } = batch;
    const { C, H, Hkv, D, I, V } = c;
    const w = Float64Array.from(acts.weights, (x) => x * lossScale);
    const dlogits = this.buf(N * V);
    crossEntropyBackward(dlogits, acts.logits, acts.targets, w, N, V);
    const dlnF = this.buf(N * C);
    this.linBwd(dlnF, dlogits, null, acts.lnF, this.weights.lmHead, null, N);
    const dres = this.buf(N * C); // (N, C) gradient of the residual stream
    rmsnormBackward(dres, null, dlnF, acts.xL, this.weights.finalNorm, acts.rstdF, N, C);

    const dy = this.buf(N * H * D);
    const dq = this.buf(N * H * D);
    const dk = this.buf(N * Hkv * D);
    const dv = this.buf(N * Hkv * D);
    const dln = this.buf(N * C);
    const dh = this.buf(N * I);
    const dgate = this.buf(N * I);
    const dup = this.buf(N * I);
    for (let l = c.L - 1; l >= this.minLayer; l--) {
      const W = this.weights.layers[l]!;
      const saved = acts.layers[l]!;
      let a: LayerActs;
      if ('ln1' in saved) a = saved;
      else {
        // Recompute: re-run layer l from its saved input (its output, the next layer's input, is kept).
        a = this.layerActs(N, B, T);
        this.layerForward(l, saved.x, a, this.layerOut(N * C), acts);
      }
      const lora = this.byLayer.get(l) ?? {};
      const back = (dinp: Buf | null, dout: Buf, inp: Buf, mod: ModuleName) =>
        this.linBwd(dinp, dout, a.xa[mod] ?? null, inp, W.proj[mod], lora[mod] ?? null, N);
      // MLP: x3 = x2 + down(silu(gate(ln2))·up(ln2)); dres is dx3 and becomes dx2.
      dh.fill(0);
      back(dh, dres, a.h, 'down_proj');
      swigluBackward(dgate, dup, dh, a.gate, a.up, N * I);
      dln.fill(0);
      back(dln, dgate, a.ln2, 'gate_proj');
      back(dln, dup, a.ln2, 'up_proj');
      rmsnormBackward(dres, null, dln, a.x2, W.postNorm, a.rstd2, N, C);
      // Attention: x2 = x + o(attn(rope(q(ln1)), rope(k(ln1)), v(ln1))); dres becomes dx.
      dy.fill(0);
      back(dy, dres, a.y, 'o_proj');
      this.attBwd(dq, dk, dv, dy, a.att, a.q, a.k, a.v, B, T, H, Hkv, D);
      ropeBackward(dq, dq, acts.cos, acts.sin, N, H, D);
      ropeBackward(dk, dk, acts.cos, acts.sin, N, Hkv, D);
      const bottom = l === this.minLayer; // nothing below needs dx
      dln.fill(0);
      back(bottom ? null : dln, dq, a.ln1, 'q_proj');
      back(bottom ? null : dln, dk, a.ln1, 'k_proj');
      back(bottom ? null : dln, dv, a.ln1, 'v_proj');
      if (!bottom) rmsnormBackward(dres, null, dln, a.x, W.inputNorm, a.rstd1, N, C);
    }
  }

  private outBuf: Buf | null = null;
  /** Recompute mode: where a recomputed layer's (unused) output goes. */
  private layerOut(n: number): Buf {
    if (this.outBuf?.length !== n) this.outBuf = this.buf(n);
    return this.outBuf;
  }

  /** Drop saved activations (weights and LoRA tensors stay owned by the caller). */
  dispose(): void {
    this.acts = null;
    this.scratch = null;
    this.outBuf = null;
  }
}
