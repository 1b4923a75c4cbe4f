/**
 * Finite differences through the whole model on a tiny random decoder (2 layers, C 16, 4 heads / 2 kv
 * heads, vocab 32, rank 2): every LoRA parameter's gradient, in float64, with LoRA on a mixed subset of
 * targets and layers, one 4-bit projection, an untied lm_head, a completion-only label mask and a padded
 * row. Also: float32 vs float64 engine, and a fresh adapter (B = 0) leaving the base logits unchanged.
 */
import { describe, expect, test } from 'vitest';
import type { ModuleName } from '../../../src/model/targets.ts';
import { CpuLoraModel, type FrozenWeights, type LoraModule } from '../../../src/train/cpu-model.ts';
import { initLora, modulePath } from '../../../src/train/lora.ts';
import { expectClose, type Tolerance } from '../../helpers/expect-close.ts';
import { TINY, tinyWeights } from '../../helpers/tiny-decoder.ts';
import { finiteDiff, rand } from './helpers.ts';

/**
 * Central differences (h = 1e-5) of a float64 loss of O(1): truncation ~h²·|f'''| ≈ 1e-10, rounding
 * ~1e-16/h ≈ 1e-11; gradients are O(1e-3..1e-1). 1e-8 absolute + 1e-5 relative is >100x above that noise,
 * while a missing term (a dropped residual, a wrong head mapping) changes gradients by >1e-3 relative.
 */
const FD_MODEL: Tolerance = { atol: 1e-8, rtol: 1e-5 };
/** float32 engine vs float64 engine on the tiny model: ~1e-7 relative rounding per op through 2 layers. */
const F32_VS_F64: Tolerance = { atol: 1e-6, rtol: 1e-3 };

const CHOSEN: [number, ModuleName][] = [
  [0, 'q_proj'],
  [0, 'v_proj'],
  [0, 'down_proj'],
  [1, 'k_proj'],
  [1, 'o_proj'],
  [1, 'gate_proj'],
  [1, 'up_proj'],
];

function tinyLora(w: FrozenWeights, f64: boolean): LoraModule[] {
  let seed = 500;
  const R = 2;
  const arr = (n: number, s: number) => (f64 ? rand(n, seed++, s) : Float32Array.from(rand(n, seed++, s)));
  return CHOSEN.map(([layer, module]) => {
    const { K, O } = w.layers[layer]!.proj[module];
    return {
      layer,
      module,
      path: modulePath(layer, module),
      branch: { R, scale: 1.5, A: arr(R * K, 1 / Math.sqrt(K)), B: arr(O * R, 0.5), dA: null, dB: null },
    };
  });
}

const B = 2;
const T = 6;
const tokens = [3, 17, 5, 9, 30, 1, 7, 7, 22, 0, 0, 0]; // row 1 is padded after 3 tokens
const labelMask = [0, 0, 1, 1, 1, 1, 0, 1, 1, 0, 0, 0]; // row 0: completion from t=2; row 1: no pads
const attentionMask = [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0];
const batch = { B, T, tokens, labelMask, attentionMask };

describe('tiny decoder (2 layers, GQA 4/2, rank 2)', () => {
  test('every LoRA gradient == central finite differences of the float64 loss', () => {
    const w = tinyWeights();
    const mods = tinyLora(w, true);
    const model = new CpuLoraModel(w, mods, { f64: true });
    const loss = model.forward(batch);
    expect(model.targetCount).toBe(6);
    expect(loss).toBeGreaterThan(1);
    model.zeroGrad();
    model.backward();
    const f = () => model.forward(batch);
    for (const m of mods) {
      expectClose(m.branch.dA!, finiteDiff(m.branch.A, f), FD_MODEL, `${m.path} dA`);
      expectClose(m.branch.dB!, finiteDiff(m.branch.B, f), FD_MODEL, `${m.path} dB`);
    }
  });

  test('float32 engine == float64 engine within rounding', () => {
    const w = tinyWeights();
    const m64 = tinyLora(w, true);
    const m32 = tinyLora(w, false);
    const e64 = new CpuLoraModel(w, m64, { f64: true });
    const e32 = new CpuLoraModel(w, m32);
    const l64 = e64.forward(batch);
    const l32 = e32.forward(batch);
    expectClose([l32], [l64], F32_VS_F64, 'loss');
    e64.backward();
    e32.backward();
    m32.forEach((m, i) => {
      expectClose(m.branch.dA!, m64[i]!.branch.dA!, F32_VS_F64, `${m.path} dA`);
      expectClose(m.branch.dB!, m64[i]!.branch.dB!, F32_VS_F64, `${m.path} dB`);
    });
  });

  test('activation recomputation: bit-identical loss, logits and gradients, across shapes and accumulation', () => {
    const w = tinyWeights();
    const plain = tinyLora(w, false);
    const recomp = tinyLora(w, false);
    const e0 = new CpuLoraModel(w, plain);
    const e1 = new CpuLoraModel(w, recomp, { recompute: true });
    expect(e1.recompute).toBe(true);
    // Two micro-batches (the second of another shape) accumulated: the reused one-layer buffers must
    // not leak between layers, calls or shapes.
    const other = { B: 1, T: 5, tokens: [4, 8, 15, 16, 23] };
    for (const [b, scale] of [
      [batch, 0.6],
      [other, 0.4],
    ] as const) {
      const l0 = e0.forward(b);
      const l1 = e1.forward(b);
      expect(l1).toBe(l0);
      expect(Array.from(e1.logits)).toEqual(Array.from(e0.logits));
      e0.backward(scale);
      e1.backward(scale);
    }
    recomp.forEach((m, i) => {
      expect(Array.from(m.branch.dA!), `${m.path} dA`).toEqual(Array.from(plain[i]!.branch.dA!));
      expect(Array.from(m.branch.dB!), `${m.path} dB`).toEqual(Array.from(plain[i]!.branch.dB!));
    });
  });

  test('initLora: B = 0 leaves the logits unchanged; same seed, same A; A within ±1/√in', () => {
    const w = tinyWeights();
    const base = new CpuLoraModel(w, []);
    base.forward(batch);
    const init = {
      rank: 3,
      alpha: 6,
      targets: ['q_proj', 'down_proj'] as ModuleName[],
      layers: [1],
      seed: 7,
    };
    const mods = initLora(w, init);
    expect(mods.map((m) => m.path)).toEqual([
      'model.layers.1.self_attn.q_proj',
      'model.layers.1.mlp.down_proj',
    ]);
    expect(mods[0]!.branch.scale).toBe(2);
    const withLora = new CpuLoraModel(w, mods);
    withLora.forward(batch);
    expectClose(withLora.logits, base.logits, { atol: 0, rtol: 0 }, 'logits');
    expect(Array.from(initLora(w, init)[0]!.branch.A)).toEqual(Array.from(mods[0]!.branch.A));
    const bound = 1 / Math.sqrt(TINY.C);
    expect(mods[0]!.branch.A.every((x) => Math.abs(x) <= bound)).toBe(true);
  });
});
