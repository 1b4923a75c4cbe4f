/**
 * Other ways to upload an adapter's feeds than the engine's (src/adapters/gpu-upload.ts
 * `uploadPerTensor`: one `createBuffer` + `writeBuffer` per input), kept for the swap suite's phase
 * profile (swap-profile.ts) so they can be re-measured on other GPUs. Each lost on SwiftShader
 * (bench/README.md, swap suite), which is why the engine does not use them:
 * - `uploadMapped`: per-input buffers created `mappedAtCreation`, filled and unmapped (no writeBuffer).
 * - `uploadPackF32`: a float32 pack (feed-pack.ts) in ONE `writeBuffer` into a staging buffer, then one
 *   command encoder copies each input's range into its buffer (`copyBufferToBuffer`).
 * - `uploadPackF16`: a float16 pack uploaded as is (half the bytes, no CPU widening); a compute pass
 *   (swap-f16-unpack.wgsl, bit-exact integer widening) writes float32 into a staging buffer, then the
 *   same copies. tests/browser/adapter-gpu-upload.test.ts checks it against model/half.ts bit for bit.
 * Staging buffers are destroyed right after submit (WebGPU frees them once the queued work is done).
 */
import type { PackedFeeds } from '../src/adapters/feed-pack.ts';
import {
  FEED_USAGE,
  GPU_ALIGN,
  type Lap,
  paddedSize,
  type Upload,
  type UploadedInput,
} from '../src/adapters/gpu-upload.ts';
import type { LoraFeed } from '../src/adapters/types.ts';
import f16UnpackSrc from './swap-f16-unpack.wgsl?raw';

const WG = 256;
const MAX_GROUPS = 65535;
const noLap: Lap = () => {};

/** Runs `make` with every created buffer collected, destroying them all if it throws. */
function guarded(make: (track: (b: GPUBuffer) => GPUBuffer) => Upload): Upload {
  const made: GPUBuffer[] = [];
  try {
    return make((b) => {
      made.push(b);
      return b;
    });
  } catch (e) {
    for (const b of made) b.destroy();
    throw e;
  }
}

/** As uploadPerTensor, through buffers created `mappedAtCreation` (no `writeBuffer`). */
export function uploadMapped(
  device: GPUDevice,
  feeds: Iterable<[string, LoraFeed]>,
  label: string,
  lap: Lap = noLap,
): Upload {
  return guarded((track) => {
    const list = [...feeds];
    const inputs: UploadedInput[] = [];
    let bytes = 0;
    for (const [name, f] of list) {
      const size = paddedSize(f.dims[0] * f.dims[1]);
      const buffer = track(
        device.createBuffer({
          label: `lora ${label} ${name}`,
          size,
          usage: FEED_USAGE(),
          mappedAtCreation: true,
        }),
      );
      bytes += size;
      inputs.push({ name, dims: [f.dims[0], f.dims[1]], buffer });
    }
    lap('createBuffer');
    let uploadedBytes = 0;
    list.forEach(([, f], i) => {
      const b = inputs[i]!.buffer;
      new Float32Array(b.getMappedRange(), 0, f.data.length).set(f.data);
      b.unmap();
      uploadedBytes += f.data.byteLength;
    });
    lap('writeBuffer');
    return { inputs, bytes, writeBufferCalls: 0, uploadedBytes, reusedBuffers: 0 };
  });
}

/** The per-input buffers of `pack` (created now; filled by `copyInto` from a float32 staging buffer). */
function createOut(
  device: GPUDevice,
  pack: PackedFeeds,
  label: string,
  track: (b: GPUBuffer) => GPUBuffer,
): { inputs: UploadedInput[]; bytes: number } {
  const inputs: UploadedInput[] = [];
  let bytes = 0;
  pack.names.forEach((name, i) => {
    const [a, b] = pack.dims[i]!;
    const size = paddedSize(a * b);
    const buffer = track(device.createBuffer({ label: `lora ${label} ${name}`, size, usage: FEED_USAGE() }));
    bytes += size;
    inputs.push({ name, dims: [a, b], buffer });
  });
  return { inputs, bytes };
}

/** Each input's range of `staging` (float32 at the pack's element offsets) into its buffer. */
function copyInto(
  enc: GPUCommandEncoder,
  staging: GPUBuffer,
  pack: PackedFeeds,
  inputs: UploadedInput[],
): void {
  inputs.forEach(({ buffer, dims }, i) => {
    enc.copyBufferToBuffer(staging, 4 * pack.offsets[i]!, buffer, 0, 4 * dims[0] * dims[1]);
  });
}

/** A float32 pack: one `writeBuffer` of the whole pack, one encoder of per-input copies. */
export function uploadPackF32(device: GPUDevice, pack: PackedFeeds, label: string, lap: Lap = noLap): Upload {
  const data = pack.data;
  const staging = device.createBuffer({
    label: `lora ${label} staging`,
    size: Math.max(GPU_ALIGN, Math.ceil(data.byteLength / GPU_ALIGN) * GPU_ALIGN),
    usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
  });
  try {
    return guarded((track) => {
      const { inputs, bytes } = createOut(device, pack, label, track);
      lap('createBuffer');
      device.queue.writeBuffer(staging, 0, data, 0, data.byteLength);
      lap('writeBuffer');
      const enc = device.createCommandEncoder({ label: `lora ${label} copies` });
      copyInto(enc, staging, pack, inputs);
      device.queue.submit([enc.finish()]);
      lap('encode + submit');
      return { inputs, bytes, writeBufferCalls: 1, uploadedBytes: data.byteLength, reusedBuffers: 0 };
    });
  } finally {
    staging.destroy();
  }
}

interface UnpackKernel {
  pipeline: GPUComputePipeline;
}
const kernels = new WeakMap<GPUDevice, UnpackKernel>();

function unpackKernel(device: GPUDevice): UnpackKernel {
  let k = kernels.get(device);
  if (!k) {
    const module = device.createShaderModule({ label: 'f16_unpack', code: f16UnpackSrc });
    k = {
      pipeline: device.createComputePipeline({
        label: 'f16_unpack',
        layout: 'auto',
        compute: { module, entryPoint: 'main' },
      }),
    };
    kernels.set(device, k);
  }
  return k;
}

/**
 * A float16 pack: one `writeBuffer` of the half bytes (plus a 16-byte uniform), one encoder with the
 * widening pass then the per-input copies.
 */
export function uploadPackF16(device: GPUDevice, pack: PackedFeeds, label: string, lap: Lap = noLap): Upload {
  const k = unpackKernel(device);
  const halves = pack.data.byteLength / 2;
  // vec4 words of 8 halves; the padded tail of `src` is zeros (widened to +0, never copied out).
  const vec4s = Math.max(1, Math.ceil(halves / 8));
  const src = device.createBuffer({
    label: `lora ${label} f16`,
    size: 16 * vec4s,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
  });
  const wide = device.createBuffer({
    label: `lora ${label} f32`,
    size: 32 * vec4s,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC,
  });
  const groups = Math.max(1, Math.min(MAX_GROUPS, Math.ceil(vec4s / WG)));
  const params = device.createBuffer({
    label: `lora ${label} f16 params`,
    size: 16,
    usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
  });
  try {
    return guarded((track) => {
      const { inputs, bytes } = createOut(device, pack, label, track);
      lap('createBuffer');
      // writeBuffer sizes must be multiples of 4: an odd count of halves goes up with a zero half.
      const whole = (halves & 1) === 0 ? pack.data : padTo4(pack.data);
      device.queue.writeBuffer(src, 0, whole, 0, whole.byteLength);
      device.queue.writeBuffer(params, 0, new Uint32Array([vec4s, groups * WG, 0, 0]));
      lap('writeBuffer');
      const enc = device.createCommandEncoder({ label: `lora ${label} unpack + copies` });
      const pass = enc.beginComputePass({ label: 'f16_unpack' });
      pass.setPipeline(k.pipeline);
      pass.setBindGroup(
        0,
        device.createBindGroup({
          layout: k.pipeline.getBindGroupLayout(0),
          entries: [
            { binding: 0, resource: { buffer: wide } },
            { binding: 1, resource: { buffer: src } },
            { binding: 2, resource: { buffer: params } },
          ],
        }),
      );
      pass.dispatchWorkgroups(groups);
      pass.end();
      copyInto(enc, wide, pack, inputs);
      device.queue.submit([enc.finish()]);
      lap('encode + submit');
      return { inputs, bytes, writeBufferCalls: 2, uploadedBytes: whole.byteLength + 16, reusedBuffers: 0 };
    });
  } finally {
    src.destroy();
    wide.destroy();
    params.destroy();
  }
}

function padTo4(data: ArrayBuffer): ArrayBuffer {
  const out = new Uint8Array(Math.ceil(data.byteLength / 4) * 4);
  out.set(new Uint8Array(data));
  return out.buffer;
}
