// weightsAsExternal (src/model/external-weights.ts) on Node's onnxruntime-web (wasm): the injected graph
// encoded without its weights, fed the file's own bytes as external data, must compute exactly what the
// fully re-encoded graph computes, and its encoding must not carry the weights.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-web';
import { describe, expect, it } from 'vitest';
import { createDecoderSession, KvStepper } from '../../../src/engine/session.ts';
import { FILE_WEIGHTS_LOCATION, weightsAsExternal } from '../../../src/model/external-weights.ts';
import { injectLora, type LoraTarget } from '../../../src/model/inject-lora.ts';
import { decodeModel, encodeModel, graphOf, initializersOf, isExternal } from '../../../src/model/onnx-io.ts';
import { parseModelConfig } from '../../../src/model/package.ts';

const PKG = fileURLToPath(new URL('../../../public/models/weblora-shakespeare/', import.meta.url));
const config = parseModelConfig(JSON.parse(readFileSync(`${PKG}config.json`, 'utf8')));
const PROMPT = [813, 58, 10, 449, 365, 102, 116, 44];

async function logitsOf(
  bytes: Uint8Array,
  targets: readonly LoraTarget[],
  externalData?: { path: string; data: Uint8Array }[],
) {
  const g = await createDecoderSession(ort, bytes, config, {
    backend: 'wasm',
    ...(externalData ? { externalData } : {}),
  });
  // A rank-1 adapter with non-zero factors, so the LoRA branch is exercised too.
  const feeds: Record<string, ort.Tensor> = {};
  for (const t of targets) {
    feeds[t.inputA] = new ort.Tensor(
      'float32',
      Float32Array.from({ length: t.in }, (_, i) => ((i % 7) - 3) / 50),
      [t.in, 1],
    );
    feeds[t.inputB] = new ort.Tensor(
      'float32',
      Float32Array.from({ length: t.out }, (_, i) => ((i % 5) - 2) / 20),
      [1, t.out],
    );
  }
  const stepper = new KvStepper(ort, g, feeds);
  try {
    const first = await stepper.step(PROMPT);
    const next = await stepper.step([7]);
    return [first, next];
  } finally {
    stepper.dispose();
    await g.session.release();
  }
}

describe('weightsAsExternal', () => {
  ort.env.wasm.numThreads = 1;
  for (const file of ['onnx/model_q4.onnx', 'onnx/model.onnx']) {
    it(`${file}: the graph-only encoding + the file as external data = the full encoding, bit for bit`, async () => {
      const bytes = new Uint8Array(readFileSync(`${PKG}${file}`));
      const { model, targets } = injectLora(decodeModel(bytes), { branchOp: 'matmul' });
      const full = encodeModel(model);
      const slim = weightsAsExternal(model, bytes);
      const slimBytes = encodeModel(slim.model);
      // Every weight left the encoding: it is the graph structure plus a few tiny tensors.
      expect(slim.externalized).toBeGreaterThan(40);
      expect(slimBytes.byteLength).toBeLessThan(full.byteLength - slim.externalBytes + 64 * 1024);
      expect(slimBytes.byteLength).toBeLessThan(bytes.byteLength / 10);
      for (const t of initializersOf(graphOf(slim.model))) {
        if (isExternal(t)) expect(t.rawData?.byteLength ?? 0).toBe(0);
      }
      // The input model is untouched (its tensors are shared with the session of `full`).
      expect(initializersOf(graphOf(model)).some(isExternal)).toBe(false);
      const want = await logitsOf(full, targets);
      expect(slim.externalData.map((e) => e.path)).toEqual([FILE_WEIGHTS_LOCATION]);
      expect(slim.externalData[0]!.data === bytes).toBe(true); // the file itself, not a copy
      const got = await logitsOf(slimBytes, targets, slim.externalData);
      expect(got[0]).toEqual(want[0]);
      expect(got[1]).toEqual(want[1]);
    });
  }

  it('gives large tensors outside the file external data of their own, and leaves small ones inline', async () => {
    const bytes = new Uint8Array(readFileSync(`${PKG}onnx/model.onnx`));
    const model = decodeModel(bytes);
    const other = bytes.slice(); // same contents, another buffer: no tensor is a view into it
    const slim = weightsAsExternal(model, other);
    const inits = initializersOf(graphOf(model));
    const big = inits.filter((t) => (t.rawData?.byteLength ?? 0) >= 64 * 1024);
    expect(big.length).toBeGreaterThan(10);
    expect(slim.externalized).toBe(big.length);
    expect(slim.externalData.map((e) => e.path)).toEqual(big.map((_, i) => `weblora-tensor-${i}.bin`));
    slim.externalData.forEach((e, i) => {
      expect(e.data === big[i]!.rawData, e.path).toBe(true); // the tensor's own bytes, not a copy
    });
    const small = initializersOf(graphOf(slim.model)).filter((t) => !isExternal(t));
    expect(small.every((t) => (t.rawData?.byteLength ?? 0) < 64 * 1024)).toBe(true);
    // Same logits as the inline model.
    const { model: inj, targets } = injectLora(model, { branchOp: 'matmul' });
    const s2 = weightsAsExternal(inj, other);
    const want = await logitsOf(encodeModel(inj), targets);
    const got = await logitsOf(encodeModel(s2.model), targets, s2.externalData);
    expect(got).toEqual(want);
  });
});
