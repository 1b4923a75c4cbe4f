// Timing diagnostic of the WebGPU training backend on the default model (B 2, T 32, rank 4 on all 42
// projections; fp32 model.onnx and 4-bit model_q4.onnx): ms per optimizer step (accumulate + step,
// steady state: median of 3 after a warm-up) and, from src/train/gpu-profile.ts (timestamp queries when
// the device has them), the ms per kernel entry point, printed as a table. The numbers in
// src/train/README.md come from here. Asserts only that the profile covers one whole step's dispatches
// and that losses are finite; speed is machine-dependent (SwiftShader here), so no time bound.
import { describe, expect, it } from 'vitest';
import { MODULE_ORDER } from '../../src/model/targets.ts';
import { requestTrainDevice } from '../../src/train/gpu-kernels.ts';
import { GpuTrainBackend } from '../../src/train/gpu-model.ts';
import { profilePass } from '../../src/train/gpu-profile.ts';
import { initLora } from '../../src/train/lora.ts';
import { defaultModel } from './train-gpu-helpers.ts';

describe('WebGPU training step timing (default model, B 2, T 32, rank 4)', () => {
  for (const which of ['fp32', 'q4'] as const) {
    it(`${which}: ms per step and per kernel`, async () => {
      const device = await requestTrainDevice();
      const { weights } = await defaultModel(which);
      const mods = initLora(weights, { rank: 4, alpha: 8, targets: MODULE_ORDER, seed: 0 });
      const gpu = await GpuTrainBackend.create(device, weights, mods, { adam: { weightDecay: 0 } });
      const tokens = Array.from({ length: 64 }, (_, i) => (i * 37 + 11) % weights.config.V);
      const batch = { B: 2, T: 32, tokens };
      const times: number[] = [];
      const accTimes: number[] = [];
      for (let s = 0; s < 4; s++) {
        const t0 = performance.now();
        const loss = await gpu.accumulate(batch, 1);
        accTimes.push(performance.now() - t0);
        await gpu.step(2e-3, 1);
        times.push(performance.now() - t0);
        expect(Number.isFinite(loss)).toBe(true);
      }
      const median = (xs: number[]) => xs.slice(1).sort((a, b) => a - b)[1]!;
      const steady = median(times);
      const t1 = performance.now();
      await gpu.evalLoss(batch);
      const fwd = performance.now() - t1;
      const { method, kernels: prof } = await profilePass(gpu, batch);
      const rows = [...prof].sort((a, b) => b[1].ms - a[1].ms);
      const total = rows.reduce((a, r) => a + r[1].ms, 0);
      console.log(
        `${which}: GPU bytes ${(gpu.gpuBytes / 2 ** 20).toFixed(1)} MiB (weights, LoRA, grads, moments, activations); step ${steady.toFixed(0)} ms (first ${times[0]!.toFixed(0)} ms; accumulate ${median(accTimes).toFixed(0)} ms), forward only ${fwd.toFixed(0)} ms; ` +
          `profile (${method}) ${total.toFixed(0)} ms:\n` +
          rows
            .map(
              ([k, v]) =>
                `  ${k.padEnd(36)} ${v.ms.toFixed(1).padStart(8)} ms ${((100 * v.ms) / total).toFixed(1).padStart(5)}%  x${v.count}`,
            )
            .join('\n'),
      );
      const main = which === 'fp32' ? 'matmul_lora:main' : 'matmul_q4_lora:main';
      expect(prof.get(main)?.count).toBe(which === 'fp32' ? 43 : 42); // 42 projections (+ the tied lm_head in fp32)
      expect(prof.get('attention:main')?.count).toBe(6);
      gpu.dispose();
      device.destroy();
    });
  }
});
