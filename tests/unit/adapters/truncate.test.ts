// Rank truncation (src/adapters/truncate.ts) against the SVD oracle of scripts/py/svd_fixtures.py, which
// takes torch.linalg.svd of the FULL ΔW of every module of the example adapters: singular values, the best
// rank-k error (= the tail singular values' norm, Eckart–Young), ‖ΔW_k‖ and bilinear probes of ΔW_k. Ours
// works on the factors only (QR + r×r Jacobi SVD). Tolerances: singular values 1e-9·σ₁ (float64 both
// sides from the same float32 weights); everything of our ΔW_k, whose factors are stored as float32,
// 1e-7 relative to ‖ΔW‖_F (float32 rounding of the factors; measured ≤ 8.5e-9).
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type FactoredModule, readFactored, toInApp } from '../../../src/adapters/factored.ts';
import type { PeftFiles } from '../../../src/adapters/import.ts';
import { matmul, qrThin, seededRandom, svdSquare, transpose } from '../../../src/adapters/linalg.ts';
import { buildPeftFiles } from '../../../src/adapters/peft-writer.ts';
import {
  factoredSvd,
  ranksForBudget,
  truncateFactored,
  truncateModule,
} from '../../../src/adapters/truncate.ts';
import { InvalidOptionError } from '../../../src/errors.ts';

interface OracleModule {
  sv: number[];
  err: Record<string, number>;
  tail: Record<string, number>;
  fro: Record<string, number>;
  probe: Record<string, number[]>;
  vec?: Record<string, number[]>;
}
const oracle = JSON.parse(readFileSync('tests/fixtures/svd-oracle.json', 'utf8')) as {
  ks: number[];
  adapters: Record<string, { sha256: string; modules: Record<string, OracleModule> }>;
};

function files(name: string): PeftFiles {
  const dir = join('public/adapters', name);
  return {
    'adapter_config.json': new Uint8Array(readFileSync(join(dir, 'adapter_config.json'))),
    'adapter_model.safetensors': new Uint8Array(readFileSync(join(dir, 'adapter_model.safetensors'))),
  };
}

/** Full ΔW (out, in) = B·A in float64 (tests only). */
function dense(m: FactoredModule): Float64Array {
  return matmul(Float64Array.from(m.B), Float64Array.from(m.A), m.out, m.rank, m.in);
}
const fro = (x: Float64Array) => Math.sqrt(x.reduce((s, v) => s + v * v, 0));
const diff = (x: Float64Array, y: Float64Array) => Math.sqrt(x.reduce((s, v, i) => s + (v - y[i]!) ** 2, 0));
const probe = (n: number, p: number, f: (x: number) => number, c: number) =>
  Float64Array.from({ length: n }, (_, j) => f(c * (j + 1) * (p + 1)));

function randn(n: number, rand: () => number): Float64Array {
  return Float64Array.from({ length: n }, () => {
    const u = Math.max(rand(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
  });
}

describe('linalg: thin QR and Jacobi SVD', () => {
  it('QR of a tall matrix with a dependent column: Q·R = M, Qᵀ·Q = I on the kept columns', () => {
    const rand = seededRandom(1);
    const m = 50;
    const n = 6;
    const M = randn(m * n, rand);
    for (let i = 0; i < m; i++) M[i * n + 3] = 2 * M[i * n + 1]! - M[i * n + 0]!; // column 3 dependent
    const { Q, R } = qrThin(M, m, n);
    expect(diff(matmul(Q, R, m, n, n), M)).toBeLessThan(1e-12 * fro(M));
    expect(R[3 * n + 3]).toBe(0);
    const QtQ = matmul(transpose(Q, m, n), Q, n, m, n);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        const want = i === j && i !== 3 ? 1 : 0;
        expect(Math.abs(QtQ[i * n + j]! - want)).toBeLessThan(1e-12);
      }
    }
  });

  it('SVD of random and rank-deficient squares: U·S·Vᵀ = C, orthonormal V, descending S', () => {
    const rand = seededRandom(2);
    for (const n of [1, 2, 7, 16, 40]) {
      const C = randn(n * n, rand);
      if (n > 2) for (let i = 0; i < n; i++) C[i * n + n - 1] = C[i * n]!; // rank n-1
      const { U, S, V } = svdSquare(C, n);
      const US = Float64Array.from(U, (u, idx) => u * S[idx % n]!);
      expect(diff(matmul(US, transpose(V, n, n), n, n, n), C)).toBeLessThan(1e-12 * Math.max(1, fro(C)));
      const VtV = matmul(transpose(V, n, n), V, n, n, n);
      for (let i = 0; i < n; i++)
        for (let j = 0; j < n; j++) expect(Math.abs(VtV[i * n + j]! - (i === j ? 1 : 0))).toBeLessThan(1e-12);
      for (let i = 1; i < n; i++) expect(S[i]!).toBeLessThanOrEqual(S[i - 1]!);
      if (n > 2) expect(S[n - 1]!).toBeLessThan(1e-12 * S[0]!);
    }
  });
});

describe('truncate vs the SVD oracle (example adapters, k = 1, 2, 4, every module)', () => {
  for (const name of ['weblora-shout', 'weblora-romeo', 'weblora-reverse']) {
    it(`${name}: singular values, best rank-k error = tail norm, ΔW_k probes`, () => {
      const f = files(name);
      const sha = createHash('sha256').update(f['adapter_model.safetensors']).digest('hex');
      if (sha !== oracle.adapters[name]!.sha256) {
        throw new Error(
          `fixtures are stale: regenerate with /usr/bin/python3 scripts/py/svd_fixtures.py (${name})`,
        );
      }
      const a = readFactored(f);
      const want = oracle.adapters[name]!.modules;
      expect(a.modules.length).toBe(Object.keys(want).length);
      let worstSv = 0;
      let worstK = 0;
      for (const m of a.modules) {
        const o = want[`${m.layer}.${m.module}`]!;
        const W = dense(m);
        const nW = fro(W);
        const { S } = factoredSvd(m.B, m.A, m.out, m.in, m.rank);
        for (let i = 0; i < m.rank; i++) worstSv = Math.max(worstSv, Math.abs(S[i]! - o.sv[i]!) / o.sv[0]!);
        for (const k of oracle.ks) {
          const t = truncateModule(m, k);
          expect(t.rank).toBe(k);
          const Wk = dense(t);
          const rel = (x: number, y: number) => Math.abs(x - y) / nW;
          const errs = [
            rel(diff(W, Wk), o.err[k]!), // our error is the optimal one ...
            rel(o.err[k]!, o.tail[k]!), // ... which is the tail of the spectrum (Eckart–Young)
            rel(fro(Wk), o.fro[k]!),
          ];
          for (let p = 0; p < 4; p++) {
            const x = probe(m.in, p, Math.sin, 0.37);
            const y = probe(m.out, p, Math.cos, 0.23);
            const Wx = matmul(Wk, x, m.out, m.in, 1);
            const yWx = y.reduce((s, v, i) => s + v * Wx[i]!, 0);
            errs.push(Math.abs(yWx - o.probe[k]![p]!) / (nW * fro(x) * fro(y)));
          }
          const vec = o.vec?.[k];
          if (vec) {
            const Wx = matmul(Wk, probe(m.in, 0, Math.sin, 0.37), m.out, m.in, 1);
            errs.push(diff(Wx, Float64Array.from(vec)) / (nW * fro(probe(m.in, 0, Math.sin, 0.37))));
          }
          worstK = Math.max(worstK, ...errs);
        }
      }
      console.log(
        `${name}: worst singular-value error ${worstSv.toExponential(2)}·σ₁, worst ΔW_k error ${worstK.toExponential(2)}·‖ΔW‖`,
      );
      expect(worstSv).toBeLessThan(1e-9);
      expect(worstK).toBeLessThan(1e-7);
    });
  }

  it('Eckart–Young: no other rank-k approximation tried does better (keep-first-k, random rank-k)', () => {
    const a = readFactored(files('weblora-romeo'));
    const rand = seededRandom(3);
    for (const m of a.modules.slice(0, 6)) {
      const W = dense(m);
      for (const k of [1, 2, 4]) {
        const best = diff(W, dense(truncateModule(m, k)));
        const firstK: FactoredModule = {
          ...m,
          rank: k,
          A: m.A.slice(0, k * m.in),
          B: Float32Array.from(
            { length: m.out * k },
            (_, idx) => m.B[Math.floor(idx / k) * m.rank + (idx % k)]!,
          ),
        };
        expect(best).toBeLessThanOrEqual(diff(W, dense(firstK)) + 1e-9);
        // A perturbed optimum is worse.
        const t = truncateModule(m, k);
        const noisy = { ...t, A: Float32Array.from(t.A, (v) => v + 1e-3 * (rand() - 0.5)) };
        expect(best).toBeLessThan(diff(W, dense(noisy)));
      }
    }
  });

  it('rank ≥ r is a no-op (same module objects); rank out of 1..64 is an InvalidOptionError', () => {
    const a = readFactored(files('weblora-shout'));
    for (const k of [8, 9, 64]) {
      const t = truncateFactored(a, k);
      for (const [i, m] of t.modules.entries()) expect(m).toBe(a.modules[i]);
    }
    for (const k of [0, 65, 2.5, Number.NaN])
      expect(() => truncateFactored(a, k)).toThrow(InvalidOptionError);
  });

  it('PEFT round trip: written files read back to the same truncated ΔW (rank_pattern-free, alpha = r)', () => {
    const a = truncateFactored(readFactored(files('weblora-reverse')), 3);
    const back = readFactored(buildPeftFiles(toInApp(a, 'weblora-shakespeare')));
    expect(back.modules.map((m) => m.rank)).toEqual(a.modules.map(() => 3));
    back.modules.forEach((m, i) => {
      const W = dense(a.modules[i]!);
      expect(diff(dense(m), W)).toBeLessThan(1e-6 * fro(W));
    });
  });

  it('ranksForBudget: the largest uniform cap that fits; too small a budget is an InvalidOptionError', () => {
    const mods = (r: number) => [{ in: 256, out: 256, rank: r }];
    const adapters = [
      { name: 'a', modules: mods(8) },
      { name: 'b', modules: mods(4) },
    ];
    const bytes = (k: number) => 4 * 512 * (Math.min(8, k) + Math.min(4, k));
    expect([...ranksForBudget(adapters, bytes(8))]).toEqual([
      ['a', 8],
      ['b', 4],
    ]);
    expect([...ranksForBudget(adapters, bytes(6))]).toEqual([
      ['a', 6],
      ['b', 4],
    ]);
    expect([...ranksForBudget(adapters, bytes(6) - 1)]).toEqual([
      ['a', 5],
      ['b', 4],
    ]);
    expect([...ranksForBudget(adapters, bytes(1))]).toEqual([
      ['a', 1],
      ['b', 1],
    ]);
    expect(() => ranksForBudget(adapters, bytes(1) - 1)).toThrow(InvalidOptionError);
  });
});
