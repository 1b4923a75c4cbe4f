/**
 * The swap suite's phase profile of a webgpu cold swap (page side, bench/swap.ts calls it per packed
 * store): IndexedDB read of the stored pack (what `store.loadPackedFeeds` reads, under the store's key
 * ['feeds', name, signature], Blob → ArrayBuffer included), float16 → float32 widening on the CPU
 * (`unpackFeeds`, when the way needs it), `createBuffer`, `writeBuffer` (or the mapped copy), encode +
 * submit of copies / the unpack pass, and `queue.onSubmittedWorkDone`. The engine's way is
 * src/adapters/gpu-upload.ts's `uploadPerTensor` taking buffers from a gpu-pool.ts pool (the previous
 * sample's, as after a forget/eviction); the same without the pool is the way before the pool; the
 * others are swap-ways.ts's. Each is timed through its `lap` hook; the ways run round-robin per sample
 * (paired: the machine is noisy) and their buffers are destroyed (pooled, for the engine's way) after
 * each sample. Not the cache: no LRU, no metadata read.
 */
import { get } from 'idb-keyval';
import {
  fromStoredPack,
  type PackedFeeds,
  type StoredPack,
  targetsSignature,
  unpackFeeds,
  widenHalves,
} from '../src/adapters/feed-pack.ts';
import { GpuBufferPool } from '../src/adapters/gpu-pool.ts';
import { type Upload, uploadPerTensor } from '../src/adapters/gpu-upload.ts';
import type { AdapterStore } from '../src/adapters/store.ts';
import type { LoraTarget } from '../src/model/inject-lora.ts';
import { ADAPTER } from './ours.ts';
import { PHASES, type Phase, type ProfileResult, WAYS } from './swap-phases.ts';
import { uploadMapped, uploadPackF16, uploadPackF32 } from './swap-ways.ts';

function widened(p: PackedFeeds): PackedFeeds {
  return { ...p, dtype: 'float32', data: widenHalves(p.data).buffer as ArrayBuffer };
}

export async function profileColdSwap(
  store: AdapterStore,
  targets: readonly LoraTarget[],
  device: GPUDevice,
  n: number,
): Promise<ProfileResult> {
  const blank = (): Record<Phase | 'total', number[]> =>
    Object.fromEntries([...PHASES, 'total'].map((p) => [p, [] as number[]])) as Record<
      Phase | 'total',
      number[]
    >;
  const samples = Object.fromEntries(WAYS.map((w) => [w, blank()])) as ProfileResult['samples'];
  let dtype: ProfileResult['dtype'] = 'float32';
  const sig = targetsSignature(targets);
  // The engine's cache: a dropped entry's buffers wait in its pool for the next cold swap.
  const pool = new GpuBufferPool();
  for (let i = 0; i < n; i++) {
    for (const way of WAYS) {
      const s = samples[way];
      const t0 = performance.now();
      let t = t0;
      const lap = (phase: Phase): void => {
        const now = performance.now();
        s[phase].push(now - t);
        t = now;
      };
      const stored = (await get(['feeds', ADAPTER, sig], store.idb)) as StoredPack | undefined;
      if (!stored) throw new Error('the store holds no pack for the bench adapter');
      const pack = await fromStoredPack(stored);
      dtype = pack.dtype;
      lap('IndexedDB read');
      let up: Upload;
      if (way === 'one write + copies, f16 widened on CPU') {
        const wide = pack.dtype === 'float16' ? widened(pack) : pack;
        lap('f16→f32 on CPU');
        up = uploadPackF32(device, wide, ADAPTER, lap);
      } else if (way === 'one write + copies') {
        // float16: widened on the GPU (no CPU phase); float32: the pack's bytes as they are.
        lap('f16→f32 on CPU');
        up =
          pack.dtype === 'float16'
            ? uploadPackF16(device, pack, ADAPTER, lap)
            : uploadPackF32(device, pack, ADAPTER, lap);
      } else {
        const feeds = unpackFeeds(pack);
        lap('f16→f32 on CPU');
        up =
          way === 'per-tensor mappedAtCreation'
            ? uploadMapped(device, feeds.feeds, ADAPTER, lap)
            : uploadPerTensor(device, feeds.feeds, ADAPTER, {
                lap,
                ...(way === 'per-tensor writeBuffer' ? {} : { take: (size: number) => pool.take(size) }),
              });
      }
      if (way.startsWith('per-tensor')) s['encode + submit'].push(0);
      await device.queue.onSubmittedWorkDone();
      lap('onSubmittedWorkDone');
      s.total.push(t - t0);
      if (way === 'per-tensor writeBuffer, pooled buffers (engine)')
        for (const x of up.inputs) pool.give(x.buffer);
      else for (const x of up.inputs) x.buffer.destroy();
    }
  }
  pool.clear();
  return { dtype, samples };
}
