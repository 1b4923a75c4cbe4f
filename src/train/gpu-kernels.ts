/**
 * The WGSL training kernels (shaders/*.wgsl, imported with Vite's `?raw`) as ready-to-dispatch pieces:
 * one explicit bind-group layout per shader (every binding of the file, so all its entry points share one
 * bind group), a pipeline cache keyed by `shader:entry` (the shader text is fixed: sizes travel in
 * uniforms, so nothing else changes the compiled code), uniform packing, recorded command lists and the
 * device-limit checks that turn "too big for this GPU" into a typed UnsupportedError naming the limit.
 * Not here: which kernels run in what order (gpu-model.ts), or any math.
 */
import adamwSrc from '../../shaders/adamw.wgsl?raw';
import attentionSrc from '../../shaders/attention.wgsl?raw';
import attentionBackwardSrc from '../../shaders/attention_backward.wgsl?raw';
import crossentropySrc from '../../shaders/crossentropy.wgsl?raw';
import embeddingSrc from '../../shaders/embedding.wgsl?raw';
import g16Src from '../../shaders/g16.wgsl?raw';
import gradnormSrc from '../../shaders/gradnorm.wgsl?raw';
import loraFeedsSrc from '../../shaders/lora_feeds.wgsl?raw';
import matmulLoraSrc from '../../shaders/matmul_lora.wgsl?raw';
import matmulLoraBackwardSrc from '../../shaders/matmul_lora_backward.wgsl?raw';
import matmulQ4LoraSrc from '../../shaders/matmul_q4_lora.wgsl?raw';
import matmulQ4LoraBackwardSrc from '../../shaders/matmul_q4_lora_backward.wgsl?raw';
import residualSrc from '../../shaders/residual.wgsl?raw';
import rmsnormSrc from '../../shaders/rmsnorm.wgsl?raw';
import rmsnormBackwardSrc from '../../shaders/rmsnorm_backward.wgsl?raw';
import ropeSrc from '../../shaders/rope.wgsl?raw';
import ropeBackwardSrc from '../../shaders/rope_backward.wgsl?raw';
import swigluSrc from '../../shaders/swiglu.wgsl?raw';
import swigluBackwardSrc from '../../shaders/swiglu_backward.wgsl?raw';
import { UnsupportedError } from '../errors.ts';

/** Binding kinds in binding order: read_write storage, read-only storage, uniform. */
export type BindingKind = 'rw' | 'ro' | 'u';

const MATMUL: BindingKind[] = ['rw', 'rw', 'ro', 'ro', 'ro', 'u'];
const MATMUL_BWD: BindingKind[] = ['rw', 'rw', 'rw', 'ro', 'ro', 'ro', 'ro', 'ro', 'u'];
/** A shader that reads or writes packed LoRA gradients, with the g16 functions (shaders/g16.wgsl) appended. */
const withG16 = (src: string): string => `${src}\n${g16Src}`;

export const SHADERS = {
  embedding: { code: embeddingSrc, kinds: ['rw', 'ro', 'ro', 'u'] },
  rmsnorm: { code: rmsnormSrc, kinds: ['rw', 'rw', 'ro', 'ro', 'u'] },
  rmsnorm_backward: { code: rmsnormBackwardSrc, kinds: ['rw', 'ro', 'ro', 'ro', 'ro', 'u'] },
  matmul_lora: { code: matmulLoraSrc, kinds: MATMUL },
  matmul_lora_backward: { code: withG16(matmulLoraBackwardSrc), kinds: MATMUL_BWD },
  matmul_q4_lora: { code: matmulQ4LoraSrc, kinds: MATMUL },
  matmul_q4_lora_backward: { code: withG16(matmulQ4LoraBackwardSrc), kinds: MATMUL_BWD },
  rope: { code: ropeSrc, kinds: ['rw', 'ro', 'ro', 'u'] },
  rope_backward: { code: ropeBackwardSrc, kinds: ['rw', 'ro', 'ro', 'u'] },
  attention: { code: attentionSrc, kinds: ['rw', 'rw', 'ro', 'ro', 'ro', 'ro', 'u'] },
  attention_backward: { code: attentionBackwardSrc, kinds: MATMUL_BWD },
  swiglu: { code: swigluSrc, kinds: ['rw', 'ro', 'ro', 'u'] },
  swiglu_backward: { code: swigluBackwardSrc, kinds: ['rw', 'rw', 'ro', 'ro', 'ro', 'u'] },
  residual: { code: residualSrc, kinds: ['rw', 'ro', 'u'] },
  crossentropy: { code: crossentropySrc, kinds: ['rw', 'rw', 'ro', 'ro', 'u'] },
  gradnorm: { code: withG16(gradnormSrc), kinds: ['rw', 'rw', 'ro', 'u'] },
  adamw: { code: withG16(adamwSrc), kinds: ['rw', 'rw', 'ro', 'ro', 'u'] },
  lora_feeds: { code: loraFeedsSrc, kinds: ['rw', 'rw', 'ro', 'u'] },
} satisfies Record<string, { code: string; kinds: BindingKind[] }>;

export type ShaderName = keyof typeof SHADERS;

/** A whole buffer, or a subrange (offset a multiple of minStorageBufferOffsetAlignment). */
export type Binding = GPUBuffer | { buffer: GPUBuffer; offset: number; size: number };

/** One recorded step of a command list: a dispatch, or a clear between compute passes. */
export type Cmd =
  | { kind: 'dispatch'; label: string; pipeline: GPUComputePipeline; group: GPUBindGroup; x: number }
  | { kind: 'clear'; label: string; buffer: GPUBuffer; offset: number; size: number };

/** Storage buffers of one stage the kernels need (matmul and attention backward bind 8). */
export const STORAGE_BUFFERS_NEEDED = 8;

/**
 * A device for training when the caller has none (tests; an engine passes onnxruntime-web's): asks for
 * the adapter's own storage-binding and buffer sizes (the defaults are 128 MiB / 256 MiB) and 8 storage
 * buffers per stage, never more than the adapter offers.
 */
export async function requestTrainDevice(adapter?: GPUAdapter | null): Promise<GPUDevice> {
  const a = adapter ?? (await navigator.gpu?.requestAdapter());
  if (!a)
    throw new UnsupportedError('WebGPU training needs a GPU adapter; none is available', {
      feature: 'webgpu',
    });
  if (a.limits.maxStorageBuffersPerShaderStage < STORAGE_BUFFERS_NEEDED) {
    throw new UnsupportedError(
      `the GPU offers ${a.limits.maxStorageBuffersPerShaderStage} storage buffers per shader stage; training needs ${STORAGE_BUFFERS_NEEDED} (maxStorageBuffersPerShaderStage)`,
      {
        limit: 'maxStorageBuffersPerShaderStage',
        needed: STORAGE_BUFFERS_NEEDED,
        available: a.limits.maxStorageBuffersPerShaderStage,
      },
    );
  }
  return a.requestDevice({
    // Optional: gpu-profile.ts times kernels with it when present.
    requiredFeatures: a.features.has('timestamp-query') ? ['timestamp-query'] : [],
    requiredLimits: {
      maxStorageBufferBindingSize: a.limits.maxStorageBufferBindingSize,
      maxBufferSize: a.limits.maxBufferSize,
      maxStorageBuffersPerShaderStage: STORAGE_BUFFERS_NEEDED,
    },
  });
}

/** Throws UnsupportedError naming `limit` when `needed` exceeds the device's value. */
export function requireLimit(
  device: GPUDevice,
  limit:
    | 'maxStorageBufferBindingSize'
    | 'maxBufferSize'
    | 'maxStorageBuffersPerShaderStage'
    | 'maxComputeWorkgroupsPerDimension',
  needed: number,
  what: string,
): void {
  const available = device.limits[limit];
  if (needed > available) {
    throw new UnsupportedError(
      `${what} needs ${limit} >= ${needed}, but this GPU device offers ${available}; use a smaller batch / sequence length, or the CPU path`,
      { limit, needed, available, what },
    );
  }
}

/** Pipelines, layouts, uniforms and buffers of one device; `destroy` frees every buffer made here. */
export class GpuKernels {
  private readonly layouts = new Map<
    ShaderName,
    { bgl: GPUBindGroupLayout; pl: GPUPipelineLayout; module: GPUShaderModule }
  >();
  private readonly pipelines = new Map<string, GPUComputePipeline>();
  private readonly owned = new Set<GPUBuffer>();
  /** Floats per minStorageBufferOffsetAlignment: subranges start at multiples of this. */
  readonly alignFloats: number;

  constructor(readonly device: GPUDevice) {
    requireLimit(device, 'maxStorageBuffersPerShaderStage', STORAGE_BUFFERS_NEEDED, 'the training kernels');
    this.alignFloats = Math.max(4, device.limits.minStorageBufferOffsetAlignment / 4);
  }

  private layout(name: ShaderName) {
    let l = this.layouts.get(name);
    if (!l) {
      const { code, kinds } = SHADERS[name];
      const bgl = this.device.createBindGroupLayout({
        label: name,
        entries: kinds.map((k, binding) => ({
          binding,
          visibility: GPUShaderStage.COMPUTE,
          buffer: { type: k === 'rw' ? 'storage' : k === 'ro' ? 'read-only-storage' : 'uniform' },
        })),
      });
      const pl = this.device.createPipelineLayout({ label: name, bindGroupLayouts: [bgl] });
      const module = this.device.createShaderModule({ label: name, code });
      l = { bgl, pl, module };
      this.layouts.set(name, l);
    }
    return l;
  }

  /** The cached pipeline of `name`'s entry point (key: shader + entry; the code has no variants). */
  pipeline(name: ShaderName, entry = 'main'): GPUComputePipeline {
    const key = `${name}:${entry}`;
    let p = this.pipelines.get(key);
    if (!p) {
      const l = this.layout(name);
      p = this.device.createComputePipeline({
        label: key,
        layout: l.pl,
        compute: { module: l.module, entryPoint: entry },
      });
      this.pipelines.set(key, p);
    }
    return p;
  }

  bindGroup(name: ShaderName, bindings: Binding[]): GPUBindGroup {
    const l = this.layout(name);
    return this.device.createBindGroup({
      label: name,
      layout: l.bgl,
      entries: bindings.map((b, binding) => ({
        binding,
        resource: 'buffer' in b ? b : { buffer: b },
      })),
    });
  }

  /** A dispatch of `x` workgroups (checked against maxComputeWorkgroupsPerDimension). */
  cmd(name: ShaderName, entry: string, group: GPUBindGroup, x: number): Cmd {
    requireLimit(this.device, 'maxComputeWorkgroupsPerDimension', x, `${name}:${entry}`);
    return { kind: 'dispatch', label: `${name}:${entry}`, pipeline: this.pipeline(name, entry), group, x };
  }

  /** A zero-filled storage buffer of `n` floats (rounded up to 16 bytes), owned by this object. */
  buffer(n: number, label: string, extraUsage = 0): GPUBuffer {
    const size = Math.max(16, Math.ceil((n * 4) / 16) * 16);
    requireLimit(this.device, 'maxStorageBufferBindingSize', size, label);
    const b = this.device.createBuffer({
      label,
      size,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST | extraUsage,
    });
    this.owned.add(b);
    return b;
  }

  /** A storage buffer holding `data`. */
  upload(data: Float32Array | Uint32Array, label: string): GPUBuffer {
    const b = this.buffer(data.length, label);
    this.device.queue.writeBuffer(b, 0, data.buffer, data.byteOffset, data.byteLength);
    return b;
  }

  /** A uniform buffer: `values` as u32 or f32 per `types` ('u' / 'f'), padded to 16 bytes. */
  uniform(values: number[], types: string, label = 'params'): GPUBuffer {
    const dv = new DataView(new ArrayBuffer(Math.max(16, Math.ceil((values.length * 4) / 16) * 16)));
    values.forEach((x, i) => {
      if (types[i] === 'f') dv.setFloat32(4 * i, x, true);
      else dv.setUint32(4 * i, x, true);
    });
    const b = this.device.createBuffer({
      label,
      size: dv.byteLength,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    this.device.queue.writeBuffer(b, 0, dv.buffer);
    this.owned.add(b);
    return b;
  }

  /** Rewrites a uniform made by `uniform` (same types). */
  writeUniform(b: GPUBuffer, values: number[], types: string): void {
    const dv = new DataView(new ArrayBuffer(b.size));
    values.forEach((x, i) => {
      if (types[i] === 'f') dv.setFloat32(4 * i, x, true);
      else dv.setUint32(4 * i, x, true);
    });
    this.device.queue.writeBuffer(b, 0, dv.buffer);
  }

  /** Records `cmds` into `enc`: consecutive dispatches share one compute pass; clears go between passes. */
  encode(enc: GPUCommandEncoder, cmds: readonly Cmd[]): void {
    let pass: GPUComputePassEncoder | null = null;
    for (const c of cmds) {
      if (c.kind === 'clear') {
        pass?.end();
        pass = null;
        enc.clearBuffer(c.buffer, c.offset, c.size);
        continue;
      }
      pass ??= enc.beginComputePass();
      pass.setPipeline(c.pipeline);
      pass.setBindGroup(0, c.group);
      pass.dispatchWorkgroups(c.x);
    }
    pass?.end();
  }

  /** Copies `n` floats from `src` (at float offset `off`) to the CPU. */
  async read(src: GPUBuffer, n: number, off = 0): Promise<Float32Array> {
    const staging = this.device.createBuffer({
      size: Math.max(16, Math.ceil((n * 4) / 16) * 16),
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const enc = this.device.createCommandEncoder();
    enc.copyBufferToBuffer(src, off * 4, staging, 0, n * 4);
    this.device.queue.submit([enc.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const out = new Float32Array(staging.getMappedRange().slice(0, n * 4));
    staging.unmap();
    staging.destroy();
    return out;
  }

  /** A MAP_READ | COPY_DST staging buffer of `n` floats, owned by this object. */
  staging(n: number, label: string): GPUBuffer {
    const b = this.device.createBuffer({
      label,
      size: Math.max(16, Math.ceil((n * 4) / 16) * 16),
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    this.owned.add(b);
    return b;
  }

  /** Bytes of every buffer made here and not yet freed (storage, uniform and staging). */
  get bytesAllocated(): number {
    let n = 0;
    for (const b of this.owned) n += b.size;
    return n;
  }

  /** Frees one buffer made here. */
  free(b: GPUBuffer): void {
    if (this.owned.delete(b)) b.destroy();
  }

  destroy(): void {
    for (const b of this.owned) b.destroy();
    this.owned.clear();
  }
}

/** ceil(n / 64): workgroups for one invocation per element at workgroup size 64. */
export const wg64 = (n: number): number => Math.ceil(n / 64);
