/**
 * The whole CPU training model on the default model package against independent references:
 * PyTorch golden logits (base and both PEFT fixtures), the float64 PyTorch LoRA gradients and loss of
 * tests/fixtures/lora-grads.safetensors, onnxruntime-web's own MatMulNBits forward of model_q4.onnx (and
 * of an asymmetric zero-point quantization with a 4-bit lm_head), and
 * the q4 path against the fp32 path (4-bit error) and against fp32 weights dequantized up front (same math).
 * Each test prints its measurement so the tolerances below stay honest.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { decodeModel } from '../../../src/model/onnx-io.ts';
import { dequantizeMatMulNBits, quantize } from '../../../src/model/quantize.ts';
import { CpuLoraModel, type FrozenWeights, type LoraModule } from '../../../src/train/cpu-model.ts';
import { loraFromPeft } from '../../../src/train/lora.ts';
import type { FrozenLinear } from '../../../src/train/ref/linear.ts';
import { loadFrozenWeights } from '../../../src/train/weights.ts';
import { expectClose, FP32_LOGITS, type Tolerance } from '../../helpers/expect-close.ts';
import { f32, i32, loadGolden, loadPeftFixture, MODEL_PATH, Q4_PATH } from '../../helpers/fixtures.ts';
import { defaultModelFeeds, runModel } from '../model/graph-builders.ts';
import { defaultWeights, loadFixture, peftAdapterModules, relErr } from './helpers.ts';

/**
 * Issue 10's bound for an fp32 engine vs the float64 PyTorch gradients: ‖g − g*‖/‖g*‖ ≤ 1e-3 per tensor.
 * Measured: ≤ 3.7e-7 (fp32 storage, f64 sums), so the bound has >1000x headroom; a wrong scale or
 * transpose is O(1).
 */
const GRAD_REL = 1e-3;
/**
 * Loss of the fp32 engine vs the float64 oracle's loss_f64: 62 cross-entropies of ~4 averaged, fp32
 * activations through 6 layers (relative ~1e-7 each). Measured |diff| 1.5e-8; 1e-5 is >1000x headroom.
 */
const LOSS_ABS = 1e-5;
/**
 * model_q4.onnx (symmetric 4-bit, block 32) vs model.onnx on the lora-grads batch with peft-adapter.
 * Measured: loss gap 1.2e-3 (3e-4 relative); per-tensor gradient relative error 0.10..0.28 (median 0.17),
 * all tensors together 0.17: 4-bit weight noise moves gradients (small differences of large terms) far
 * more than the loss. Bounds: loss gap ≤ 0.02 (16x), gradients ≤ 0.5 per tensor and ≤ 0.3 overall;
 * a broken dequantization (wrong nibble, block or scale) moves the loss by > 1 and gradients by ~1.
 */
const Q4_LOSS_GAP = 0.02;
const Q4_GRAD_REL_TENSOR = 0.5;
const Q4_GRAD_REL_ALL = 0.3;
/**
 * The same weights dequantized on the fly (q4 path) vs dequantized up front into fp32 (fp32 path): the
 * identical float32 weights and operation order, so only the |x| ≤ 1e-6-relative rounding of the
 * separate LoRA/base sums can differ. Measured 0 / ~1e-7.
 */
const SAME_MATH: Tolerance = { atol: 1e-6, rtol: 1e-5 };

function gradsOf(mods: LoraModule[]): Map<string, Float32Array> {
  const m = new Map<string, Float32Array>();
  for (const x of mods) {
    m.set(`base_model.model.${x.path}.lora_A.weight`, Float32Array.from(x.branch.dA!));
    m.set(`base_model.model.${x.path}.lora_B.weight`, Float32Array.from(x.branch.dB!));
  }
  return m;
}

function lossAndGrads(
  w: FrozenWeights,
  tokens: number[],
): { loss: number; grads: Map<string, Float32Array> } {
  const mods = peftAdapterModules(w);
  const model = new CpuLoraModel(w, mods);
  const loss = model.forward({ B: 2, T: 32, tokens });
  model.zeroGrad();
  model.backward();
  return { loss, grads: gradsOf(mods) };
}

describe('forward vs PyTorch golden logits', () => {
  const golden = loadGolden();
  for (const variant of ['base', 'peft-adapter', 'peft-adapter-rslora'] as const) {
    test(`${variant}: logits of the 3 golden sequences within FP32_LOGITS`, () => {
      const w = defaultWeights('fp32');
      let mods: LoraModule[] = [];
      if (variant !== 'base') {
        const fx = loadPeftFixture(variant);
        mods = loraFromPeft(fx.config, fx.st.tensors, w);
      }
      for (const [j, seq] of golden.seqs.entries()) {
        const model = new CpuLoraModel(w, mods);
        model.forward({ B: 1, T: seq.tokens.length, tokens: seq.tokens });
        expectClose(model.logits, seq.logits[variant], FP32_LOGITS, `${variant} seq${j} logits`);
      }
    });
  }
});

describe('LoRA gradients vs the float64 PyTorch fixture (lora-grads.safetensors)', () => {
  test('loss within 1e-5 of loss_f64, every tensor ‖g − g*‖/‖g*‖ ≤ 1e-3', () => {
    const st = loadFixture('lora-grads');
    const t0 = performance.now();
    const { loss, grads } = lossAndGrads(defaultWeights('fp32'), i32(st, 'batch'));
    const ms = performance.now() - t0;
    const want = Number(st.metadata.loss_f64);
    let worst = 0;
    let worstKey = '';
    expect(grads.size).toBe(st.tensors.size - 2); // batch and loss are the other two
    for (const [key, g] of grads) {
      const e = relErr(g, f32(st, key));
      if (e > worst) [worst, worstKey] = [e, key];
    }
    console.log(
      `fp32 forward+backward ${ms.toFixed(0)} ms; loss ${loss} vs ${want} (|diff| ${Math.abs(loss - want).toExponential(2)}); ` +
        `max per-tensor rel err ${worst.toExponential(2)} (${worstKey})`,
    );
    expectClose([loss], [want], { atol: LOSS_ABS, rtol: 0 }, 'loss');
    expect(worst, `worst tensor ${worstKey}`).toBeLessThanOrEqual(GRAD_REL);
  });
});

/** fp32 weights from a q4 model by dequantizing every 4-bit projection up front. */
function dequantizedCopy(w: FrozenWeights): FrozenWeights {
  const deq = (l: FrozenLinear): FrozenLinear => {
    if (l.kind === 'f32') return l;
    const full = dequantizeMatMulNBits(l.packed, l.scales, l.zeroPoints ?? undefined, l.K, l.O, l.blockSize);
    const t = new Float32Array(l.K * l.O); // (O, K)
    for (let k = 0; k < l.K; k++) for (let o = 0; o < l.O; o++) t[o * l.K + k] = full[k * l.O + o]!;
    return { kind: 'f32', K: l.K, O: l.O, w: t };
  };
  return {
    ...w,
    layers: w.layers.map((l) => ({
      ...l,
      proj: Object.fromEntries(Object.entries(l.proj).map(([k, v]) => [k, deq(v)])) as typeof l.proj,
    })),
    lmHead: deq(w.lmHead),
  };
}

describe('model_q4.onnx: 4-bit base dequantized on the fly', () => {
  test('reads 42 MatMulNBits projections as packed blocks (no fp32 copy), lm_head tied to the embedding', () => {
    const w = defaultWeights('q4');
    const kinds = w.layers.flatMap((l) => Object.values(l.proj).map((p) => p.kind));
    expect(kinds.filter((k) => k === 'q4')).toHaveLength(42);
    expect(w.tied).toBe(true);
    expect(defaultWeights('fp32').tied).toBe(true); // the exported [C, V] copy equals the embedding
  });

  test('base logits equal onnxruntime-web running model_q4.onnx (its own MatMulNBits kernel)', async () => {
    const golden = loadGolden();
    const tokens = golden.seqs[2]!.tokens;
    const ort = await runModel(new Uint8Array(readFileSync(Q4_PATH)), defaultModelFeeds(tokens));
    const model = new CpuLoraModel(defaultWeights('q4'), []);
    model.forward({ B: 1, T: tokens.length, tokens });
    expectClose(model.logits, ort.logits!, FP32_LOGITS, 'q4 logits vs onnxruntime-web');
  });

  test('asymmetric q4 with zero points and a 4-bit lm_head (quantize() of model.onnx) equals onnxruntime-web', async () => {
    const fp = decodeModel(new Uint8Array(readFileSync(MODEL_PATH)));
    const { model: q } = quantize(fp, { zeroPoints: true, includeLmHead: true });
    const w = loadFrozenWeights(q, defaultWeights('fp32').config);
    expect(w.lmHead.kind).toBe('q4');
    expect(w.tied).toBe(false);
    const p0 = w.layers[0]!.proj.q_proj;
    expect(p0.kind === 'q4' && p0.zeroPoints !== null).toBe(true);
    const tokens = loadGolden().seqs[1]!.tokens;
    const ort = await runModel(q, defaultModelFeeds(tokens));
    const model = new CpuLoraModel(w, []);
    model.forward({ B: 1, T: tokens.length, tokens });
    expectClose(model.logits, ort.logits!, FP32_LOGITS, 'zero-point q4 logits vs onnxruntime-web');
  });

  test("quantize()'s default (4-bit lm_head, tied embedding read from its blocks) equals onnxruntime-web", async () => {
    const fp = decodeModel(new Uint8Array(readFileSync(MODEL_PATH)));
    const { model: q, report } = quantize(fp);
    expect(report.tiedEmbedding).not.toBeNull();
    const w = loadFrozenWeights(q, defaultWeights('fp32').config);
    expect(w.lmHead.kind).toBe('q4');
    expect(w.embed).toHaveLength(1024 * 256);
    const tokens = loadGolden().seqs[1]!.tokens;
    const ort = await runModel(q, defaultModelFeeds(tokens));
    const model = new CpuLoraModel(w, []);
    model.forward({ B: 1, T: tokens.length, tokens });
    expectClose(model.logits, ort.logits!, FP32_LOGITS, 'default-q4 logits vs onnxruntime-web');
  });

  test('on-the-fly dequantization == dequantize-then-fp32 (loss and every gradient)', () => {
    const st = loadFixture('lora-grads');
    const tokens = i32(st, 'batch');
    const q4 = lossAndGrads(defaultWeights('q4'), tokens);
    const pre = lossAndGrads(dequantizedCopy(defaultWeights('q4')), tokens);
    expectClose([q4.loss], [pre.loss], SAME_MATH, 'loss');
    for (const [key, g] of q4.grads) expectClose(g, pre.grads.get(key)!, SAME_MATH, key);
  });

  test(`loss within ${Q4_LOSS_GAP} of fp32, gradients within the 4-bit bounds`, () => {
    const st = loadFixture('lora-grads');
    const tokens = i32(st, 'batch');
    const t0 = performance.now();
    const q4 = lossAndGrads(defaultWeights('q4'), tokens);
    const ms = performance.now() - t0;
    const fp = lossAndGrads(defaultWeights('fp32'), tokens);
    let worst = 0;
    let num = 0;
    let den = 0;
    for (const [key, g] of fp.grads) {
      const q = q4.grads.get(key)!;
      worst = Math.max(worst, relErr(q, g));
      for (let i = 0; i < g.length; i++) {
        num += (q[i]! - g[i]!) ** 2;
        den += g[i]! ** 2;
      }
    }
    const all = Math.sqrt(num / den);
    console.log(
      `q4 forward+backward ${ms.toFixed(0)} ms; loss q4 ${q4.loss} vs fp32 ${fp.loss} (gap ${Math.abs(q4.loss - fp.loss).toExponential(2)}); ` +
        `gradient rel err max per tensor ${worst.toFixed(3)}, all tensors ${all.toFixed(3)}`,
    );
    expect(Math.abs(q4.loss - fp.loss)).toBeLessThanOrEqual(Q4_LOSS_GAP);
    expect(worst).toBeLessThanOrEqual(Q4_GRAD_REL_TENSOR);
    expect(all).toBeLessThanOrEqual(Q4_GRAD_REL_ALL);
  });
});
