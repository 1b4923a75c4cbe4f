/**
 * CPU forward and backward of the gated decoder (MeteoRA-style routing over frozen LoRA experts; the
 * graph twin is src/model/inject-gates.ts, the oracle scripts/py/gate_fixtures.py). In layer l:
 *     G = softmax(ln1·Wᵀ + b)                          ln1 = input_layernorm(x)   (N, n)
 *     y = inp·W_projᵀ + Σᵢ G[:, i]·sᵢ·(inp·Aᵢᵀ)·Bᵢᵀ      on every projection that has experts
 * where sᵢ is expert i's LoRA scale times its mix weight. Only the gate parameters W (n, C) and b (n)
 * receive gradients; the base model and the experts are frozen. The backward therefore runs through
 * every layer down to the lowest gated one (a gate's logits depend on everything below it). Same layer
 * functions (src/train/ref) and the same loss as cpu-model.ts; no activation recomputation, no GPU twin.
 * Key: N = B·T tokens, C hidden, n experts, R an expert's rank.
 */
import { InvalidOptionError } from '../errors.ts';
import type { ModuleName } from '../model/targets.ts';
import { type Batch, checkBatch, type FrozenWeights, type LoraModule } from './cpu-model.ts';
import { attentionBackward, attentionForward } from './ref/attention.ts';
import { crossEntropyBackward, crossEntropyForward } from './ref/crossentropy.ts';
import { embeddingForward } from './ref/embedding.ts';
import { type FrozenLinear, type LoraBranch, matmulBackward, matmulForward } from './ref/linear.ts';
import { rmsnormBackward, rmsnormForward } from './ref/rmsnorm.ts';
import { ropeBackward, ropeForward, ropeTables } from './ref/rope.ts';
import { swigluBackward, swigluForward } from './ref/swiglu.ts';
import { alloc, type Buf } from './ref/types.ts';

/** One layer's trainable gate: W (n, C), b (n), gradients allocated by the model. */
export interface GateParams {
  layer: number;
  W: Buf; // (n, C)
  b: Buf; // (n)
  dW: Buf | null; // (n, C)
  db: Buf | null; // (n)
}

/** One expert: its LoRA modules (loraFromPeft) and its static mix weight (folded into the scale). */
export interface GateExpertModules {
  modules: LoraModule[];
  weight: number;
}

interface Acts {
  x: Buf; // (N, C) layer input
  rstd1: Buf;
  ln1: Buf; // (N, C)
  g: Buf; // (N, n) gate probabilities (layers without a gate: unused)
  q: Buf;
  k: Buf;
  v: Buf;
  att: Buf;
  y: Buf;
  x2: Buf;
  rstd2: Buf;
  ln2: Buf;
  gate: Buf;
  up: Buf;
  h: Buf;
  xa: Map<string, Buf>; // `${module}/${expert}` -> (N, R) inp·Aᵀ
}

export class CpuGatedModel {
  readonly n: number;
  private readonly experts: Map<number, Partial<Record<ModuleName, LoraBranch[]>>>;
  private readonly byLayer: Map<number, GateParams>;
  private readonly minLayer: number;
  private acts: {
    batch: Batch;
    N: number;
    cos: Buf;
    sin: Buf;
    layers: Acts[];
    xL: Buf;
    rstdF: Buf;
    lnF: Buf;
    logits: Buf;
    targets: Int32Array;
    weights: Float64Array;
  } | null = null;

  /** `f64`: float64 activations (finite-difference tests). */
  constructor(
    readonly weights: FrozenWeights,
    experts: readonly GateExpertModules[],
    readonly gates: GateParams[],
    private readonly opts: { f64?: boolean } = {},
  ) {
    const { C } = weights.config;
    this.n = experts.length;
    if (this.n < 1) throw new InvalidOptionError('gate training needs at least one expert adapter', {});
    // Branch i of every (layer, module) is expert i; a module an expert lacks gets a rank-0 stand-in.
    this.experts = new Map();
    const none: LoraBranch = {
      R: 0,
      scale: 0,
      A: new Float32Array(0),
      B: new Float32Array(0),
      dA: null,
      dB: null,
    };
    const sites = new Map<string, { layer: number; module: ModuleName }>();
    for (const e of experts) for (const m of e.modules) sites.set(`${m.layer}/${m.module}`, m);
    for (const { layer, module } of sites.values()) {
      const slot = this.experts.get(layer) ?? {};
      slot[module] = experts.map((e) => {
        const m = e.modules.find((x) => x.layer === layer && x.module === module);
        return m ? { ...m.branch, scale: m.branch.scale * e.weight, dA: null, dB: null } : none;
      });
      this.experts.set(layer, slot);
    }
    this.byLayer = new Map();
    for (const g of gates) {
      if (g.W.length !== this.n * C || g.b.length !== this.n)
        throw new InvalidOptionError(`layer ${g.layer} gate: W must be [${this.n}, ${C}] and b [${this.n}]`, {
          layer: g.layer,
        });
      if (!(g.layer >= 0 && g.layer < weights.config.L) || this.byLayer.has(g.layer))
        throw new InvalidOptionError(`gate layer ${g.layer} is out of range or repeated`, { layer: g.layer });
      this.byLayer.set(g.layer, g);
    }
    this.minLayer = gates.length ? Math.min(...gates.map((g) => g.layer)) : weights.config.L;
  }

  private buf(n: number): Buf {
    return alloc(n, this.opts.f64 ?? false);
  }

  get logits(): Buf {
    if (!this.acts) throw new InvalidOptionError('no forward pass yet', {});
    return this.acts.logits;
  }

  /** Gate probabilities (N, n) of layer `l` in the last forward. */
  gateProbs(l: number): Buf {
    if (!this.acts || !this.byLayer.has(l)) throw new InvalidOptionError(`no gate output for layer ${l}`, {});
    return this.acts.layers[l]!.g;
  }

  zeroGrad(): void {
    for (const g of this.gates) {
      if (!g.dW) g.dW = this.buf(g.W.length);
      else g.dW.fill(0);
      if (!g.db) g.db = this.buf(g.b.length);
      else g.db.fill(0);
    }
  }

  /** Forward; the masked mean next-token cross-entropy (as cpu-model.ts). */
  forward(batch: Batch): number {
    const c = this.weights.config;
    const { B, T, tokens } = batch;
    const N = B * T;
    const { C, D, V, H, Hkv, I } = c;
    const positions = checkBatch(batch, V);
    const cos = this.buf(N * D);
    const sin = this.buf(N * D);
    ropeTables(cos, sin, positions, N, D, c.ropeTheta);
    let x = this.buf(N * C);
    embeddingForward(x, tokens, this.weights.embed, N, C);
    const layers: Acts[] = [];
    for (let l = 0; l < c.L; l++) {
      const W = this.weights.layers[l]!;
      const a: Acts = {
        x,
        rstd1: this.buf(N),
        ln1: this.buf(N * C),
        g: this.buf(N * this.n),
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
        xa: new Map(),
      };
      rmsnormForward(a.ln1, a.rstd1, x, W.inputNorm, N, C, c.eps);
      const gp = this.byLayer.get(l);
      if (gp) gateForward(a.g, a.ln1, gp, N, C, this.n);
      else a.g.fill(1 / this.n);
      const lin = (out: Buf, inp: Buf, mod: ModuleName) =>
        this.linForward(out, inp, W.proj[mod], l, mod, a, N);
      lin(a.q, a.ln1, 'q_proj');
      lin(a.k, a.ln1, 'k_proj');
      lin(a.v, a.ln1, 'v_proj');
      ropeForward(a.q, a.q, cos, sin, N, H, D);
      ropeForward(a.k, a.k, cos, sin, N, Hkv, D);
      attentionForward(a.y, a.att, a.q, a.k, a.v, batch.attentionMask ?? null, B, T, H, Hkv, D);
      lin(a.x2, a.y, 'o_proj');
      for (let i = 0; i < N * C; i++) a.x2[i]! += x[i]!;
      rmsnormForward(a.ln2, a.rstd2, a.x2, W.postNorm, N, C, c.eps);
      lin(a.gate, a.ln2, 'gate_proj');
      lin(a.up, a.ln2, 'up_proj');
      swigluForward(a.h, a.gate, a.up, N * I);
      const out = this.buf(N * C);
      lin(out, a.h, 'down_proj');
      for (let i = 0; i < N * C; i++) out[i]! += a.x2[i]!;
      layers.push(a);
      x = out;
    }
    const rstdF = this.buf(N);
    const lnF = this.buf(N * C);
    rmsnormForward(lnF, rstdF, x, this.weights.finalNorm, N, C, c.eps);
    const logits = this.buf(N * V);
    matmulForward(logits, lnF, this.weights.lmHead, N);
    const targets = new Int32Array(N);
    const weights = new Float64Array(N);
    let count = 0;
    for (let b = 0; b < B; b++) {
      for (let t = 0; t + 1 < T; t++) {
        const i = b * T + t;
        targets[i] = tokens[i + 1]!;
        if (batch.labelMask ? batch.labelMask[i + 1] : 1) {
          weights[i] = 1;
          count++;
        }
      }
    }
    const losses = new Float64Array(N);
    crossEntropyForward(losses, logits, targets, N, V);
    let loss = 0;
    for (let i = 0; i < N; i++) {
      if (count) weights[i]! /= count;
      loss += weights[i]! * losses[i]!;
    }
    this.acts = { batch, N, cos, sin, layers, xL: x, rstdF, lnF, logits, targets, weights };
    return loss;
  }

  /** out = inp·Wᵀ + Σᵢ g[:, i]·sᵢ·(inp·Aᵢᵀ)·Bᵢᵀ; saves inp·Aᵢᵀ. */
  private linForward(
    out: Buf,
    inp: Buf,
    w: FrozenLinear,
    l: number,
    mod: ModuleName,
    a: Acts,
    N: number,
  ): void {
    matmulForward(out, inp, w, N);
    const list = this.experts.get(l)?.[mod];
    if (!list) return;
    const { K, O } = w;
    const n = this.n;
    for (const [i, br] of list.entries()) {
      const R = br.R;
      if (R === 0) continue;
      const xa = this.buf(N * R); // (N, R)
      for (let t = 0; t < N; t++)
        for (let r = 0; r < R; r++) {
          let s = 0;
          for (let k = 0; k < K; k++) s += inp[t * K + k]! * br.A[r * K + k]!;
          xa[t * R + r] = s;
        }
      a.xa.set(`${mod}/${i}`, xa);
      for (let t = 0; t < N; t++) {
        const f = a.g[t * n + i]! * br.scale;
        for (let o = 0; o < O; o++) {
          let s = 0;
          for (let r = 0; r < R; r++) s += xa[t * R + r]! * br.B[o * R + r]!;
          out[t * O + o]! += f * s;
        }
      }
    }
  }

  /** dinp += dout·W + Σᵢ (sᵢ·g_i·(dout·Bᵢ))·Aᵢ;  dg[:, i] += sᵢ·Σ_r (dout·Bᵢ)[:, r]·xaᵢ[:, r]. */
  private linBackward(
    dinp: Buf | null,
    dg: Buf,
    dout: Buf,
    w: FrozenLinear,
    l: number,
    mod: ModuleName,
    a: Acts,
    N: number,
  ): void {
    if (dinp) matmulBackward(dinp, dout, w, N);
    const list = this.experts.get(l)?.[mod];
    if (!list) return;
    const { K, O } = w;
    const n = this.n;
    for (const [i, br] of list.entries()) {
      const R = br.R;
      if (R === 0) continue;
      const xa = a.xa.get(`${mod}/${i}`)!;
      const db = new Float64Array(R); // (R) one token's dout·Bᵢ
      for (let t = 0; t < N; t++) {
        db.fill(0);
        for (let o = 0; o < O; o++) {
          const d = dout[t * O + o]!;
          if (d === 0) continue;
          for (let r = 0; r < R; r++) db[r]! += d * br.B[o * R + r]!;
        }
        let s = 0;
        for (let r = 0; r < R; r++) s += db[r]! * xa[t * R + r]!;
        dg[t * n + i]! += br.scale * s;
        if (!dinp) continue;
        const f = br.scale * a.g[t * n + i]!;
        for (let r = 0; r < R; r++) {
          const d = f * db[r]!;
          for (let k = 0; k < K; k++) dinp[t * K + k]! += d * br.A[r * K + k]!;
        }
      }
    }
  }

  /** Backward of the last forward's loss × lossScale; gate gradients accumulate (+=). */
  backward(lossScale = 1): void {
    const acts = this.acts;
    if (!acts) throw new InvalidOptionError('backward() before forward()', {});
    if (!this.gates.length) return;
    for (const g of this.gates) {
      if (!g.dW) g.dW = this.buf(g.W.length);
      if (!g.db) g.db = this.buf(g.b.length);
    }
    const c = this.weights.config;
    const { N, batch } = acts;
    const { B, T } = batch;
    const { C, H, Hkv, D, I, V } = c;
    const n = this.n;
    const wts = Float64Array.from(acts.weights, (x) => x * lossScale);
    const dlogits = this.buf(N * V);
    crossEntropyBackward(dlogits, acts.logits, acts.targets, wts, N, V);
    const dlnF = this.buf(N * C);
    matmulBackward(dlnF, dlogits, this.weights.lmHead, N);
    const dres = this.buf(N * C);
    rmsnormBackward(dres, null, dlnF, acts.xL, this.weights.finalNorm, acts.rstdF, N, C);
    const dy = this.buf(N * H * D);
    const dq = this.buf(N * H * D);
    const dk = this.buf(N * Hkv * D);
    const dv = this.buf(N * Hkv * D);
    const dln = this.buf(N * C);
    const dh = this.buf(N * I);
    const dgate = this.buf(N * I);
    const dup = this.buf(N * I);
    const dg = this.buf(N * n);
    for (let l = c.L - 1; l >= this.minLayer; l--) {
      const W = this.weights.layers[l]!;
      const a = acts.layers[l]!;
      const bottom = l === this.minLayer;
      dg.fill(0);
      const back = (dinp: Buf | null, dout: Buf, mod: ModuleName) =>
        this.linBackward(dinp, dg, dout, W.proj[mod], l, mod, a, N);
      dh.fill(0);
      back(dh, dres, 'down_proj');
      swigluBackward(dgate, dup, dh, a.gate, a.up, N * I);
      dln.fill(0);
      back(dln, dgate, 'gate_proj');
      back(dln, dup, 'up_proj');
      rmsnormBackward(dres, null, dln, a.x2, W.postNorm, a.rstd2, N, C);
      dy.fill(0);
      back(dy, dres, 'o_proj');
      attentionBackward(dq, dk, dv, dy, a.att, a.q, a.k, a.v, B, T, H, Hkv, D);
      ropeBackward(dq, dq, acts.cos, acts.sin, N, H, D);
      ropeBackward(dk, dk, acts.cos, acts.sin, N, Hkv, D);
      dln.fill(0);
      back(bottom ? null : dln, dq, 'q_proj');
      back(bottom ? null : dln, dk, 'k_proj');
      back(bottom ? null : dln, dv, 'v_proj');
      const gp = this.byLayer.get(l);
      if (gp) gateBackward(bottom ? null : dln, gp, dg, a.g, a.ln1, N, C, n);
      if (!bottom) rmsnormBackward(dres, null, dln, a.x, W.inputNorm, a.rstd1, N, C);
    }
  }

  dispose(): void {
    this.acts = null;
  }
}

/** g = softmax(ln1·Wᵀ + b) row by row. */
export function gateForward(
  g: Buf, // (N, n)
  ln1: Buf, // (N, C)
  p: Pick<GateParams, 'W' | 'b'>,
  N: number,
  C: number,
  n: number,
): void {
  const z = new Float64Array(n);
  for (let t = 0; t < N; t++) {
    let max = Number.NEGATIVE_INFINITY;
    for (let i = 0; i < n; i++) {
      let s = p.b[i]!;
      for (let c = 0; c < C; c++) s += ln1[t * C + c]! * p.W[i * C + c]!;
      z[i] = s;
      if (s > max) max = s;
    }
    let sum = 0;
    for (let i = 0; i < n; i++) {
      z[i] = Math.exp(z[i]! - max);
      sum += z[i]!;
    }
    for (let i = 0; i < n; i++) g[t * n + i] = z[i]! / sum;
  }
}

/**
 * Softmax backward: dz = g ⊙ (dg − Σⱼ gⱼ·dgⱼ); dW += dzᵀ·ln1, db += Σ_t dz (+=, parameter gradients);
 * dln1 += dz·W (+=: q/k/v already added theirs).
 */
export function gateBackward(
  dln1: Buf | null, // (N, C)
  p: GateParams,
  dg: Buf, // (N, n)
  g: Buf, // (N, n)
  ln1: Buf, // (N, C)
  N: number,
  C: number,
  n: number,
): void {
  const dz = new Float64Array(n);
  for (let t = 0; t < N; t++) {
    let dot = 0;
    for (let i = 0; i < n; i++) dot += g[t * n + i]! * dg[t * n + i]!;
    for (let i = 0; i < n; i++) dz[i] = g[t * n + i]! * (dg[t * n + i]! - dot);
    for (let i = 0; i < n; i++) {
      const d = dz[i]!;
      p.db![i]! += d;
      for (let c = 0; c < C; c++) {
        p.dW![i * C + c]! += d * ln1[t * C + c]!;
        if (dln1) dln1[t * C + c]! += d * p.W[i * C + c]!;
      }
    }
  }
}
