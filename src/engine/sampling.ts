/**
 * Next-token selection from one row of logits, plus stop-string detection on streamed text.
 * The processors run in the order Hugging Face `generate` applies them (transformers
 * `LogitsProcessorList`: RepetitionPenalty → Temperature → TopK → TopP, then multinomial sampling),
 * with HF's semantics for each, so a seeded run is reproducible and comparable to HF settings.
 * Pure TypeScript on the CPU, no dependencies: the logits row (V floats) is already on the host.
 * It deliberately does not do min-p/typical/beam search, batching, or GPU-side sampling.
 * Key: V = vocab size.
 */
import { InvalidOptionError, WebLoraError } from '../errors.ts';

export interface SamplingOptions {
  /** Softmax temperature; 0 (the default) means greedy argmax, ties broken by the lowest id. */
  temperature?: number;
  /** Keep only the k highest logits (ties at the k-th value are kept, as in HF); 0 or absent = off. */
  topK?: number;
  /** Nucleus sampling: keep the smallest most-likely set whose probability mass ≥ p; 1 or absent = off. */
  topP?: number;
  /**
   * HF `repetition_penalty` (Keskar et al. 2019, CTRL, https://arxiv.org/abs/1909.05858): for every
   * distinct token id in the history, a positive logit is divided by p and a negative one multiplied by
   * p. 1 or absent = off. Applied in greedy mode too, as HF does.
   */
  repetitionPenalty?: number;
  /** PRNG seed (any finite number; reduced to 32 bits). Absent = a random seed per sampler. */
  seed?: number;
}

export interface Sampler {
  /** Picks the next token id from `logits` (V) given the ids seen so far (prompt + generated). */
  next(logits: Float32Array, history: readonly number[]): number;
}

/**
 * mulberry32 (Tommy Ettinger, public domain; https://gist.github.com/tommyettinger/46a874533244883189143505d203312c):
 * a 32-bit-state generator that passes gjrand/PractRand to ~2^32 outputs — plenty for sampling, and
 * tiny. Returns floats in [0, 1) with 32 random bits.
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function bad(option: string, value: unknown, rule: string): never {
  throw new InvalidOptionError(`sampling option ${option} = ${String(value)} is invalid: ${rule}`, {
    option,
    value,
    rule,
  });
}

/** Validates and fills defaults; throws InvalidOptionError naming the option and the rule it breaks. */
export function resolveSamplingOptions(opts: SamplingOptions = {}): Required<SamplingOptions> {
  const { temperature = 0, topK = 0, topP = 1, repetitionPenalty = 1 } = opts;
  if (!Number.isFinite(temperature) || temperature < 0)
    bad('temperature', temperature, 'a finite number ≥ 0 (0 = greedy)');
  if (!Number.isInteger(topK) || topK < 0) bad('topK', topK, 'an integer ≥ 0 (0 = off)');
  if (!Number.isFinite(topP) || topP <= 0 || topP > 1) bad('topP', topP, 'a number in (0, 1] (1 = off)');
  if (!Number.isFinite(repetitionPenalty) || repetitionPenalty <= 0)
    bad('repetitionPenalty', repetitionPenalty, 'a finite number > 0 (1 = off)');
  let seed = opts.seed;
  if (seed === undefined) seed = Math.floor(Math.random() * 4294967296);
  else if (!Number.isFinite(seed)) bad('seed', seed, 'a finite number');
  return { temperature, topK, topP, repetitionPenalty, seed };
}

/**
 * HF RepetitionPenaltyLogitsProcessor on a copy: each distinct id in `history` that indexes `logits`
 * gets `x > 0 ? x / p : x * p` (HF uses `x < 0 ? x * p : x / p`; identical, 0 stays 0). Ids outside
 * [0, V) are ignored (e.g. special tokens a tokenizer has beyond the model's vocab).
 */
export function applyRepetitionPenalty(
  logits: Float32Array,
  history: readonly number[],
  penalty: number,
): void {
  if (penalty === 1) return;
  const seen = new Set<number>();
  for (const id of history) {
    if (!Number.isInteger(id) || id < 0 || id >= logits.length || seen.has(id)) continue;
    seen.add(id);
    const x = logits[id]!;
    logits[id] = x < 0 ? x * penalty : x / penalty;
  }
}

/** Index of the largest value, lowest id on ties; NaN never wins. -1 when no value is > -Infinity. */
export function argmax(x: ArrayLike<number>): number {
  let best = -1;
  let bestV = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    if (v > bestV) {
      bestV = v;
      best = i;
    }
  }
  return best;
}

/**
 * The candidate distribution after temperature, top-k and top-p, as (ids, probs); probs sum to 1.
 * With top-k or top-p on, ids are in descending-probability order (ties: lower id first); with both off
 * they stay in id order, skipping an O(V log V) sort. Exposed for tests and for UIs that show
 * alternatives. `logits` (V) must already carry the repetition penalty.
 */
export function candidateDistribution(
  logits: Float32Array,
  temperature: number,
  topK: number,
  topP: number,
): { ids: Uint32Array; probs: Float64Array } {
  const V = logits.length;
  // Candidates: logits > -inf (NaN and -inf can never be sampled).
  let ids = new Uint32Array(V);
  let n = 0;
  for (let i = 0; i < V; i++) if (logits[i]! > Number.NEGATIVE_INFINITY) ids[n++] = i;
  if (n === 0) throw new WebLoraError('sampler: every logit is -Infinity or NaN', { vocabSize: V });
  ids = ids.subarray(0, n);
  // Top-k (HF TopKLogitsProcessor): drop logits strictly below the k-th largest, so ties survive.
  // The k-th value comes from a native numeric sort of a copy (fast), not a comparator sort of ids.
  if (topK > 0 && topK < n) {
    const vals = new Float32Array(n);
    for (let j = 0; j < n; j++) vals[j] = logits[ids[j]!]!;
    vals.sort();
    const kth = vals[n - topK]!;
    let m = 0;
    for (let j = 0; j < n; j++) if (logits[ids[j]!]! >= kth) ids[m++] = ids[j]!;
    ids = ids.subarray(0, m);
    n = m;
  }
  // Sorting by logit is sorting by probability (temperature > 0 is monotone).
  if (topK > 0 || topP < 1) ids.sort((a, b) => logits[b]! - logits[a]! || a - b);
  let top = Number.NEGATIVE_INFINITY;
  for (let j = 0; j < n; j++) top = Math.max(top, logits[ids[j]!]!);
  // Softmax of logits / T in float64, shifted by the max for stability. A +inf logit takes all mass.
  const probs = new Float64Array(n);
  if (top === Number.POSITIVE_INFINITY) {
    const inf = ids.filter((id) => logits[id] === top);
    return { ids: inf, probs: new Float64Array(inf.length).fill(1 / inf.length) };
  }
  let sum = 0;
  for (let j = 0; j < n; j++) {
    const p = Math.exp((logits[ids[j]!]! - top) / temperature);
    probs[j] = p;
    sum += p;
  }
  for (let j = 0; j < n; j++) probs[j]! /= sum;
  // Top-p (HF TopPLogitsWarper): keep a token while the mass strictly before it is < p, i.e. the
  // smallest prefix whose mass reaches p; at least one token always survives.
  let keep = n;
  if (topP < 1) {
    let cum = 0;
    keep = 0;
    while (keep < n && cum < topP) cum += probs[keep++]!;
  }
  const outProbs = probs.slice(0, keep);
  let kept = 0;
  for (let j = 0; j < keep; j++) kept += outProbs[j]!;
  for (let j = 0; j < keep; j++) outProbs[j]! /= kept;
  return { ids: ids.slice(0, keep), probs: outProbs };
}

/** A sampler with its own seeded PRNG; validates options once (InvalidOptionError). */
export function createSampler(opts: SamplingOptions = {}): Sampler {
  const o = resolveSamplingOptions(opts);
  const random = mulberry32(o.seed);
  return {
    next(logits: Float32Array, history: readonly number[]): number {
      if (logits.length === 0) throw new WebLoraError('sampler: empty logits row', { vocabSize: 0 });
      const x = o.repetitionPenalty === 1 ? logits : logits.slice();
      applyRepetitionPenalty(x, history, o.repetitionPenalty);
      if (o.temperature === 0) {
        const id = argmax(x);
        if (id < 0)
          throw new WebLoraError('sampler: every logit is -Infinity or NaN', { vocabSize: x.length });
        return id;
      }
      const { ids, probs } = candidateDistribution(x, o.temperature, o.topK, o.topP);
      // Inverse-CDF draw over the sorted candidates; the last one absorbs rounding.
      const u = random();
      let cum = 0;
      for (let j = 0; j < ids.length - 1; j++) {
        cum += probs[j]!;
        if (u < cum) return ids[j]!;
      }
      return ids[ids.length - 1]!;
    },
  };
}

export interface StopMatch {
  /** Text safe to show now (never a stop string, nor a tail that could still grow into one). */
  text: string;
  /** True once a stop string has appeared; the generator should stop. */
  stopped: boolean;
  /** The stop string that matched (the one starting earliest; the longest if several start there). */
  stop?: string;
}

export interface StopStringMatcher {
  /** Feeds one streamed piece. After `stopped`, further pushes return empty text. */
  push(piece: string): StopMatch;
  /** End of stream without a stop: returns the held-back tail (empty after a stop). */
  flush(): string;
}

/**
 * Detects stop strings in streamed text, also when one is split across pieces. It holds back the
 * longest tail of the text that is a proper prefix of some stop string (it might still complete) and
 * emits the rest; on a match it emits the text before the match and drops the stop string itself.
 * Correctness: emitted text can never contain the start of a match, else that start would be a longer
 * held-back tail. Empty stop strings are rejected (InvalidOptionError).
 */
export function stopStringMatcher(stops: readonly string[]): StopStringMatcher {
  for (const s of stops) {
    if (typeof s !== 'string' || s.length === 0) bad('stop', JSON.stringify(s), 'non-empty strings');
  }
  const maxLen = stops.reduce((m, s) => Math.max(m, s.length), 0);
  let held = '';
  let stopped = false;
  return {
    push(piece: string): StopMatch {
      if (stopped) return { text: '', stopped: true };
      const buf = held + piece;
      let at = -1;
      let which: string | undefined;
      for (const s of stops) {
        const i = buf.indexOf(s);
        if (i >= 0 && (at < 0 || i < at || (i === at && s.length > which!.length))) {
          at = i;
          which = s;
        }
      }
      if (at >= 0) {
        stopped = true;
        held = '';
        return { text: buf.slice(0, at), stopped: true, stop: which! };
      }
      let hold = 0;
      for (let k = Math.min(maxLen - 1, buf.length); k > 0; k--) {
        const tail = buf.slice(buf.length - k);
        if (stops.some((s) => s.startsWith(tail))) {
          hold = k;
          break;
        }
      }
      held = buf.slice(buf.length - hold);
      return { text: buf.slice(0, buf.length - hold), stopped: false };
    },
    flush(): string {
      const t = stopped ? '' : held;
      held = '';
      return t;
    },
  };
}
