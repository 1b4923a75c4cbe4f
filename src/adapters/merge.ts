/**
 * Merging n adapters into one rank-k adapter, per module, without training data.
 * 'lego' — LoRA-LEGO (Zhao et al., "Merging LoRAs like Playing LEGO", ICLR 2025, arXiv:2409.16167): each rank
 * of a LoRA is a Minimal Semantic Unit u = (a, b), a row of A with its column of B (scale folded), and
 * ΔW = Σ b·aᵀ over units (concatenation = summation). All parents' units of a module are clustered into k
 * groups by k-means; each centroid is one rank of the merged module. Choices where the paper leaves room:
 *  - Unit normalisation: b·aᵀ is unchanged by (a, b) → (s·a, b/s) and (−a, −b), so each unit is first
 *    balanced (‖a‖ = ‖b‖) and clustered sign-invariantly: distance min(‖u−c‖², ‖u+c‖²), members are
 *    sign-aligned to their centroid before averaging.
 *  - Deterministic: k-means++ seeding from a seeded PRNG (mulberry32, `seed`, default 0), Lloyd steps until
 *    no unit changes cluster (≤ 100), an emptied cluster re-seeded with the unit farthest from its centroid.
 *  - What a cluster becomes (`centroid`). Default 'sum': ΔW = Σ over units, so a cluster stands for the SUM
 *    of its members' b·aᵀ, and its merged rank is the best rank-1 approximation of that sum (truncate.ts
 *    on the members' factors). This is our norm-aware centroid: the direction is weighted by the members'
 *    norms and the magnitude is the cluster's own output norm, which is what the paper's "dual
 *    reweighting" corrects for (norm decay of averaged centroids, changed output scale); singletons stay
 *    exact. 'mean' is the paper's averaged centroid with our reading of that re-weighting (its formulas were
 *    not at hand offline): (1) parameter: each centroid's a and b rescaled to its members' mean ‖a‖, ‖b‖;
 *    (2) output: the module's ΔW scaled so ‖ΔW_merged‖_F = ‖Σᵢ ΔWᵢ‖_F (from r×r Gram matrices).
 *    Measured in tests/unit/adapters/merge.test.ts: 'mean' lost the romeo behaviour of shout + romeo at
 *    rank 8 (ROMEO share 0.500, upper-case share 0.979); 'sum' keeps the upper-case share at 1.000 for
 *    every seed tried and sits much closer to the concatenation on the held-out style NLLs.
 *  - A module with ≤ k units in total is the exact concatenation (nothing to cluster).
 * 'average' — the naive baseline: ΔW = (1/n)·Σᵢ ΔWᵢ, projected to its best rank-k approximation
 * (truncate.ts, SVD of the concatenated factors). Parents may cover different modules (the union is
 * merged; a module missing in a parent counts as ΔW = 0 there); shapes must agree.
 */
import { AdapterShapeError, InvalidOptionError } from '../errors.ts';
import type { FactoredAdapter, FactoredModule } from './factored.ts';
import { moduleKey } from './factored.ts';
import { seededRandom } from './linalg.ts';
import { checkRank, factoredSvd, factorsOfSvd, truncateModule } from './truncate.ts';

export type MergeMethod = 'lego' | 'average';

export interface MergeFactoredOptions {
  rank: number;
  method?: MergeMethod;
  seed?: number;
  /**
   * What one cluster becomes: 'sum' (default) = the best rank-1 approximation of its members' summed ΔW;
   * 'mean' = the averaged centroid with `reweight` (the paper's form, kept for ablations).
   */
  centroid?: 'sum' | 'mean';
  /** Re-weighting of 'mean' centroids: 'dual' (default) = parameter + output, 'parameter', 'none'. */
  reweight?: 'dual' | 'parameter' | 'none';
  /** Called after each module (done, total). */
  onModule?: (done: number, total: number) => void;
}

/** Modules of every parent grouped by (layer, module), shapes checked. */
function groupModules(parents: readonly FactoredAdapter[]): FactoredModule[][] {
  const groups = new Map<string, FactoredModule[]>();
  for (const p of parents) {
    for (const m of p.modules) {
      const g = groups.get(moduleKey(m)) ?? [];
      const first = g[0];
      if (first && (first.in !== m.in || first.out !== m.out)) {
        throw new AdapterShapeError(
          `layer ${m.layer} ${m.module}: the adapters disagree on its shape (${first.in} → ${first.out} vs ${m.in} → ${m.out}); were they trained for different base models?`,
          {
            layer: m.layer,
            module: m.module,
            shapes: [
              [first.in, first.out],
              [m.in, m.out],
            ],
          },
        );
      }
      g.push(m);
      groups.set(moduleKey(m), g);
    }
  }
  return [...groups.values()].sort(
    (x, y) => x[0]!.layer - y[0]!.layer || x[0]!.module.localeCompare(y[0]!.module),
  );
}

/** Concatenation of modules along the rank, B columns weighted: ΔW = Σ wᵢ·Bᵢ·Aᵢ. */
export function concatModules(ms: readonly FactoredModule[], weights?: readonly number[]): FactoredModule {
  const first = ms[0]!;
  const R = ms.reduce((n, m) => n + m.rank, 0);
  const A = new Float32Array(R * first.in);
  const B = new Float32Array(first.out * R);
  let off = 0;
  ms.forEach((m, idx) => {
    const w = weights?.[idx] ?? 1;
    A.set(m.A, off * first.in);
    for (let o = 0; o < m.out; o++)
      for (let j = 0; j < m.rank; j++) B[o * R + off + j] = w * m.B[o * m.rank + j]!;
    off += m.rank;
  });
  return { layer: first.layer, module: first.module, in: first.in, out: first.out, rank: R, A, B };
}

/** ‖B·A‖_F² = tr((BᵀB)(AAᵀ)) from the factors. */
export function frobenius2(m: FactoredModule): number {
  const r = m.rank;
  const G = new Float64Array(r * r); // BᵀB (r, r)
  const H = new Float64Array(r * r); // AAᵀ (r, r)
  for (let p = 0; p < r; p++) {
    for (let q = p; q < r; q++) {
      let g = 0;
      for (let o = 0; o < m.out; o++) g += m.B[o * r + p]! * m.B[o * r + q]!;
      let h = 0;
      for (let i = 0; i < m.in; i++) h += m.A[p * m.in + i]! * m.A[q * m.in + i]!;
      G[p * r + q] = G[q * r + p] = g;
      H[p * r + q] = H[q * r + p] = h;
    }
  }
  let t = 0;
  for (let i = 0; i < r * r; i++) t += G[i]! * H[i]!;
  return Math.max(0, t);
}

interface Unit {
  v: Float64Array; // [a (in); b (out)], balanced
  na: number;
  nb: number;
}

function unitsOf(cat: FactoredModule): Unit[] {
  const units: Unit[] = [];
  const { in: n, out, rank: r } = cat;
  for (let j = 0; j < r; j++) {
    let na = 0;
    let nb = 0;
    for (let i = 0; i < n; i++) na += cat.A[j * n + i]! ** 2;
    for (let o = 0; o < out; o++) nb += cat.B[o * r + j]! ** 2;
    na = Math.sqrt(na);
    nb = Math.sqrt(nb);
    if (na === 0 || nb === 0) continue; // contributes nothing to ΔW
    const s = Math.sqrt(nb / na);
    const v = new Float64Array(n + out);
    for (let i = 0; i < n; i++) v[i] = cat.A[j * n + i]! * s;
    for (let o = 0; o < out; o++) v[n + o] = cat.B[o * r + j]! / s;
    const g = Math.sqrt(na * nb);
    units.push({ v, na: g, nb: g });
  }
  return units;
}

/** Squared distance min(‖u−c‖², ‖u+c‖²) and the sign that attains it. */
function signedDist(u: Float64Array, c: Float64Array): { d: number; sign: 1 | -1 } {
  let uu = 0;
  let cc = 0;
  let uc = 0;
  for (let i = 0; i < u.length; i++) {
    uu += u[i]! * u[i]!;
    cc += c[i]! * c[i]!;
    uc += u[i]! * c[i]!;
  }
  return uc >= 0 ? { d: uu + cc - 2 * uc, sign: 1 } : { d: uu + cc + 2 * uc, sign: -1 };
}

/** Sign-invariant k-means with k-means++ seeding; returns each unit's cluster and sign. */
export function clusterUnits(
  vs: readonly Float64Array[],
  k: number,
  seed: number,
): { cluster: number[]; sign: (1 | -1)[]; centroids: Float64Array[] } {
  const rand = seededRandom(seed);
  const N = vs.length;
  const centroids: Float64Array[] = [Float64Array.from(vs[Math.floor(rand() * N)]!)];
  const best = vs.map((u) => signedDist(u, centroids[0]!).d);
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
    const c = Float64Array.from(vs[pick]!);
    centroids.push(c);
    vs.forEach((u, i) => {
      best[i] = Math.min(best[i]!, signedDist(u, c).d);
    });
  }
  const cluster = new Array<number>(N).fill(-1);
  const sign = new Array<1 | -1>(N).fill(1);
  for (let iter = 0; iter < 100; iter++) {
    let changed = false;
    const dist = new Array<number>(N).fill(0);
    vs.forEach((u, i) => {
      let bc = 0;
      let bd = Number.POSITIVE_INFINITY;
      let bs: 1 | -1 = 1;
      centroids.forEach((c, j) => {
        const { d, sign: s } = signedDist(u, c);
        if (d < bd) {
          bd = d;
          bc = j;
          bs = s;
        }
      });
      if (cluster[i] !== bc) changed = true;
      cluster[i] = bc;
      sign[i] = bs;
      dist[i] = bd;
    });
    // Re-seed empty clusters with the unit farthest from its centroid (deterministic).
    for (let j = 0; j < k; j++) {
      if (cluster.includes(j)) continue;
      let far = 0;
      for (let i = 1; i < N; i++) if (dist[i]! > dist[far]!) far = i;
      cluster[far] = j;
      sign[far] = 1;
      dist[far] = 0;
      changed = true;
    }
    for (let j = 0; j < k; j++) {
      const c = new Float64Array(vs[0]!.length);
      let count = 0;
      vs.forEach((u, i) => {
        if (cluster[i] !== j) return;
        count++;
        const s = sign[i]!;
        for (let t = 0; t < c.length; t++) c[t] = c[t]! + s * u[t]!;
      });
      for (let t = 0; t < c.length; t++) c[t] = c[t]! / count;
      centroids[j] = c;
    }
    if (!changed) break;
  }
  return { cluster, sign, centroids };
}

/** Best rank-1 approximation (a, b) of Σ b_i·a_iᵀ over `members` (truncate.ts, from the factors). */
function sumRank1(members: readonly Unit[], n: number, out: number): { A: Float32Array; B: Float32Array } {
  const r = members.length;
  const A = new Float32Array(r * n); // (r, in)
  const B = new Float32Array(out * r); // (out, r)
  members.forEach((u, c) => {
    for (let i = 0; i < n; i++) A[c * n + i] = u.v[i]!;
    for (let o = 0; o < out; o++) B[o * r + c] = u.v[n + o]!;
  });
  const one = truncateModule({ layer: 0, module: 'q_proj', in: n, out, rank: r, A, B }, 1);
  return { A: one.A, B: one.B };
}

function legoModule(
  group: readonly FactoredModule[],
  k: number,
  seed: number,
  centroid: NonNullable<MergeFactoredOptions['centroid']>,
  reweight: NonNullable<MergeFactoredOptions['reweight']>,
): FactoredModule {
  const cat = concatModules(group);
  const units = unitsOf(cat);
  if (units.length <= k) return cat;
  const { in: n, out } = cat;
  const { cluster, centroids } = clusterUnits(
    units.map((u) => u.v),
    k,
    seed,
  );
  const A = new Float32Array(k * n);
  const B = new Float32Array(out * k);
  if (centroid === 'sum') {
    for (let j = 0; j < k; j++) {
      const one = sumRank1(
        units.filter((_, i) => cluster[i] === j),
        n,
        out,
      );
      A.set(one.A, j * n);
      for (let o = 0; o < out; o++) B[o * k + j] = one.B[o]!;
    }
    return { ...cat, rank: k, A, B };
  }
  for (let j = 0; j < k; j++) {
    const members = units.filter((_, i) => cluster[i] === j);
    const c = centroids[j]!;
    let ca = 0;
    let cb = 0;
    for (let i = 0; i < n; i++) ca += c[i]! ** 2;
    for (let o = 0; o < out; o++) cb += c[n + o]! ** 2;
    // (1) parameter re-weighting: centroid halves back to their members' mean norms.
    const ma = members.reduce((s, u) => s + u.na, 0) / members.length;
    const mb = members.reduce((s, u) => s + u.nb, 0) / members.length;
    const on = reweight !== 'none';
    const fa = !on ? 1 : ca > 0 ? ma / Math.sqrt(ca) : 0;
    const fb = !on ? 1 : cb > 0 ? mb / Math.sqrt(cb) : 0;
    for (let i = 0; i < n; i++) A[j * n + i] = fa * c[i]!;
    for (let o = 0; o < out; o++) B[o * k + j] = fb * c[n + o]!;
  }
  const merged: FactoredModule = { ...cat, rank: k, A, B };
  // (2) output re-weighting: the norm of the exact concatenation Σᵢ ΔWᵢ.
  const have = frobenius2(merged);
  const want = frobenius2(cat);
  if (have > 0 && reweight === 'dual') {
    const f = Math.sqrt(want / have);
    for (let i = 0; i < B.length; i++) B[i] = B[i]! * f;
  }
  return merged;
}

function averageModule(group: readonly FactoredModule[], k: number, nParents: number): FactoredModule {
  const cat = concatModules(
    group,
    group.map(() => 1 / nParents),
  );
  if (cat.rank <= k) return cat;
  const svd = factoredSvd(cat.B, cat.A, cat.out, cat.in, cat.rank);
  return { ...cat, ...factorsOfSvd(svd, cat.out, cat.in, cat.rank, k) };
}

/** Merge parents (already checked to belong to one base model) into one adapter of rank ≤ k per module. */
export function mergeFactored(
  parents: readonly FactoredAdapter[],
  opts: MergeFactoredOptions,
): FactoredAdapter {
  const k = checkRank(opts.rank);
  const method = opts.method ?? 'lego';
  if (method !== 'lego' && method !== 'average') {
    throw new InvalidOptionError(`merge method must be 'lego' or 'average' (got ${JSON.stringify(method)})`, {
      option: 'method',
      value: method,
    });
  }
  const seed = opts.seed ?? 0;
  if (!Number.isInteger(seed)) {
    throw new InvalidOptionError(`seed must be an integer (got ${JSON.stringify(seed)})`, {
      option: 'seed',
      value: seed,
    });
  }
  if (parents.length === 0)
    throw new InvalidOptionError('nothing to merge: no adapters given', { option: 'names' });
  const groups = groupModules(parents);
  const modules = groups.map((g, i) => {
    const m =
      method === 'lego'
        ? legoModule(g, k, seed, opts.centroid ?? 'sum', opts.reweight ?? 'dual')
        : averageModule(g, k, parents.length);
    opts.onModule?.(i + 1, groups.length);
    return m;
  });
  return { baseModel: parents[0]!.baseModel, modules };
}
