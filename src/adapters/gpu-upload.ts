/**
 * Uploads an adapter's LoRA feeds into GPU buffers on onnxruntime-web's device: one whole GPUBuffer per
 * graph input (ORT 1.30's `Tensor.fromGpuBuffer` binds a whole buffer, no offset), all created first,
 * then one `queue.writeBuffer` each. Measured against one staging write + `copyBufferToBuffer`s, a
 * float16 upload widened by a compute pass, and `mappedAtCreation` buffers (bench/swap-ways.ts), this
 * was the fastest on SwiftShader (bench/README.md, swap suite): the copies and the compute pass cost the
 * GPU process more than 420 writes cost the page. `lap` lets the swap suite time the phases.
 * Not here: caching, eviction, counting (gpu-cache.ts).
 */
import type { LoraFeed } from './types.ts';

/** ORT's WebGPU EP rounds bindings up to 16 bytes; each buffer is a multiple of this. */
export const GPU_ALIGN = 16;

export const paddedSize = (n: number): number =>
  Math.max(GPU_ALIGN, Math.ceil((4 * n) / GPU_ALIGN) * GPU_ALIGN);
export const FEED_USAGE = (): number =>
  GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

export interface UploadedInput {
  name: string;
  dims: [number, number];
  buffer: GPUBuffer;
}

export interface Upload {
  inputs: UploadedInput[];
  /** Bytes of the per-input buffers (padded), what the cache counts against its budget. */
  bytes: number;
  /** `queue.writeBuffer` calls made and the bytes they moved from the CPU. */
  writeBufferCalls: number;
  uploadedBytes: number;
  /** Buffers taken from a pool instead of created (the rest were created). */
  reusedBuffers: number;
}

/** Called between phases with the phase just done (bench/swap-profile.ts times them); optional. */
export type Lap = (phase: 'createBuffer' | 'writeBuffer' | 'encode + submit') => void;
const noLap: Lap = () => {};

export interface UploadOptions {
  /** A free buffer of exactly `size` bytes to reuse instead of `createBuffer` (gpu-pool.ts). */
  take?: (size: number) => GPUBuffer | undefined;
  lap?: Lap;
}

/**
 * One buffer (reused through `take` when it has one of the size, else created) and one `writeBuffer` per
 * input; on an exception every buffer it holds is destroyed.
 */
export function uploadPerTensor(
  device: GPUDevice,
  feeds: Iterable<[string, LoraFeed]>,
  label: string,
  opts: UploadOptions = {},
): Upload {
  const lap = opts.lap ?? noLap;
  const list = [...feeds];
  const inputs: UploadedInput[] = [];
  let reused = 0;
  try {
    let bytes = 0;
    for (const [name, f] of list) {
      const size = paddedSize(f.dims[0] * f.dims[1]);
      let buffer = opts.take?.(size);
      if (buffer) reused++;
      else buffer = device.createBuffer({ label: `lora ${label} ${name}`, size, usage: FEED_USAGE() });
      inputs.push({ name, dims: [f.dims[0], f.dims[1]], buffer });
      bytes += size;
    }
    lap('createBuffer');
    let uploadedBytes = 0;
    list.forEach(([, f], i) => {
      device.queue.writeBuffer(inputs[i]!.buffer, 0, f.data.buffer, f.data.byteOffset, f.data.byteLength);
      uploadedBytes += f.data.byteLength;
    });
    lap('writeBuffer');
    return { inputs, bytes, writeBufferCalls: list.length, uploadedBytes, reusedBuffers: reused };
  } catch (e) {
    for (const x of inputs) x.buffer.destroy();
    throw e;
  }
}
