/**
 * One (B, T) shape of the WebGPU trainer: its activation buffers and its recorded command lists, built
 * once and replayed every micro-batch (gpu-model.ts keeps one plan per shape). The dispatch order is
 * cpu-model.ts's, op for op, so the CPU reference reads as the spec of this file:
 *   forward   embedding → per layer [rmsnorm, q/k/v linear(+LoRA), rope q/k, attention, o linear,
 *             residual, rmsnorm, gate/up linear, swiglu, down linear, residual] → final rmsnorm → lm_head
 *   loss      crossentropy (losses only for eval; + dlogits in place for training)
 *   backward  lm_head dinp → final rmsnorm → per layer, top down to the lowest LoRA layer [down, swiglu,
 *             gate/up, rmsnorm, o, attention (dscores, dkv), rope q/k, q/k/v, rmsnorm (not below the
 *             lowest LoRA layer)]
 * Buffers hold fp32; shape key B=batch, T=tokens, N=B*T, C, I, V, H, Hkv, D, R as in ref/types.ts.
 * The backward scratch is allocated on the first training call of a shape (eval never pays for it).
 * With `recompute` (activation recomputation), every layer shares ONE set of activation buffers: the
 * forward keeps only the residual stream xs (each layer's input), and the backward re-runs layer l's
 * forward dispatches from xs[l] right before layer l's backward (same kernels, same inputs: the same
 * values as without recompute), trading ~one more forward for L−1 layers' activations.
 */
import type { ModuleName } from '../model/targets.ts';
import type { DecoderConfig } from './cpu-model.ts';
import { type Binding, type Cmd, type GpuKernels, requireLimit, wg64 } from './gpu-kernels.ts';

/** A frozen projection on the GPU: fp32 (O, K), or 4-bit words as gpu-layout.ts packs them. */
export interface GpuLinear {
  kind: 'f32' | 'q4';
  K: number;
  O: number;
  buf: GPUBuffer;
  bs: number; // q4 only
  nb: number;
  scalesOffset: number;
  zpOffset: number;
  scaleInv?: number; // q4: the f16 block scales' power-of-two factor (gpu-layout.ts)
  /** f32 kind only: set when buf holds f16 pairs at scale 1 / wInv (f16.ts packF16Scaled). */
  wInv?: number;
}

/** One trained LoRA module: where its [A (R, K) | B (O, R)] lives in the backend's one LoRA buffer. */
export interface GpuSlot {
  layer: number;
  module: ModuleName;
  path: string;
  R: number;
  scale: number;
  K: number;
  O: number;
  off: number; // float offset (a multiple of the storage offset alignment)
  len: number; // R*K + O*R
}

export interface PlanCtx {
  k: GpuKernels;
  cfg: DecoderConfig;
  embed: GPUBuffer; // (V, C) f32, or f16 pairs at scale 1 / embedInv (f16.ts packF16Scaled)
  embedInv: number; // 0: f32
  layers: { inputNorm: GPUBuffer; postNorm: GPUBuffer; proj: Record<ModuleName, GpuLinear> }[];
  finalNorm: GPUBuffer; // (C)
  lmHead: GpuLinear; // (V, C)
  slots: GpuSlot[];
  lora: GPUBuffer; // all slots
  minLayer: number; // lowest layer with a LoRA module (L when none)
  dummyRo: GPUBuffer;
  dummyRw: GPUBuffer[]; // 3 distinct, for unused writable bindings
  /** Activation recomputation: one layer's activation buffers, re-filled before each layer's backward. */
  recompute: boolean;
}

interface LayerActs {
  rstd1: GPUBuffer; // (N)
  ln1: GPUBuffer; // (N, C)
  q: GPUBuffer; // (N, H*D) after RoPE
  k: GPUBuffer; // (N, Hkv*D) after RoPE
  v: GPUBuffer; // (N, Hkv*D)
  att: GPUBuffer; // (B, H, T, T)
  y: GPUBuffer; // (N, H*D)
  x2: GPUBuffer; // (N, C)
  rstd2: GPUBuffer; // (N)
  ln2: GPUBuffer; // (N, C)
  gate: GPUBuffer; // (N, I)
  up: GPUBuffer; // (N, I)
  h: GPUBuffer; // (N, I)
}

const alignUp = (n: number, a: number) => Math.ceil(n / a) * a;

export class ShapePlan {
  readonly N: number;
  readonly tokens: GPUBuffer; // (N) u32
  readonly cos: GPUBuffer; // (N, D)
  readonly sin: GPUBuffer; // (N, D)
  readonly keyMask: GPUBuffer; // (N)
  readonly targets: GPUBuffer; // (N) u32
  readonly rowWeights: GPUBuffer; // (N)
  readonly losses: GPUBuffer; // (N)
  readonly lossRead: GPUBuffer; // (N) MAP_READ staging
  readonly logits: GPUBuffer; // (N, V); dlogits in place after a training loss pass
  readonly forward: Cmd[] = [];
  readonly ceEval: Cmd[];
  readonly ceTrain: Cmd[];
  private readonly xs: GPUBuffer[]; // L+1 x (N, C) residual stream (layer inputs, then the final)
  private readonly acts: LayerActs[] = [];
  private readonly xa: GPUBuffer; // per slot (N, R) at xaOff
  private readonly xaOff: number[];
  private readonly rstdF: GPUBuffer; // (N)
  private readonly lnF: GPUBuffer; // (N, C)
  private bwd: Cmd[] | null = null;
  /** Every buffer this plan made (freed by `destroy`). */
  private readonly owned: GPUBuffer[] = [];
  private readonly bySlot = new Map<string, number>();

  constructor(
    private readonly ctx: PlanCtx,
    readonly B: number,
    readonly T: number,
  ) {
    const { k, cfg } = ctx;
    const { C, V, H, D, L } = cfg;
    const N = B * T;
    this.N = N;
    requireLimit(
      k.device,
      'maxStorageBufferBindingSize',
      B * H * T * T * 4,
      `attention probabilities for B=${B}, T=${T}`,
    );
    requireLimit(k.device, 'maxStorageBufferBindingSize', N * V * 4, `logits for B=${B}, T=${T}`);
    this.tokens = this.buf(N, 'tokens');
    this.cos = this.buf(N * D, 'rope cos');
    this.sin = this.buf(N * D, 'rope sin');
    this.keyMask = this.buf(N, 'key mask');
    this.targets = this.buf(N, 'targets');
    this.rowWeights = this.buf(N, 'row weights');
    this.losses = this.buf(N, 'losses');
    this.lossRead = this.stage(N, 'losses read');
    this.logits = this.buf(N * V, 'logits');
    this.xs = Array.from({ length: L + 1 }, (_, l) => this.buf(N * C, `x ${l}`));
    this.rstdF = this.buf(N, 'rstd final');
    this.lnF = this.buf(N * C, 'ln final');
    let off = 0;
    this.xaOff = ctx.slots.map((s, i) => {
      this.bySlot.set(`${s.layer}.${s.module}`, i);
      const o = off;
      off += alignUp(N * s.R, k.alignFloats);
      return o;
    });
    this.xa = this.buf(Math.max(off, 4), 'xa');

    const f = this.forward;
    f.push(
      k.cmd(
        'embedding',
        'main',
        k.bindGroup('embedding', [
          this.xs[0]!,
          this.tokens,
          ctx.embed,
          this.uni([N, C, ctx.embedInv ? 1 : 0, ctx.embedInv], 'uuuf'),
        ]),
        wg64(N * C),
      ),
    );
    const one = ctx.recompute ? this.layerActs('shared') : null;
    for (let l = 0; l < L; l++) {
      const a = one ?? this.layerActs(String(l));
      this.acts.push(a);
      this.layerFwd(f, l, a, false);
    }
    this.rmsnorm(f, this.lnF, this.rstdF, this.xs[L]!, ctx.finalNorm);
    this.lin(f, this.logits, this.lnF, ctx.lmHead, -1);
    const ce = (grad: number) => [
      k.cmd(
        'crossentropy',
        'main',
        k.bindGroup('crossentropy', [
          this.logits,
          this.losses,
          this.targets,
          this.rowWeights,
          this.uni([N, V, grad], 'uuu'),
        ]),
        N,
      ),
    ];
    this.ceEval = ce(0);
    this.ceTrain = ce(1);
  }

  /** Buffers for every activation one layer's backward reads. */
  private layerActs(l: string): LayerActs {
    const { C, I, H, Hkv, D } = this.ctx.cfg;
    const { N, B, T } = this;
    return {
      rstd1: this.buf(N, `rstd1 ${l}`),
      ln1: this.buf(N * C, `ln1 ${l}`),
      q: this.buf(N * H * D, `q ${l}`),
      k: this.buf(N * Hkv * D, `k ${l}`),
      v: this.buf(N * Hkv * D, `v ${l}`),
      att: this.buf(B * H * T * T, `att ${l}`),
      y: this.buf(N * H * D, `y ${l}`),
      x2: this.buf(N * C, `x2 ${l}`),
      rstd2: this.buf(N, `rstd2 ${l}`),
      ln2: this.buf(N * C, `ln2 ${l}`),
      gate: this.buf(N * I, `gate ${l}`),
      up: this.buf(N * I, `up ${l}`),
      h: this.buf(N * I, `h ${l}`),
    };
  }

  /**
   * Layer l's forward from xs[l] into `a` (and xs[l+1]). `recompute`: the copy run before the layer's
   * backward — the same dispatches on the same inputs (so the same values), minus the down projection's
   * main product and the last residual, whose output xs[l+1] is already kept.
   */
  private layerFwd(f: Cmd[], l: number, a: LayerActs, recompute: boolean): void {
    const { k, cfg, layers } = this.ctx;
    const { N, B, T } = this;
    const { I, H, Hkv, D } = cfg;
    const W = layers[l]!;
    const x = this.xs[l]!;
    this.rmsnorm(f, a.ln1, a.rstd1, x, W.inputNorm);
    this.linFwd(f, a.q, a.ln1, l, 'q_proj');
    this.linFwd(f, a.k, a.ln1, l, 'k_proj');
    this.linFwd(f, a.v, a.ln1, l, 'v_proj');
    this.rope(f, 'rope', a.q, H);
    this.rope(f, 'rope', a.k, Hkv);
    const ap = this.uni([B, T, H, Hkv, D, 1 / Math.sqrt(D)], 'uuuuuf');
    f.push(
      k.cmd(
        'attention',
        'main',
        k.bindGroup('attention', [a.y, a.att, a.q, a.k, a.v, this.keyMask, ap]),
        wg64(B * H * T),
      ),
    );
    this.linFwd(f, a.x2, a.y, l, 'o_proj');
    this.residual(f, a.x2, x);
    this.rmsnorm(f, a.ln2, a.rstd2, a.x2, W.postNorm);
    this.linFwd(f, a.gate, a.ln2, l, 'gate_proj');
    this.linFwd(f, a.up, a.ln2, l, 'up_proj');
    f.push(
      k.cmd(
        'swiglu',
        'main',
        k.bindGroup('swiglu', [a.h, a.gate, a.up, this.uni([N * I], 'u')]),
        wg64(N * I),
      ),
    );
    const x3 = this.xs[l + 1]!;
    this.linFwd(f, x3, a.h, l, 'down_proj', recompute);
    if (!recompute) this.residual(f, x3, a.x2);
  }

  private buf(n: number, label: string): GPUBuffer {
    const b = this.ctx.k.buffer(n, label);
    this.owned.push(b);
    return b;
  }

  private uni(values: number[], types: string): GPUBuffer {
    const b = this.ctx.k.uniform(values, types);
    this.owned.push(b);
    return b;
  }

  private stage(n: number, label: string): GPUBuffer {
    const b = this.ctx.k.staging(n, label);
    this.owned.push(b);
    return b;
  }

  /** Frees the plan's activations, scratch and uniforms (the frozen weights and LoRA buffers stay). */
  destroy(): void {
    for (const b of this.owned) this.ctx.k.free(b);
    this.owned.length = 0;
    this.bwd = null;
  }

  private slot(l: number, mod: ModuleName): number {
    return this.bySlot.get(`${l}.${mod}`) ?? -1;
  }

  private loraRange(i: number): Binding {
    const s = this.ctx.slots[i]!;
    return { buffer: this.ctx.lora, offset: s.off * 4, size: s.len * 4 };
  }

  private xaRange(i: number): Binding {
    return { buffer: this.xa, offset: this.xaOff[i]! * 4, size: this.N * this.ctx.slots[i]!.R * 4 };
  }

  private params(lin: GpuLinear, i: number): GPUBuffer {
    const s = i >= 0 ? this.ctx.slots[i]! : null;
    const R = s?.R ?? 0;
    const scale = s?.scale ?? 0;
    return lin.kind === 'f32'
      ? this.uni([this.N, lin.K, lin.O, R, scale, lin.wInv ? 1 : 0, lin.wInv ?? 0], 'uuuufuf')
      : this.uni(
          [this.N, lin.K, lin.O, R, lin.bs, lin.nb, lin.scalesOffset, lin.zpOffset, scale, lin.scaleInv ?? 1],
          'uuuuuuuuff',
        );
  }

  private linFwd(cmds: Cmd[], out: Binding, inp: Binding, l: number, mod: ModuleName, xaOnly = false): void {
    this.lin(cmds, out, inp, this.ctx.layers[l]!.proj[mod], this.slot(l, mod), xaOnly);
  }

  /** out = inp·Wᵀ (+ LoRA of slot i, saving xa); i = -1: no LoRA. `xaOnly`: just xa (out untouched). */
  private lin(cmds: Cmd[], out: Binding, inp: Binding, lin: GpuLinear, i: number, xaOnly = false): void {
    const { k, dummyRo, dummyRw } = this.ctx;
    const name = lin.kind === 'f32' ? 'matmul_lora' : 'matmul_q4_lora';
    const xa = i >= 0 ? this.xaRange(i) : dummyRw[0]!;
    const lora = i >= 0 ? this.loraRange(i) : dummyRo;
    const g = k.bindGroup(name, [out, xa, inp, lin.buf, lora, this.params(lin, i)]);
    if (i >= 0) cmds.push(k.cmd(name, 'lora_xa', g, wg64(this.N * this.ctx.slots[i]!.R)));
    if (xaOnly) return;
    // 4 rows × 4 outputs per invocation (matmul_*lora.wgsl headers).
    cmds.push(k.cmd(name, 'main', g, wg64(Math.ceil(this.N / 4) * Math.ceil(lin.O / 4))));
  }

  /** dinp += dout·W (+ LoRA: dA, dB +=); dinp null: LoRA gradients only. */
  private linBwd(
    cmds: Cmd[],
    dinp: GPUBuffer | null,
    dout: Binding,
    inp: Binding,
    lin: GpuLinear,
    i: number,
    s: BwdScratch,
  ): void {
    if (i < 0 && !dinp) return;
    const { k, dummyRo, dummyRw } = this.ctx;
    const name = lin.kind === 'f32' ? 'matmul_lora_backward' : 'matmul_q4_lora_backward';
    const slot = i >= 0 ? this.ctx.slots[i]! : null;
    const g = k.bindGroup(name, [
      dinp ?? dummyRw[0]!,
      slot ? { buffer: s.dxa, offset: 0, size: this.N * slot.R * 4 } : dummyRw[1]!,
      // g16 gradients: 2 bytes per element (slot.off is a multiple of 2 · alignFloats).
      slot ? { buffer: s.grads, offset: slot.off * 2, size: Math.ceil(slot.len / 2) * 4 } : dummyRw[2]!,
      dout,
      inp,
      slot ? this.xaRange(i) : dummyRo,
      lin.buf,
      slot ? this.loraRange(i) : dummyRo,
      this.params(lin, i),
    ]);
    if (slot) {
      cmds.push(k.cmd(name, 'lora_dxa', g, wg64(this.N * slot.R)));
      cmds.push(k.cmd(name, 'lora_db', g, wg64(Math.ceil((slot.O * slot.R) / 2))));
      cmds.push(k.cmd(name, 'lora_da', g, wg64((slot.R * slot.K) / 2)));
    }
    if (dinp) {
      // f32: 4 rows × 4 k per invocation; q4: 8 rows × one packed word (8 k).
      const x =
        lin.kind === 'f32'
          ? Math.ceil(this.N / 4) * Math.ceil(lin.K / 4)
          : Math.ceil(this.N / 8) * Math.ceil(lin.K / 8);
      cmds.push(k.cmd(name, 'dinp_main', g, wg64(x)));
    }
  }

  private rmsnorm(cmds: Cmd[], out: GPUBuffer, rstd: GPUBuffer, inp: GPUBuffer, w: GPUBuffer): void {
    const { k, cfg } = this.ctx;
    const p = this.uni([this.N, cfg.C, cfg.eps], 'uuf');
    cmds.push(k.cmd('rmsnorm', 'main', k.bindGroup('rmsnorm', [out, rstd, inp, w, p]), this.N));
  }

  private rmsnormBwd(
    cmds: Cmd[],
    dinp: GPUBuffer,
    dout: GPUBuffer,
    inp: GPUBuffer,
    w: GPUBuffer,
    rstd: GPUBuffer,
  ): void {
    const { k, cfg } = this.ctx;
    const p = this.uni([this.N, cfg.C, cfg.eps], 'uuf');
    cmds.push(
      k.cmd(
        'rmsnorm_backward',
        'main',
        k.bindGroup('rmsnorm_backward', [dinp, dout, inp, w, rstd, p]),
        this.N,
      ),
    );
  }

  private rope(cmds: Cmd[], name: 'rope' | 'rope_backward', x: Binding, nh: number): void {
    const { k, cfg } = this.ctx;
    const p = this.uni([this.N, nh, cfg.D], 'uuu');
    cmds.push(
      k.cmd(name, 'main', k.bindGroup(name, [x, this.cos, this.sin, p]), wg64((this.N * nh * cfg.D) / 2)),
    );
  }

  private residual(cmds: Cmd[], out: GPUBuffer, inp: GPUBuffer): void {
    const { k, cfg } = this.ctx;
    const n = this.N * cfg.C;
    cmds.push(k.cmd('residual', 'main', k.bindGroup('residual', [out, inp, this.uni([n], 'u')]), wg64(n)));
  }

  private clear(cmds: Cmd[], buffer: GPUBuffer): void {
    cmds.push({ kind: 'clear', label: `clear ${buffer.label}`, buffer, offset: 0, size: buffer.size });
  }

  /** The backward command list (built on first use; `grads` is the backend's LoRA gradient buffer). */
  backward(grads: GPUBuffer): Cmd[] {
    if (this.bwd) return this.bwd;
    if (!this.ctx.slots.length) {
      this.bwd = [];
      return this.bwd;
    }
    const { k, cfg, layers, lmHead, finalNorm, minLayer } = this.ctx;
    const { B, T, N } = this;
    const { C, I, H, Hkv, D, L } = cfg;
    const KD = Hkv * D;
    const dvOff = alignUp(N * KD, k.alignFloats);
    const Rmax = Math.max(1, ...this.ctx.slots.map((s) => s.R));
    const s: BwdScratch = { grads, dxa: this.buf(N * Rmax, 'dxa') };
    const dres = this.buf(N * C, 'dres'); // gradient of the residual stream
    const dln = this.buf(N * C, 'dln');
    const dy = this.buf(N * H * D, 'dy');
    const dq = this.buf(N * H * D, 'dq');
    const dkv = this.buf(dvOff + N * KD, 'dkv'); // dk | dv at dvOff
    const dsc = this.buf(B * H * T * T, 'dscores');
    const dh = this.buf(N * I, 'dh');
    const dgate = this.buf(N * I, 'dgate');
    const dup = this.buf(N * I, 'dup');
    const dk: Binding = { buffer: dkv, offset: 0, size: N * KD * 4 };
    const dv: Binding = { buffer: dkv, offset: dvOff * 4, size: N * KD * 4 };
    const c: Cmd[] = [];
    this.clear(c, dln);
    this.linBwd(c, dln, this.logits, this.lnF, lmHead, -1, s);
    this.clear(c, dres);
    this.rmsnormBwd(c, dres, dln, this.xs[L]!, finalNorm, this.rstdF);
    for (let l = L - 1; l >= minLayer; l--) {
      const W = layers[l]!;
      const a = this.acts[l]!;
      if (this.ctx.recompute) this.layerFwd(c, l, a, true);
      const back = (dinp: GPUBuffer | null, dout: Binding, inp: GPUBuffer, mod: ModuleName) =>
        this.linBwd(c, dinp, dout, inp, W.proj[mod], this.slot(l, mod), s);
      this.clear(c, dh);
      back(dh, dres, a.h, 'down_proj');
      const sp = this.uni([N * I], 'u');
      c.push(
        k.cmd(
          'swiglu_backward',
          'main',
          k.bindGroup('swiglu_backward', [dgate, dup, dh, a.gate, a.up, sp]),
          wg64(N * I),
        ),
      );
      this.clear(c, dln);
      back(dln, dgate, a.ln2, 'gate_proj');
      back(dln, dup, a.ln2, 'up_proj');
      this.rmsnormBwd(c, dres, dln, a.x2, W.postNorm, a.rstd2);
      this.clear(c, dy);
      back(dy, dres, a.y, 'o_proj');
      const ap = this.uni([B, T, H, Hkv, D, 1 / Math.sqrt(D), dvOff], 'uuuuufu');
      const g = k.bindGroup('attention_backward', [dq, dkv, dsc, dy, a.att, a.q, a.k, a.v, ap]);
      c.push(k.cmd('attention_backward', 'dscores', g, wg64(B * H * T)));
      c.push(k.cmd('attention_backward', 'dkv_main', g, wg64(N * KD)));
      this.rope(c, 'rope_backward', dq, H);
      this.rope(c, 'rope_backward', dk, Hkv);
      const bottom = l === minLayer; // nothing below needs dx
      if (!bottom) this.clear(c, dln);
      back(bottom ? null : dln, dq, a.ln1, 'q_proj');
      back(bottom ? null : dln, dk, a.ln1, 'k_proj');
      back(bottom ? null : dln, dv, a.ln1, 'v_proj');
      if (!bottom) this.rmsnormBwd(c, dres, dln, this.xs[l]!, W.inputNorm, a.rstd1);
    }
    this.bwd = c;
    return c;
  }
}

interface BwdScratch {
  grads: GPUBuffer;
  dxa: GPUBuffer; // (N, Rmax)
}
