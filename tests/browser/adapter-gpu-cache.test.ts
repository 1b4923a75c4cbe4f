// The GPU adapter cache and provider on onnxruntime-web's own GPUDevice (WebGPU on SwiftShader): a cold
// adapter is uploaded once (one writeBuffer per graph input), a hot hit uploads nothing, LRU eviction keeps
// the byte budget and destroys buffers (not while a run uses them), GPU data read back equals the CPU
// feeds, and the LoRA-injected default model gives the same logits fed from GPU buffers as from CPU
// tensors — for adapters of different ranks (4, 8) and a mix (12) in one session. "No adapter" is the
// provider's null (nothing cached or uploaded) and the engine's noAdapterFeeds give the base output.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdapterCpuCache, AdapterGpuCache, readBuffer } from '../../src/adapters/gpu-cache.ts';
import type { AdapterModelInfo } from '../../src/adapters/import.ts';
import { mixFeeds } from '../../src/adapters/mix.ts';
import { type AdapterProvider, createAdapterProvider } from '../../src/adapters/provider.ts';
import { AdapterStore } from '../../src/adapters/store.ts';
import type { AdapterFeeds, AdapterSelection, CpuFeeds } from '../../src/adapters/types.ts';
import { noAdapterFeeds } from '../../src/engine/load.ts';
import { createDecoderSession, type DecoderGraph, KvStepper } from '../../src/engine/session.ts';
import { AdapterNotFoundError } from '../../src/errors.ts';
import { injectLora, type LoraTarget } from '../../src/model/inject-lora.ts';
import { decodeModel, encodeModel } from '../../src/model/onnx-io.ts';
import { expectClose, type Tolerance } from '../helpers/expect-close.ts';
import { loadPackage, PROMPT, setupOrt } from './helpers/model.ts';

/**
 * Same session, same graph, only the location of the A/B inputs differs (GPU buffer vs CPU tensor
 * uploaded by ORT): the kernels are identical, so logits should agree to float32 noise; 1e-5 is the
 * SAME_GRAPH bound of expect-close.ts.
 */
const SAME_RUN: Tolerance = { atol: 1e-5, rtol: 1e-5 };
const DB = `weblora-test-gpu-cache-${Date.now()}`;

const ort = setupOrt();
let session: DecoderGraph;
let device: GPUDevice;
let targets: LoraTarget[];
let store: AdapterStore;
let ids: number[];

async function bytes(url: string): Promise<Uint8Array> {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

/** Counts `device.queue.writeBuffer` calls (from anyone) while `f` runs. */
async function countWrites<T>(f: () => Promise<T>): Promise<{ value: T; writes: number }> {
  const q = device.queue;
  const orig = q.writeBuffer;
  let writes = 0;
  q.writeBuffer = function (this: GPUQueue, ...args: Parameters<GPUQueue['writeBuffer']>) {
    writes++;
    return orig.apply(this, args);
  } as GPUQueue['writeBuffer'];
  try {
    return { value: await f(), writes };
  } finally {
    q.writeBuffer = orig;
  }
}

function cpuTensors(f: CpuFeeds): Record<string, ReturnType<typeof tensorOf>> {
  return Object.fromEntries([...f.feeds].map(([k, v]) => [k, tensorOf(v.data, v.dims)]));
}
const tensorOf = (data: Float32Array, dims: number[]) => new ort.Tensor('float32', data, dims);

async function logits(feeds: Record<string, InstanceType<typeof ort.Tensor>>): Promise<Float32Array> {
  const stepper = new KvStepper(ort, session, feeds);
  try {
    return await stepper.step(ids, { allLogits: true });
  } finally {
    stepper.dispose();
  }
}

/** The provider's feeds for an adapter selection (never "no adapter" here). */
async function feedsOf(p: AdapterProvider, sel: AdapterSelection): Promise<AdapterFeeds> {
  const f = await p.feedsFor(sel, targets);
  expect(f, `feeds for ${JSON.stringify(sel)}`).not.toBeNull();
  return f!;
}

beforeAll(async () => {
  const { pkg, tok } = await loadPackage('fp32');
  ids = tok.encode(PROMPT).slice(0, 8);
  const injected = injectLora(decodeModel(pkg.model));
  targets = injected.targets;
  session = await createDecoderSession(ort, encodeModel(injected.model), pkg.config, { backend: 'webgpu' });
  device = (await ort.env.webgpu.device) as GPUDevice;
  store = new AdapterStore({ dbName: DB });
  const model: AdapterModelInfo = { id: 'weblora-shakespeare', aliases: ['model'], targets };
  for (const [name, dir] of [
    ['plain', 'peft-adapter'],
    ['rslora', 'peft-adapter-rslora'],
  ]) {
    const base = `/tests/fixtures/${dir}/`;
    await store.import(
      name!,
      {
        config: await bytes(`${base}adapter_config.json`),
        weights: await bytes(`${base}adapter_model.safetensors`),
      },
      model,
    );
  }
});

afterAll(async () => {
  await session?.session.release();
  await new Promise((res) => {
    const r = indexedDB.deleteDatabase(DB);
    r.onsuccess = r.onerror = r.onblocked = res;
  });
});

describe('AdapterGpuCache through the provider', () => {
  let provider: AdapterProvider;
  beforeAll(() => {
    provider = createAdapterProvider({ store, device, budgetBytes: 64 << 20, ort });
  });

  it('the device is the one the WebGPU session runs on', () => {
    expect(provider.cache).toBeInstanceOf(AdapterGpuCache);
    expect((provider.cache as AdapterGpuCache).device).toBe(device);
  });

  it('cold miss uploads once (one writeBuffer per input), hot hit uploads nothing', async () => {
    const cache = provider.cache as AdapterGpuCache;
    const cold = await countWrites(() => feedsOf(provider, 'plain'));
    expect(cold.writes).toBe(2 * targets.length);
    expect(cache.stats).toMatchObject({ misses: 1, uploads: 1, writeBufferCalls: 2 * targets.length });
    cold.value.release();
    for (let i = 0; i < 3; i++) {
      const hot = await countWrites(() => feedsOf(provider, 'plain'));
      expect(hot.writes).toBe(0);
      expect(hot.value.feeds).toBe(cold.value.feeds);
      hot.value.release();
    }
    expect(cache.stats).toMatchObject({ hits: 3, uploads: 1 });
    const feeds = cold.value.feeds;
    expect(feeds[targets[0]!.inputA]!.location).toBe('gpu-buffer');
    expect(feeds[targets[0]!.inputA]!.dims).toEqual([targets[0]!.in, 4]);
    expect(cache.bytesHeld).toBeGreaterThanOrEqual(cache.stats.uploadedBytes);
  });

  it('GPU data read back equals the CPU feeds', async () => {
    const { feeds } = await store.loadFeeds('rslora', targets);
    const got = await feedsOf(provider, 'rslora');
    try {
      for (const [name, f] of feeds.feeds) {
        const t = got.feeds[name]!;
        expect(t.dims).toEqual(f.dims);
        expect((await t.getData()) as Float32Array).toEqual(f.data);
      }
    } finally {
      got.release();
    }
  });

  it('no adapter, rank 4, rank 8 and a rank-12 mix run in one session; GPU-fed logits equal CPU-fed', async () => {
    const plain = (await store.loadFeeds('plain', targets)).feeds;
    const rs = (await store.loadFeeds('rslora', targets)).feeds;
    const mix = [
      { name: 'plain', weight: 0.5 },
      { name: 'rslora', weight: -1.5 },
    ];
    const cases: [string, Parameters<AdapterProvider['feedsFor']>[0], CpuFeeds][] = [
      ['plain', 'plain', plain],
      ['rslora', 'rslora', rs],
      [
        'mix',
        mix,
        mixFeeds(
          [
            { feeds: plain, weight: 0.5 },
            { feeds: rs, weight: -1.5 },
          ],
          targets,
        ),
      ],
    ];
    // No adapter: the provider answers null (nothing cached, nothing uploaded); the engine's
    // noAdapterFeeds (rank-1 zero GPU buffers on webgpu, see load.ts) give the base output, bit-identical
    // to the same zeros fed as CPU tensors.
    const none = await countWrites(() => provider.feedsFor(null, targets));
    expect(none.writes).toBe(0);
    expect(none.value).toBeNull();
    expect(await provider.feedsFor([], targets)).toBeNull();
    expect(await provider.feedsFor([{ name: 'plain', weight: 0 }], targets)).toBeNull();
    const off = noAdapterFeeds(ort, targets, device);
    let base: Float32Array;
    try {
      const a0 = off.feeds[targets[0]!.inputA]!;
      expect(a0.dims).toEqual([targets[0]!.in, 1]);
      expect(a0.location).toBe('gpu-buffer');
      const b0 = await readBuffer(device, off.feeds[targets[0]!.inputB]!.gpuBuffer, targets[0]!.out);
      expect(Array.from(b0).every((x) => x === 0)).toBe(true);
      base = await logits(off.feeds);
    } finally {
      off.dispose();
    }
    const cpuZero = Object.fromEntries(
      targets.flatMap((t) => [
        [t.inputA, tensorOf(new Float32Array(t.in), [t.in, 1])],
        [t.inputB, tensorOf(new Float32Array(t.out), [1, t.out])],
      ]),
    );
    expect(await logits(cpuZero)).toEqual(base);
    for (const [what, sel, cpu] of cases) {
      const gpu = await feedsOf(provider, sel);
      const fromGpu = await logits(gpu.feeds);
      gpu.release();
      const fromCpu = await logits(cpuTensors(cpu));
      expectClose(fromGpu, fromCpu, SAME_RUN, `${what}: GPU-fed vs CPU-fed logits`);
      let diff = 0;
      for (let i = 0; i < base.length; i++) diff = Math.max(diff, Math.abs(fromGpu[i]! - base[i]!));
      expect(diff, `${what} changes the logits`).toBeGreaterThan(1e-2);
    }
    const again = await countWrites(() => feedsOf(provider, mix));
    expect(again.writes).toBe(0);
    expect(again.value.feeds[targets[0]!.inputA]!.dims).toEqual([targets[0]!.in, 12]);
    again.value.release();
  });

  it('unknown names fail with AdapterNotFoundError; forget() drops an adapter and its mixes', async () => {
    await expect(provider.feedsFor('nope', targets)).rejects.toBeInstanceOf(AdapterNotFoundError);
    const before = provider.cache.size;
    provider.forget('rslora');
    expect(provider.cache.size).toBe(before - 2);
    expect(provider.cache.keys().some((k) => k.includes('rslora'))).toBe(false);
  });
});

describe('LRU eviction under a byte budget', () => {
  it('evicts least recently used entries, destroys their buffers, never while pinned', async () => {
    const plainBytes = 4 * 4 * targets.reduce((s, t) => s + t.in + t.out, 0); // rank 4, f32
    const destroyed: GPUBuffer[] = [];
    const proto = GPUBuffer.prototype;
    const destroy = proto.destroy;
    proto.destroy = function (this: GPUBuffer) {
      destroyed.push(this);
      return destroy.call(this);
    };
    try {
      // Room for the rank-4 adapter (plus 16-byte alignment slack) but not for it and rank 8 together.
      const provider = createAdapterProvider({
        store,
        device,
        budgetBytes: plainBytes + 16 * 2 * targets.length,
        ort,
      });
      const cache = provider.cache as AdapterGpuCache;
      const a = await feedsOf(provider, 'plain');
      expect(cache.bytesHeld).toBeGreaterThanOrEqual(plainBytes);
      expect(cache.bytesHeld).toBeLessThanOrEqual(cache.budgetBytes);
      const b = await feedsOf(provider, 'rslora'); // over budget, but 'plain' is pinned
      expect(cache.size).toBe(1 + 1);
      expect(cache.stats.evictions).toBe(0);
      a.release(); // now 'plain' (least recent, unpinned) goes
      expect(cache.stats.evictions).toBe(1);
      expect(destroyed.length).toBe(2 * targets.length);
      expect(cache.keys().every((k) => k.startsWith('a:rslora'))).toBe(true);
      b.release(); // 'rslora' alone exceeds the budget: evicted once unpinned
      expect(cache.size).toBe(0);
      expect(cache.bytesHeld).toBe(0);
      const again = await countWrites(() => feedsOf(provider, 'plain'));
      expect(again.writes).toBe(2 * targets.length); // cold again after eviction
      again.value.release();
      provider.dispose();
      expect(cache.bytesHeld).toBe(0);
    } finally {
      proto.destroy = destroy;
    }
  });
});

describe('AdapterCpuCache (wasm sessions)', () => {
  it('returns ordinary CPU tensors equal to the feeds, cached by key', async () => {
    const provider = createAdapterProvider({ store, budgetBytes: 8 << 20, ort });
    expect(provider.cache).toBeInstanceOf(AdapterCpuCache);
    const { feeds } = await store.loadFeeds('plain', targets);
    const a = await feedsOf(provider, 'plain');
    const b = await feedsOf(provider, 'plain');
    expect(b.feeds).toBe(a.feeds);
    for (const [k, f] of feeds.feeds) {
      expect(a.feeds[k]!.location).toBe('cpu');
      expect(a.feeds[k]!.data).toEqual(f.data);
    }
    a.release();
    b.release();
    expect(provider.cache.bytesHeld).toBe(4 * 4 * targets.reduce((s, t) => s + t.in + t.out, 0));
  });
});
