/**
 * Free GPU feed buffers kept for reuse, by byte size: when the adapter GPU cache drops an entry (LRU
 * eviction, `forget`), its buffers land here instead of being destroyed, and the next cold swap of an
 * adapter with the same shapes (every adapter of one rank on one model) takes them back instead of
 * calling `createBuffer`. On the 135M replica's 420 inputs the swap suite measured a cold swap into
 * reused buffers at 0.64–0.66× the time of one into new ones (float32 pack, paired medians 20.0 / 32.2
 * and 21.1 / 29.3 ms; bench/README.md): 420 destroys and creates cost the GPU process more than the
 * page sees. The owner (gpu-cache.ts) bounds the pool so that cached plus pooled bytes stay within its
 * budget. Reusing a buffer is as safe as destroying it: the cache hands a buffer back only once no run
 * uses it, and the queue orders new writes after work already submitted.
 * Not here: what is cached (gpu-cache.ts), how buffers are filled (gpu-upload.ts).
 */

export class GpuBufferPool {
  /** size → free buffers of that size (oldest first). */
  private readonly free = new Map<number, GPUBuffer[]>();
  private held = 0;

  /** Bytes of the pooled buffers. */
  get bytes(): number {
    return this.held;
  }

  /** A free buffer of exactly `size` bytes, or undefined. */
  take(size: number): GPUBuffer | undefined {
    const list = this.free.get(size);
    const b = list?.pop();
    if (!b) return undefined;
    if (list!.length === 0) this.free.delete(size);
    this.held -= size;
    return b;
  }

  give(b: GPUBuffer): void {
    const list = this.free.get(b.size);
    if (list) list.push(b);
    else this.free.set(b.size, [b]);
    this.held += b.size;
  }

  /** Destroys pooled buffers (sizes given back longest ago first) until at most `maxBytes` remain. */
  trim(maxBytes: number): void {
    for (const [size, list] of this.free) {
      while (this.held > Math.max(0, maxBytes) && list.length > 0) {
        list.shift()!.destroy();
        this.held -= size;
      }
      if (list.length === 0) this.free.delete(size);
      if (this.held <= maxBytes) return;
    }
  }

  clear(): void {
    this.trim(0);
  }
}
