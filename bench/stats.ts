/**
 * Small statistics shared by the page code and the Node driver: median, min/max, ratios of paired
 * samples. No dependencies, no DOM, no Node APIs. Medians, not means: SwiftShader and a busy 2-core
 * machine give long-tailed timings.
 */

export interface Summary {
  median: number;
  min: number;
  max: number;
  n: number;
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function summarize(xs: readonly number[]): Summary {
  return {
    median: median(xs),
    min: xs.length ? Math.min(...xs) : Number.NaN,
    max: xs.length ? Math.max(...xs) : Number.NaN,
    n: xs.length,
  };
}

/** Median of per-repetition ratios num[i]/den[i] (runs interleaved, so drift cancels pairwise). */
export function pairedRatio(num: readonly number[], den: readonly number[]): number {
  const n = Math.min(num.length, den.length);
  const r: number[] = [];
  for (let i = 0; i < n; i++) if (den[i]! > 0) r.push(num[i]! / den[i]!);
  return median(r);
}

/**
 * Speed ratio num/den from lockstep step times: median over every paired step of den_ms / num_ms
 * (a step that took half the time is twice the speed).
 */
export function pairedStepRatio(numMs: readonly number[][], denMs: readonly number[][]): number {
  const r: number[] = [];
  for (let i = 0; i < Math.min(numMs.length, denMs.length); i++) {
    const a = numMs[i]!;
    const b = denMs[i]!;
    for (let j = 0; j < Math.min(a.length, b.length); j++) if (a[j]! > 0) r.push(b[j]! / a[j]!);
  }
  return median(r);
}
