// The webgpu cold swap path end to end on real IndexedDB and a real GPUDevice (SwiftShader): the store
// keeps the packed feeds as a Blob (feed-pack.ts toStoredPack; a pack written before, with an ArrayBuffer,
// still loads), the provider's cold swap from the pack uploads exactly the adapter's factors (every GPU
// value read back bit-identical to the PEFT-mapped feeds of `store.loadFeeds`; for an 'f16' store, to
// their float16 rounding, itself within 2^-11 relative), one upload and one `writeBuffer` per graph
// input per cold swap, none per hot swap. Also the swap suite's float16 unpack kernel
// (bench/swap-ways.ts), measured there as an alternative: bit-exact against model/half.ts on every half.
import { createStore, get, set } from 'idb-keyval';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uploadPackF16 } from '../../bench/swap-ways.ts';
import { type StoredPack, targetsSignature, toHalf } from '../../src/adapters/feed-pack.ts';
import { type AdapterGpuCache, readBuffer } from '../../src/adapters/gpu-cache.ts';
import { importPeftAdapter } from '../../src/adapters/import.ts';
import { buildPeftFiles } from '../../src/adapters/peft-writer.ts';
import { type AdapterProvider, createAdapterProvider } from '../../src/adapters/provider.ts';
import { AdapterStore } from '../../src/adapters/store.ts';
import type { CpuFeeds } from '../../src/adapters/types.ts';
import { halfTable } from '../../src/model/half.ts';
import type { LoraTarget } from '../../src/model/inject-lora.ts';
import { rng } from '../helpers/rng.ts';
import { MODEL } from '../unit/adapters/model-targets.ts';
import { setupOrt } from './helpers/model.ts';

const ort = setupOrt();
const DB = `weblora-test-gpu-upload-${Date.now()}`;
const DB16 = `${DB}-f16`;
const targets = MODEL.targets as LoraTarget[];
const sig = targetsSignature(targets);
let device: GPUDevice;

beforeAll(async () => {
  const adapter = await navigator.gpu.requestAdapter();
  expect(adapter, 'WebGPU adapter (SwiftShader)').not.toBeNull();
  device = await adapter!.requestDevice();
});
afterAll(() => device?.destroy());

/** A rank-4 adapter on every target; `round` maps each factor (e.g. to a float16 value). */
async function save(store: AdapterStore, name: string, seed: number, round?: (x: number) => number) {
  const rand = rng(seed);
  const fill = (n: number, scale: number) =>
    Float32Array.from({ length: n }, () => (round ? round(rand() * scale) : rand() * scale));
  const f = buildPeftFiles({
    baseModel: MODEL.id,
    r: 4,
    loraAlpha: 4, // scale 1: the stored B is the fed B, so f16-exact factors stay f16-exact
    modules: targets.map((t) => ({
      layer: t.layer,
      module: t.module,
      in: t.in,
      out: t.out,
      A: fill(4 * t.in, 0.1),
      B: fill(t.out * 4, 0.01),
    })),
  });
  const imported = importPeftAdapter(
    { config: f['adapter_config.json'], weights: f['adapter_model.safetensors'] },
    MODEL,
  );
  await store.save(name, imported, MODEL.id);
}

async function packedSoon(store: AdapterStore, name: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if ((await store.loadPackedFeeds(name, targets)).packed) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`no pack of ${name} was written`);
}

/** Counts `device.queue.writeBuffer` and `device.createBuffer` calls while `f` runs. */
async function countWrites<T>(f: () => Promise<T>): Promise<{ value: T; writes: number; creates: number }> {
  const q = device.queue;
  const orig = q.writeBuffer;
  const origCreate = device.createBuffer;
  let writes = 0;
  let creates = 0;
  q.writeBuffer = function (this: GPUQueue, ...args: Parameters<GPUQueue['writeBuffer']>) {
    writes++;
    return orig.apply(this, args);
  } as GPUQueue['writeBuffer'];
  device.createBuffer = function (this: GPUDevice, ...args: Parameters<GPUDevice['createBuffer']>) {
    creates++;
    return origCreate.apply(this, args);
  } as GPUDevice['createBuffer'];
  try {
    const value = await f();
    return { value, writes, creates };
  } finally {
    q.writeBuffer = orig;
    device.createBuffer = origCreate;
  }
}

const bits = (x: Float32Array): Uint32Array => new Uint32Array(x.buffer, x.byteOffset, x.length);

/**
 * Forget → cold swap (from the pack) → read every GPU buffer back; checks the counters of a cold and a
 * hot swap. The forgotten entry's buffers (same shapes) are reused: no createBuffer. Returns name →
 * values fed.
 */
async function coldSwapValues(p: AdapterProvider, name: string): Promise<Map<string, Float32Array>> {
  p.forget(name);
  const s0 = p.stats();
  const { writeBufferCalls: w0, reusedBuffers: r0 } = p.cache.stats;
  const cold = await countWrites(() => p.feedsFor(name, targets));
  const f = cold.value!;
  const inputs = Object.keys(f.feeds).length;
  expect(inputs).toBe(2 * targets.length);
  expect(cold.writes).toBe(inputs);
  expect(cold.creates).toBe(0);
  expect(p.stats()).toMatchObject({ uploads: s0.uploads + 1, misses: s0.misses + 1 });
  expect(p.cache.stats.writeBufferCalls - w0).toBe(inputs);
  expect(p.cache.stats.reusedBuffers - r0).toBe(inputs);
  const out = new Map<string, Float32Array>();
  for (const [k, t] of Object.entries(f.feeds)) {
    expect(t.location).toBe('gpu-buffer');
    out.set(k, await readBuffer(device, t.gpuBuffer as GPUBuffer, t.dims[0]! * t.dims[1]!));
  }
  f.release();
  const hot = await countWrites(() => p.feedsFor(name, targets));
  hot.value!.release();
  expect(hot.writes).toBe(0);
  expect(hot.creates).toBe(0);
  expect(p.stats()).toMatchObject({ uploads: s0.uploads + 1, hits: s0.hits + 1 });
  return out;
}

function expectBitsEqual(got: Map<string, Float32Array>, want: CpuFeeds): void {
  expect([...got.keys()].sort()).toEqual([...want.feeds.keys()].sort());
  for (const [k, f] of want.feeds) expect(bits(got.get(k)!), k).toEqual(bits(f.data));
}

describe('webgpu cold swap from the stored pack', () => {
  const store = new AdapterStore({ dbName: DB });
  const store16 = new AdapterStore({ dbName: DB16, feedPrecision: 'f16' });
  const raw = createStore(DB, 'adapters');
  const raw16 = createStore(DB16, 'adapters');
  let p: AdapterProvider;
  let p16: AdapterProvider;

  beforeAll(async () => {
    await save(store, 'f32', 21);
    await save(store, 'half', 22, (x) => halfTable()[toHalf(x)]!);
    await save(store16, 'f32', 21);
    p = createAdapterProvider({ store, ort, device, budgetBytes: 1 << 30 });
    p16 = createAdapterProvider({ store: store16, ort, device, budgetBytes: 1 << 30 });
    // The first swap parses the PEFT files and writes the pack in the background.
    for (const [prov, st, name] of [
      [p, store, 'f32'],
      [p, store, 'half'],
      [p16, store16, 'f32'],
    ] as const) {
      (await prov.feedsFor(name, targets))!.release();
      await packedSoon(st, name);
    }
  });
  afterAll(async () => {
    p?.dispose();
    p16?.dispose();
    for (const s of [store, store16]) for (const a of await s.list()) await s.delete(a.name);
  });

  it('stores the pack as a Blob, float32 or float16 as feedPrecision says', async () => {
    const dtypeOf = async (s: typeof raw, name: string) => {
      const v = (await get(['feeds', name, sig], s)) as StoredPack;
      expect(v.data).toBeInstanceOf(Blob);
      return v.dtype;
    };
    expect(await dtypeOf(raw, 'f32')).toBe('float32');
    expect(await dtypeOf(raw, 'half')).toBe('float16'); // every factor is a float16 value: lossless
    expect(await dtypeOf(raw16, 'f32')).toBe('float16');
  });

  it("'exact' packs: the GPU holds the PEFT-mapped factors bit for bit (float32 and float16 packs)", async () => {
    for (const name of ['f32', 'half']) {
      expectBitsEqual(await coldSwapValues(p, name), (await store.loadFeeds(name, targets)).feeds);
    }
  });

  it("an 'f16' pack: the GPU holds the factors' float16 rounding bit for bit, within 2^-11 relative", async () => {
    const got = await coldSwapValues(p16, 'f32');
    const want = (await store16.loadFeeds('f32', targets)).feeds;
    const table = halfTable();
    let worst = 0;
    for (const [k, f] of want.feeds) {
      const g = got.get(k)!;
      const rounded = Float32Array.from(f.data, (x) => table[toHalf(x)]!);
      expect(bits(g), k).toEqual(bits(rounded));
      for (let i = 0; i < f.data.length; i++) {
        const x = f.data[i]!;
        // Normal halves: relative 2^-11; below 2^-14 (subnormal) the step is 2^-24, half of it absolute.
        const bound = Math.abs(x) >= 2 ** -14 ? 2 ** -11 * Math.abs(x) : 2 ** -25;
        expect(Math.abs(g[i]! - x)).toBeLessThanOrEqual(bound);
        if (x !== 0) worst = Math.max(worst, Math.abs(g[i]! - x) / Math.abs(x));
      }
    }
    expect(worst).toBeGreaterThan(0); // random factors are not float16 values: rounding happened
  });

  it('a pack stored before (data as an ArrayBuffer) still loads and uploads the same values', async () => {
    const key = ['feeds', 'f32', sig];
    const v = (await get(key, raw)) as StoredPack;
    await set(key, { ...v, data: await (v.data as Blob).arrayBuffer() }, raw);
    const legacy = await store.loadPackedFeeds('f32', targets);
    expect(legacy.packed).toBe(true);
    expectBitsEqual(await coldSwapValues(p, 'f32'), (await store.loadFeeds('f32', targets)).feeds);
  });
});

describe('buffer reuse (gpu-pool.ts) under the cache budget', () => {
  const store = new AdapterStore({ dbName: `${DB}-pool` });
  afterAll(async () => {
    for (const a of await store.list()) await store.delete(a.name);
  });

  it('an LRU eviction then a cold swap of a same-shaped adapter creates no buffer; cached + pooled ≤ budget', async () => {
    await save(store, 'a', 31);
    await save(store, 'b', 32);
    await save(store, 'c', 33);
    const one = 4 * 4 * targets.reduce((n, t) => n + t.in + t.out, 0); // rank 4, f32, all 16-byte multiples
    const p = createAdapterProvider({ store, ort, device, budgetBytes: one });
    const cache = p.cache as AdapterGpuCache;
    const inputs = 2 * targets.length;
    const first = await countWrites(() => p.feedsFor('a', targets));
    first.value!.release();
    expect(first.creates).toBe(inputs);
    expect(cache.bytesHeld).toBe(one);
    // 'b' does not fit beside 'a': 'a' is evicted before the upload and its buffers are filled with 'b'.
    const second = await countWrites(() => p.feedsFor('b', targets));
    expect(second.creates).toBe(0);
    expect(cache.stats).toMatchObject({ evictions: 1, reusedBuffers: inputs, uploads: 2 });
    expect(cache.keys()).toEqual([expect.stringMatching(/^a:b@/)]);
    const got = new Map<string, Float32Array>();
    for (const [k, t] of Object.entries(second.value!.feeds)) {
      got.set(k, await readBuffer(device, t.gpuBuffer as GPUBuffer, t.dims[0]! * t.dims[1]!));
    }
    expectBitsEqual(got, (await store.loadFeeds('b', targets)).feeds); // nothing of 'a' left
    second.value!.release();
    expect(cache.bytesHeld + cache.pooledBytes).toBeLessThanOrEqual(one);
    // While 'b' is in use nothing can be evicted: 'c' creates its buffers. Releasing 'b' evicts it, and
    // with 'c' filling the budget its buffers are destroyed, not pooled.
    const b = await p.feedsFor('b', targets);
    const c = await countWrites(() => p.feedsFor('c', targets));
    expect(c.creates).toBe(inputs);
    expect(cache.bytesHeld).toBe(2 * one);
    b!.release();
    c.value!.release();
    expect(cache.keys()).toEqual([expect.stringMatching(/^a:c@/)]);
    expect(cache.bytesHeld).toBe(one);
    expect(cache.pooledBytes).toBe(0);
    p.dispose();
    expect(cache.bytesHeld + cache.pooledBytes).toBe(0);
  });

  it('clear() leaves no pooled buffer; an entry in use at clear() is destroyed on release, not pooled', async () => {
    const p = createAdapterProvider({ store, ort, device, budgetBytes: 1 << 30 });
    const cache = p.cache as AdapterGpuCache;
    (await p.feedsFor('a', targets))!.release();
    p.forget('a');
    expect(cache.pooledBytes).toBeGreaterThan(0);
    const inUse = await p.feedsFor('b', targets);
    p.dispose();
    expect(cache.pooledBytes).toBe(0);
    inUse!.release();
    expect(cache.pooledBytes).toBe(0);
    expect(cache.bytesHeld).toBe(0);
  });
});

describe('bench/swap-ways.ts uploadPackF16 (the compute-pass widening measured in the swap suite)', () => {
  it('widens every binary16 pattern bit-exactly, including an odd tail, into the right buffers', async () => {
    const halves = new Uint16Array(65536 + 7).map((_, i) => (i < 65536 ? i : 0x3c00 + i)); // 7 more: 1.0…
    const a = 65536 + 3; // first input, odd length: the second starts mid-word
    const up = uploadPackF16(
      device,
      {
        version: 'v',
        sig: 's',
        rank: 1,
        dtype: 'float16',
        names: ['x', 'y'],
        dims: [
          [a, 1],
          [1, 4],
        ],
        offsets: [0, a],
        data: halves.buffer,
      },
      'test',
    );
    expect(up.inputs.map((i) => i.name)).toEqual(['x', 'y']);
    const table = halfTable();
    const want = Float32Array.from(halves, (h) => table[h]!); // NaN → 0x7fc00000, as the kernel writes
    const x = await readBuffer(device, up.inputs[0]!.buffer, a);
    const y = await readBuffer(device, up.inputs[1]!.buffer, 4);
    expect(bits(x)).toEqual(bits(want.subarray(0, a)));
    expect(bits(y)).toEqual(bits(want.subarray(a)));
    for (const i of up.inputs) i.buffer.destroy();
  });
});
