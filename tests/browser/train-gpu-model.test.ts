// The WebGPU training backend (src/train/gpu-model.ts) on WebGPU (SwiftShader here): on the default model
// against the float64 PyTorch fixtures (LoRA gradients of lora-grads.safetensors; the 10-step AdamW
// trajectory is train-gpu-trajectory.test.ts, ~30 s), model_q4.onnx against the CPU q4 path, and on a tiny
// random decoder against the CPU backend (cpu-backend.ts) step for step (token-weighted accumulation,
// clipping, weight decay, masks, snapshot/restore) and against finite differences of its own loss.
// Each test prints its measurement.
import { beforeAll, describe, expect, it } from 'vitest';
import { InvalidOptionError, UnsupportedError } from '../../src/errors.ts';
import { CpuTrainBackend } from '../../src/train/cpu-backend.ts';
import type { Batch } from '../../src/train/cpu-model.ts';
import { requestTrainDevice } from '../../src/train/gpu-kernels.ts';
import { gpuStoredWeights } from '../../src/train/gpu-layout.ts';
import { GpuTrainBackend } from '../../src/train/gpu-model.ts';
import { expectClose, type Tolerance } from '../helpers/expect-close.ts';
import {
  defaultModel,
  f32,
  fixture,
  i32,
  peftAdapter,
  rand,
  relErr,
  tinyBatch,
  tinyModules,
  tinyWeights,
} from './train-gpu-helpers.ts';

/**
 * Issue 10's bound for an fp32 engine vs the float64 PyTorch gradients: ‖g − g*‖/‖g*‖ ≤ 1e-3 per tensor.
 * Measured on SwiftShader: ≤ 2.1e-6 with f32 gradient storage; the backend now stores gradients as g16
 * (src/train/f16.ts, 10 significant bits: each element rounded by ≤ 2^-10 relative, so a tensor's
 * ‖g − g*‖/‖g*‖ ≤ 9.8e-4 and ≈ 2^-10/√3 ≈ 5.6e-4 for uniform rounding): measured 4.5e-4 (fp32 model;
 * 6.3e-4 when it was tried with an f16 embedding) and 4.5e-4 (q4 vs the CPU on the weights as the GPU
 * stores them, gpuStoredWeights: f16 embedding and block scales). Still inside issue 10's bound; a wrong scale or transpose is O(1).
 */
const GRAD_REL = 1e-3;
/** Loss vs loss_f64: measured |diff| ~6e-9 (62 cross-entropies of ~4 in f32); 1e-5 as the CPU test. */
const LOSS_ABS = 1e-5;
/**
 * GPU q4 vs CPU q4 (same dequantized weights, f32 vs f64 sums): the same math, so the fp32 bound
 * applies; measured ≤ 1e-5 per tensor with f32 gradients, 4.7e-4 with g16 gradients (see GRAD_REL).
 */
const Q4_SAME_MATH_REL = 1e-3;
const TINY_LOSS: Tolerance = { atol: 1e-5, rtol: 1e-5 };
/**
 * GPU gradients are g16 (src/train/f16.ts): every element rounded to 10 significant bits (≤ 2^-10 =
 * 9.8e-4 relative) once per accumulate. Per element: 2e-5 absolute (f32 vs f64 sums) plus 1.1e-3 relative.
 * The global norm: ≤ 2^-10 relative per rounding, two micro-batches ⇒ 2e-3 relative (measured 1.4e-4).
 * A wrong index, scale or missing term is still off by ≥ 1e-2.
 */
const TINY_G16_GRADS: Tolerance = { atol: 2e-5, rtol: 1.1e-3 };
const TINY_G16_NORM: Tolerance = { atol: 1e-5, rtol: 2e-3 };
/**
 * Weights after AdamW steps at lr 1e-2 from g16 gradients accumulated over 2 micro-batches: the first
 * micro-batch's contribution is rounded relative to its own size, which for an element whose two
 * contributions nearly cancel is large next to the final g, and Adam's m̂/√v̂ passes that on at up to
 * O(lr) for such elements (with f32 gradients, GPU f32 vs CPU f64 sums agreed to ~1e-6). Measured: worst element 1.4e-4 and 2.0e-4 (2% of lr) in two versions of the weights; 4e-4 (4% of lr),
 * while a wrong bias correction, weight decay or clip moves elements by ≥ 1e-3 (10% of lr).
 */
const TINY_G16_WEIGHTS: Tolerance = { atol: 4e-4, rtol: 1e-4 };
/**
 * Central differences of the GPU's f32 loss (≈ 3.5) with h = 1e-2: rounding noise ~4e-7/(2h) ≈ 2e-5,
 * truncation ~h²·|f'''|/6 ≲ 1e-5 for these smooth O(1) functions. 1e-4 + 2% relative is above that, and
 * a missing gradient path (residual, head mapping, mask) is off by far more than 2%.
 */
const FD: Tolerance = { atol: 1e-4, rtol: 0.02 };

let device: GPUDevice;
beforeAll(async () => {
  device = await requestTrainDevice();
});

async function gradsVsFixture(
  gpu: GpuTrainBackend,
  paths: string[],
  st: Awaited<ReturnType<typeof fixture>>,
) {
  const grads = await gpu.readGrads();
  let worst = 0;
  let worstKey = '';
  paths.forEach((path, i) => {
    for (const [j, w] of ['A', 'B'].entries()) {
      const key = `base_model.model.${path}.lora_${w}.weight`;
      const e = relErr(grads[2 * i + j]!, f32(st, key));
      if (e > worst) [worst, worstKey] = [e, key];
    }
  });
  return { worst, worstKey, grads };
}

describe('default model (model.onnx, fp32) vs the PyTorch fixtures', () => {
  it('lora-grads: loss within 1e-5 of loss_f64, every tensor ‖g − g*‖/‖g*‖ ≤ 1e-3', async () => {
    const { weights } = await defaultModel('fp32');
    const st = await fixture('lora-grads');
    const { modules } = await peftAdapter(weights);
    const gpu = await GpuTrainBackend.create(device, weights, modules);
    const batch = { B: 2, T: 32, tokens: i32(st, 'batch') };
    await gpu.evalLoss(batch); // builds the (2, 32) plan: not timed
    const t0 = performance.now();
    const loss = await gpu.accumulate(batch, 1);
    const ms = performance.now() - t0;
    const { worst, worstKey } = await gradsVsFixture(
      gpu,
      modules.map((m) => m.path),
      st,
    );
    const want = Number(st.metadata.loss_f64);
    console.log(
      `GPU fp32 forward+backward ${ms.toFixed(0)} ms; loss ${loss} vs ${want} (|diff| ${Math.abs(loss - want).toExponential(2)}); ` +
        `max per-tensor rel err ${worst.toExponential(2)} (${worstKey})`,
    );
    expectClose([loss], [want], { atol: LOSS_ABS, rtol: 0 }, 'loss');
    expect(worst, worstKey).toBeLessThanOrEqual(GRAD_REL);
    gpu.dispose();
  });
});

describe('model_q4.onnx: 4-bit blocks dequantized inside the kernels', () => {
  it('GPU q4 loss and gradients == CPU q4 (same math) on the lora-grads batch', async () => {
    const { weights } = await defaultModel('q4');
    const st = await fixture('lora-grads');
    const batch = { B: 2, T: 32, tokens: i32(st, 'batch') };
    const gpuMods = (await peftAdapter(weights)).modules;
    const gpu = await GpuTrainBackend.create(device, weights, gpuMods);
    await gpu.evalLoss(batch);
    const t0 = performance.now();
    const lossG = await gpu.accumulate(batch, 1);
    const ms = performance.now() - t0;
    const gg = await gpu.readGrads();
    const cpuMods = (await peftAdapter(weights)).modules;
    const cpu = new CpuTrainBackend(gpuStoredWeights(weights), cpuMods); // same math: f16 embedding, scales
    const t1 = performance.now();
    const lossC = await cpu.accumulate(batch, 1);
    const msCpu = performance.now() - t1;
    let worst = 0;
    cpuMods.forEach((m, i) => {
      worst = Math.max(worst, relErr(gg[2 * i]!, m.branch.dA!), relErr(gg[2 * i + 1]!, m.branch.dB!));
    });
    console.log(
      `q4 forward+backward GPU ${ms.toFixed(0)} ms, CPU ${msCpu.toFixed(0)} ms; loss GPU ${lossG} CPU ${lossC}; max per-tensor rel err ${worst.toExponential(2)}`,
    );
    expectClose([lossG], [lossC], { atol: LOSS_ABS, rtol: 0 }, 'loss');
    expect(worst).toBeLessThanOrEqual(Q4_SAME_MATH_REL);
    gpu.dispose();
  });
});

/** The tiny batch split in two micro-batches (rows), with their token shares. */
function microBatches(): { b: Batch; share: number }[] {
  const { T, tokens, labelMask, attentionMask } = tinyBatch();
  const rows = [0, 1].map((r) => ({
    B: 1,
    T,
    tokens: tokens.slice(r * T, r * T + T),
    labelMask: labelMask.slice(r * T, r * T + T),
    attentionMask: attentionMask.slice(r * T, r * T + T),
  }));
  const counts = rows.map((b) => b.labelMask.slice(1).reduce((a, x) => a + x, 0));
  const total = counts[0]! + counts[1]!;
  return rows.map((b, i) => ({ b, share: counts[i]! / total }));
}

describe('tiny decoder (2 layers, GQA, q4 gate, untied head, masks): GPU vs CPU backend', () => {
  it('3 steps of 2 accumulated micro-batches, clipping and weight decay: losses, norms, weights, moments', async () => {
    const w = tinyWeights();
    const adam = { weightDecay: 0.01 };
    const cpu = new CpuTrainBackend(gpuStoredWeights(w), tinyModules(w), { adam }); // the GPU's stored weights
    const gpu = await GpuTrainBackend.create(device, w, tinyModules(w), { adam });
    let worstW = 0;
    let worstAbs = 0;
    for (let s = 0; s < 3; s++) {
      let lc = 0;
      let lg = 0;
      for (const { b, share } of microBatches()) {
        lc += share * (await cpu.accumulate(b, share));
        lg += share * (await gpu.accumulate(b, share));
      }
      expectClose([lg], [lc], TINY_LOSS, `loss step ${s}`);
      const maxNorm = s === 0 ? 0.05 : 10; // the first step clips
      const nc = await cpu.step(1e-2, maxNorm);
      const ng = await gpu.step(1e-2, maxNorm);
      expectClose([ng.gradNorm], [nc.gradNorm], TINY_G16_NORM, `grad norm step ${s}`);
      if (s === 0) expect(nc.gradNorm).toBeGreaterThan(0.05);
      const [sc, sg] = [await cpu.snapshot(), await gpu.snapshot()];
      expect(sg.step).toBe(sc.step);
      sc.modules.forEach((m, i) => {
        const g = sg.modules[i]!;
        expect(g.path).toBe(m.path);
        expectClose(g.A, m.A, TINY_G16_WEIGHTS, `${m.path} A step ${s}`);
        expectClose(g.B, m.B, TINY_G16_WEIGHTS, `${m.path} B step ${s}`);
        worstW = Math.max(worstW, relErr(g.A, m.A), relErr(g.B, m.B));
        for (const [x, y] of [
          [g.A, m.A],
          [g.B, m.B],
        ] as const)
          x.forEach((v, j) => {
            worstAbs = Math.max(worstAbs, Math.abs(v - y[j]!));
          });
      });
      // m carries the g16 gradients, whose first micro-batch was rounded relative to ITS partial sum,
      // which can exceed the final sum (cancellation between micro-batches): so an absolute bound
      // relative to the tensor's largest |m| (2e-3 ≈ 2 · 2^-10) plus 2e-3 relative. Measured: the worst
      // element 3.8e-7 off (1.6% of its own |m| = 2.4e-5). A missing term is off by ≥ 10% of max |m|.
      sc.adam!.m.forEach((m, i) => {
        const mMax = Math.max(...Array.from(m, Math.abs));
        expectClose(sg.adam!.m[i]!, m, { atol: 2e-3 * mMax, rtol: 2e-3 }, `m ${i}`);
      });
    }
    console.log(
      `tiny GPU vs CPU after 3 steps: max per-tensor weight rel err ${worstW.toExponential(2)}, worst element |diff| ${worstAbs.toExponential(2)}`,
    );

    // snapshot → restore into fresh backends, one more step each: still equal (checkpoint resume).
    const st = await cpu.snapshot();
    const gpu2 = await GpuTrainBackend.create(device, w, tinyModules(w, 99), { adam });
    await gpu2.restore(st);
    const { b } = microBatches()[0]!;
    const [l1, l2] = [await cpu.accumulate(b, 1), await gpu2.accumulate(b, 1)];
    expectClose([l2], [l1], TINY_LOSS, 'loss after restore');
    await cpu.step(1e-2, 1);
    await gpu2.step(1e-2, 1);
    const [a, c] = [await cpu.snapshot(), await gpu2.snapshot()];
    expect(c.step).toBe(4);
    a.modules.forEach((m, i) => {
      expectClose(c.modules[i]!.B, m.B, TINY_G16_WEIGHTS, `${m.path} B after restore`);
    });
    gpu.dispose();
    gpu2.dispose();
  });

  it('LoRA only above layer 0 (rank 16 and 1, the backward stops at layer 1): gradients == CPU', async () => {
    const w = tinyWeights();
    const mods = () =>
      tinyModules(w)
        .filter((m) => m.layer === 1)
        .map((m, i) => {
          const R = i % 2 ? 1 : 16;
          const { K, O } = w.layers[1]!.proj[m.module];
          return {
            ...m,
            branch: { ...m.branch, R, A: rand(R * K, 60 + i, 0.5), B: rand(O * R, 80 + i, 0.5) },
          };
        });
    const cpu = new CpuTrainBackend(gpuStoredWeights(w), mods());
    const gpu = await GpuTrainBackend.create(device, w, mods());
    const batch = tinyBatch();
    expectClose([await gpu.accumulate(batch, 0.5)], [await cpu.accumulate(batch, 0.5)], TINY_LOSS, 'loss');
    const gg = await gpu.readGrads();
    cpu.modules.forEach((m, i) => {
      expectClose(gg[2 * i]!, m.branch.dA!, TINY_G16_GRADS, `${m.path} dA`);
      expectClose(gg[2 * i + 1]!, m.branch.dB!, TINY_G16_GRADS, `${m.path} dB`);
    });
    gpu.dispose();
  });

  it('finite differences of the GPU loss match the GPU gradient (7 entries of A and B, 6 modules)', async () => {
    const w = tinyWeights();
    const gpu = await GpuTrainBackend.create(device, w, tinyModules(w));
    const batch = tinyBatch();
    await gpu.accumulate(batch, 1);
    const grads = await gpu.readGrads();
    const base = await gpu.snapshot();
    const h = 1e-2;
    const got: number[] = [];
    const fd: number[] = [];
    for (const [mi, which, idx] of [
      [0, 'A', 3],
      [1, 'B', 5],
      [2, 'A', 10],
      [3, 'B', 1],
      [5, 'A', 7],
      [5, 'B', 20],
      [6, 'B', 0],
    ] as const) {
      const lossAt = async (delta: number) => {
        const s = structuredClone(base);
        s.modules[mi]![which][idx]! += delta;
        await gpu.restore(s);
        return gpu.evalLoss(batch);
      };
      const d = ((await lossAt(h)) - (await lossAt(-h))) / (2 * h);
      fd.push(d);
      got.push(grads[2 * mi + (which === 'A' ? 0 : 1)]![idx]!);
    }
    console.log(
      `GPU grads ${got.map((x) => x.toExponential(3)).join(' ')}; FD ${fd.map((x) => x.toExponential(3)).join(' ')}`,
    );
    expect(got.filter((x) => Math.abs(x) > 1e-3).length).toBeGreaterThanOrEqual(5); // live entries
    expectClose(got, fd, FD, 'GPU gradient vs finite differences');
    gpu.dispose();
  });
});

describe('limits and inputs', () => {
  it('requestTrainDevice asks for the adapter’s own binding size; a shape beyond the device limit is an UnsupportedError naming it', async () => {
    const adapter = (await navigator.gpu.requestAdapter())!;
    expect(device.limits.maxStorageBufferBindingSize).toBe(adapter.limits.maxStorageBufferBindingSize);
    const small = await adapter.requestDevice(); // spec defaults: 128 MiB bindings
    const w = tinyWeights();
    const gpu = await GpuTrainBackend.create(small, w, tinyModules(w));
    const [B, T] = [40, 512]; // attention probabilities B·H·T·T·4 = 168 MB > 128 MiB
    const err = await gpu
      .evalLoss({ B, T, tokens: new Array(B * T).fill(1) })
      .then(() => null)
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnsupportedError);
    expect((err as UnsupportedError).data).toMatchObject({ limit: 'maxStorageBufferBindingSize' });
    await expect(gpu.evalLoss({ B: 1, T: 3, tokens: [1, 2, 32] })).rejects.toBeInstanceOf(InvalidOptionError);
    gpu.dispose();
    small.destroy();
  });

  it('shapes beyond the 3 kept plans are freed and rebuilt on demand: same losses; overlapping calls serialize; dispose frees all', async () => {
    const w = tinyWeights();
    const gpu = await GpuTrainBackend.create(device, w, tinyModules(w));
    const batch = tinyBatch();
    const first = await gpu.evalLoss(batch);
    for (const T of [3, 4, 5, 7]) await gpu.evalLoss({ B: 1, T, tokens: batch.tokens.slice(0, T) });
    expect(await gpu.evalLoss(batch)).toBe(first);
    expect(await gpu.accumulate(batch, 1)).toBe(first);
    // Calls made without awaiting the previous one run one after another (no double-mapped staging).
    const [a, b, c] = await Promise.all([gpu.evalLoss(batch), gpu.accumulate(batch, 1), gpu.evalLoss(batch)]);
    expect([a, b, c]).toEqual([first, first, first]);
    expect(gpu.gpuBytes).toBeGreaterThan(0);
    gpu.dispose();
    expect(gpu.gpuBytes).toBe(0);
    await expect(gpu.evalLoss(batch)).rejects.toBeInstanceOf(InvalidOptionError);
  });
});
