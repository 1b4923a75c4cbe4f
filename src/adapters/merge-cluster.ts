/**
 * Sign-invariant k-means over LoRA-LEGO units (merge.ts), deterministic given a seed. A unit's vector u is
 * [a; b] balanced so ‖a‖ = ‖b‖; b·aᵀ is unchanged by (a, b) → (−a, −b), so the distance to a centroid c is
 * min(‖u−c‖², ‖u+c‖²) and members are sign-aligned to their centroid before averaging.
 * One run = k-means++ seeding (Arthur & Vassilvitskii, 2007) + Lloyd steps until no unit changes cluster
 * (≤ 100); an emptied cluster is re-seeded with the unit farthest from its centroid. A single run's
 * partition depends on its seed (the example adapters' units are nearly orthogonal across adapters), so
 * `clusterUnits` keeps the lowest objective (Σ squared distances) of `restarts` runs drawn from one PRNG
 * stream. Everything runs on the N×N Gram matrix of the units (a centroid is its members' signed mean,
 * so ⟨u, c⟩ and ‖c‖² are sums of Gram entries): one O(N²·D) product per module, then each run costs
 * O(N²·k) per Lloyd step whatever D (= in + out) is, which is what makes restarts cheap.
 * Not here: what a cluster becomes (merge.ts).
 */
import { seededRandom } from './linalg.ts';

export interface Clustering {
  /** Cluster of each unit (0..k−1). */
  cluster: number[];
  /** Sign of each unit relative to its cluster's centroid. */
  sign: (1 | -1)[];
  /** Σ over units of min(‖u−c‖², ‖u+c‖²) to its own centroid c. */
  objective: number;
}

/** Gram matrix G[i·N + j] = ⟨vᵢ, vⱼ⟩ (N, N). */
export function gramOf(vs: readonly Float64Array[]): Float64Array {
  const N = vs.length;
  const G = new Float64Array(N * N);
  for (let i = 0; i < N; i++) {
    const u = vs[i]!;
    for (let j = i; j < N; j++) {
      const w = vs[j]!;
      let s = 0;
      for (let t = 0; t < u.length; t++) s += u[t]! * w[t]!;
      G[i * N + j] = G[j * N + i] = s;
    }
  }
  return G;
}

/** A centroid as its members' signed mean: members, signs, and ‖c‖². */
interface Centroid {
  members: number[];
  signs: number[];
  cc: number;
}

function centroidOf(G: Float64Array, N: number, members: number[], signs: number[]): Centroid {
  let cc = 0;
  for (let p = 0; p < members.length; p++)
    for (let q = 0; q < members.length; q++) cc += signs[p]! * signs[q]! * G[members[p]! * N + members[q]!]!;
  const m = members.length;
  return { members, signs, cc: m > 0 ? cc / (m * m) : 0 };
}

/** min(‖u−c‖², ‖u+c‖²) for unit i and the sign that attains it. */
function dist(G: Float64Array, N: number, i: number, c: Centroid): { d: number; sign: 1 | -1 } {
  let uc = 0;
  for (let p = 0; p < c.members.length; p++) uc += c.signs[p]! * G[i * N + c.members[p]!]!;
  uc /= c.members.length;
  const d = G[i * N + i]! + c.cc - 2 * Math.abs(uc);
  return { d: Math.max(0, d), sign: uc >= 0 ? 1 : -1 };
}

/** One k-means++ seeded Lloyd run. */
function kmeansOnce(G: Float64Array, N: number, k: number, rand: () => number): Clustering {
  const single = (i: number) => centroidOf(G, N, [i], [1]);
  const centroids: Centroid[] = [single(Math.min(N - 1, Math.floor(rand() * N)))];
  const best = Array.from({ length: N }, (_, i) => dist(G, N, i, centroids[0]!).d);
  while (centroids.length < k) {
    const total = best.reduce((s, d) => s + d, 0);
    let pick = N - 1;
    if (total > 0) {
      let x = rand() * total;
      for (let i = 0; i < N; i++) {
        x -= best[i]!;
        if (x < 0) {
          pick = i;
          break;
        }
      }
    } else pick = centroids.length % N;
    const c = single(pick);
    centroids.push(c);
    for (let i = 0; i < N; i++) best[i] = Math.min(best[i]!, dist(G, N, i, c).d);
  }
  const cluster = new Array<number>(N).fill(-1);
  const sign = new Array<1 | -1>(N).fill(1);
  const dst = new Float64Array(N).fill(Number.POSITIVE_INFINITY);
  const uc = new Float64Array(N);
  const assign = () => {
    let changed = false;
    const next = new Int32Array(N);
    dst.fill(Number.POSITIVE_INFINITY);
    for (let j = 0; j < k; j++) {
      const c = centroids[j]!;
      uc.fill(0);
      for (let p = 0; p < c.members.length; p++) {
        const row = c.members[p]! * N;
        const s = c.signs[p]! / c.members.length;
        for (let i = 0; i < N; i++) uc[i] = uc[i]! + s * G[row + i]!;
      }
      for (let i = 0; i < N; i++) {
        const d = Math.max(0, G[i * N + i]! + c.cc - 2 * Math.abs(uc[i]!));
        if (d < dst[i]!) {
          dst[i] = d;
          next[i] = j;
          sign[i] = uc[i]! >= 0 ? 1 : -1;
        }
      }
    }
    for (let i = 0; i < N; i++) {
      if (cluster[i] !== next[i]) changed = true;
      cluster[i] = next[i]!;
    }
    return changed;
  };
  for (let iter = 0; iter < 100; iter++) {
    let changed = assign();
    // Re-seed empty clusters with the unit farthest from its centroid (deterministic).
    for (let j = 0; j < k; j++) {
      if (cluster.includes(j)) continue;
      let far = 0;
      for (let i = 1; i < N; i++) if (dst[i]! > dst[far]!) far = i;
      cluster[far] = j;
      sign[far] = 1;
      dst[far] = 0;
      changed = true;
    }
    for (let j = 0; j < k; j++) {
      const members: number[] = [];
      const signs: number[] = [];
      for (let i = 0; i < N; i++) {
        if (cluster[i] !== j) continue;
        members.push(i);
        signs.push(sign[i]!);
      }
      centroids[j] = centroidOf(G, N, members, signs);
    }
    if (!changed) break;
  }
  // Objective against the final centroids, signs re-aligned to them.
  let objective = 0;
  for (let i = 0; i < N; i++) {
    const r = dist(G, N, i, centroids[cluster[i]!]!);
    sign[i] = r.sign;
    objective += r.d;
  }
  return { cluster, sign, objective };
}

/**
 * Sign-invariant k-means of N units (Gram matrix `G`, N×N) into k ≤ N clusters: the lowest objective of
 * `restarts` seeded runs (the first run wins ties, so the result is a pure function of G, k, seed).
 */
export function clusterUnits(G: Float64Array, N: number, k: number, seed: number, restarts = 1): Clustering {
  const rand = seededRandom(seed);
  let best = kmeansOnce(G, N, k, rand);
  for (let r = 1; r < restarts; r++) {
    const c = kmeansOnce(G, N, k, rand);
    if (c.objective < best.objective) best = c;
  }
  return best;
}

/** The centroid vectors (signed means of the members), for callers that need them. */
export function centroidVectors(vs: readonly Float64Array[], c: Clustering, k: number): Float64Array[] {
  const D = vs[0]!.length;
  const out = Array.from({ length: k }, () => new Float64Array(D));
  const count = new Array<number>(k).fill(0);
  vs.forEach((u, i) => {
    const j = c.cluster[i]!;
    const s = c.sign[i]!;
    const v = out[j]!;
    for (let t = 0; t < D; t++) v[t] = v[t]! + s * u[t]!;
    count[j]!++;
  });
  out.forEach((v, j) => {
    for (let t = 0; t < D; t++) v[t] = v[t]! / Math.max(1, count[j]!);
  });
  return out;
}
