/**
 * LoRA parameters in PEFT terms: a trained adapter written with loraToPeft + writeSafetensors reads back
 * through parseSafetensors + loraFromPeft (the path inference uses) to the same tensors, scales and
 * module paths; PEFT keys are exact. rank_pattern / alpha_pattern resolution itself is peft.ts's (tested
 * there and through the golden logits of both adapter fixtures in model.test.ts).
 */
import { describe, expect, test } from 'vitest';
import { parsePeftConfig } from '../../../src/adapters/peft.ts';
import { f32Tensor, parseSafetensors, writeSafetensors } from '../../../src/adapters/safetensors.ts';
import { loraFromPeft, loraToPeft } from '../../../src/train/lora.ts';
import { expectClose } from '../../helpers/expect-close.ts';
import { loadPeftFixture } from '../../helpers/fixtures.ts';
import { defaultWeights, peftAdapterModules } from './helpers.ts';

describe('PEFT round trip', () => {
  test('peft-adapter → modules → safetensors → modules: identical tensors, ranks, scales, keys', () => {
    const w = defaultWeights('fp32');
    const mods = peftAdapterModules(w);
    const fx = loadPeftFixture('peft-adapter');
    expect(mods).toHaveLength(42);
    const down1 = mods.find((m) => m.path === 'model.layers.1.mlp.down_proj')!;
    expect([down1.branch.R, down1.branch.scale]).toEqual([2, 4]); // rank_pattern: 8 / 2
    expect(mods.find((m) => m.path === 'model.layers.0.self_attn.q_proj')!.branch.scale).toBe(2);
    const tensors = loraToPeft(mods);
    expect([...tensors.keys()].sort()).toEqual([...fx.st.tensors.keys()].sort());
    const bytes = writeSafetensors(new Map([...tensors].map(([k, t]) => [k, f32Tensor(t.data, t.shape)])), {
      format: 'pt',
    });
    const back = loraFromPeft(parsePeftConfig(fx.configJson), parseSafetensors(bytes).tensors, w);
    expect(back.map((m) => [m.path, m.branch.R, m.branch.scale])).toEqual(
      mods.map((m) => [m.path, m.branch.R, m.branch.scale]),
    );
    back.forEach((m, i) => {
      expectClose(m.branch.A, mods[i]!.branch.A, { atol: 0, rtol: 0 }, `${m.path} A`);
      expectClose(m.branch.B, mods[i]!.branch.B, { atol: 0, rtol: 0 }, `${m.path} B`);
    });
  });
});
