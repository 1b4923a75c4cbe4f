/**
 * The small dense linear algebra that merging and truncation need, in float64: a thin QR of a tall
 * matrix (modified Gram–Schmidt applied twice, "twice is enough": Giraud et al., Numer. Math. 2005) and the
 * SVD of a small square matrix by one-sided Jacobi rotations (Hestenes 1958; Demmel & Veselić, SIAM J.
 * Matrix Anal. Appl. 1992), which is accurate to a few ulps for the r ≤ 128 cores we feed it. Matrices are
 * row-major Float64Arrays with explicit sizes. Deliberately not a general library: no pivoting, no
 * blocking, nothing for big matrices (the full out×in ΔW is never formed outside tests).
 */

/** Thin QR of M (m, n), m ≥ n or not: Q (m, n) with orthonormal or zero columns, R (n, n) upper triangular. */
export function qrThin(M: Float64Array, m: number, n: number): { Q: Float64Array; R: Float64Array } {
  const Q = new Float64Array(M); // (m, n), orthogonalised in place column by column
  const R = new Float64Array(n * n); // (n, n)
  let scaleRef = 0;
  for (let i = 0; i < m * n; i++) scaleRef = Math.max(scaleRef, Math.abs(M[i]!));
  const tiny = scaleRef * 1e-13 * Math.sqrt(m);
  for (let j = 0; j < n; j++) {
    for (let pass = 0; pass < 2; pass++) {
      for (let p = 0; p < j; p++) {
        let dot = 0;
        for (let i = 0; i < m; i++) dot += Q[i * n + p]! * Q[i * n + j]!;
        R[p * n + j] = R[p * n + j]! + dot;
        for (let i = 0; i < m; i++) Q[i * n + j] = Q[i * n + j]! - dot * Q[i * n + p]!;
      }
    }
    let norm = 0;
    for (let i = 0; i < m; i++) norm += Q[i * n + j]! ** 2;
    norm = Math.sqrt(norm);
    if (norm <= tiny) {
      // Column j lies in the span of the earlier ones: R[j][j] = 0 and a zero Q column keep Q·R = M.
      for (let i = 0; i < m; i++) Q[i * n + j] = 0;
      R[j * n + j] = 0;
      continue;
    }
    R[j * n + j] = norm;
    for (let i = 0; i < m; i++) Q[i * n + j] = Q[i * n + j]! / norm;
  }
  return { Q, R };
}

/**
 * SVD of a square C (n, n) = U·diag(S)·Vᵀ, singular values descending. One-sided Jacobi: rotate pairs of
 * columns of W = C·V until all are mutually orthogonal; then S = column norms, U = W·diag(1/S). Columns of
 * U with S = 0 are zero (they never contribute to U·diag(S)·Vᵀ).
 */
export function svdSquare(C: Float64Array, n: number): { U: Float64Array; S: Float64Array; V: Float64Array } {
  const W = new Float64Array(C); // (n, n)
  const V = new Float64Array(n * n); // (n, n)
  for (let i = 0; i < n; i++) V[i * n + i] = 1;
  for (let sweep = 0; sweep < 60; sweep++) {
    let rotated = false;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        let alpha = 0;
        let beta = 0;
        let gamma = 0;
        for (let i = 0; i < n; i++) {
          const wp = W[i * n + p]!;
          const wq = W[i * n + q]!;
          alpha += wp * wp;
          beta += wq * wq;
          gamma += wp * wq;
        }
        if (gamma === 0 || Math.abs(gamma) <= 1e-15 * Math.sqrt(alpha * beta)) continue;
        rotated = true;
        const zeta = (beta - alpha) / (2 * gamma);
        const t = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t);
        const s = c * t;
        for (let i = 0; i < n; i++) {
          const wp = W[i * n + p]!;
          const wq = W[i * n + q]!;
          W[i * n + p] = c * wp - s * wq;
          W[i * n + q] = s * wp + c * wq;
          const vp = V[i * n + p]!;
          const vq = V[i * n + q]!;
          V[i * n + p] = c * vp - s * vq;
          V[i * n + q] = s * vp + c * vq;
        }
      }
    }
    if (!rotated) break;
  }
  const norms = Array.from({ length: n }, (_, j) => {
    let s = 0;
    for (let i = 0; i < n; i++) s += W[i * n + j]! ** 2;
    return Math.sqrt(s);
  });
  const order = norms.map((_, j) => j).sort((a, b) => norms[b]! - norms[a]! || a - b);
  const U = new Float64Array(n * n);
  const S = new Float64Array(n);
  const Vs = new Float64Array(n * n);
  const top = norms[order[0] ?? 0] ?? 0;
  order.forEach((j, k) => {
    const sj = norms[j]!;
    S[k] = sj;
    for (let i = 0; i < n; i++) {
      Vs[i * n + k] = V[i * n + j]!;
      U[i * n + k] = sj > top * 1e-15 && sj > 0 ? W[i * n + j]! / sj : 0;
    }
  });
  return { U, S, V: Vs };
}

/** C (m, n) = A (m, k) · B (k, n), float64. */
export function matmul(A: Float64Array, B: Float64Array, m: number, k: number, n: number): Float64Array {
  const C = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let p = 0; p < k; p++) {
      const a = A[i * k + p]!;
      if (a === 0) continue;
      for (let j = 0; j < n; j++) C[i * n + j] = C[i * n + j]! + a * B[p * n + j]!;
    }
  }
  return C;
}

/** Mᵀ (n, m) of M (m, n). */
export function transpose(M: ArrayLike<number>, m: number, n: number): Float64Array {
  const T = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) T[j * m + i] = M[i * n + j]!;
  return T;
}

/** mulberry32: a tiny seeded PRNG in [0, 1), so k-means++ picks the same centroids on every run. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
