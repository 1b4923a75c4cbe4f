// A freshly trained adapter feeds inference without a CPU round trip: GpuTrainBackend runs on
// onnxruntime-web's own GPUDevice (`ort.env.webgpu.device`, as the engine will pass it), takes a training
// step from peft-adapter, and writeLoraFeeds (src/train/gpu-feeds.ts, shaders/lora_feeds.wgsl) writes
// its weights as the injected graph's LoRA inputs on the GPU. Checked: the feeds equal peftToFeeds of the
// backend's snapshot (src/adapters/peft.ts, the path every stored adapter takes), and the injected ORT
// session gives the same logits fed from them as from those CPU feeds, and as the trainer's own forward
// (the CPU reference with the snapshot's weights) within the WebGPU-vs-reference bound.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { peftToFeeds } from '../../src/adapters/peft.ts';
import type { TensorView } from '../../src/adapters/safetensors.ts';
import { parseSafetensors } from '../../src/adapters/safetensors.ts';
import { createDecoderSession, type DecoderGraph, KvStepper } from '../../src/engine/session.ts';
import { injectLora, type LoraTarget } from '../../src/model/inject-lora.ts';
import { decodeModel, encodeModel } from '../../src/model/onnx-io.ts';
import { CpuLoraModel, type FrozenWeights } from '../../src/train/cpu-model.ts';
import { writeLoraFeeds } from '../../src/train/gpu-feeds.ts';
import { GpuTrainBackend } from '../../src/train/gpu-model.ts';
import { loraToPeft } from '../../src/train/lora.ts';
import { decoderConfig, loadFrozenWeights } from '../../src/train/weights.ts';
import { expectClose, SAME_GRAPH, WEBGPU_VS_WASM } from '../helpers/expect-close.ts';
import { loadPackage, PROMPT, setupOrt } from './helpers/model.ts';
import { bytes, i32, peftAdapter } from './train-gpu-helpers.ts';

const ort = setupOrt();
let session: DecoderGraph;
let targets: LoraTarget[];
let ids: number[];
let gpu: GpuTrainBackend;
let weights: FrozenWeights;
let config: Awaited<ReturnType<typeof peftAdapter>>['config'];

beforeAll(async () => {
  const { pkg, tok } = await loadPackage('fp32');
  ids = tok.encode(PROMPT).slice(0, 8);
  const injected = injectLora(decodeModel(pkg.model));
  targets = injected.targets;
  session = await createDecoderSession(ort, encodeModel(injected.model), pkg.config, { backend: 'webgpu' });
  const device = (await ort.env.webgpu.device) as GPUDevice;
  weights = loadFrozenWeights(decodeModel(pkg.model), decoderConfig(pkg.config));
  const fx = await peftAdapter(weights);
  config = fx.config;
  gpu = await GpuTrainBackend.create(device, weights, fx.modules);
  const st = parseSafetensors(await bytes('/tests/fixtures/lora-grads.safetensors'));
  await gpu.accumulate({ B: 2, T: 32, tokens: i32(st, 'batch') }, 1);
  await gpu.step(1e-2, 1);
});

afterAll(async () => {
  gpu?.dispose();
  await session?.session.release();
});

async function logits(feeds: Record<string, InstanceType<typeof ort.Tensor>>): Promise<Float32Array> {
  const stepper = new KvStepper(ort, session, feeds);
  try {
    return await stepper.step(ids, { allLogits: true });
  } finally {
    stepper.dispose();
  }
}

describe('writeLoraFeeds on onnxruntime-web’s device', () => {
  it('equals peftToFeeds of the snapshot, and feeds the injected session to the same logits', async () => {
    const snap = await gpu.snapshot();
    const tensors = new Map<string, TensorView>();
    const modules = snap.modules.map((m, i) => ({
      layer: m.layer,
      module: m.module,
      path: m.path,
      branch: { R: m.R, scale: gpu.slots[i]!.scale, A: m.A, B: m.B, dA: null, dB: null },
    }));
    for (const [key, t] of loraToPeft(modules))
      tensors.set(key, { dtype: 'F32', shape: t.shape, data: new Uint8Array(t.data.buffer) });
    const cpu = peftToFeeds(config, tensors, targets);
    const fed = writeLoraFeeds(gpu, targets, ort);
    try {
      expect(fed.rank).toBe(cpu.rank);
      for (const [name, f] of cpu.feeds) {
        const t = fed.feeds[name]!;
        expect(t.location).toBe('gpu-buffer');
        expect(t.dims).toEqual(f.dims);
        // Transposes are exact; scale·B is one f32 product either way (scales 2 and 4 here: exact).
        expectClose((await t.getData()) as Float32Array, f.data, { atol: 0, rtol: 0 }, name);
      }
      const fromGpu = await logits(fed.feeds);
      const cpuTensors = Object.fromEntries(
        [...cpu.feeds].map(([k, v]) => [k, new ort.Tensor('float32', v.data, v.dims)]),
      );
      const fromCpu = await logits(cpuTensors);
      expectClose(fromGpu, fromCpu, SAME_GRAPH, 'GPU-fed vs CPU-fed logits');
      // The trainer's own forward (the CPU reference with the snapshot's weights) predicts what ORT runs.
      const ref = new CpuLoraModel(weights, modules);
      ref.forward({ B: 1, T: ids.length, tokens: ids });
      expectClose(fromGpu, ref.logits, WEBGPU_VS_WASM, 'ORT webgpu logits vs the trainer forward');
    } finally {
      fed.dispose();
    }
  });
});
