/**
 * ref/attention.ts's causal GQA attention (same signatures, same saved probabilities, same gradient
 * contract) with its four products per (batch, head) on the wasm SIMD GEMM (gemm.ts): S = Q·Kᵀ and
 * O = P·V forward, dP = dO·Vᵀ, dV += Pᵀ·dO, dQ = dS·K, dK += dSᵀ·Q backward. The softmax and
 * dS = P∘(dP − Σ P∘dP) stay scalar loops over (T, T). Operands are copied into the wasm memory once
 * per call (K and V also transposed per KV head); f32 sums, where the reference sums in f64.
 * Requires D % 8 == 0 (the GEMM's column tile; CpuLoraModel uses the reference otherwise).
 * Not here: flash-style tiling (the (B, H, T, T) probabilities are saved, as in the reference).
 */
import type { Buf } from '../ref/types.ts';
import type { WasmGemm } from './gemm.ts';

const up8 = (n: number) => (n + 7) & ~7;

/** (N, W) rows of `src` into wasm, with 4 spare zero rows (the GEMM reads row tiles of 4). */
function rows(g: WasmGemm, src: Buf, N: number, W: number): number {
  const p = g.alloc((N + 4) * W);
  g.f32(p, N * W).set(src);
  return p;
}

/** Per (b, kv head): x (N, Hkv·D) → (D, T8) transposed blocks, zero padded. */
function transposedHeads(g: WasmGemm, x: Buf, B: number, T: number, Hkv: number, D: number): number {
  const T8 = up8(T);
  const KD = Hkv * D;
  const p = g.alloc(B * Hkv * D * T8);
  const d = g.f32(p, B * Hkv * D * T8);
  for (let b = 0; b < B; b++)
    for (let kh = 0; kh < Hkv; kh++) {
      const o = (b * Hkv + kh) * D * T8;
      for (let s = 0; s < T; s++) {
        const xo = (b * T + s) * KD + kh * D;
        for (let i = 0; i < D; i++) d[o + i * T8 + s] = x[xo + i]!;
      }
    }
  return p;
}

export function attentionForwardWasm(
  g: WasmGemm,
  out: Buf, // (N, H*D)
  att: Buf, // (B, H, T, T) saved softmax probabilities, 0 above the diagonal / on masked keys
  q: Buf, // (N, H*D)
  k: Buf, // (N, Hkv*D)
  v: Buf, // (N, Hkv*D)
  keyMask: ArrayLike<number> | null, // (N)
  B: number,
  T: number,
  H: number,
  Hkv: number,
  D: number,
): void {
  const mark = g.mark();
  const N = B * T;
  const HD = H * D;
  const KD = Hkv * D;
  const T8 = up8(T);
  const rep = H / Hkv;
  const scale = 1 / Math.sqrt(D);
  const qp = rows(g, q, N, HD);
  const vp = rows(g, v, N, KD);
  const kT = transposedHeads(g, k, B, T, Hkv, D);
  const sp = g.alloc((T + 4) * T8); // scores, then probabilities (T4, T8)
  const op = g.alloc((N + 4) * HD);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const kh = Math.floor(h / rep);
      g.gemm(
        qp + b * T * HD * 4 + h * D * 4,
        kT + (b * Hkv + kh) * D * T8 * 4,
        sp,
        T,
        T8,
        D,
        HD,
        T8,
        T8,
        false,
      );
      const S = g.f32(sp, T * T8);
      for (let t = 0; t < T; t++) {
        const r = t * T8;
        const ao = ((b * H + h) * T + t) * T;
        let max = Number.NEGATIVE_INFINITY;
        for (let s = 0; s <= t; s++) {
          if (keyMask && !keyMask[b * T + s]) continue;
          const x = S[r + s]! * scale;
          if (x > max) max = x;
        }
        let sum = 0;
        for (let s = 0; s < T8; s++) {
          const visible = s <= t && max !== Number.NEGATIVE_INFINITY && !(keyMask && !keyMask[b * T + s]);
          const e = visible ? Math.exp(S[r + s]! * scale - max) : 0;
          S[r + s] = e;
          sum += e;
        }
        for (let s = 0; s < T; s++) {
          const p = sum > 0 ? S[r + s]! / sum : 0;
          S[r + s] = p;
          att[ao + s] = p;
        }
      }
      // O (T, D) = P (T, T) · V (T, D); a query with no visible key has P = 0, so O = 0.
      g.gemm(sp, vp + (b * T * KD + kh * D) * 4, op + (b * T * HD + h * D) * 4, T, D, T, T8, KD, HD, false);
    }
  }
  out.set(g.f32(op, N * HD));
  g.release(mark);
}

/** Gradient contract as ref/attention.ts attentionBackward: dq, dk, dv assigned (=). */
export function attentionBackwardWasm(
  g: WasmGemm,
  dq: Buf, // (N, H*D)
  dk: Buf, // (N, Hkv*D)
  dv: Buf, // (N, Hkv*D)
  dout: Buf, // (N, H*D)
  att: Buf, // (B, H, T, T)
  q: Buf, // (N, H*D)
  k: Buf, // (N, Hkv*D)
  v: Buf, // (N, Hkv*D)
  B: number,
  T: number,
  H: number,
  Hkv: number,
  D: number,
): void {
  const mark = g.mark();
  const N = B * T;
  const HD = H * D;
  const KD = Hkv * D;
  const T8 = up8(T);
  const rep = H / Hkv;
  const scale = 1 / Math.sqrt(D);
  const qp = rows(g, q, N, HD);
  const kp = rows(g, k, N, KD);
  const dop = rows(g, dout, N, HD);
  const vT = transposedHeads(g, v, B, T, Hkv, D);
  const dpp = g.alloc((T + 4) * T8); // dP, then dS (T4, T8)
  const tp = g.alloc((T + 4) * T8); // Pᵀ, then dSᵀ (T4, T8)
  const dqp = g.alloc((N + 4) * HD);
  const dkp = g.alloc((N + 4) * KD);
  const dvp = g.alloc((N + 4) * KD);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const kh = Math.floor(h / rep);
      const qo = (b * T * HD + h * D) * 4;
      const ko = (b * T * KD + kh * D) * 4;
      const ao = (b * H + h) * T * T;
      // dP (T, T) = dO (T, D) · Vᵀ (D, T)
      g.gemm(dop + qo, vT + (b * Hkv + kh) * D * T8 * 4, dpp, T, T8, D, HD, T8, T8, false);
      // dV (T, D) += Pᵀ (T, T) · dO (T, D)
      const PT = g.f32(tp, T * T8);
      for (let t = 0; t < T; t++) for (let s = 0; s < T; s++) PT[s * T8 + t] = att[ao + t * T + s]!;
      g.gemm(tp, dop + qo, dvp + ko, T, D, T, T8, HD, KD, true);
      // dS = P ∘ (dP − Σ_s P dP) / √D, in place; its transpose for dK.
      const dP = g.f32(dpp, T * T8);
      for (let t = 0; t < T; t++) {
        let dot = 0;
        for (let s = 0; s <= t; s++) dot += att[ao + t * T + s]! * dP[t * T8 + s]!;
        for (let s = 0; s < T; s++) {
          const p = att[ao + t * T + s]!;
          const ds = p === 0 ? 0 : p * (dP[t * T8 + s]! - dot) * scale;
          dP[t * T8 + s] = ds;
          PT[s * T8 + t] = ds;
        }
      }
      // dQ (T, D) = dS (T, T) · K (T, D); dK (T, D) += dSᵀ (T, T) · Q (T, D)
      g.gemm(dpp, kp + ko, dqp + qo, T, D, T, T8, KD, HD, false);
      g.gemm(tp, qp + qo, dkp + ko, T, D, T, T8, HD, KD, true);
    }
  }
  dq.set(g.f32(dqp, N * HD));
  dk.set(g.f32(dkp, N * KD));
  dv.set(g.f32(dvp, N * KD));
  g.release(mark);
}
