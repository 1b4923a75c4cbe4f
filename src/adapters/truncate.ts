/**
 * Rank truncation, the serving side of DyLoRA (Valipour et al., 2022, arXiv:2210.07558) and SoRA (Ding et
 * al., 2023, arXiv:2311.09179) for ANY adapter: each module's ΔW = B·A (scale folded, factored.ts) is
 * replaced by its best rank-k approximation in Frobenius and spectral norm (Eckart–Young–Mirsky), computed
 * from the small factors only — never the out×in matrix:
 *   Aᵀ = Q_A·R_A,  B = Q_B·R_B  (thin QR, r×r triangles)   ⇒  ΔW = Q_B·(R_B·R_Aᵀ)·Q_Aᵀ
 *   R_B·R_Aᵀ = U·Σ·Vᵀ (r×r Jacobi SVD)                     ⇒  ΔW = (Q_B·U)·Σ·(Q_A·V)ᵀ
 *   ΔW_k = B_k·A_k with B_k = Q_B·U_k·Σ_k^½, A_k = Σ_k^½·V_kᵀ·Q_Aᵀ (singular values split evenly).
 * Cost O((in + out)·r² + r³) per module. Modules of rank ≤ k are returned unchanged. Also: picking k per
 * adapter under a byte budget (`ranksForBudget`); the engine uses it only when a caller passes a budget.
 */
import { InvalidOptionError } from '../errors.ts';
import type { FactoredAdapter, FactoredModule } from './factored.ts';
import { factoredBytes } from './factored.ts';
import { matmul, qrThin, svdSquare, transpose } from './linalg.ts';
import { MAX_LORA_RANK } from './peft.ts';

/** SVD of ΔW = B (out, r) · A (r, in) through its factors: ΔW = Ub·diag(S)·Vaᵀ, S descending. */
export function factoredSvd(
  B: ArrayLike<number>,
  A: ArrayLike<number>,
  out: number,
  inDim: number,
  r: number,
): { Ub: Float64Array; S: Float64Array; Va: Float64Array } {
  const qa = qrThin(transpose(A, r, inDim), inDim, r); // Aᵀ (in, r) = Q_A R_A
  const qb = qrThin(Float64Array.from(B), out, r); // B (out, r) = Q_B R_B
  const core = matmul(qb.R, transpose(qa.R, r, r), r, r, r); // R_B · R_Aᵀ (r, r)
  const { U, S, V } = svdSquare(core, r);
  return { Ub: matmul(qb.Q, U, out, r, r), S, Va: matmul(qa.Q, V, inDim, r, r) };
}

/** Rank-k factors from an SVD (the k largest singular values), split as Σ^½ on both sides. */
export function factorsOfSvd(
  svd: { Ub: Float64Array; S: Float64Array; Va: Float64Array },
  out: number,
  inDim: number,
  r: number,
  k: number,
): { A: Float32Array; B: Float32Array; rank: number } {
  const A = new Float32Array(k * inDim); // (k, in)
  const B = new Float32Array(out * k); // (out, k)
  for (let j = 0; j < k; j++) {
    const s = Math.sqrt(svd.S[j] ?? 0);
    for (let i = 0; i < inDim; i++) A[j * inDim + i] = s * svd.Va[i * r + j]!;
    for (let o = 0; o < out; o++) B[o * k + j] = s * svd.Ub[o * r + j]!;
  }
  return { A, B, rank: k };
}

/** The best rank-k approximation of one module (unchanged when its rank is ≤ k). */
export function truncateModule(m: FactoredModule, k: number): FactoredModule {
  if (m.rank <= k) return m;
  const svd = factoredSvd(m.B, m.A, m.out, m.in, m.rank);
  return { ...m, ...factorsOfSvd(svd, m.out, m.in, m.rank, k) };
}

export function checkRank(rank: unknown, option = 'rank'): number {
  if (typeof rank !== 'number' || !Number.isInteger(rank) || rank < 1 || rank > MAX_LORA_RANK) {
    throw new InvalidOptionError(
      `${option} must be an integer from 1 to ${MAX_LORA_RANK} (got ${JSON.stringify(rank)})`,
      { option, value: rank, min: 1, max: MAX_LORA_RANK },
    );
  }
  return rank;
}

/** Every module cut to rank ≤ k (DyLoRA/SoRA serving side). */
export function truncateFactored(a: FactoredAdapter, k: number): FactoredAdapter {
  checkRank(k);
  return { ...a, modules: a.modules.map((m) => truncateModule(m, k)) };
}

/**
 * The rank cap per adapter so the adapters' weights (F32, factoredBytes) fit `budgetBytes` together:
 * one cap k shared by all (the largest that fits), so no adapter is squeezed harder than another; adapters
 * already within the cap keep their ranks. Our choice: a uniform cap is predictable for users and
 * keeps every adapter's spectrum head; a water-filling on singular values would fit more energy but
 * needs every adapter's SVD first. Throws InvalidOptionError when even rank 1 does not fit.
 */
export function ranksForBudget(
  adapters: readonly { name: string; modules: readonly { in: number; out: number; rank: number }[] }[],
  budgetBytes: number,
): Map<string, number> {
  const maxRank = Math.max(1, ...adapters.flatMap((a) => a.modules.map((m) => m.rank)));
  const bytesAt = (k: number) =>
    adapters.reduce(
      (n, a) => n + factoredBytes(a.modules.map((m) => ({ ...m, rank: Math.min(m.rank, k) }))),
      0,
    );
  for (let k = maxRank; k >= 1; k--) {
    if (bytesAt(k) <= budgetBytes) {
      return new Map(
        adapters.map((a) => [a.name, Math.min(k, Math.max(1, ...a.modules.map((m) => m.rank)))]),
      );
    }
  }
  throw new InvalidOptionError(
    `a byte budget of ${budgetBytes} is too small: the adapters need ${bytesAt(1)} bytes even at rank 1`,
    { option: 'budgetBytes', value: budgetBytes, minimum: bytesAt(1) },
  );
}
