// withoutPlannerShapes (src/model/planner-shapes.ts) on Node's onnxruntime-web (wasm): the injected graph
// with its row mask (or, without one, its A inputs) declared shape-less must compute exactly what the
// declared graph computes — prompt and next-step logits bit for bit, with a rank-2 adapter and a mask
// that keeps one of its two rank columns — and only those inputs lose their shape.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-web';
import { describe, expect, it } from 'vitest';
import { createDecoderSession, KvStepper } from '../../../src/engine/session.ts';
import { injectLora, LORA_ROW_MASK, type LoraTarget } from '../../../src/model/inject-lora.ts';
import { decodeModel, encodeModel, graphOf, inputsOf, type ModelProto } from '../../../src/model/onnx-io.ts';
import { parseModelConfig } from '../../../src/model/package.ts';
import {
  plannerShapeInputs,
  withoutInputShapes,
  withoutPlannerShapes,
} from '../../../src/model/planner-shapes.ts';

const PKG = fileURLToPath(new URL('../../../public/models/weblora-shakespeare/', import.meta.url));
const config = parseModelConfig(JSON.parse(readFileSync(`${PKG}config.json`, 'utf8')));
const PROMPT = [813, 58, 10, 449, 365, 102, 116, 44];
const R = 2;

async function logitsOf(model: ModelProto, targets: readonly LoraTarget[], mask: boolean) {
  const g = await createDecoderSession(ort, encodeModel(model), config, { backend: 'wasm' });
  const feeds: Record<string, ort.Tensor> = {};
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
  if (mask) feeds[LORA_ROW_MASK] = new ort.Tensor('float32', Float32Array.of(1, 0), [1, 1, R]);
  const stepper = new KvStepper(ort, g, feeds);
  try {
    return [await stepper.step(PROMPT), await stepper.step([7])];
  } finally {
    stepper.dispose();
    await g.session.release();
  }
}

const shapeOf = (m: ModelProto, name: string) => inputsOf(graphOf(m)).find((i) => i.name === name)?.type;

describe('withoutPlannerShapes', () => {
  ort.env.wasm.numThreads = 1;
  const decoded = decodeModel(new Uint8Array(readFileSync(`${PKG}onnx/model_q4.onnx`)));

  for (const rowMask of [true, false]) {
    it(`${rowMask ? 'row mask' : 'no row mask: A inputs'} shape-less, same logits bit for bit`, async () => {
      const { model, targets } = injectLora(decoded, { branchOp: 'matmul', rowMask });
      const names = plannerShapeInputs(model, targets);
      expect(names).toEqual(rowMask ? [LORA_ROW_MASK] : targets.map((t) => t.inputA));
      const light = withoutPlannerShapes(model, targets);
      for (const input of inputsOf(graphOf(model))) {
        const before = shapeOf(model, input.name!);
        const after = shapeOf(light, input.name!);
        expect(after?.tensorType?.elemType).toBe(before?.tensorType?.elemType);
        if (names.includes(input.name!)) expect(after?.tensorType?.shape ?? null).toBeNull();
        else expect(after).toBe(before); // untouched, the same object
      }
      // The input model is not modified.
      expect(shapeOf(model, names[0]!)?.tensorType?.shape?.dim?.length).toBeGreaterThan(0);
      const want = await logitsOf(model, targets, rowMask);
      const got = await logitsOf(light, targets, rowMask);
      expect(got[0]).toEqual(want[0]);
      expect(got[1]).toEqual(want[1]);
    });
  }

  it('withoutInputShapes with no names returns the model itself', () => {
    expect(withoutInputShapes(decoded, [])).toBe(decoded);
  });
});
