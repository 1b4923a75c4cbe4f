/**
 * A WebGPU backend's current LoRA weights as onnxruntime-web feeds of the LoRA-injected graph
 * (src/model/inject-lora.ts), written on the GPU by shaders/lora_feeds.wgsl: A (R, K) → feed A (K, Rf),
 * scale·B (O, R) → feed B (Rf, O), zero-padded to the largest module rank Rf, zeros for targets the
 * backend does not train — exactly what src/adapters/peft.ts peftToFeeds gives for the snapshot, without a
 * CPU round trip. Buffers as src/adapters/gpu-cache.ts makes feed buffers (STORAGE | COPY_SRC | COPY_DST,
 * rounded up to 16 bytes) on the backend's device, which must be onnxruntime-web's for the session.
 * Not here: caching (gpu-cache.ts), the session.
 */
import type * as ort from 'onnxruntime-web';
import { readBuffer } from '../adapters/gpu-cache.ts';
import type { OrtLike } from '../adapters/types.ts';
import { InvalidOptionError } from '../errors.ts';
import type { LoraTarget } from '../model/inject-lora.ts';
import { wg64 } from './gpu-kernels.ts';
import type { GpuTrainBackend } from './gpu-model.ts';

export interface GpuLoraFeeds {
  /** Feed rank (the largest trained rank). */
  rank: number;
  feeds: Record<string, ort.Tensor>;
  /** The backend's device, on which the feed buffers live. */
  device: GPUDevice;
  /** Bytes of the feed buffers. */
  bytes: number;
  /** Destroys the feed buffers (after the last run that uses them). */
  dispose(): void;
}

/** Feeds for `targets` (every LoRA input of the injected graph) from `backend`'s current weights. */
export function writeLoraFeeds(
  backend: GpuTrainBackend,
  targets: readonly LoraTarget[],
  ortLike: OrtLike,
): GpuLoraFeeds {
  const k = backend.kernels;
  const device = k.device;
  if (!backend.slots.length)
    throw new InvalidOptionError('the backend trains no LoRA module: nothing to feed', {});
  const Rf = Math.max(...backend.slots.map((s) => s.R));
  const bySlot = new Map(backend.slots.map((s) => [`${s.layer}.${s.module}`, s]));
  const buffers: GPUBuffer[] = [];
  const uniforms: GPUBuffer[] = [];
  const feeds: Record<string, ort.Tensor> = {};
  let bytes = 0;
  const make = (n: number, label: string) => {
    const size = Math.max(16, Math.ceil((4 * n) / 16) * 16);
    bytes += size;
    const b = device.createBuffer({
      label,
      size,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    buffers.push(b);
    return b;
  };
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  for (const t of targets) {
    const a = make(t.in * Rf, t.inputA); // (in, Rf)
    const b = make(Rf * t.out, t.inputB); // (Rf, out)
    const s = bySlot.get(`${t.layer}.${t.module}`);
    if (s) {
      if (s.K !== t.in || s.O !== t.out)
        throw new InvalidOptionError(
          `target ${t.inputA} maps ${t.in} → ${t.out}, the trained module ${s.path} ${s.K} → ${s.O}`,
          {},
        );
      const p = k.uniform([s.K, s.O, s.R, Rf, s.scale], 'uuuuf', 'lora feeds');
      uniforms.push(p);
      const g = k.bindGroup('lora_feeds', [
        a,
        b,
        { buffer: backend.lora, offset: s.off * 4, size: s.len * 4 },
        p,
      ]);
      pass.setPipeline(k.pipeline('lora_feeds'));
      pass.setBindGroup(0, g);
      pass.dispatchWorkgroups(wg64((s.K + s.O) * Rf));
    }
    feeds[t.inputA] = ortLike.Tensor.fromGpuBuffer(a, {
      dataType: 'float32',
      dims: [t.in, Rf],
      download: () => readBuffer(device, a, t.in * Rf),
    }) as ort.Tensor;
    feeds[t.inputB] = ortLike.Tensor.fromGpuBuffer(b, {
      dataType: 'float32',
      dims: [Rf, t.out],
      download: () => readBuffer(device, b, Rf * t.out),
    }) as ort.Tensor;
  }
  pass.end();
  device.queue.submit([enc.finish()]);
  for (const u of uniforms) k.free(u);
  return {
    rank: Rf,
    feeds,
    device,
    bytes,
    dispose: () => {
      for (const b of buffers) b.destroy();
    },
  };
}
