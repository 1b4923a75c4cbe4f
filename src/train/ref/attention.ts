/**
 * Causal grouped-query self-attention (Ainslie et al. 2023, arXiv:2305.13245) on already-rotated q/k:
 * query head h reads key/value head floor(h / (H/Hkv)), like the repeat-interleave of scripts/py/model.py.
 * Saves the softmax probabilities (B, H, T, T) for the backward (fine for training lengths of a few
 * hundred; no flash-style recomputation here). An optional key mask (N) drops padded keys; a query with
 * no visible key gets a zero output (PyTorch's −1e9 mask would average all keys instead; such positions
 * must be loss-masked anyway). No KV cache, no dropout, no sliding window.
 */
import type { Buf } from './types.ts';

export function attentionForward(
  out: Buf, // (N, H*D)
  att: Buf, // (B, H, T, T) saved softmax probabilities, 0 above the diagonal / on masked keys
  q: Buf, // (N, H*D)
  k: Buf, // (N, Hkv*D)
  v: Buf, // (N, Hkv*D)
  keyMask: ArrayLike<number> | null, // (N) 1 = visible key, 0 = padding; null = all visible
  B: number,
  T: number,
  H: number,
  Hkv: number,
  D: number,
): void {
  const rep = H / Hkv;
  const scale = 1 / Math.sqrt(D);
  const HD = H * D;
  const KD = Hkv * D;
  const row = new Float64Array(T); // (T) scores of one query
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const kh = Math.floor(h / rep);
      for (let t = 0; t < T; t++) {
        const qo = (b * T + t) * HD + h * D;
        let max = Number.NEGATIVE_INFINITY;
        for (let s = 0; s <= t; s++) {
          if (keyMask && !keyMask[b * T + s]) {
            row[s] = Number.NEGATIVE_INFINITY;
            continue;
          }
          const ko = (b * T + s) * KD + kh * D;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[qo + d]! * k[ko + d]!;
          row[s] = dot * scale;
          if (row[s]! > max) max = row[s]!;
        }
        const ao = ((b * H + h) * T + t) * T;
        att.fill(0, ao, ao + T);
        out.fill(0, qo, qo + D);
        if (max === Number.NEGATIVE_INFINITY) continue;
        let sum = 0;
        for (let s = 0; s <= t; s++) {
          const e = row[s] === Number.NEGATIVE_INFINITY ? 0 : Math.exp(row[s]! - max);
          row[s] = e;
          sum += e;
        }
        for (let s = 0; s <= t; s++) att[ao + s] = row[s]! / sum;
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (let s = 0; s <= t; s++) acc += att[ao + s]! * v[(b * T + s) * KD + kh * D + d]!;
          out[qo + d] = acc;
        }
      }
    }
  }
}

/**
 * Gradient contract: dq, dk, dv are assigned (=) (dk/dv sum over the H/Hkv query heads sharing them).
 * With P = att, dP_s = dout·v_s, dS_s = P_s·(dP_s − Σ_s' P_s'·dP_s'); dq = Σ_s dS_s·k_s/√D,
 * dk_s = Σ_t dS_s·q_t/√D, dv_s = Σ_t P_s·dout_t.
 */
export function attentionBackward(
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
  const rep = H / Hkv;
  const scale = 1 / Math.sqrt(D);
  const HD = H * D;
  const KD = Hkv * D;
  const N = B * T;
  const dkAcc = new Float64Array(N * KD); // (N, Hkv*D)
  const dvAcc = new Float64Array(N * KD); // (N, Hkv*D)
  const dS = new Float64Array(T); // (T)
  const dqRow = new Float64Array(D); // (D)
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const kh = Math.floor(h / rep);
      for (let t = 0; t < T; t++) {
        const qo = (b * T + t) * HD + h * D;
        const ao = ((b * H + h) * T + t) * T;
        let dot = 0;
        for (let s = 0; s <= t; s++) {
          const p = att[ao + s]!;
          if (p === 0) {
            dS[s] = 0;
            continue;
          }
          const vo = (b * T + s) * KD + kh * D;
          let dp = 0;
          for (let d = 0; d < D; d++) {
            dp += dout[qo + d]! * v[vo + d]!;
            dvAcc[vo + d]! += p * dout[qo + d]!;
          }
          dS[s] = dp;
          dot += p * dp;
        }
        dqRow.fill(0);
        for (let s = 0; s <= t; s++) {
          const p = att[ao + s]!;
          if (p === 0) continue;
          const ds = p * (dS[s]! - dot) * scale;
          const ko = (b * T + s) * KD + kh * D;
          for (let d = 0; d < D; d++) {
            dqRow[d]! += ds * k[ko + d]!;
            dkAcc[ko + d]! += ds * q[qo + d]!;
          }
        }
        for (let d = 0; d < D; d++) dq[qo + d] = dqRow[d]!;
      }
    }
  }
  dk.set(dkAcc);
  dv.set(dvAcc);
}
