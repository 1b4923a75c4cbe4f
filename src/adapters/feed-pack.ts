/**
 * An adapter's graph feeds in the layout the injected graph takes them (A [in, R], B [R, out], target
 * order), packed into ONE ArrayBuffer with a small index, so a cold swap reads one IndexedDB value and
 * makes views instead of parsing safetensors and mapping PEFT modules (store.ts keeps it next to the
 * PEFT files, keyed by target-set signature and checked against the adapter's version).
 * Precision: `'exact'` (default) stores float16 only when every value survives the float32 → float16 →
 * float32 round trip unchanged (adapters shipped as fp16), else float32: nothing changes numerically.
 * `'f16'` always stores float16 (half the bytes to read): each A/B element is then rounded to 11
 * significant bits, relative error ≤ 2^-11 ≈ 4.9e-4 per element (subnormals below 6.1e-5 lose more), so
 * the LoRA delta X·A·B moves by up to about twice that (A and B are both rounded: 8.8e-4 worst
 * relative on a random rank-4 adapter, tests/browser/adapter-feed-pack.test.ts). Unpacking float16 widens to float32 (the graph's LoRA inputs are float32).
 * In IndexedDB the pack's bytes are a Blob (`toStoredPack`: read about 4× faster than an ArrayBuffer value).
 */
import { floatToHalfBits, halfBitsToFloat, halfTable } from '../model/half.ts';
import type { LoraTarget } from '../model/inject-lora.ts';
import type { CpuFeeds, LoraFeed } from './types.ts';

export type FeedPrecision = 'exact' | 'f16';

export interface PackedFeeds {
  /** The adapter version these feeds were made from (StoredAdapterMeta.version). */
  version: string;
  /** targetsSignature of the target set. */
  sig: string;
  rank: number;
  dtype: 'float32' | 'float16';
  /** Graph input names, with dims and element offset into `data`, in packing order. */
  names: string[];
  dims: [number, number][];
  offsets: number[];
  data: ArrayBuffer;
}

const sigs = new WeakMap<readonly LoraTarget[], string>();

/** A short stable id of a target list (names and dims), FNV-1a over its description. */
export function targetsSignature(targets: readonly LoraTarget[]): string {
  let s = sigs.get(targets);
  if (s) return s;
  let h = 0x811c9dc5;
  const text = targets.map((t) => `${t.inputA}:${t.in}:${t.out}`).join(',');
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  s = `${targets.length}.${h.toString(36)}`;
  sigs.set(targets, s);
  return s;
}

// float16 <-> float32: model/half.ts (one implementation for the library).
export { floatToHalfBits as toHalf, halfBitsToFloat as fromHalf };

/** Packs `feeds` (every graph input of `targets`, in target order) for storage. */
export function packFeeds(
  feeds: CpuFeeds,
  targets: readonly LoraTarget[],
  version: string,
  precision: FeedPrecision = 'exact',
): PackedFeeds {
  const names: string[] = [];
  const dims: [number, number][] = [];
  const offsets: number[] = [];
  let n = 0;
  for (const t of targets) {
    for (const name of [t.inputA, t.inputB]) {
      const f = feeds.feeds.get(name);
      if (!f) continue;
      names.push(name);
      dims.push([f.dims[0], f.dims[1]]);
      offsets.push(n);
      n += f.data.length;
    }
  }
  const half = new Uint16Array(n);
  let exact = true;
  let o = 0;
  const table = halfTable();
  for (const name of names) {
    const d = feeds.feeds.get(name)!.data;
    for (let i = 0; i < d.length; i++) {
      const h = floatToHalfBits(d[i]!);
      half[o++] = h;
      if (exact && table[h] !== d[i] && !(Number.isNaN(d[i]!) && Number.isNaN(table[h]!))) exact = false;
    }
  }
  const useHalf = precision === 'f16' || exact;
  let data: ArrayBuffer;
  if (useHalf) data = half.buffer;
  else {
    const all = new Float32Array(n);
    names.forEach((name, i) => {
      all.set(feeds.feeds.get(name)!.data, offsets[i]!);
    });
    data = all.buffer;
  }
  return {
    version,
    sig: targetsSignature(targets),
    rank: feeds.rank,
    dtype: useHalf ? 'float16' : 'float32',
    names,
    dims,
    offsets,
    data,
  };
}

/**
 * A pack as the store keeps it in IndexedDB: `data` as a Blob. Chromium 156 reads a 9.8 MB Blob value
 * (get + `arrayBuffer()`) in 12 ms where the same bytes as an ArrayBuffer value take 51 ms (4.9 MB: 9
 * against 19 ms; bench/README.md, swap suite). Packs written before this change hold an ArrayBuffer,
 * which `fromStoredPack` still takes.
 */
export type StoredPack = Omit<PackedFeeds, 'data'> & { data: Blob | ArrayBuffer };

export function toStoredPack(p: PackedFeeds): StoredPack {
  return { ...p, data: new Blob([p.data]) };
}

export async function fromStoredPack(s: StoredPack): Promise<PackedFeeds> {
  return s.data instanceof Blob ? { ...s, data: await s.data.arrayBuffer() } : { ...s, data: s.data };
}

/** float16 pack data widened to float32 (model/half.ts's table: exact). The table loop beat
 * `new Float32Array(new Float16Array(data))` in Chromium 156 (5.4 against 7.5 ms for 2.4M values). */
export function widenHalves(data: ArrayBuffer): Float32Array {
  const h = new Uint16Array(data);
  const table = halfTable();
  const all = new Float32Array(h.length);
  for (let i = 0; i < h.length; i++) all[i] = table[h[i]!]!;
  return all;
}

/** The feeds of a pack: views into its buffer (float32), or one widened float32 buffer (float16). */
export function unpackFeeds(p: PackedFeeds): CpuFeeds {
  const all = p.dtype === 'float32' ? new Float32Array(p.data) : widenHalves(p.data);
  const feeds = new Map<string, LoraFeed>();
  p.names.forEach((name, i) => {
    const [a, b] = p.dims[i]!;
    feeds.set(name, { data: all.subarray(p.offsets[i]!, p.offsets[i]! + a * b), dims: [a, b] });
  });
  return { rank: p.rank, feeds };
}
