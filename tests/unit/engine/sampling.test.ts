// Sampler and stop-string matcher against hand computations and statistics: greedy = argmax (lowest id
// on ties), seeded reproducibility, top-k/top-p truncation on hand-made distributions, empirical
// frequencies within 4 standard errors of the softmax, HF repetition-penalty arithmetic, stop strings
// split across pieces (property-tested with fast-check), and typed errors for invalid options.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  applyRepetitionPenalty,
  argmax,
  candidateDistribution,
  createSampler,
  mulberry32,
  stopStringMatcher,
} from '../../../src/engine/sampling.ts';
import { InvalidOptionError, WebLoraError } from '../../../src/errors.ts';
import { expectClose } from '../../helpers/expect-close.ts';

function randomLogits(rand: () => number, V: number, scale = 4): Float32Array {
  const x = new Float32Array(V);
  for (let i = 0; i < V; i++) x[i] = (rand() * 2 - 1) * scale;
  return x;
}

function softmax(x: ArrayLike<number>, T = 1): number[] {
  let m = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < x.length; i++) m = Math.max(m, x[i]!);
  const e = Array.from({ length: x.length }, (_, i) => Math.exp((x[i]! - m) / T));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

/** Draws `n` tokens from a fresh sampler and returns the count of each id. */
function histogram(sampler: ReturnType<typeof createSampler>, logits: Float32Array, n: number): number[] {
  const counts = new Array<number>(logits.length).fill(0);
  for (let i = 0; i < n; i++) counts[sampler.next(logits, [])]!++;
  return counts;
}

describe('greedy', () => {
  it('is argmax over random rows', () => {
    const rand = mulberry32(1);
    const s = createSampler({});
    for (let t = 0; t < 50; t++) {
      const x = randomLogits(rand, 257);
      let best = 0;
      for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
      expect(s.next(x, [])).toBe(best);
    }
  });

  it('breaks ties by the lowest id and ignores NaN/-inf', () => {
    const s = createSampler({ temperature: 0 });
    expect(s.next(new Float32Array([0, 3, 1, 3, 3]), [])).toBe(1);
    expect(s.next(new Float32Array([Number.NaN, Number.NEGATIVE_INFINITY, -5, -5]), [])).toBe(2);
    expect(argmax([Number.NaN])).toBe(-1);
    expect(() => s.next(new Float32Array([Number.NaN, Number.NEGATIVE_INFINITY]), [])).toThrow(WebLoraError);
  });
});

describe('seeded sampling', () => {
  const logits = new Float32Array(64); // uniform: every draw is pure PRNG

  it('repeats exactly with the same seed and differs with another', () => {
    const draw = (seed: number) => {
      const s = createSampler({ temperature: 1, seed });
      return Array.from({ length: 100 }, () => s.next(logits, []));
    };
    expect(draw(42)).toEqual(draw(42));
    expect(draw(42)).not.toEqual(draw(43));
  });

  it('top-k = 1 equals greedy at any temperature', () => {
    const rand = mulberry32(7);
    const greedy = createSampler({ temperature: 0 });
    const k1 = createSampler({ temperature: 1.7, topK: 1, seed: 3 });
    for (let t = 0; t < 50; t++) {
      const x = randomLogits(rand, 300);
      expect(k1.next(x, [])).toBe(greedy.next(x, []));
    }
  });
});

describe('truncation', () => {
  // Hand-made distribution: p = [0.05, 0.5, 0.15, 0.3] (logits are log p, so softmax(T=1) returns p).
  const p = [0.05, 0.5, 0.15, 0.3];
  const logits = new Float32Array(p.map(Math.log));

  it('top-p keeps the smallest most-likely set whose mass reaches p', () => {
    // Sorted: id1 0.5, id3 0.3, id2 0.15, id0 0.05; cumulative 0.5, 0.8, 0.95, 1.0.
    const cases: [number, number[]][] = [
      [0.45, [1]],
      [0.6, [1, 3]],
      [0.9, [1, 3, 2]],
      [0.99, [1, 3, 2, 0]],
    ];
    for (const [topP, ids] of cases) {
      const d = candidateDistribution(logits, 1, 0, topP);
      expect(Array.from(d.ids), `topP=${topP}`).toEqual(ids);
      const mass = ids.reduce((a, id) => a + p[id]!, 0);
      expectClose(
        d.probs,
        ids.map((id) => p[id]! / mass),
        { atol: 1e-6, rtol: 0 },
        `topP=${topP} probs`,
      );
    }
    // topP = 1 is off: every id survives (in id order, no sort) with the untouched probabilities.
    const off = candidateDistribution(logits, 1, 0, 1);
    expect(Array.from(off.ids)).toEqual([0, 1, 2, 3]);
    expectClose(off.probs, p, { atol: 1e-6, rtol: 0 }, 'topP=1 probs');
    const s = createSampler({ temperature: 1, topP: 0.6, seed: 9 });
    const counts = histogram(s, logits, 2000);
    expect(counts[0]! + counts[2]!).toBe(0);
  });

  it('top-k keeps the k largest (and ties at the k-th value, as HF does)', () => {
    expect(Array.from(candidateDistribution(logits, 1, 2, 1).ids)).toEqual([1, 3]);
    const tied = new Float32Array([1, 2, 2, 0, 2]);
    expect(Array.from(candidateDistribution(tied, 1, 2, 1).ids)).toEqual([1, 2, 4]);
  });

  it('top-k then top-p compose in HF order (renormalised after k)', () => {
    // After top-k=2: {id1: 0.625, id3: 0.375}; top-p 0.6 then keeps only id1.
    const d = candidateDistribution(logits, 1, 2, 0.6);
    expect(Array.from(d.ids)).toEqual([1]);
  });
});

describe('empirical frequencies', () => {
  // Standard error of a frequency estimate from N draws: sqrt(p(1-p)/N). With a fixed seed the test is
  // deterministic; 4 SE per category makes a spurious failure (had the seed been random) ~6e-5 each.
  const N = 20_000;
  const logits = new Float32Array([1.0, 0.5, -0.3, 2.0, 0.0, -1.2]);

  function expectFrequencies(counts: number[], expected: number[]): void {
    for (let i = 0; i < expected.length; i++) {
      const q = expected[i]!;
      const se = Math.sqrt((q * (1 - q)) / N);
      const f = counts[i]! / N;
      expect(Math.abs(f - q), `id ${i}: freq ${f}, expected ${q}, 4 SE = ${4 * se}`).toBeLessThanOrEqual(
        4 * se + 1e-12,
      );
    }
  }

  it('match softmax(logits / T) within 4 standard errors', () => {
    const T = 0.8;
    const counts = histogram(createSampler({ temperature: T, seed: 2024 }), logits, N);
    expectFrequencies(counts, softmax(logits, T));
  });

  it('match the renormalised top-k distribution within 4 standard errors', () => {
    const T = 1.3;
    const full = softmax(logits, T);
    const keep = [3, 0, 1]; // the 3 largest logits
    const mass = keep.reduce((a, i) => a + full[i]!, 0);
    const expected = full.map((q, i) => (keep.includes(i) ? q / mass : 0));
    const counts = histogram(createSampler({ temperature: T, topK: 3, seed: 5 }), logits, N);
    expectFrequencies(counts, expected);
  });
});

describe('repetition penalty', () => {
  it('matches a hand computation (HF: positive / p, negative * p, each distinct id once)', () => {
    const x = new Float32Array([4, -1, 0.5, 3, 0]);
    applyRepetitionPenalty(x, [0, 1, 0, 4, 99], 2);
    expect(Array.from(x)).toEqual([2, -2, 0.5, 3, 0]);
  });

  it('changes the greedy pick and the sampled distribution, without touching the caller’s row', () => {
    const logits = new Float32Array([4, -1, 0.5, 3]);
    expect(createSampler({}).next(logits, [0])).toBe(0);
    expect(createSampler({ repetitionPenalty: 2 }).next(logits, [0])).toBe(3);
    expect(Array.from(logits)).toEqual([4, -1, 0.5, 3]);
    const penalised = [2, -2, 0.5, 3];
    const s = createSampler({ temperature: 1, repetitionPenalty: 2, seed: 11 });
    const c = new Array<number>(4).fill(0);
    const n = 20_000;
    for (let i = 0; i < n; i++) c[s.next(logits, [0, 1])]!++;
    const q = softmax(penalised);
    for (let i = 0; i < 4; i++) {
      const se = Math.sqrt((q[i]! * (1 - q[i]!)) / n);
      expect(Math.abs(c[i]! / n - q[i]!)).toBeLessThanOrEqual(4 * se);
    }
  });
});

describe('stopStringMatcher', () => {
  it('finds a stop split across pieces and holds back possible prefixes', () => {
    const m = stopStringMatcher(['END', '\n\n']);
    expect(m.push('Hello E')).toEqual({ text: 'Hello ', stopped: false });
    expect(m.push('N')).toEqual({ text: '', stopped: false });
    expect(m.push('D more')).toEqual({ text: '', stopped: true, stop: 'END' });
    expect(m.push('later')).toEqual({ text: '', stopped: true });
    expect(m.flush()).toBe('');
  });

  it('releases a held tail once it can no longer complete, and flushes at the end', () => {
    const m = stopStringMatcher(['\n\n']);
    expect(m.push('abc\n')).toEqual({ text: 'abc', stopped: false });
    expect(m.push('x\n')).toEqual({ text: '\nx', stopped: false });
    expect(m.flush()).toBe('\n');
  });

  it('picks the earliest stop when several occur', () => {
    const m = stopStringMatcher(['bc', 'abcd']);
    expect(m.push('xxabcd')).toEqual({ text: 'xx', stopped: true, stop: 'abcd' });
  });

  it('emits exactly the text before the first stop, for any split (property)', () => {
    const stops = ['END', 'NN', '\n\n', 'aEa'];
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom('a', 'b', 'E', 'N', 'D', '\n'), { maxLength: 40 }).map((c) => c.join('')),
        fc.array(fc.nat(40), { maxLength: 8 }),
        (text, cuts) => {
          const points = [...new Set(cuts.map((c) => Math.min(c, text.length)))].sort((a, b) => a - b);
          const pieces: string[] = [];
          let prev = 0;
          for (const c of [...points, text.length]) {
            pieces.push(text.slice(prev, c));
            prev = c;
          }
          let first = text.length;
          for (const s of stops) {
            const i = text.indexOf(s);
            if (i >= 0) first = Math.min(first, i);
          }
          const expected = text.slice(0, first);
          const m = stopStringMatcher(stops);
          let out = '';
          let stopped = false;
          for (const p of pieces) {
            const r = m.push(p);
            out += r.text;
            stopped = r.stopped;
            expect(expected.startsWith(out)).toBe(true); // never emits past the stop
          }
          out += m.flush();
          expect(out).toBe(expected);
          expect(stopped).toBe(first < text.length);
        },
      ),
      { numRuns: 500, seed: 1 },
    );
  });
});

describe('invalid options', () => {
  const cases: [string, object][] = [
    ['temperature', { temperature: -0.1 }],
    ['temperature', { temperature: Number.NaN }],
    ['temperature', { temperature: Number.POSITIVE_INFINITY }],
    ['topP', { topP: 0 }],
    ['topP', { topP: 1.01 }],
    ['topP', { topP: Number.NaN }],
    ['topK', { topK: -1 }],
    ['topK', { topK: 2.5 }],
    ['repetitionPenalty', { repetitionPenalty: 0 }],
    ['repetitionPenalty', { repetitionPenalty: Number.POSITIVE_INFINITY }],
    ['seed', { seed: Number.NaN }],
  ];
  for (const [option, opts] of cases) {
    it(`${JSON.stringify(opts, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v))} → InvalidOptionError`, () => {
      let err: unknown;
      try {
        createSampler(opts);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(InvalidOptionError);
      expect(err).toBeInstanceOf(WebLoraError);
      expect((err as InvalidOptionError).data.option).toBe(option);
      expect((err as Error).message).toContain(option);
    });
  }

  it('rejects empty stop strings', () => {
    expect(() => stopStringMatcher(['ok', ''])).toThrow(InvalidOptionError);
  });
});
