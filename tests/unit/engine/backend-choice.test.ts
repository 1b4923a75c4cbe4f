/** Backend choice (src/engine/backend-choice.ts): auto skips software WebGPU adapters and says why. */
import { describe, expect, it } from 'vitest';
import { chooseBackend, fallbackReason, softwareAdapterName } from '../../../src/engine/backend-choice.ts';

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
