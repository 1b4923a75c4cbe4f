/**
 * The CPU gated model (src/train/gate-model.ts): forward and gate gradients against the float64 PyTorch
 * gate oracle (tests/fixtures/gates.safetensors: default fp32 model, experts weblora-shout ×1 and
 * weblora-romeo ×0.5, random per-layer gates), and every gate parameter's gradient against central finite
 * differences on the tiny random decoder in float64 (two experts of different ranks on a subset of modules,
 * gates on both layers, a label mask); and on the 4-bit weights, against onnxruntime-web running the gated
 * model_q4.onnx (the weights `trainGates` uses when the engine loaded q4).
 */
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-web';
import { describe, expect, test } from 'vitest';
import { injectLora } from '../../../src/model/inject-lora.ts';
import { decodeModel, encodeModel } from '../../../src/model/onnx-io.ts';
import type { ModuleName } from '../../../src/model/targets.ts';
import type { LoraModule } from '../../../src/train/cpu-model.ts';
import { CpuGatedModel, type GateParams } from '../../../src/train/gate-model.ts';
import { loraFromPeft, modulePath } from '../../../src/train/lora.ts';
import { expectClose, FP32_LOGITS, type Tolerance } from '../../helpers/expect-close.ts';
import { Q4_PATH } from '../../helpers/fixtures.ts';
import { gatedMixFeeds, loadGateFixture, readExample } from '../../helpers/gates.ts';
import { TINY, tinyWeights } from '../../helpers/tiny-decoder.ts';
import { defaultWeights, finiteDiff, rand, relErr } from './helpers.ts';

/** As tiny-model.test.ts: central differences in float64, >100x above their noise. */
const FD_MODEL: Tolerance = { atol: 1e-8, rtol: 1e-5 };
/** fp32 engine vs float64 PyTorch (as the LoRA gradients in model.test.ts). */
const GRAD_REL = 1e-3;
const LOSS_ABS = 1e-5;

function fixtureModel() {
  const fx = loadGateFixture();
  const w = defaultWeights('fp32');
  const experts = fx.mix.experts.map((e) => {
    const { cfg, tensors } = readExample(e.name);
    return { modules: loraFromPeft(cfg, tensors, w), weight: e.weight };
  });
  const gates: GateParams[] = [...fx.mix.gates].map(([layer, g]) => ({
    layer,
    W: Float32Array.from(g.W),
    b: Float32Array.from(g.b),
    dW: null,
    db: null,
  }));
  return { fx, model: new CpuGatedModel(w, experts, gates), gates };
}

describe('CpuGatedModel vs the PyTorch gate oracle', () => {
  test('logits, loss and every gate gradient', () => {
    const { fx, model, gates } = fixtureModel();
    model.forward({ B: 1, T: fx.tokens.length, tokens: fx.tokens });
    expectClose(model.logits, fx.logits, FP32_LOGITS, 'gated logits');
    const loss = model.forward({ B: 2, T: 16, tokens: fx.batch });
    model.zeroGrad();
    model.backward();
    expectClose([loss], [fx.loss], { atol: LOSS_ABS, rtol: 0 }, 'loss');
    let worst = 0;
    for (const g of gates) {
      const want = fx.grads.get(g.layer)!;
      worst = Math.max(worst, relErr(g.dW!, want.W), relErr(g.db!, want.b));
    }
    console.log(`gate grads: max per-tensor rel err ${worst.toExponential(2)} vs PyTorch float64`);
    expect(worst).toBeLessThanOrEqual(GRAD_REL);
  });
});

describe('CpuGatedModel on the 4-bit weights vs onnxruntime-web on the gated model_q4.onnx', () => {
  test('same gated logits (frozen 4-bit blocks dequantized in the CPU model, MatMulNBits in ORT)', async () => {
    const fx = loadGateFixture();
    const w = defaultWeights('q4');
    const experts = fx.mix.experts.map((e) => {
      const { cfg, tensors } = readExample(e.name);
      return { modules: loraFromPeft(cfg, tensors, w), weight: e.weight };
    });
    const gates: GateParams[] = [...fx.mix.gates].map(([layer, g]) => ({
      layer,
      W: g.W,
      b: g.b,
      dW: null,
      db: null,
    }));
    const model = new CpuGatedModel(w, experts, gates);
    model.forward({ B: 1, T: fx.tokens.length, tokens: fx.tokens });
    const inj = injectLora(decodeModel(new Uint8Array(readFileSync(Q4_PATH))), { gates: true });
    const s = await ort.InferenceSession.create(encodeModel(inj.model), { executionProviders: ['wasm'] });
    try {
      const i64 = (xs: number[]) => new ort.Tensor('int64', BigInt64Array.from(xs, BigInt), [1, xs.length]);
      const feeds: Record<string, ort.Tensor> = {
        input_ids: i64(fx.tokens),
        attention_mask: i64(fx.tokens.map(() => 1)),
        position_ids: i64(fx.tokens.map((_, i) => i)),
      };
      for (const [k, v] of gatedMixFeeds(fx.mix, inj.targets, inj.gates!))
        feeds[k] = new ort.Tensor('float32', v.data, v.dims);
      for (let l = 0; l < w.config.L; l++)
        for (const kv of ['key', 'value'])
          feeds[`past_key_values.${l}.${kv}`] = new ort.Tensor('float32', new Float32Array(0), [
            1,
            w.config.Hkv,
            0,
            w.config.D,
          ]);
      const got = (await s.run(feeds)).logits!.data as Float32Array;
      expectClose(model.logits, got, FP32_LOGITS, 'q4 gated: CPU model vs ORT');
    } finally {
      await s.release();
    }
  });
});

describe('CpuGatedModel gate gradients vs finite differences (tiny decoder, float64)', () => {
  test('every W and b element of both layers', () => {
    const w = tinyWeights();
    let seed = 900;
    const expert = (R: number, chosen: [number, ModuleName][]): LoraModule[] =>
      chosen.map(([layer, module]) => {
        const { K, O } = w.layers[layer]!.proj[module];
        return {
          layer,
          module,
          path: modulePath(layer, module),
          branch: {
            R,
            scale: 1.5,
            A: rand(R * K, seed++, 0.5),
            B: rand(O * R, seed++, 0.5),
            dA: null,
            dB: null,
          },
        };
      });
    const e1 = expert(2, [
      [0, 'q_proj'],
      [0, 'down_proj'],
      [1, 'v_proj'],
      [1, 'up_proj'],
    ]);
    const e2 = expert(3, [
      [0, 'q_proj'],
      [0, 'o_proj'],
      [1, 'v_proj'],
      [1, 'gate_proj'],
    ]);
    const n = 2;
    const gates: GateParams[] = [0, 1].map((layer) => ({
      layer,
      W: rand(n * TINY.C, seed++, 0.8),
      b: rand(n, seed++, 0.3),
      dW: null,
      db: null,
    }));
    const model = new CpuGatedModel(
      w,
      [
        { modules: e1, weight: 1 },
        { modules: e2, weight: 0.7 },
      ],
      gates,
      { f64: true },
    );
    const B = 2;
    const T = 6;
    const tokens = Array.from({ length: B * T }, (_, i) => (i * 7 + 3) % TINY.V);
    const labelMask = Array.from({ length: B * T }, (_, i) => (i % T < 2 ? 0 : 1));
    const batch = { B, T, tokens, labelMask };
    model.forward(batch);
    model.zeroGrad();
    model.backward();
    for (const g of gates) {
      const loss = () => model.forward(batch);
      expectClose(g.dW!, finiteDiff(g.W, loss), FD_MODEL, `layer ${g.layer} dW`);
      expectClose(g.db!, finiteDiff(g.b, loss), FD_MODEL, `layer ${g.layer} db`);
    }
    // The gate is a real function of the token: probabilities differ across tokens.
    model.forward(batch);
    const p = model.gateProbs(1);
    expect(
      Math.max(...Array.from(p).filter((_, i) => i % 2 === 0)) -
        Math.min(...Array.from(p).filter((_, i) => i % 2 === 0)),
    ).toBeGreaterThan(0.05);
  });
});
