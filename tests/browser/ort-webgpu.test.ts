// onnxruntime-web's WebGPU EP (`onnxruntime-web/webgpu`, on SwiftShader here) runs the default model
// package and agrees with the wasm EP in the same page: greedy tokens exactly, logits within
// WEBGPU_VS_WASM. The q4 graph is checked the same way when onnx/model_q4.onnx exists.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDecoderSession, type DecoderGraph, greedy, KvStepper } from '../../src/engine/session.ts';
import type { ModelDtype } from '../../src/model/package.ts';
import { expectClose, maxAbsDiff, WEBGPU_VS_WASM } from '../helpers/expect-close.ts';
import { loadPackage, PROMPT, setupOrt } from './helpers/model.ts';

const NEW_TOKENS = 12;

const ort = setupOrt();

describe('WebGPU adapter', () => {
  it('is SwiftShader from Google', async () => {
    const adapter = await navigator.gpu.requestAdapter();
    expect(adapter).not.toBeNull();
    expect(adapter!.info.vendor).toBe('google');
    expect(adapter!.info.architecture).toBe('swiftshader');
  });
});

function suite(dtype: ModelDtype) {
  return () => {
    let gpu: DecoderGraph;
    let cpu: DecoderGraph;
    let ids: number[];
    let eosIds: number[];
    beforeAll(async () => {
      const { pkg, tok } = await loadPackage(dtype);
      ids = tok.encode(PROMPT);
      eosIds = pkg.config.eosTokenIds;
      // The engine's own session options: on webgpu the KV cache stays in GPU buffers between steps.
      cpu = await createDecoderSession(ort, pkg.model, pkg.config, { backend: 'wasm' });
      gpu = await createDecoderSession(ort, pkg.model, pkg.config, { backend: 'webgpu' });
    });

    it('the webgpu session really runs on a GPUDevice (no silent fallback)', async () => {
      const device = await ort.env.webgpu.device;
      expect(device).toBeDefined();
      expect(typeof (device as GPUDevice).createBuffer).toBe('function');
    });
    afterAll(async () => {
      await gpu?.session.release();
      await cpu?.session.release();
    });

    it('webgpu logits match wasm at every prompt position and after one cached step', async () => {
      const onGpu = new KvStepper(ort, gpu);
      const onCpu = new KvStepper(ort, cpu);
      try {
        const a = await onGpu.step(ids, { allLogits: true });
        const b = await onCpu.step(ids, { allLogits: true });
        console.info(`${dtype} prefill max|diff| ${maxAbsDiff(a, b)}`);
        expectClose(a, b, WEBGPU_VS_WASM, `${dtype} prefill logits`);
        expect(new Set(onGpu.lastKvLocations)).toEqual(new Set(['gpu-buffer']));
        expect(new Set(onCpu.lastKvLocations)).toEqual(new Set(['cpu']));
        const a2 = await onGpu.step([42]);
        const b2 = await onCpu.step([42]);
        expectClose(a2, b2, WEBGPU_VS_WASM, `${dtype} decode logits`);
      } finally {
        onGpu.dispose();
        onCpu.dispose();
      }
    });

    it(`greedy ${NEW_TOKENS} tokens: webgpu equals wasm exactly`, async () => {
      const fromGpu = await greedy(ort, gpu, ids, NEW_TOKENS, { eosIds });
      const fromCpu = await greedy(ort, cpu, ids, NEW_TOKENS, { eosIds });
      expect(fromGpu.length).toBeGreaterThan(0);
      expect(fromGpu).toEqual(fromCpu);
    });
  };
}

describe('fp32 model.onnx on webgpu vs wasm', suite('fp32'));
describe('q4 model_q4.onnx on webgpu vs wasm', suite('q4'));
