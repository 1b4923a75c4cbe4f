/**
 * The fast CPU linear layers: ref/linear.ts's `linearLoraForward` / `linearLoraBackward` (same
 * signatures, same gradient contract) as WebAssembly SIMD GEMMs (gemm.ts). Each frozen weight is
 * dequantized ONCE, on first use, into the wasm memory as f32 (O, K) rows zero-padded to (O4, K8), so the
 * inner loops are plain f32 multiply-adds; the 4-bit bytes stay the source of truth (ref/linear.ts
 * `weightRow` does the dequantization, so both paths see identical f32 weights). That f32 copy costs
 * 4 bytes per weight (8× the 4-bit file) for the life of the FrozenWeights it is cached on.
 * Every product is one GEMM in the one (M, K)·(K, N) form, operands transposed/padded while copied in:
 *   forward  outᵀ (O, M) = W·inpᵀ, xaᵀ (R, M) = A·inpᵀ, outᵀ += (scale·B)·xaᵀ
 *   backward dxa (M, R) = dout·(scale·B), dB += scale·doutᵀ·xa, dA += dxaᵀ·inp, dinp += dout·W + dxa·A
 * Sums are f32 (the reference sums in f64); tests/unit/train/wasm-linear.test.ts states the tolerances.
 * Not here: f64 buffers (the finite-difference tests keep the reference), threads.
 */
import type { FrozenLinear, LoraBranch } from '../ref/linear.ts';
import { weightRow } from '../ref/linear.ts';
import type { Buf } from '../ref/types.ts';
import { WasmGemm } from './gemm.ts';

const up4 = (n: number) => (n + 3) & ~3;
const up8 = (n: number) => (n + 7) & ~7;

interface Resident {
  ptr: number; // (O4, K8) f32, zero padded
  K8: number;
}

export class WasmLinear {
  readonly g = new WasmGemm();
  private readonly resident = new Map<FrozenLinear, Resident>();

  /** Bytes of wasm memory in use (resident weights; scratch is released after each call). */
  get bytes(): number {
    return this.g.mark();
  }

  private weight(w: FrozenLinear): Resident {
    let r = this.resident.get(w);
    if (!r) {
      const { K, O } = w;
      const K8 = up8(K);
      const ptr = this.g.alloc(up4(O) * K8);
      const row = new Float32Array(K);
      for (let o = 0; o < O; o++) this.g.f32(ptr + o * K8 * 4, K).set(weightRow(row, w, o));
      r = { ptr, K8 };
      this.resident.set(w, r);
    }
    return r;
  }

  /** (rows, cols) of `src` (row stride `ld`) into a zeroed (rows4, ld8) scratch, optionally times `s`. */
  private put(
    src: ArrayLike<number>,
    rows: number,
    cols: number,
    ldOut: number,
    rowsOut: number,
    s = 1,
  ): number {
    const p = this.g.alloc(rowsOut * ldOut);
    const d = this.g.f32(p, rowsOut * ldOut);
    for (let i = 0; i < rows; i++)
      for (let j = 0; j < cols; j++) d[i * ldOut + j] = s * (src[i * cols + j] as number);
    return p;
  }

  /** Transpose (rows, cols) `src` into a zeroed (rowsOut ≥ cols, ldOut ≥ rows) scratch. */
  private putT(src: ArrayLike<number>, rows: number, cols: number, ldOut: number, rowsOut: number): number {
    const p = this.g.alloc(rowsOut * ldOut);
    const d = this.g.f32(p, rowsOut * ldOut);
    for (let i = 0; i < rows; i++)
      for (let j = 0; j < cols; j++) d[j * ldOut + i] = src[i * cols + j] as number;
    return p;
  }

  /** out = inp·Wᵀ + scale·(inp·Aᵀ)·Bᵀ; saves xa = inp·Aᵀ. As ref/linear.ts linearLoraForward. */
  forward(
    out: Buf, // (M, O)
    xa: Buf | null, // (M, R) saved; null when lora is null
    inp: Buf, // (M, K)
    w: FrozenLinear,
    lora: LoraBranch | null,
    M: number,
  ): void {
    const { K, O } = w;
    const g = this.g;
    const W = this.weight(w);
    const mark = g.mark();
    const Mp = up8(M);
    const O4 = up4(O);
    const inpT = this.putT(inp, M, K, Mp, K); // (K, Mp)
    const outT = g.alloc(O4 * Mp); // (O4, Mp)
    g.gemm(W.ptr, inpT, outT, O4, Mp, K, W.K8, Mp, Mp, false);
    if (lora && xa) {
      const { R } = lora;
      const R4 = up4(R);
      const R8 = up8(R);
      const a = this.put(lora.A, R, K, K, R4); // (R4, K)
      const xaT = g.alloc(R4 * Mp); // (R4, Mp)
      g.gemm(a, inpT, xaT, R4, Mp, K, K, Mp, Mp, false);
      const sb = this.put(lora.B, O, R, R8, O4, lora.scale); // (O4, R8)
      g.gemm(sb, xaT, outT, O4, Mp, R, R8, Mp, Mp, true);
      const x = g.f32(xaT, R4 * Mp);
      for (let m = 0; m < M; m++) for (let r = 0; r < R; r++) xa[m * R + r] = x[r * Mp + m]!;
    }
    const c = g.f32(outT, O4 * Mp);
    for (let m = 0; m < M; m++) for (let o = 0; o < O; o++) out[m * O + o] = c[o * Mp + m]!;
    g.release(mark);
  }

  /**
   * As ref/linear.ts linearLoraBackward: dinp += dout·W + dxa·A (skipped when null), lora.dA += dxaᵀ·inp,
   * lora.dB += scale·doutᵀ·xa, with dxa = scale·dout·B.
   */
  backward(
    dinp: Buf | null, // (M, K)
    dout: Buf, // (M, O)
    xa: Buf | null, // (M, R)
    inp: Buf, // (M, K)
    w: FrozenLinear,
    lora: LoraBranch | null,
    M: number,
  ): void {
    const { K, O } = w;
    const g = this.g;
    const W = this.weight(w);
    const mark = g.mark();
    const Mp = up8(M);
    const O4 = up4(O);
    const K8 = W.K8;
    const d = this.put(dout, M, O, O, Mp); // (Mp, O)
    let dxa = 0;
    let R8 = 0;
    if (lora && xa) {
      const { R, scale } = lora;
      const R4 = up4(R);
      R8 = up8(R);
      const sb = this.put(lora.B, O, R, R8, O4, scale); // (O4, R8)
      dxa = g.alloc(Mp * R8); // (Mp, R8)
      g.gemm(d, sb, dxa, Mp, R8, O, O, R8, R8, false);
      const dT = this.putT(dout, M, O, Mp, O4); // (O4, Mp)
      const x = this.put(xa, M, R, R8, Mp); // (Mp, R8)
      const db = g.alloc(O4 * R8); // (O4, R8)
      g.gemm(dT, x, db, O4, R8, M, Mp, R8, R8, false);
      const dbv = g.f32(db, O4 * R8);
      const dB = lora.dB!;
      for (let o = 0; o < O; o++) for (let r = 0; r < R; r++) dB[o * R + r]! += scale * dbv[o * R8 + r]!;
      const dxaT = g.alloc(R4 * Mp); // (R4, Mp)
      const tv = g.f32(dxaT, R4 * Mp);
      const dv = g.f32(dxa, Mp * R8);
      for (let m = 0; m < M; m++) for (let r = 0; r < R; r++) tv[r * Mp + m] = dv[m * R8 + r]!;
      const x2 = this.put(inp, M, K, K8, Mp); // (Mp, K8)
      const da = g.alloc(R4 * K8); // (R4, K8)
      g.gemm(dxaT, x2, da, R4, K8, M, Mp, K8, K8, false);
      const dav = g.f32(da, R4 * K8);
      const dA = lora.dA!;
      for (let r = 0; r < R; r++) for (let k = 0; k < K; k++) dA[r * K + k]! += dav[r * K8 + k]!;
    }
    if (dinp) {
      const di = g.alloc(Mp * K8); // (Mp, K8)
      g.gemm(d, W.ptr, di, Mp, K8, O, O, K8, K8, false);
      if (lora && xa) {
        const a = this.put(lora.A, lora.R, K, K8, lora.R); // (R, K8)
        g.gemm(dxa, a, di, Mp, K8, lora.R, R8, K8, K8, true);
      }
      const v = g.f32(di, Mp * K8);
      for (let m = 0; m < M; m++) for (let k = 0; k < K; k++) dinp[m * K + k]! += v[m * K8 + k]!;
    }
    g.release(mark);
  }
}

/** Largest f32 weight copy the fast path makes (wasm32 memory tops out at 4 GiB); above it: 'ref'. */
export const WASM_WEIGHT_BUDGET = 1 << 30;

/** Bytes of wasm memory the resident (padded f32) weights of a model take. */
export function wasmWeightBytes(w: {
  layers: { proj: Record<string, FrozenLinear> }[];
  lmHead: FrozenLinear;
}): number {
  const one = (l: FrozenLinear) => up4(l.O) * up8(l.K) * 4;
  return w.layers.reduce((n, l) => n + Object.values(l.proj).reduce((m, p) => m + one(p), 0), one(w.lmHead));
}

const cache = new WeakMap<object, WasmLinear>();

/** One WasmLinear (one wasm memory, weights dequantized once) per frozen-weights object. */
export function wasmLinearFor(owner: object): WasmLinear {
  let l = cache.get(owner);
  if (!l) {
    l = new WasmLinear();
    cache.set(owner, l);
  }
  return l;
}
