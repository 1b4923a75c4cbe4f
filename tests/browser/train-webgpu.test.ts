// Engine.train on WebGPU: a model loaded on the webgpu backend trains with device 'webgpu' on
// onnxruntime-web's own GPUDevice (the WGSL kernels of shaders/, GpuTrainBackend), and the stored adapter
// equals the one the CPU reference path trains from the same seed and data, step for step (2 steps, a
// tiny configuration: SwiftShader runs the kernels on the CPU). Kernel-level and whole-model checks
// against PyTorch live in train-gpu-*.test.ts; this one checks the engine wiring and the device choice.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseSafetensors } from '../../src/adapters/safetensors.ts';
import { AdapterStore } from '../../src/adapters/store.ts';
import { LocalEngine } from '../../src/engine/engine.ts';
import type { PeftFiles, TrainOptions } from '../../src/engine/types.ts';
import { CheckpointStore } from '../../src/train/checkpoints.ts';
import { expectClose, type Tolerance } from '../helpers/expect-close.ts';
import { MODEL_BASE, setupOrt } from './helpers/model.ts';

setupOrt();
const RUN = Date.now().toString(36);

/**
 * GPU vs CPU after 2 AdamW steps: the first Adam steps move each weight by about ±lr (2e-3), and with
 * identical math weights agree to a small fraction of lr (1e-3). But on this 4-bit base the GPU holds
 * the embedding and block scales as f16 (≤ 2^-11 relative each; gpu-layout.ts) and stores gradients as
 * g16 (2^-10), so it trains a very slightly different model: an element whose gradient is near zero can
 * take a visibly different Adam step. Measured: 5 of the 3,584 elements outside GPU_VS_CPU_WEIGHTS, the
 * worst 2.2e-4 (11% of lr) off. So: ≤ 1% of elements outside it, all within GPU_VS_CPU_ALL (25% of lr);
 * a wrong step, mask or target module moves most elements by ~lr.
 */
const GPU_VS_CPU_WEIGHTS: Tolerance = { atol: 2e-5, rtol: 1e-3 };
const GPU_VS_CPU_ALL: Tolerance = { atol: 5e-4, rtol: 1e-3 };

const TEXT =
  'ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n' +
  'JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\nDeny thy father and refuse thy name.\n';

function tensors(files: PeftFiles): Map<string, Float32Array> {
  const st = parseSafetensors(files['adapter_model.safetensors']);
  return new Map([...st.tensors].map(([k, t]) => [k, new Float32Array(t.data.slice().buffer)]));
}

describe('Engine.train on webgpu', () => {
  let engine: LocalEngine;
  beforeAll(async () => {
    engine = new LocalEngine({
      adapterStore: new AdapterStore({ dbName: `weblora-test-train-gpu-${RUN}` }),
      checkpointStore: new CheckpointStore({ dbName: `weblora-test-train-gpu-ckpt-${RUN}` }),
    });
    const r = await engine.loadModel(MODEL_BASE, { backend: 'webgpu', dtype: 'q4' });
    expect(r.backend).toBe('webgpu');
  });
  afterAll(async () => {
    await engine?.dispose();
  });

  it("device 'webgpu' (and 'auto' on a webgpu model) trains on ORT's device and equals the CPU path", async () => {
    const opts: Omit<TrainOptions, 'name'> = {
      data: TEXT,
      format: 'text',
      rank: 2,
      targets: ['q_proj', 'v_proj'],
      layers: [4, 5],
      steps: 2,
      batchSize: 2,
      seqLen: 16,
      evalSplit: 0,
      checkpointEvery: 0,
      seed: 7,
    };
    const gpu = await engine.train({ ...opts, name: `gpu-${RUN}`, device: 'webgpu' });
    const auto = await engine.train({ ...opts, name: `auto-${RUN}`, device: 'auto' });
    const cpu = await engine.train({ ...opts, name: `cpu-${RUN}`, device: 'cpu' });
    expect([gpu.status, gpu.device, auto.device, cpu.device]).toEqual(['done', 'webgpu', 'webgpu', 'cpu']);
    expect(gpu.steps).toBe(2);
    expect(gpu.finalLoss).not.toBeNull();
    expectClose([gpu.finalLoss!], [cpu.finalLoss!], GPU_VS_CPU_WEIGHTS, 'last-step loss');
    const g = tensors(await engine.exportAdapter(`gpu-${RUN}`));
    const c = tensors(await engine.exportAdapter(`cpu-${RUN}`));
    expect([...g.keys()].sort()).toEqual([...c.keys()].sort());
    expect(g.size).toBe(2 * 2 * 2); // 2 layers × (q, v) × (A, B)
    let outside = 0;
    let total = 0;
    for (const [k, v] of g) {
      expectClose(v, c.get(k)!, GPU_VS_CPU_ALL, k);
      const w = c.get(k)!;
      v.forEach((x, i) => {
        if (Math.abs(x - w[i]!) > 2e-5 + 1e-3 * Math.abs(w[i]!)) outside++; // GPU_VS_CPU_WEIGHTS
      });
      total += v.length;
    }
    console.log(`webgpu vs cpu after 2 steps: ${outside}/${total} elements outside atol 2e-5 + 1e-3·|x|`);
    expect(outside).toBeLessThanOrEqual(total / 100);
    // Trained: B moved away from its zero init.
    const someB = [...g].find(([k]) => k.endsWith('lora_B.weight'))![1];
    expect(Math.max(...Array.from(someB, Math.abs))).toBeGreaterThan(1e-4);
    // The adapter runs on the webgpu inference path right away.
    const out = await engine.generate({ prompt: 'ROMEO:\n', adapter: `gpu-${RUN}`, maxNewTokens: 3 });
    expect(out.tokenIds).toHaveLength(3);
  });

  /**
   * The adopted feeds are written on the GPU (lora_feeds.wgsl: Aᵀ, scale·Bᵀ in f32) and the stored ones
   * by peftToFeeds on the CPU from the same f32 weights; with scale 2 (alpha = 2·rank) both are exact, so
   * the logits agree to float noise of the session itself. Stated bound: 1e-5 absolute.
   */
  const ADOPTED_VS_STORED_LOGITS: Tolerance = { atol: 1e-5, rtol: 0 };

  it("a 'webgpu' run hands its final weights to the feed cache: the first generate is a hit with no upload", async () => {
    const name = `adopt-${RUN}`;
    const r = await engine.train({
      name,
      data: TEXT,
      format: 'text',
      rank: 2,
      targets: ['q_proj', 'v_proj', 'down_proj'],
      layers: [3, 5],
      steps: 2,
      batchSize: 2,
      seqLen: 16,
      evalSplit: 0,
      checkpointEvery: 0,
      seed: 3,
      device: 'webgpu',
    });
    expect([r.status, r.device]).toEqual(['done', 'webgpu']);
    const before = await engine.adapterStats();
    const req = { prompt: 'JULIET:\n', adapter: name, maxNewTokens: 2, temperature: 0 };
    const adopted = await engine.generate(req);
    const adoptedLogits = engine.debugState().lastPrefillLogits!.slice();
    const after = await engine.adapterStats();
    expect(after.uploads, 'no upload for the freshly trained adapter').toBe(before.uploads);
    expect(after.hits).toBe(before.hits + 1);
    expect(after.misses).toBe(before.misses);
    // Forget the adopted feeds: the same stored version now loads from IndexedDB and uploads once.
    (engine as unknown as { forgetAdapter(n: string): void }).forgetAdapter(name);
    const stored = await engine.generate(req);
    const storedLogits = engine.debugState().lastPrefillLogits!.slice();
    expect((await engine.adapterStats()).uploads).toBe(after.uploads + 1);
    expectClose(adoptedLogits, storedLogits, ADOPTED_VS_STORED_LOGITS, 'adopted vs stored feeds: logits');
    expect(adopted.tokenIds).toEqual(stored.tokenIds);
  });
});
