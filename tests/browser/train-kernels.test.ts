// The training kernels in shaders/ against their plain-TypeScript references in src/train/ref, on
// WebGPU (SwiftShader here), tiny random shapes: RMSNorm forward/backward and the 4-bit
// (MatMulNBits layout, packed by src/train/gpu-layout.ts) matmul with a LoRA branch, forward/backward, with and without zero points and
// with a zero-padded last block. Gradient contracts (+=) are checked by pre-filling the outputs.
import { beforeAll, describe, expect, it } from 'vitest';
import q4LoraSrc from '../../shaders/matmul_q4_lora.wgsl?raw';
import rmsnormSrc from '../../shaders/rmsnorm.wgsl?raw';
import rmsnormBackwardSrc from '../../shaders/rmsnorm_backward.wgsl?raw';
import { quantizeBlock4 } from '../../src/model/quantize.ts';
import { packG16, unpackG16 } from '../../src/train/f16.ts';
import { SHADERS } from '../../src/train/gpu-kernels.ts';
import { gpuStoredLinear, packLoraForGpu, packQ4ForGpu } from '../../src/train/gpu-layout.ts';
import {
  type FrozenLinear,
  type LoraBranch,
  linearLoraBackward,
  linearLoraForward,
} from '../../src/train/ref/linear.ts';
import { rmsnormBackward, rmsnormForward } from '../../src/train/ref/rmsnorm.ts';
import { expectClose, type Tolerance } from '../helpers/expect-close.ts';

/** The backward shader as the trainer compiles it (with shaders/g16.wgsl appended). */
const q4LoraBackwardSrc = SHADERS.matmul_q4_lora_backward.code;

/**
 * GPU f32 (sums in f32, SwiftShader's sqrt/division within WGSL's few-ULP bounds) vs the TS reference
 * (f64 sums rounded once): for dot products of ≤ 40 O(1) terms the difference is ≤ ~40·6e-8 relative to
 * the sum of |terms| (≈ 1e-5 absolute here); 2e-5 + 1e-4·|x| keeps headroom. A wrong nibble, block,
 * zero point, scale or transpose is off by > 1e-2.
 */
const GPU_VS_REF: Tolerance = { atol: 2e-5, rtol: 1e-4 };
/**
 * LoRA gradients are stored as g16 (src/train/f16.ts: 10 significant bits, round to nearest): the
 * kernel's pre-filled dA / dB are g16 values (the reference starts from the same decoded values) and
 * its sum is rounded once more, so on top of GPU_VS_REF each element is off by ≤ 2^-10 (9.8e-4) of its
 * magnitude; 1.1e-3 relative. A wrong index or scale is still off by > 1e-2.
 */
const G16_VS_REF: Tolerance = { atol: 2e-5, rtol: 1.1e-3 };

function rand(n: number, seed: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 2 ** 32 - 0.5) * 2 * scale;
  }
  return out;
}

type Kind = 'rw' | 'ro' | 'u';
let device: GPUDevice;

beforeAll(async () => {
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) throw new Error('no WebGPU adapter');
  device = await adapter.requestDevice();
});

function buffer(data: Float32Array | Uint8Array, usage = GPUBufferUsage.STORAGE): GPUBuffer {
  const size = Math.max(4, Math.ceil(data.byteLength / 4) * 4); // storage bindings: multiples of 4 bytes
  const b = device.createBuffer({
    size,
    usage: usage | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    mappedAtCreation: true,
  });
  new Uint8Array(b.getMappedRange()).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  b.unmap();
  return b;
}

function params(u32s: number[], f32s: number[]): GPUBuffer {
  const dv = new DataView(new ArrayBuffer(Math.ceil(((u32s.length + f32s.length) * 4) / 16) * 16));
  for (const [i, x] of u32s.entries()) dv.setUint32(4 * i, x, true);
  for (const [i, x] of f32s.entries()) dv.setFloat32(4 * (u32s.length + i), x, true);
  return buffer(new Uint8Array(dv.buffer), GPUBufferUsage.UNIFORM);
}

async function read(b: GPUBuffer, n: number): Promise<Float32Array> {
  const staging = device.createBuffer({
    size: n * 4,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const enc = device.createCommandEncoder();
  enc.copyBufferToBuffer(b, 0, staging, 0, n * 4);
  device.queue.submit([enc.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const out = new Float32Array(staging.getMappedRange().slice(0));
  staging.unmap();
  staging.destroy();
  return out;
}

/** Explicit layout (every binding of the file, so each entry point shares one bind group). */
async function dispatch(code: string, entry: string, kinds: Kind[], bufs: GPUBuffer[], workgroups: number) {
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ code });
  const layout = device.createBindGroupLayout({
    entries: kinds.map((k, binding) => ({
      binding,
      visibility: GPUShaderStage.COMPUTE,
      buffer: { type: k === 'rw' ? 'storage' : k === 'ro' ? 'read-only-storage' : 'uniform' },
    })),
  });
  const pipeline = await device.createComputePipelineAsync({
    layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }),
    compute: { module, entryPoint: entry },
  });
  const group = device.createBindGroup({
    layout,
    entries: bufs.map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, group);
  pass.dispatchWorkgroups(workgroups);
  pass.end();
  device.queue.submit([enc.finish()]);
  const err = await device.popErrorScope();
  expect(err?.message ?? null, `${entry}: WebGPU validation`).toBeNull();
}

describe('rmsnorm.wgsl / rmsnorm_backward.wgsl vs src/train/ref/rmsnorm.ts', () => {
  it('forward (out, rstd) and backward (dinp +=) on N 5, C 100 (not a multiple of 64)', async () => {
    const [N, C, eps] = [5, 100, 1e-5];
    const inp = rand(N * C, 1, 2);
    const weight = rand(C, 2).map((x) => 1 + x);
    const out = new Float32Array(N * C);
    const rstd = new Float32Array(N);
    rmsnormForward(out, rstd, inp, weight, N, C, eps);
    const gOut = buffer(new Float32Array(N * C));
    const gRstd = buffer(new Float32Array(N));
    const gInp = buffer(inp);
    const gW = buffer(weight);
    const p = params([N, C], [eps, 0]);
    await dispatch(rmsnormSrc, 'main', ['rw', 'rw', 'ro', 'ro', 'u'], [gOut, gRstd, gInp, gW, p], N);
    expectClose(await read(gOut, N * C), out, GPU_VS_REF, 'rmsnorm out');
    expectClose(await read(gRstd, N), rstd, GPU_VS_REF, 'rmsnorm rstd');

    const dout = rand(N * C, 3);
    const dinp = rand(N * C, 4); // the residual gradient already there (+= contract)
    const gDinp = buffer(dinp);
    rmsnormBackward(dinp, null, dout, inp, weight, rstd, N, C);
    await dispatch(
      rmsnormBackwardSrc,
      'main',
      ['rw', 'ro', 'ro', 'ro', 'ro', 'u'],
      [gDinp, buffer(dout), gInp, gW, buffer(rstd), p],
      N,
    );
    expectClose(await read(gDinp, N * C), dinp, GPU_VS_REF, 'rmsnorm dinp');
  });
});

describe('matmul_q4_lora(.wgsl, _backward.wgsl) vs src/train/ref/linear.ts', () => {
  for (const zeroPoints of [false, true]) {
    it(`forward (out, xa) and backward (dinp, dA, dB +=), K 40 with block 16 (padded), zero points ${zeroPoints}`, async () => {
      const [M, K, O, R, bs, scale] = [5, 40, 6, 3, 16, 1.5];
      const nb = Math.ceil(K / bs);
      const q = quantizeBlock4(rand(K * O, 5, 0.5), K, O, { blockSize: bs, zeroPoints });
      const file: FrozenLinear = {
        kind: 'q4',
        K,
        O,
        blockSize: bs,
        packed: q.packed,
        scales: q.scales,
        zeroPoints: q.zeroPoints ?? null,
      };
      // The reference runs on the weight as the GPU stores it (f16 block scales, gpu-layout.ts).
      const w = gpuStoredLinear(file);
      const inp = rand(M * K, 6);
      const lora: LoraBranch = {
        R,
        scale,
        A: rand(R * K, 7, 0.3),
        B: rand(O * R, 8, 0.3),
        dA: null,
        dB: null,
      };
      const out = new Float32Array(M * O);
      const xa = new Float32Array(M * R);
      linearLoraForward(out, xa, inp, w, lora, M);

      const qw = packQ4ForGpu(file);
      expect(qw.nb).toBe(nb);
      const p = params([M, K, O, R, bs, nb, qw.scalesOffset, qw.zpOffset], [scale, qw.scaleInv]);
      const gQ = buffer(new Uint8Array(qw.words.buffer));
      const gInp = buffer(inp);
      const gLora = buffer(packLoraForGpu(lora));
      const gOut = buffer(new Float32Array(M * O));
      const gXa = buffer(new Float32Array(M * R));
      const fwdKinds: Kind[] = ['rw', 'rw', 'ro', 'ro', 'ro', 'u'];
      const fwdBufs = [gOut, gXa, gInp, gQ, gLora, p];
      await dispatch(q4LoraSrc, 'lora_xa', fwdKinds, fwdBufs, Math.ceil((M * R) / 64));
      await dispatch(q4LoraSrc, 'main', fwdKinds, fwdBufs, Math.ceil((M * O) / 64));
      expectClose(await read(gXa, M * R), xa, GPU_VS_REF, 'xa');
      expectClose(await read(gOut, M * O), out, GPU_VS_REF, 'out');

      const dout = rand(M * O, 9);
      const dinp = rand(M * K, 10); // pre-filled: += contracts
      const g16 = (x: Float32Array) => unpackG16(packG16(x), x.length);
      lora.dA = g16(rand(R * K, 11));
      lora.dB = g16(rand(O * R, 12));
      const gDinp = buffer(dinp);
      const gDlora = buffer(
        new Uint8Array(packG16(packLoraForGpu({ ...lora, A: lora.dA, B: lora.dB })).buffer),
      );
      linearLoraBackward(dinp, dout, xa, inp, w, lora, M);
      const bwdKinds: Kind[] = ['rw', 'rw', 'rw', 'ro', 'ro', 'ro', 'ro', 'ro', 'u'];
      const bwdBufs = [gDinp, buffer(new Float32Array(M * R)), gDlora, buffer(dout), gInp, gXa, gQ, gLora, p];
      await dispatch(q4LoraBackwardSrc, 'lora_dxa', bwdKinds, bwdBufs, Math.ceil((M * R) / 64));
      await dispatch(q4LoraBackwardSrc, 'lora_db', bwdKinds, bwdBufs, Math.ceil((O * R) / 128));
      await dispatch(q4LoraBackwardSrc, 'lora_da', bwdKinds, bwdBufs, Math.ceil((R * K) / 128));
      await dispatch(q4LoraBackwardSrc, 'dinp_main', bwdKinds, bwdBufs, Math.ceil((M * K) / 64));
      const words = await read(gDlora, Math.ceil((R * K + O * R) / 2));
      const dlora = unpackG16(new Uint32Array(words.buffer, words.byteOffset, words.length), R * K + O * R);
      expectClose(dlora.subarray(R * K), lora.dB, G16_VS_REF, 'dB (g16)');
      expectClose(dlora.subarray(0, R * K), lora.dA, G16_VS_REF, 'dA (g16)');
      expectClose(await read(gDinp, M * K), dinp, GPU_VS_REF, 'dinp');
    });
  }
});
