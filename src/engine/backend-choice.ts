/**
 * Which backend a load runs on, and why, in words the demo and `<weblora-chat>` show the user. 'auto'
 * takes WebGPU only on a hardware adapter: a fallback/software adapter (`GPUAdapterInfo.isFallbackAdapter`,
 * or SwiftShader, llvmpipe, lavapipe, Microsoft Basic Render Driver) runs the model 30–60× slower than
 * wasm on the same CPU (issue 9: 1.0 vs 30–65 tok/s), so auto treats it as "no WebGPU". A forced
 * 'webgpu' still uses any adapter. Pure functions (no navigator access): load.ts passes the detected
 * capabilities in, and tests pass made-up adapters.
 */
import type { Capabilities } from '../env.ts';
import { UnsupportedError } from '../errors.ts';
import type { Backend, BackendPreference } from './types.ts';

export interface AdapterIdentity {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  isFallbackAdapter?: boolean;
}

/** Software rasterizers that expose WebGPU through Vulkan/D3D12 on the CPU. */
const SOFTWARE = [
  { pattern: /swiftshader/i, label: 'SwiftShader' },
  { pattern: /llvmpipe/i, label: 'llvmpipe' },
  { pattern: /lavapipe/i, label: 'lavapipe' },
  { pattern: /microsoft basic render|\bwarp\b/i, label: 'Microsoft Basic Render Driver' },
];

/** The software renderer's name when `info` is a fallback/CPU adapter, else null. */
export function softwareAdapterName(info: AdapterIdentity | null | undefined): string | null {
  if (!info) return null;
  const text = [info.vendor, info.architecture, info.device, info.description].join(' ');
  for (const s of SOFTWARE) if (s.pattern.test(text)) return s.label;
  if (info.isFallbackAdapter) return 'a fallback adapter';
  return null;
}

export interface BackendChoice {
  backend: Backend;
  /** One sentence for the user: why this backend. */
  reason: string;
}

type Caps = Pick<Capabilities, 'webgpu' | 'adapterInfo'>;

function describe(info: AdapterIdentity | null): string {
  if (!info) return 'unknown adapter';
  return [info.vendor, info.architecture].filter(Boolean).join(' / ') || 'unknown adapter';
}

/**
 * The backend for a load asked for with `want` on a browser with `caps`. A forced 'webgpu' without any
 * adapter is load.ts's UnsupportedError; here it returns webgpu and load.ts checks `caps.webgpu` first.
 */
export function chooseBackend(want: BackendPreference, caps: Caps): BackendChoice {
  if (want === 'wasm') return { backend: 'wasm', reason: 'wasm was chosen (backend "wasm")' };
  const soft = softwareAdapterName(caps.adapterInfo);
  if (want === 'webgpu') {
    return {
      backend: 'webgpu',
      reason: soft
        ? `WebGPU was chosen (backend "webgpu"), on ${soft}: a software renderer, usually much slower than wasm`
        : `WebGPU was chosen (backend "webgpu") on ${describe(caps.adapterInfo)}`,
    };
  }
  if (!caps.webgpu)
    return { backend: 'wasm', reason: 'auto chose wasm: this browser offers no WebGPU adapter' };
  if (soft) {
    return {
      backend: 'wasm',
      reason: `auto chose wasm: this browser's WebGPU adapter is ${soft} (${describe(caps.adapterInfo)}), a software renderer on the CPU, far slower than wasm`,
    };
  }
  return { backend: 'webgpu', reason: `auto chose WebGPU: hardware adapter ${describe(caps.adapterInfo)}` };
}

/** The reason after an auto WebGPU session failed and the load fell back to wasm. */
export function fallbackReason(error: unknown): string {
  const msg = error instanceof Error ? error.message : String(error);
  return `auto fell back to wasm: the WebGPU session failed (${msg.slice(0, 200)})`;
}

/**
 * A float16 graph (fp16/q4f16 weights or a float16 KV cache) on WebGPU needs the adapter's `shader-f16`
 * feature: without it onnxruntime-web fails deep inside session creation or the first run ("Program Gather
 * requires f16"). Checked up front. 'auto' then loads on wasm (which runs float16 graphs) and says why in
 * the load report; an explicit 'webgpu' is an UnsupportedError (data.feature 'shader-f16') naming the fix,
 * because the caller asked for the GPU and silently getting the CPU would hide a 10×-class slowdown.
 */
export function checkShaderF16(
  choice: BackendChoice,
  want: BackendPreference,
  caps: Pick<Capabilities, 'shaderF16' | 'adapterInfo'>,
  f16Graph: boolean,
  dtype: string,
): BackendChoice {
  if (choice.backend !== 'webgpu' || !f16Graph || caps.shaderF16) return choice;
  const gpu = describe(caps.adapterInfo);
  if (want === 'webgpu') {
    throw new UnsupportedError(
      `the ${dtype} model computes in float16, which WebGPU runs only with the adapter feature 'shader-f16', ` +
        `and this adapter (${gpu}) lacks it; load it with backend "wasm" (or "auto"), or pick a float32 dtype ` +
        '(q4 or fp32) to stay on WebGPU',
      { feature: 'shader-f16', dtype, adapter: gpu },
    );
  }
  return {
    backend: 'wasm',
    reason: `auto chose wasm: the ${dtype} model computes in float16 and this WebGPU adapter (${gpu}) has no shader-f16`,
  };
}
