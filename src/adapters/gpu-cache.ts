/**
 * LRU caches of ready-to-feed LoRA tensors with a byte budget, keyed by a string the caller builds
 * (provider.ts: adapter name@version, or a mix key, plus the target set). `AdapterGpuCache` holds each
 * input as a GPUBuffer on onnxruntime-web's own GPUDevice (`ort.env.webgpu.device`, passed in) and
 * feeds `ort.Tensor.fromGpuBuffer`, so a hot hit uploads nothing; a miss uploads once (gpu-upload.ts: one
 * `queue.writeBuffer` per input, counted in `stats`). `AdapterCpuCache` is the wasm-session variant
 * with ordinary tensors. Entries in use (acquired, not yet released) are pinned: eviction skips them
 * and destroys their buffers only after release. Feeds have rank ≥ 1: "no adapter" never reaches a
 * cache (the engine owns it). Not here: where feeds come from (provider.ts) or their math (peft.ts, mix.ts).
 */
import type * as ort from 'onnxruntime-web';
import { DeviceLostError, InvalidOptionError } from '../errors.ts';
import { GpuBufferPool } from './gpu-pool.ts';
import { GPU_ALIGN, paddedSize, uploadPerTensor } from './gpu-upload.ts';
import type { CpuFeeds, OrtLike } from './types.ts';

export interface CacheStats {
  hits: number;
  misses: number;
  evictions: number;
  /** GPU: adapters uploaded (one per miss). */
  uploads: number;
  /** GPU: `queue.writeBuffer` calls made by this cache, and the bytes they moved. */
  writeBufferCalls: number;
  uploadedBytes: number;
  /** GPU: feed buffers reused from dropped entries (gpu-pool.ts) instead of created. */
  reusedBuffers: number;
}

export interface Acquired {
  feeds: Record<string, ort.Tensor>;
  /** Unpins the entry; idempotent. */
  release(): void;
  hit: boolean;
}

interface Entry {
  key: string;
  feeds: Record<string, ort.Tensor>;
  bytes: number;
  pins: number;
  destroy(): void;
}

/** Shared LRU logic; subclasses turn CPU feeds into tensors (`materialize`). */
abstract class LruFeedCache {
  readonly budgetBytes: number;
  readonly stats: CacheStats = {
    hits: 0,
    misses: 0,
    evictions: 0,
    uploads: 0,
    writeBufferCalls: 0,
    uploadedBytes: 0,
    reusedBuffers: 0,
  };
  /** Map order = recency (oldest first). */
  private readonly entries = new Map<string, Entry>();
  private readonly loading = new Map<string, Promise<Entry>>();
  /** Evicted while pinned: destroyed on their last release. */
  private readonly doomed = new Set<Entry>();
  private held = 0;

  constructor(budgetBytes: number) {
    if (!(budgetBytes >= 0)) {
      throw new InvalidOptionError(`budgetBytes must be >= 0 (got ${budgetBytes})`, {
        option: 'budgetBytes',
        value: budgetBytes,
      });
    }
    this.budgetBytes = budgetBytes;
  }

  protected abstract materialize(key: string, feeds: CpuFeeds): Omit<Entry, 'key' | 'pins'>;

  /** Bytes held by cached entries (GPU buffers, or CPU tensor data), including pinned evicted ones. */
  get bytesHeld(): number {
    return this.held;
  }

  get size(): number {
    return this.entries.size;
  }

  keys(): string[] {
    return [...this.entries.keys()];
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  /** Feeds for `key`, built with `load` on a miss (concurrent misses of one key load once). */
  async acquire(key: string, load: () => CpuFeeds | Promise<CpuFeeds>): Promise<Acquired> {
    let e = this.entries.get(key);
    let hit = true;
    if (e) {
      this.entries.delete(key);
      this.entries.set(key, e);
      this.stats.hits++;
    } else {
      hit = false;
      let p = this.loading.get(key);
      if (!p) {
        this.stats.misses++;
        p = (async () => {
          const made = this.materialize(key, await load());
          const entry: Entry = { key, pins: 0, ...made };
          this.entries.set(key, entry);
          this.held += entry.bytes;
          return entry;
        })();
        this.loading.set(key, p);
        p.then(
          () => this.loading.delete(key),
          () => this.loading.delete(key),
        );
      }
      e = await p;
    }
    e.pins++;
    this.trim(e);
    const entry = e;
    let released = false;
    return {
      feeds: entry.feeds,
      hit,
      release: () => {
        if (released) return;
        released = true;
        entry.pins--;
        if (entry.pins === 0 && this.doomed.has(entry)) this.destroy(entry);
        this.trim();
      },
    };
  }

  /**
   * Adopts feeds made elsewhere (e.g. written on this cache's GPU device by a trainer) under `key`, as
   * if a miss had built them: `bytes` count against the budget, `destroy` runs on eviction. An entry
   * already under `key` is evicted first. Counts no upload (nothing was copied from the CPU).
   */
  insert(key: string, feeds: Record<string, ort.Tensor>, bytes: number, destroy: () => void): void {
    this.evict(key);
    const entry: Entry = { key, feeds, bytes, pins: 0, destroy };
    this.entries.set(key, entry);
    this.held += bytes;
    this.trim(entry);
  }

  /**
   * Evicts least-recently-used unpinned entries until `bytes` more fit the budget: a miss about to
   * upload calls it first, so the buffers it frees can be reused by that upload (the same entries the
   * trim after the upload would evict).
   */
  protected makeRoom(bytes: number): void {
    for (const e of this.entries.values()) {
      if (this.held + bytes <= this.budgetBytes) return;
      if (e.pins === 0) this.evictEntry(e);
    }
  }

  /** Evict least-recently-used unpinned entries (never `keep`) until within budget. */
  private trim(keep?: Entry): void {
    for (const e of this.entries.values()) {
      if (this.held <= this.budgetBytes) return;
      if (e === keep || e.pins > 0) continue;
      this.evictEntry(e);
    }
  }

  private evictEntry(e: Entry): void {
    this.entries.delete(e.key);
    this.stats.evictions++;
    if (e.pins > 0) this.doomed.add(e);
    else this.destroy(e);
  }

  private destroy(e: Entry): void {
    this.doomed.delete(e);
    this.held -= e.bytes;
    e.destroy();
  }

  /** Drops one entry (e.g. an adapter was deleted); its buffers go once it is released. */
  evict(key: string): boolean {
    const e = this.entries.get(key);
    if (!e) return false;
    this.evictEntry(e);
    return true;
  }

  /** Drops entries whose key satisfies `pred`. */
  evictWhere(pred: (key: string) => boolean): number {
    let n = 0;
    for (const k of [...this.entries.keys()]) if (pred(k) && this.evict(k)) n++;
    return n;
  }

  clear(): void {
    for (const e of [...this.entries.values()]) this.evictEntry(e);
  }
}

function cpuTensors(Tensor: OrtLike['Tensor'], feeds: CpuFeeds): Record<string, ort.Tensor> {
  const out: Record<string, ort.Tensor> = {};
  for (const [name, f] of feeds.feeds) out[name] = new Tensor('float32', f.data, f.dims);
  return out;
}

/** For wasm (CPU) sessions: ordinary tensors, LRU by bytes of Float32 data. */
export class AdapterCpuCache extends LruFeedCache {
  private readonly ort: OrtLike;
  constructor(opts: { budgetBytes: number; ort: OrtLike }) {
    super(opts.budgetBytes);
    this.ort = opts.ort;
  }
  protected materialize(_key: string, feeds: CpuFeeds) {
    let bytes = 0;
    for (const f of feeds.feeds.values()) bytes += f.data.byteLength;
    return { feeds: cpuTensors(this.ort.Tensor, feeds), bytes, destroy: () => {} };
  }
}

/**
 * For WebGPU sessions: one GPUBuffer per non-empty input, on ORT's device. Buffers of dropped entries go
 * to a pool (gpu-pool.ts) for the next upload of the same shapes, kept while cached + pooled bytes fit
 * the budget; `clear()` empties it (buffers of entries still in use at that moment are destroyed on
 * release, not pooled, until the next upload).
 */
export class AdapterGpuCache extends LruFeedCache {
  readonly device: GPUDevice;
  private readonly ort: OrtLike;
  private readonly pool = new GpuBufferPool();
  private pooling = true;
  private lost = false;

  constructor(opts: { device: GPUDevice; budgetBytes: number; ort: OrtLike }) {
    super(opts.budgetBytes);
    this.device = opts.device;
    this.ort = opts.ort;
    opts.device.lost?.then(() => {
      this.lost = true;
      this.pool.clear();
    });
  }

  /** Bytes of free buffers kept for reuse (not in `bytesHeld`; with it, within the budget). */
  get pooledBytes(): number {
    return this.pool.bytes;
  }

  override insert(key: string, feeds: Record<string, ort.Tensor>, bytes: number, destroy: () => void): void {
    super.insert(key, feeds, bytes, destroy);
    this.pool.trim(this.budgetBytes - this.bytesHeld);
  }

  override clear(): void {
    this.pooling = false;
    super.clear();
    this.pool.clear();
  }

  /** Frees an entry's buffers: into the pool (within budget) or destroyed. */
  private recycle(buffers: GPUBuffer[]): void {
    if (!this.pooling || this.lost) {
      for (const b of buffers) b.destroy();
      return;
    }
    for (const b of buffers) this.pool.give(b);
    this.pool.trim(this.budgetBytes - this.bytesHeld);
  }

  protected materialize(key: string, feeds: CpuFeeds) {
    if (this.lost) {
      throw new DeviceLostError(`the GPU device was lost; cannot upload adapter feeds for ${key}`, { key });
    }
    if (feeds.rank < 1) {
      throw new InvalidOptionError(`feeds for ${key} have rank ${feeds.rank}; cached feeds need rank >= 1`, {
        key,
        rank: feeds.rank,
      });
    }
    this.pooling = true;
    let need = 0;
    for (const f of feeds.feeds.values()) need += paddedSize(f.dims[0] * f.dims[1]);
    this.makeRoom(need);
    const up = uploadPerTensor(this.device, feeds.feeds, key, { take: (size) => this.pool.take(size) });
    // Room for the new entry: cached + pooled stays within the budget (the LRU trims the cached part).
    this.pool.trim(this.budgetBytes - this.bytesHeld - up.bytes);
    const buffers = up.inputs.map((x) => x.buffer);
    const destroy = (): void => this.recycle(buffers);
    const out: Record<string, ort.Tensor> = {};
    try {
      for (const { name, dims, buffer } of up.inputs) {
        out[name] = this.ort.Tensor.fromGpuBuffer(buffer, {
          dataType: 'float32',
          dims,
          download: () => readBuffer(this.device, buffer, dims[0] * dims[1]),
        }) as ort.Tensor;
      }
    } catch (e) {
      for (const b of buffers) b.destroy();
      throw e;
    }
    this.stats.writeBufferCalls += up.writeBufferCalls;
    this.stats.uploadedBytes += up.uploadedBytes;
    this.stats.reusedBuffers += up.reusedBuffers;
    this.stats.uploads++;
    return { feeds: out, bytes: up.bytes, destroy };
  }
}

/** Reads `n` float32 values back from a STORAGE|COPY_SRC buffer (tests, debugging; slow). */
export async function readBuffer(device: GPUDevice, src: GPUBuffer, n: number): Promise<Float32Array> {
  const size = Math.ceil((n * 4) / GPU_ALIGN) * GPU_ALIGN;
  const staging = device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const enc = device.createCommandEncoder();
  enc.copyBufferToBuffer(src, 0, staging, 0, size);
  device.queue.submit([enc.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const out = new Float32Array(staging.getMappedRange(0, size).slice(0, n * 4));
  staging.unmap();
  staging.destroy();
  return out;
}
