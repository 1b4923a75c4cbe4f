// Activation recomputation on the WebGPU training backend (gpu-plan.ts `recompute`): the backward re-runs
// each layer's forward dispatches from the kept layer input, so the gradients must be bit-identical to
// the run that keeps every layer's activations (same kernels on the same inputs, deterministic), while
// the activations held shrink from L layers to one. Tiny decoder (2 layers) and the default model
// (6 layers, model_q4.onnx, B 2, T 32, rank 4 on all 42 projections; prints bytes and step times).
import { beforeAll, describe, expect, it } from 'vitest';
import { MODULE_ORDER } from '../../src/model/targets.ts';
import type { DecoderConfig } from '../../src/train/cpu-model.ts';
import { requestTrainDevice } from '../../src/train/gpu-kernels.ts';
import { GpuTrainBackend } from '../../src/train/gpu-model.ts';
import { initLora } from '../../src/train/lora.ts';
import { defaultModel, tinyBatch, tinyModules, tinyWeights } from './train-gpu-helpers.ts';

let device: GPUDevice;
beforeAll(async () => {
  device = await requestTrainDevice();
});

/** Bytes of one layer's activation buffers (gpu-plan.ts LayerActs; each rounded up to 16 bytes). */
function layerActBytes(c: DecoderConfig, B: number, T: number): number {
  const N = B * T;
  const { C, I, H, Hkv, D } = c;
  const floats = [N, N * C, N * H * D, N * Hkv * D, N * Hkv * D, B * H * T * T, N * H * D]
    .concat([N * C, N, N * C, N * I, N * I, N * I])
    .map((n) => Math.max(16, Math.ceil((4 * n) / 16) * 16));
  return floats.reduce((a, b) => a + b, 0);
}

async function pair(
  make: (recompute: boolean) => Promise<GpuTrainBackend>,
  run: (g: GpuTrainBackend) => Promise<void>,
): Promise<{ plain: GpuTrainBackend; rec: GpuTrainBackend; msPlain: number; msRec: number }> {
  const plain = await make(false);
  const rec = await make(true);
  let t = performance.now();
  await run(plain);
  const msPlain = performance.now() - t;
  t = performance.now();
  await run(rec);
  const msRec = performance.now() - t;
  return { plain, rec, msPlain, msRec };
}

async function expectSameGrads(a: GpuTrainBackend, b: GpuTrainBackend): Promise<void> {
  const [ga, gb] = [await a.readGrads(), await b.readGrads()];
  expect(gb.length).toBe(ga.length);
  ga.forEach((g, i) => {
    expect(Array.from(gb[i]!), `gradient tensor ${i}`).toEqual(Array.from(g));
  });
}

describe('activation recomputation (WebGPU)', () => {
  it('tiny decoder: bit-identical losses and gradients; one layer of activations instead of two', async () => {
    const w = tinyWeights();
    const batch = tinyBatch();
    const other = { B: 1, T: 5, tokens: [4, 8, 15, 16, 23] };
    const losses = new Map<GpuTrainBackend, number[]>();
    const { plain, rec } = await pair(
      (recompute) => GpuTrainBackend.create(device, w, tinyModules(w), { recompute }),
      async (g) => {
        // Two shapes accumulated (shared buffers must not leak between layers, calls or shapes), then a
        // step and one more micro-batch: the gradients after it are compared.
        const l = [await g.accumulate(batch, 0.7), await g.accumulate(other, 0.3)];
        await g.step(1e-2, 1);
        l.push(await g.accumulate(batch, 1));
        losses.set(g, l);
      },
    );
    expect(losses.get(rec)).toEqual(losses.get(plain));
    await expectSameGrads(plain, rec);
    // Two plans (2×6 and 1×5) each hold (L − 1) = 1 layer fewer; recompute adds a few uniforms only.
    const saved = layerActBytes(w.config, 2, 6) + layerActBytes(w.config, 1, 5);
    const diff = plain.gpuBytes - rec.gpuBytes;
    console.log(
      `tiny: GPU bytes ${plain.gpuBytes} → ${rec.gpuBytes} with recompute (−${diff}; one layer ${saved})`,
    );
    expect(diff).toBeLessThanOrEqual(saved);
    expect(diff).toBeGreaterThan(0.8 * saved);
    plain.dispose();
    rec.dispose();
  });

  it('default model (q4, 6 layers): bit-identical gradients; activations shrink ~6× (bytes, step times)', async () => {
    const { weights } = await defaultModel('q4');
    const c = weights.config;
    const tokens = Array.from({ length: 64 }, (_, i) => (i * 37 + 11) % c.V);
    const batch = { B: 2, T: 32, tokens };
    const make = (recompute: boolean) =>
      GpuTrainBackend.create(
        device,
        weights,
        initLora(weights, { rank: 4, alpha: 8, targets: MODULE_ORDER, seed: 0 }),
        { adam: { weightDecay: 0 }, recompute },
      );
    const times = new Map<GpuTrainBackend, number[]>();
    const { plain, rec } = await pair(make, async (g) => {
      const ms: number[] = [];
      for (let s = 0; s < 3; s++) {
        const t = performance.now();
        await g.accumulate(batch, 1);
        await g.step(2e-3, 1);
        ms.push(performance.now() - t);
      }
      times.set(g, ms);
      await g.accumulate(batch, 1); // the gradients compared, after 3 AdamW steps
    });
    await expectSameGrads(plain, rec);
    const one = layerActBytes(c, 2, 32);
    const actPlain = c.L * one;
    const actRec = one;
    const diff = plain.gpuBytes - rec.gpuBytes;
    const mib = (x: number) => (x / 2 ** 20).toFixed(2);
    const med = (g: GpuTrainBackend) =>
      times
        .get(g)!
        .slice(1, 3)
        .reduce((a, b) => a + b, 0) / 2;
    console.log(
      `default q4 B2 T32 r4: GPU bytes ${mib(plain.gpuBytes)} MiB → ${mib(rec.gpuBytes)} MiB with recompute; ` +
        `layer activations ${mib(actPlain)} → ${mib(actRec)} MiB (measured −${mib(diff)} MiB); ` +
        `step (accumulate + AdamW, mean of steps 2-3) ${med(plain).toFixed(0)} ms → ${med(rec).toFixed(0)} ms`,
    );
    // The activation part shrinks by (L − 1) layers: within 1% (the recompute pass adds a few uniforms).
    expect(diff).toBeLessThanOrEqual(actPlain - actRec);
    expect(diff).toBeGreaterThan(0.99 * (actPlain - actRec));
    plain.dispose();
    rec.dispose();
  });
});
