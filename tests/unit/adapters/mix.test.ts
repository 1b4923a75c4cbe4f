// Weighted adapter mixes (src/adapters/mix.ts): the rank-concatenated feeds reproduce the dense
// reference Σ wᵢ·(Aᵢ Bᵢ) for every target, on random tiny adapters of different ranks and on the two
// fixture adapters (ranks 4 and 8 with different module/layer coverage); weight 0 drops a part; rank 0.
import { describe, expect, it } from 'vitest';
import { importPeftAdapter } from '../../../src/adapters/import.ts';
import { mixFeeds } from '../../../src/adapters/mix.ts';
import type { CpuFeeds, LoraFeed } from '../../../src/adapters/types.ts';
import { InvalidOptionError } from '../../../src/errors.ts';
import type { LoraTarget } from '../../../src/model/inject-lora.ts';
import { expectClose, type Tolerance } from '../../helpers/expect-close.ts';
import { loadPeftFixture } from '../../helpers/fixtures.ts';
import { MODEL } from './model-targets.ts';

/** Dense ΔW = A·B (in, out) in float64. */
function dense(a: LoraFeed, b: LoraFeed): Float64Array {
  const [n, r] = a.dims;
  const m = b.dims[1];
  const out = new Float64Array(n * m);
  for (let i = 0; i < n; i++)
    for (let k = 0; k < r; k++) {
      const x = a.data[i * r + k]!;
      if (x === 0) continue;
      for (let j = 0; j < m; j++) out[i * m + j]! += x * b.data[k * m + j]!;
    }
  return out;
}

function expectMixMatches(
  parts: { feeds: CpuFeeds; weight: number }[],
  targets: readonly LoraTarget[],
  tol: Tolerance,
): CpuFeeds {
  const mix = mixFeeds(parts, targets);
  for (const t of targets) {
    const ref = new Float64Array(t.in * t.out);
    for (const p of parts) {
      if (p.feeds.rank === 0) continue;
      const d = dense(p.feeds.feeds.get(t.inputA)!, p.feeds.feeds.get(t.inputB)!);
      for (let i = 0; i < d.length; i++) ref[i]! += p.weight * d[i]!;
    }
    const got = dense(mix.feeds.get(t.inputA)!, mix.feeds.get(t.inputB)!);
    expectClose(got, ref, tol, `mix ${t.inputA}`);
  }
  return mix;
}

let seed = 12345;
const rand = (): number => {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return seed / 2 ** 32 - 0.5;
};

function randomFeeds(targets: readonly LoraTarget[], rank: number): CpuFeeds {
  const feeds = new Map<string, LoraFeed>();
  for (const t of targets) {
    feeds.set(t.inputA, { data: Float32Array.from({ length: t.in * rank }, rand), dims: [t.in, rank] });
    feeds.set(t.inputB, { data: Float32Array.from({ length: rank * t.out }, rand), dims: [rank, t.out] });
  }
  return { rank, feeds };
}

const TINY: LoraTarget[] = [
  {
    layer: 0,
    module: 'q_proj',
    in: 3,
    out: 2,
    node: 'q',
    inputA: 'lora.0.q_proj.A',
    inputB: 'lora.0.q_proj.B',
  },
  {
    layer: 0,
    module: 'down_proj',
    in: 2,
    out: 5,
    node: 'd',
    inputA: 'lora.0.down_proj.A',
    inputB: 'lora.0.down_proj.B',
  },
];

/**
 * The mix feeds are exact copies and one float32 product w·b; the dense products then sum ≤ ΣR terms of
 * O(1) values in float64, so differences are a few float32 roundings of the scaled B (~1e-7 relative).
 */
const MIX_TOL: Tolerance = { atol: 1e-6, rtol: 1e-5 };

describe('mixFeeds', () => {
  it('equals Σ wᵢ·(Aᵢ Bᵢ) for random adapters of ranks 1, 3 and 2 (negative and fractional weights)', () => {
    const parts = [
      { feeds: randomFeeds(TINY, 1), weight: 0.5 },
      { feeds: randomFeeds(TINY, 3), weight: -1.25 },
      { feeds: randomFeeds(TINY, 2), weight: 2 },
    ];
    const mix = expectMixMatches(parts, TINY, MIX_TOL);
    expect(mix.rank).toBe(6);
    expect(mix.feeds.get('lora.0.q_proj.A')!.dims).toEqual([3, 6]);
    expect(mix.feeds.get('lora.0.down_proj.B')!.dims).toEqual([6, 5]);
    // A is a pure concatenation: column block 1..3 of the mix is part 2's A.
    const a2 = parts[1]!.feeds.feeds.get('lora.0.q_proj.A')!.data;
    const am = mix.feeds.get('lora.0.q_proj.A')!.data;
    for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) expect(am[i * 6 + 1 + j]).toBe(a2[i * 3 + j]);
  });

  it('mixes the two fixture adapters (ranks 4 and 8, different coverage) exactly', () => {
    const fx = loadPeftFixture('peft-adapter');
    const rs = loadPeftFixture('peft-adapter-rslora');
    const a = importPeftAdapter({ config: fx.configJson, weights: fx.bytes }, MODEL).feeds;
    const b = importPeftAdapter({ config: rs.configJson, weights: rs.bytes }, MODEL).feeds;
    const targets = MODEL.targets.filter((t) => t.layer === 0 || t.layer === 1);
    const mix = expectMixMatches(
      [
        { feeds: a, weight: 0.7 },
        { feeds: b, weight: 0.3 },
      ],
      targets,
      MIX_TOL,
    );
    expect(mix.rank).toBe(a.rank + b.rank);
  });

  it('a single part with weight 1 reproduces the adapter; weight 0 parts are dropped', () => {
    const p = randomFeeds(TINY, 2);
    const one = mixFeeds([{ feeds: p, weight: 1 }], TINY);
    for (const [k, v] of p.feeds) expect(one.feeds.get(k)!.data).toEqual(v.data);
    const dropped = mixFeeds(
      [
        { feeds: p, weight: 1 },
        { feeds: randomFeeds(TINY, 3), weight: 0 },
      ],
      TINY,
    );
    expect(dropped.rank).toBe(2);
  });

  it('no parts, or all weights 0, is "no adapter", not a mix: InvalidOptionError', () => {
    expect(() => mixFeeds([], TINY)).toThrow(InvalidOptionError);
    expect(() => mixFeeds([{ feeds: randomFeeds(TINY, 2), weight: 0 }], TINY)).toThrow(/nothing to mix/);
  });

  it('rejects non-finite weights and feeds of the wrong shape', () => {
    expect(() => mixFeeds([{ feeds: randomFeeds(TINY, 1), weight: Number.NaN }], TINY)).toThrow(
      InvalidOptionError,
    );
    const bad = randomFeeds(TINY, 2);
    bad.rank = 3;
    expect(() => mixFeeds([{ feeds: bad, weight: 1 }], TINY)).toThrow(
      /feed dims \[3,2\] do not match \[3,3\]/,
    );
  });
});
