// withoutPlannerShapes (src/model/planner-shapes.ts) on onnxruntime-web's WebGPU EP (SwiftShader): the
// engine's webgpu graph (Einsum branch, row mask) with the mask declared shape-less computes exactly what
// the declared graph computes — every prompt position and one cached step, with a rank-2 adapter and
// a mask that keeps one of its two rank columns. (The wasm EP is checked in tests/unit/model.)
import { describe, expect, it } from 'vitest';
import { createDecoderSession, KvStepper, type OrtTensor } from '../../src/engine/session.ts';
import { injectLora, LORA_ROW_MASK } from '../../src/model/inject-lora.ts';
import { decodeModel, encodeModel, type ModelProto } from '../../src/model/onnx-io.ts';
import { withoutPlannerShapes } from '../../src/model/planner-shapes.ts';
import { loadPackage, PROMPT, setupOrt } from './helpers/model.ts';

const ort = setupOrt();
const R = 2;

describe('withoutPlannerShapes on webgpu', () => {
  it('the shape-less row mask gives the same logits, bit for bit', async () => {
    const { pkg, tok } = await loadPackage('q4');
    const ids = tok.encode(PROMPT);
    const { model, targets } = injectLora(decodeModel(pkg.model), { branchOp: 'einsum', rowMask: true });
    const run = async (m: ModelProto) => {
      const g = await createDecoderSession(ort, encodeModel(m), pkg.config, { backend: 'webgpu' });
      const feeds: Record<string, OrtTensor> = {};
      for (const t of targets) {
        feeds[t.inputA] = new ort.Tensor(
          'float32',
          Float32Array.from({ length: t.in * R }, (_, i) => ((i % 7) - 3) / 50),
          [t.in, R],
        );
        feeds[t.inputB] = new ort.Tensor(
          'float32',
          Float32Array.from({ length: R * t.out }, (_, i) => ((i % 5) - 2) / 20),
          [R, t.out],
        );
      }
      feeds[LORA_ROW_MASK] = new ort.Tensor('float32', Float32Array.of(1, 0), [1, 1, R]);
      const stepper = new KvStepper(ort, g, feeds);
      try {
        return [await stepper.step(ids, { allLogits: true }), await stepper.step([42])];
      } finally {
        stepper.dispose();
        await g.session.release();
      }
    };
    const want = await run(model);
    const got = await run(withoutPlannerShapes(model, targets));
    expect(got[0]).toEqual(want[0]);
    expect(got[1]).toEqual(want[1]);
  });
});
