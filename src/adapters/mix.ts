/**
 * Weighted mix of LoRA adapters, exact and without retraining: Σ wᵢ·(X·Aᵢ)·Bᵢ = (X·[A₁ … Aₙ])·[w₁B₁; …; wₙBₙ],
 * so the mix is the concatenation along the rank with each B scaled by its weight. The result feeds
 * the same injected graph (A (in, ΣRᵢ), B (ΣRᵢ, out)); its rank is the sum of the parts' ranks (the
 * per-module 64 limit applies to imported adapters, not to mixes). Parts with weight 0 are dropped; a
 * mix with nothing left is "no adapter", which the provider answers before mixing. Not here: loading
 * adapters (provider.ts) or uploading (gpu-cache.ts).
 */
import { InvalidOptionError } from '../errors.ts';
import type { LoraTarget } from '../model/inject-lora.ts';
import type { CpuFeeds, LoraFeed } from './types.ts';

export interface MixPart {
  feeds: CpuFeeds;
  weight: number;
}

/** A (in, ΣRᵢ) = [A₁ … Aₙ] and B (ΣRᵢ, out) = [w₁B₁; …; wₙBₙ] for every target. */
export function mixFeeds(parts: readonly MixPart[], targets: readonly LoraTarget[]): CpuFeeds {
  for (const [i, p] of parts.entries()) {
    if (typeof p.weight !== 'number' || !Number.isFinite(p.weight)) {
      throw new InvalidOptionError(`mix weight ${i} must be a finite number (got ${String(p.weight)})`, {
        index: i,
        weight: p.weight,
      });
    }
  }
  const used = parts.filter((p) => p.weight !== 0 && p.feeds.rank > 0);
  const R = used.reduce((s, p) => s + p.feeds.rank, 0);
  if (R === 0) {
    throw new InvalidOptionError('nothing to mix: every part has weight 0 (that is "no adapter")', {
      parts: parts.length,
    });
  }
  const feeds = new Map<string, LoraFeed>();
  for (const t of targets) {
    const A = new Float32Array(t.in * R); // (in, R)
    const B = new Float32Array(R * t.out); // (R, out)
    let off = 0;
    for (const p of used) {
      const r = p.feeds.rank;
      const a = p.feeds.feeds.get(t.inputA);
      const b = p.feeds.feeds.get(t.inputB);
      if (!a || !b) {
        throw new InvalidOptionError(`mix part lacks feeds for ${t.inputA} / ${t.inputB}`, {
          input: t.inputA,
        });
      }
      checkDims(a, [t.in, r], t.inputA);
      checkDims(b, [r, t.out], t.inputB);
      for (let i = 0; i < t.in; i++) A.set(a.data.subarray(i * r, (i + 1) * r), i * R + off);
      const w = p.weight;
      for (let j = 0; j < r; j++) {
        const src = j * t.out;
        const dst = (off + j) * t.out;
        for (let o = 0; o < t.out; o++) B[dst + o] = w * b.data[src + o]!;
      }
      off += r;
    }
    feeds.set(t.inputA, { data: A, dims: [t.in, R] });
    feeds.set(t.inputB, { data: B, dims: [R, t.out] });
  }
  return { rank: R, feeds };
}

function checkDims(f: LoraFeed, want: [number, number], name: string): void {
  if (f.dims[0] !== want[0] || f.dims[1] !== want[1] || f.data.length !== want[0] * want[1]) {
    throw new InvalidOptionError(`${name}: feed dims [${f.dims}] do not match [${want}]`, {
      input: name,
      dims: f.dims,
      expected: want,
    });
  }
}
