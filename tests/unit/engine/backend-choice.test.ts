/** Backend choice (src/engine/backend-choice.ts): auto skips software WebGPU adapters and says why. */
import { describe, expect, it } from 'vitest';
import {
  checkShaderF16,
  chooseBackend,
  fallbackReason,
  softwareAdapterName,
} from '../../../src/engine/backend-choice.ts';
import { UnsupportedError } from '../../../src/errors.ts';

const adapter = (
  vendor: string,
  architecture: string,
  extra: Partial<{ description: string; isFallbackAdapter: boolean }> = {},
) => ({
  vendor,
  architecture,
  device: '',
  description: extra.description ?? '',
  isFallbackAdapter: extra.isFallbackAdapter ?? false,
});

describe('softwareAdapterName', () => {
  it('recognises software renderers by vendor/architecture/description, and fallback adapters', () => {
    // What headless Chromium on SwiftShader reports (environment.md).
    expect(softwareAdapterName(adapter('google', 'swiftshader'))).toBe('SwiftShader');
    expect(
      softwareAdapterName(adapter('mesa', '', { description: 'llvmpipe (LLVM 15.0.6, 256 bits)' })),
    ).toBe('llvmpipe');
    expect(softwareAdapterName(adapter('mesa', 'lavapipe'))).toBe('lavapipe');
    expect(
      softwareAdapterName(adapter('microsoft', '', { description: 'Microsoft Basic Render Driver' })),
    ).toBe('Microsoft Basic Render Driver');
    expect(softwareAdapterName(adapter('x', 'y', { isFallbackAdapter: true }))).toBe('a fallback adapter');
    expect(softwareAdapterName(adapter('nvidia', 'ampere'))).toBeNull();
    expect(softwareAdapterName(adapter('apple', 'metal-3'))).toBeNull();
    expect(softwareAdapterName(null)).toBeNull();
  });
});

describe('chooseBackend', () => {
  const swiftshader = { webgpu: true, adapterInfo: adapter('google', 'swiftshader') };
  const hardware = { webgpu: true, adapterInfo: adapter('nvidia', 'ampere') };
  const none = { webgpu: false, adapterInfo: null };

  it('auto: wasm on a software adapter, and says why', () => {
    const c = chooseBackend('auto', swiftshader);
    expect(c.backend).toBe('wasm');
    expect(c.reason).toMatch(/^auto chose wasm: .*SwiftShader \(google \/ swiftshader\).*software/);
  });
  it('auto: webgpu on a hardware adapter, wasm without any', () => {
    expect(chooseBackend('auto', hardware)).toEqual({
      backend: 'webgpu',
      reason: 'auto chose WebGPU: hardware adapter nvidia / ampere',
    });
    const c = chooseBackend('auto', none);
    expect(c.backend).toBe('wasm');
    expect(c.reason).toMatch(/no WebGPU adapter/);
  });
  it('forced backends are kept (webgpu even on SwiftShader, with a note)', () => {
    const g = chooseBackend('webgpu', swiftshader);
    expect(g.backend).toBe('webgpu');
    expect(g.reason).toMatch(/backend "webgpu".*SwiftShader.*slower than wasm/);
    expect(chooseBackend('webgpu', hardware).backend).toBe('webgpu');
    expect(chooseBackend('wasm', hardware)).toEqual({
      backend: 'wasm',
      reason: 'wasm was chosen (backend "wasm")',
    });
  });
  it('a failed auto WebGPU session names the error', () => {
    expect(fallbackReason(new Error('boom'))).toBe(
      'auto fell back to wasm: the WebGPU session failed (boom)',
    );
  });
});

describe('checkShaderF16 (float16 graphs on WebGPU need shader-f16)', () => {
  const hw = { webgpu: true, adapterInfo: adapter('nvidia', 'ampere') };
  const noF16 = { ...hw, shaderF16: false };
  const f16 = { ...hw, shaderF16: true };

  it('auto on a hardware adapter without shader-f16: wasm, and the reason says why', () => {
    const c = checkShaderF16(chooseBackend('auto', hw), 'auto', noF16, true, 'q4f16');
    expect(c).toEqual({
      backend: 'wasm',
      reason:
        'auto chose wasm: the q4f16 model computes in float16 and this WebGPU adapter (nvidia / ampere) has no shader-f16',
    });
  });

  it('an explicit "webgpu" without shader-f16: UnsupportedError naming the feature and the fix', () => {
    let err: unknown;
    try {
      checkShaderF16(chooseBackend('webgpu', noF16), 'webgpu', noF16, true, 'fp16');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UnsupportedError);
    expect((err as UnsupportedError).data).toEqual({
      feature: 'shader-f16',
      dtype: 'fp16',
      adapter: 'nvidia / ampere',
    });
    expect((err as Error).message).toMatch(/shader-f16.*backend "wasm".*q4 or fp32/);
  });

  it('leaves the choice alone with shader-f16, for float32 graphs, and on wasm', () => {
    const gpu = chooseBackend('webgpu', f16);
    expect(checkShaderF16(gpu, 'webgpu', f16, true, 'fp16')).toBe(gpu);
    const q4 = chooseBackend('webgpu', noF16);
    expect(checkShaderF16(q4, 'webgpu', noF16, false, 'q4')).toBe(q4);
    const wasm = chooseBackend('wasm', noF16);
    expect(checkShaderF16(wasm, 'wasm', noF16, true, 'fp16')).toBe(wasm);
  });
});
