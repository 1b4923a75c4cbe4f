// Packed adapter feeds (src/adapters/feed-pack.ts) and their place in the store (store.ts
// loadPackedFeeds) on real IndexedDB in Chromium: the float16 conversions agree with Chromium's own
// Float16Array on every bit pattern (an independent implementation), 'exact' packing changes no value,
// 'f16' packing stays within its stated error, and the stored pack is keyed by target set and version and
// dropped by overwrite, rename and delete — a stale pack is never served.
import { createStore, keys } from 'idb-keyval';
import { afterAll, describe, expect, it } from 'vitest';
import { fromHalf, packFeeds, toHalf, unpackFeeds } from '../../src/adapters/feed-pack.ts';
import { importPeftAdapter } from '../../src/adapters/import.ts';
import { buildPeftFiles } from '../../src/adapters/peft-writer.ts';
import { createAdapterProvider } from '../../src/adapters/provider.ts';
import { AdapterStore } from '../../src/adapters/store.ts';
import type { CpuFeeds } from '../../src/adapters/types.ts';
import type { LoraTarget } from '../../src/model/inject-lora.ts';
import { rng } from '../helpers/rng.ts';
import { MODEL, modelTargets } from '../unit/adapters/model-targets.ts';
import { setupOrt } from './helpers/model.ts';

const ort = setupOrt();
const DB = `weblora-test-pack-${Date.now()}`;
const targets = MODEL.targets as LoraTarget[];

function adapterFiles(seed: number, r = 4, round?: (x: number) => number) {
  const rand = rng(seed);
  const fill = (n: number, scale: number) =>
    Float32Array.from({ length: n }, () => {
      const x = rand() * scale;
      return round ? round(x) : x;
    });
  return buildPeftFiles({
    baseModel: MODEL.id,
    r,
    loraAlpha: r, // scale 1: the stored B is the feed B, so 'exact' f16 detection sees the written values
    modules: targets.map((t) => ({
      layer: t.layer,
      module: t.module,
      in: t.in,
      out: t.out,
      A: fill(r * t.in, 0.1),
      B: fill(t.out * r, 0.01),
    })),
  });
}

async function save(
  store: AdapterStore,
  name: string,
  seed: number,
  overwrite = false,
  round?: (x: number) => number,
) {
  const f = adapterFiles(seed, 4, round);
  const imported = importPeftAdapter(
    { config: f['adapter_config.json'], weights: f['adapter_model.safetensors'] },
    MODEL,
  );
  return store.save(name, imported, MODEL.id, { overwrite });
}

async function packedSoon(store: AdapterStore, name: string, t: readonly LoraTarget[]) {
  for (let i = 0; i < 50; i++) {
    const got = await store.loadPackedFeeds(name, t);
    if (got.packed) return got;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`no pack of ${name} was written`);
}

function expectSameFeeds(a: CpuFeeds, b: CpuFeeds): void {
  expect(a.rank).toBe(b.rank);
  expect([...a.feeds.keys()]).toEqual([...b.feeds.keys()]);
  for (const [k, f] of a.feeds) {
    expect(f.dims).toEqual(b.feeds.get(k)!.dims);
    expect(f.data).toEqual(b.feeds.get(k)!.data);
  }
}

const raw = createStore(DB, 'adapters');
const feedKeys = async (name: string) =>
  (await keys(raw)).filter((k) => Array.isArray(k) && k[0] === 'feeds' && k[1] === name);

describe('float16 conversion', () => {
  it('toHalf and fromHalf equal Chromium Float16Array on every half and on 100k float32 values', () => {
    const F16 = (globalThis as unknown as { Float16Array?: Float32ArrayConstructor }).Float16Array;
    expect(F16, 'Chromium 156 has Float16Array').toBeDefined();
    const bits = new Uint16Array(65536).map((_, i) => i);
    const native = new F16!(bits.buffer);
    for (let h = 0; h < 65536; h++) {
      const want = native[h]!;
      if (Number.isNaN(want)) expect(Number.isNaN(fromHalf(h))).toBe(true);
      else expect(fromHalf(h)).toBe(want);
    }
    const rand = rng(7);
    const one = new F16!(1);
    const oneBits = new Uint16Array(one.buffer);
    const xs = [0, -0, 1, -1, 65504, 65520, 1e6, -1e6, 6.1e-5, 5.96e-8, 2.98e-8, 1e-9, 2049, 2051, Infinity];
    for (let i = 0; i < 100_000; i++) xs.push(rand() * 2 ** Math.floor(rand() * 40 - 25));
    // Feeds are float32: convert float32 values (a double would be rounded twice through toHalf's float32).
    for (const x of xs.map(Math.fround)) {
      one[0] = x;
      expect(toHalf(x), `toHalf(${x})`).toBe(oneBits[0]);
    }
  });
});

describe('packFeeds', () => {
  const store = new AdapterStore({ dbName: DB });

  it("'exact' keeps float32 values as they are, and float16-representable ones as float16", async () => {
    await save(store, 'f32', 1);
    await save(store, 'halfable', 2, false, (x) => fromHalf(toHalf(x)));
    const f32 = (await store.loadFeeds('f32', targets)).feeds;
    const p32 = packFeeds(f32, targets, 'v');
    expect(p32.dtype).toBe('float32');
    expectSameFeeds(unpackFeeds(p32), f32);
    const half = (await store.loadFeeds('halfable', targets)).feeds;
    const p16 = packFeeds(half, targets, 'v');
    expect(p16.dtype).toBe('float16');
    expect(p16.data.byteLength * 2).toBe(p32.data.byteLength);
    expectSameFeeds(unpackFeeds(p16), half);
  });

  it("'f16' rounds each element within 2^-11 relative, and moves X·A·B by less than 1e-3 relative", async () => {
    const feeds = (await store.loadFeeds('f32', targets)).feeds;
    const back = unpackFeeds(packFeeds(feeds, targets, 'v', 'f16'));
    let worstElem = 0;
    for (const [k, f] of feeds.feeds) {
      const g = back.feeds.get(k)!.data;
      for (let i = 0; i < f.data.length; i++) {
        if (Math.abs(f.data[i]!) < 6.2e-5) continue; // float16 subnormals: absolute error ≤ 2^-25
        worstElem = Math.max(worstElem, Math.abs(g[i]! - f.data[i]!) / Math.abs(f.data[i]!));
      }
    }
    expect(worstElem).toBeLessThanOrEqual(2 ** -11);
    // The LoRA delta of one random activation row through every target.
    const rand = rng(3);
    let worstDelta = 0;
    for (const t of targets) {
      const x = Float32Array.from({ length: t.in }, () => rand());
      const delta = (f: CpuFeeds) => {
        const A = f.feeds.get(t.inputA)!; // (in, R)
        const B = f.feeds.get(t.inputB)!; // (R, out)
        const R = A.dims[1];
        const xa = new Float64Array(R);
        for (let i = 0; i < t.in; i++) for (let r = 0; r < R; r++) xa[r]! += x[i]! * A.data[i * R + r]!;
        const y = new Float64Array(t.out);
        for (let r = 0; r < R; r++) for (let o = 0; o < t.out; o++) y[o]! += xa[r]! * B.data[r * t.out + o]!;
        return y;
      };
      const want = delta(feeds);
      const got = delta(back);
      let maxY = 0;
      let maxD = 0;
      for (let o = 0; o < t.out; o++) {
        maxY = Math.max(maxY, Math.abs(want[o]!));
        maxD = Math.max(maxD, Math.abs(got[o]! - want[o]!));
      }
      worstDelta = Math.max(worstDelta, maxD / maxY);
    }
    console.log(
      `f16 feeds: worst element rel err ${worstElem.toExponential(2)}, worst X·A·B rel err ${worstDelta.toExponential(2)}`,
    );
    expect(worstDelta).toBeLessThan(1e-3);
  });
});

describe('AdapterStore.loadPackedFeeds', () => {
  const store = new AdapterStore({ dbName: DB });
  afterAll(async () => {
    for (const a of await store.list()) await store.delete(a.name);
  });

  it('parses first, then serves the stored pack with identical feeds', async () => {
    await save(store, 'a', 11);
    const first = await store.loadPackedFeeds('a', targets);
    expect(first.packed).toBe(false);
    const again = await packedSoon(store, 'a', targets);
    expect(again.meta.version).toBe(first.meta.version);
    expectSameFeeds(again.feeds, (await store.loadFeeds('a', targets)).feeds);
    expect(await feedKeys('a')).toHaveLength(1);
  });

  it('keys packs by target set', async () => {
    const fewer = [...modelTargets()].reverse(); // another signature, the same modules
    expect((await store.loadPackedFeeds('a', fewer)).packed).toBe(false);
    const p = await packedSoon(store, 'a', fewer);
    expectSameFeeds(p.feeds, (await store.loadFeeds('a', fewer)).feeds);
    expect(await feedKeys('a')).toHaveLength(2);
  });

  it('never serves a pack of an older version: overwrite drops it', async () => {
    await save(store, 'a', 12, true);
    expect(await feedKeys('a')).toHaveLength(0);
    const got = await store.loadPackedFeeds('a', targets);
    expect(got.packed).toBe(false);
    expectSameFeeds(got.feeds, (await store.loadFeeds('a', targets)).feeds);
    await packedSoon(store, 'a', targets);
  });

  it('rename and delete drop the packs', async () => {
    expect(await feedKeys('a')).toHaveLength(1);
    await store.rename('a', 'b');
    expect(await feedKeys('a')).toHaveLength(0);
    expect((await store.loadPackedFeeds('b', targets)).packed).toBe(false);
    await packedSoon(store, 'b', targets);
    await store.delete('b');
    expect(await feedKeys('b')).toHaveLength(0);
  });

  it('the provider swaps cold from the pack: same tensors as from the files', async () => {
    await save(store, 'c', 13);
    const p = createAdapterProvider({ store, ort, budgetBytes: 1 << 30 });
    const fromFiles = await p.feedsFor('c', targets);
    const want = Object.fromEntries(
      Object.entries(fromFiles!.feeds).map(([k, t]) => [k, (t.data as Float32Array).slice()]),
    );
    fromFiles!.release();
    await packedSoon(store, 'c', targets);
    p.forget('c');
    const fromPack = await p.feedsFor('c', targets);
    for (const [k, t] of Object.entries(fromPack!.feeds)) expect(t.data).toEqual(want[k]);
    fromPack!.release();
    expect(p.stats().uploads).toBe(2);
  });
});
