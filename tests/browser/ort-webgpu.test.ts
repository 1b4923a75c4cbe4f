// onnxruntime-web's WebGPU EP (`onnxruntime-web/webgpu`, on SwiftShader here) runs the default model
// package and agrees with the wasm EP in the same page: greedy tokens exactly, logits within
// WEBGPU_VS_WASM. The q4 graph is checked the same way when onnx/model_q4.onnx exists.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DecoderSession, disposeCache } from '../../src/engine/session.ts';
import type { ModelDtype } from '../../src/model/package.ts';
import { expectClose, maxAbsDiff, WEBGPU_VS_WASM } from '../helpers/expect-close.ts';
import { loadPackage, PROMPT, setupOrt } from './helpers/model.ts';

const NEW_TOKENS = 12;
/** ORT warns that shape ops run on CPU; that is by design. */
const QUIET = { logSeverityLevel: 3 as const };

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
    let gpu: DecoderSession;
    let cpu: DecoderSession;
    let ids: number[];
    beforeAll(async () => {
      const { pkg, tok } = await loadPackage(dtype);
      ids = tok.encode(PROMPT);
      cpu = await DecoderSession.create(ort, pkg.model, pkg.config, {
        executionProviders: ['wasm'],
        sessionOptions: QUIET,
      });
      gpu = await DecoderSession.create(ort, pkg.model, pkg.config, {
        executionProviders: ['webgpu'],
        sessionOptions: QUIET,
      });
    });

    it('the webgpu session really runs on a GPUDevice (no silent fallback)', async () => {
      const device = await ort.env.webgpu.device;
      expect(device).toBeDefined();
      expect(typeof (device as GPUDevice).createBuffer).toBe('function');
    });
    afterAll(async () => {
      await gpu?.release();
      await cpu?.release();
    });

    it('webgpu logits match wasm at every prompt position and after one cached step', async () => {
      const a = await gpu.forward(ids, undefined, undefined, { allLogits: true });
      const b = await cpu.forward(ids, undefined, undefined, { allLogits: true });
      console.info(`${dtype} prefill max|diff| ${maxAbsDiff(a.logits, b.logits)}`);
      expectClose(a.logits, b.logits, WEBGPU_VS_WASM, `${dtype} prefill logits`);
      const a2 = await gpu.forward([42], a.present);
      const b2 = await cpu.forward([42], b.present);
      expectClose(a2.logits, b2.logits, WEBGPU_VS_WASM, `${dtype} decode logits`);
      for (const r of [a, b, a2, b2]) disposeCache(r.present);
    });

    it(`greedy ${NEW_TOKENS} tokens: webgpu equals wasm exactly`, async () => {
      const fromGpu = await gpu.greedy(ids, NEW_TOKENS);
      const fromCpu = await cpu.greedy(ids, NEW_TOKENS);
      expect(fromGpu.length).toBeGreaterThan(0);
      expect(fromGpu).toEqual(fromCpu);
    });
  };
}

describe('fp32 model.onnx on webgpu vs wasm', suite('fp32'));
describe('q4 model_q4.onnx on webgpu vs wasm', suite('q4'));
