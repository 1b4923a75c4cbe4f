/**
 * Merging n adapters into one rank-k adapter, per module, without training data.
 * 'lego' — LoRA-LEGO (Zhao et al., "Merging LoRAs like Playing LEGO", ICLR 2025, arXiv:2409.16167): each rank
 * of a LoRA is a Minimal Semantic Unit u = (a, b), a row of A with its column of B (scale folded), and
 * ΔW = Σ b·aᵀ over units (concatenation = summation). All parents' units of a module are clustered into k
 * groups by k-means; each cluster becomes one rank of the merged module. Choices where the paper leaves room:
 *  - Which units (`units`, default 'svd'). A LoRA's ranks are not unique (B·M, M⁻¹·A is the same ΔW), and a
 *    trained adapter's stored ranks overlap (|cos| between the rank-1 matrices of one example adapter: p90
 *    0.29, max 0.69). Each parent is therefore first rewritten in its SVD form (truncate.ts, from the
 *    factors; ΔW unchanged): r orthogonal units ordered by singular value, so that units are independent, as
 *    the MSU view assumes. 'raw' clusters the stored ranks as they are (the former behaviour).
 *  - Unit normalisation: b·aᵀ is unchanged by (a, b) → (s·a, b/s) and (−a, −b), so each unit is first
 *    balanced (‖a‖ = ‖b‖) and clustered sign-invariantly (merge-cluster.ts).
 *  - Deterministic and robust: k-means++ seeding from a seeded PRNG (mulberry32, `seed`, default 0); the
 *    lowest k-means objective of `restarts` runs (default 32) is kept. A single run's partition was seed luck:
 *    over seeds 0..7, shout + romeo at rank 8 lost the romeo behaviour at seeds 1 and 2 (no ROMEO tag left).
 *  - What a cluster becomes (`centroid`). Default 'sum': ΔW = Σ over units, so a cluster stands for the SUM
 *    of its members' b·aᵀ, and its merged rank is the best rank-1 approximation of that sum (truncate.ts
 *    on the members' factors). This is our norm-aware centroid: it has neither of the two scale errors the
 *    paper's dual reweighting corrects in averaged centroids (norm decay of a mean of unaligned units;
 *    output scale off from the concatenation's) — the direction is weighted by the members' norms, the
 *    magnitude is the cluster's own, singletons stay exact. 'mean' is the paper's averaged centroid with our
 *    reading of that reweighting (the paper's formulas were not retrievable offline; only its summary,
 *    "parameter reweighting for norm decay and output reweighting for variance expansion"): (1) parameter:
 *    each centroid's a and b rescaled to its members' mean ‖a‖, ‖b‖; (2) output: the module's ΔW scaled so
 *    ‖ΔW_merged‖_F = ‖Σᵢ ΔWᵢ‖_F (from r×r Gram matrices).
 *  - A module with ≤ k units in total is the exact concatenation (nothing to cluster).
 * Measured (tests/unit/adapters/merge.test.ts, shout + romeo → rank 8, seeds 0..7): ‖ΔW − Σᵢ ΔWᵢ‖_F /
 * ‖Σᵢ ΔWᵢ‖_F 0.276–0.293 (raw units, 1 run: 0.402–0.445; average: 0.543); held-out style NLL and greedy
 * shares in that file and README.md "Merging adapters".
 * 'average' — the naive baseline: ΔW = (1/n)·Σᵢ ΔWᵢ, projected to its best rank-k approximation
 * (truncate.ts, SVD of the concatenated factors). Parents may cover different modules (the union is
 * merged; a module missing in a parent counts as ΔW = 0 there); shapes must agree.
 */
import { AdapterShapeError, InvalidOptionError } from '../errors.ts';
import type { FactoredAdapter, FactoredModule } from './factored.ts';
import { moduleKey } from './factored.ts';
import { centroidVectors, clusterUnits, gramOf } from './merge-cluster.ts';
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
  /** Seeded k-means++ runs per module, the lowest objective kept (integer 1..1000, default 32). */
  restarts?: number;
  /** LEGO units: 'svd' (default) = each parent's ΔW in SVD form; 'raw' = its stored ranks as they are. */
  units?: 'svd' | 'raw';
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

/** 'sum' centroids: cluster j → the best rank-1 approximation of its members' summed ΔW. */
function sumMerge(
  cat: FactoredModule,
  units: readonly Unit[],
  cluster: readonly number[],
  k: number,
): FactoredModule {
  const { in: n, out } = cat;
  const A = new Float32Array(k * n);
  const B = new Float32Array(out * k);
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

/** 'mean' centroids with the chosen re-weighting. */
function meanMerge(
  cat: FactoredModule,
  units: readonly Unit[],
  centroids: readonly Float64Array[],
  cluster: readonly number[],
  k: number,
  reweight: NonNullable<MergeFactoredOptions['reweight']>,
): FactoredModule {
  const { in: n, out } = cat;
  const A = new Float32Array(k * n);
  const B = new Float32Array(out * k);
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

/** The same ΔW with orthogonal units ordered by singular value (B·A = (Ub·Σ^½)·(Σ^½·Vaᵀ)). */
function svdForm(m: FactoredModule): FactoredModule {
  const svd = factoredSvd(m.B, m.A, m.out, m.in, m.rank);
  return { ...m, ...factorsOfSvd(svd, m.out, m.in, m.rank, m.rank) };
}

type LegoOptions = Required<Pick<MergeFactoredOptions, 'centroid' | 'reweight' | 'restarts' | 'units'>>;

function legoModule(
  group: readonly FactoredModule[],
  k: number,
  seed: number,
  opts: LegoOptions,
): FactoredModule {
  const cat = concatModules(group);
  const units = unitsOf(opts.units === 'svd' ? concatModules(group.map(svdForm)) : cat);
  if (units.length <= k) return cat;
  const vs = units.map((u) => u.v);
  const c = clusterUnits(gramOf(vs), vs.length, k, seed, opts.restarts);
  return opts.centroid === 'sum'
    ? sumMerge(cat, units, c.cluster, k)
    : meanMerge(cat, units, centroidVectors(vs, c, k), c.cluster, k, opts.reweight);
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
  const restarts = opts.restarts ?? 32;
  if (!Number.isInteger(restarts) || restarts < 1 || restarts > 1000) {
    throw new InvalidOptionError(
      `restarts must be an integer from 1 to 1000 (got ${JSON.stringify(restarts)})`,
      {
        option: 'restarts',
        value: restarts,
      },
    );
  }
  const units = opts.units ?? 'svd';
  if (units !== 'svd' && units !== 'raw') {
    throw new InvalidOptionError(`units must be 'svd' or 'raw' (got ${JSON.stringify(units)})`, {
      option: 'units',
      value: units,
    });
  }
  if (parents.length === 0)
    throw new InvalidOptionError('nothing to merge: no adapters given', { option: 'names' });
  const groups = groupModules(parents);
  const modules = groups.map((g, i) => {
    const m =
      method === 'lego'
        ? legoModule(g, k, seed, {
            centroid: opts.centroid ?? 'sum',
            reweight: opts.reweight ?? 'dual',
            restarts,
            units,
          })
        : averageModule(g, k, parents.length);
    opts.onModule?.(i + 1, groups.length);
    return m;
  });
  return { baseModel: parents[0]!.baseModel, modules };
}
