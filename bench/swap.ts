/**
 * The swap suite (`npm run bench -- --suite swap [--model <folder>]`, page side): adapter swap latency
 * at the model's full target set without creating any session (so a 135M model costs seconds, not a
 * SwiftShader decode). The targets come from `injectLora` on the package's ONNX file; a random rank-8
 * adapter on every target is imported into a fresh store and swapped through the engine's provider
 * (`createAdapterProvider`, GPU cache on a WebGPU device for webgpu, CPU tensors for wasm), timed by the
 * inference suite's `measureSwaps` (ours.ts). Three providers: cold swaps parsing the PEFT files
 * (`store.loadFeeds`, what every cold swap did before packs), cold swaps from the packed feeds
 * (`store.loadPackedFeeds`, the default; float32 here, since a random float32 adapter is not float16-
 * exact), and the same with `feedPrecision: 'f16'` (half the bytes read; feed-pack.ts states the error).
 * On webgpu each packed store also gets the phase profile of swap-profile.ts (IndexedDB read, widening,
 * createBuffer, writeBuffer, submit, onSubmittedWorkDone; the engine's upload against swap-ways.ts's).
 */
import * as ortWebgpu from 'onnxruntime-web/webgpu';
import { importPeftAdapter } from '../src/adapters/import.ts';
import { type AdapterProvider, createAdapterProvider } from '../src/adapters/provider.ts';
import { AdapterStore } from '../src/adapters/store.ts';
import type { Ort } from '../src/engine/session.ts';
import { injectLora, type LoraTarget, type PackedLoraMode } from '../src/model/inject-lora.ts';
import { decodeModel } from '../src/model/onnx-io.ts';
import { modelFileName } from '../src/model/package.ts';
import { ADAPTER, measureSwaps, RANK, randomAdapter } from './ours.ts';
import { type ProfileResult, WAYS } from './swap-phases.ts';
import { profileColdSwap } from './swap-profile.ts';
import type { BenchBackend, BenchDtype, BenchModel, SwapResult } from './types.ts';

export interface SwapSuiteOptions {
  backend: BenchBackend;
  dtype: BenchDtype;
  model: BenchModel;
  swaps: number;
  /** `--packed`: how the targets sit on a packed qkv_proj graph; absent = PACKED_LORA_DEFAULT. */
  packed?: PackedLoraMode;
}

export interface SwapSuiteResult {
  suite: 'swap';
  options: SwapSuiteOptions;
  backend: BenchBackend;
  targetCount: number;
  adapterBytes: number;
  /** Cold swaps parse the PEFT files (no packs). */
  files: SwapResult;
  /** Cold swaps read the packed feeds (feedPrecision 'exact'). */
  packed: SwapResult;
  /** As `packed`, stored float16. */
  packedF16: SwapResult;
  /** webgpu: phase profile of cold swaps from each pack (swap-profile.ts); null on wasm. */
  profile: { packed: ProfileResult; packedF16: ProfileResult } | null;
  /** webgpu: the engine's cold swap with buffer reuse (forget) against without (cache.clear), paired. */
  reuse: { packed: ReusePairs; packedF16: ReusePairs } | null;
}

/** Cold swap ms (feedsFor until onSubmittedWorkDone), sample i of each taken back to back. */
export interface ReusePairs {
  reused: number[];
  created: number[];
}

/**
 * Cold swaps through the engine's provider, alternating: after `forget` (the dropped buffers wait in the
 * cache's pool and are refilled) and after `cache.clear()` (which empties the pool: new buffers).
 */
async function reusePairs(
  p: AdapterProvider,
  targets: readonly LoraTarget[],
  device: GPUDevice,
  n: number,
): Promise<ReusePairs> {
  const out: ReusePairs = { reused: [], created: [] };
  for (let i = 0; i < n; i++) {
    for (const mode of ['reused', 'created'] as const) {
      if (mode === 'reused') p.forget(ADAPTER);
      else p.cache.clear();
      const t0 = performance.now();
      const f = await p.feedsFor(ADAPTER, targets);
      await device.queue.onSubmittedWorkDone();
      out[mode].push(performance.now() - t0);
      f?.release();
    }
  }
  return out;
}

type Log = (msg: string) => void;

export async function runSwap(o: SwapSuiteOptions, log: Log): Promise<SwapSuiteResult> {
  const ort = ortWebgpu as unknown as Ort;
  const res = await fetch(`${o.model.base}${modelFileName(o.dtype)}`);
  const { targets } = injectLora(
    decodeModel(new Uint8Array(await res.arrayBuffer())),
    o.packed ? { packed: o.packed } : {},
  );
  log(`swap/${o.backend}: ${targets.length} targets`);
  const files = randomAdapter(targets, RANK, o.model.name);
  const imported = importPeftAdapter(
    { config: files['adapter_config.json'], weights: files['adapter_model.safetensors'] },
    { id: o.model.name, targets },
  );
  let device: GPUDevice | null = null;
  if (o.backend === 'webgpu') {
    const adapter = await navigator.gpu.requestAdapter();
    if (!adapter) throw new Error('no WebGPU adapter');
    device = await adapter.requestDevice();
  }
  const profiles: ProfileResult[] = [];
  const reuse: ReusePairs[] = [];
  const run = async (label: string, precision: 'exact' | 'f16', packs: boolean): Promise<SwapResult> => {
    const store = new AdapterStore({
      dbName: `weblora-bench-swap-${Date.now()}-${label}`,
      feedPrecision: precision,
    });
    await store.save(ADAPTER, imported, o.model.name);
    const view = packs
      ? store
      : { getMeta: store.getMeta.bind(store), loadFeeds: store.loadFeeds.bind(store) };
    const p: AdapterProvider = createAdapterProvider({
      store: view,
      ort,
      budgetBytes: 256 * 1024 * 1024,
      ...(device ? { device } : {}),
    });
    if (packs) {
      // The first cold swap parses and writes the pack in the background; let it land.
      (await p.feedsFor(ADAPTER, targets))?.release();
      for (let i = 0; i < 100 && !(await store.loadPackedFeeds(ADAPTER, targets)).packed; i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    log(`swap/${o.backend}: ${label}: ${o.swaps} hot, ${o.swaps} cold`);
    const r = await measureSwaps(p, targets, device, o.swaps);
    if (packs && device) {
      log(`swap/${o.backend}: ${label}: ${o.swaps} cold swaps into reused / new buffers`);
      reuse.push(await reusePairs(p, targets, device, o.swaps));
    }
    p.dispose();
    if (packs && device) {
      log(`swap/${o.backend}: ${label}: phase profile, ${o.swaps} × ${WAYS.length} ways`);
      profiles.push(await profileColdSwap(store, targets, device, o.swaps));
    }
    await store.delete(ADAPTER);
    return r;
  };
  const out: SwapSuiteResult = {
    suite: 'swap',
    options: o,
    backend: o.backend,
    targetCount: targets.length,
    adapterBytes: files['adapter_model.safetensors'].byteLength,
    files: await run('files', 'exact', false),
    packed: await run('packed', 'exact', true),
    packedF16: await run('packed-f16', 'f16', true),
    profile: null,
    reuse: null,
  };
  if (profiles.length === 2) out.profile = { packed: profiles[0]!, packedF16: profiles[1]! };
  if (reuse.length === 2) out.reuse = { packed: reuse[0]!, packedF16: reuse[1]! };
  device?.destroy();
  return out;
}
