/**
 * Capabilities, detected once and frozen: what this browser (or Node) offers weblora. Other modules
 * read this instead of probing navigator themselves, so a report shown to the user and the choices the
 * engine makes always agree. Detection never throws; a missing feature is `false`.
 */

export interface Capabilities {
  readonly webgpu: boolean;
  readonly shaderF16: boolean;
  readonly subgroups: boolean;
  readonly timestampQuery: boolean;
  readonly maxStorageBufferBindingSize: number;
  readonly adapterInfo: {
    vendor: string;
    architecture: string;
    device: string;
    description: string;
    /** GPUAdapterInfo.isFallbackAdapter (false where the browser does not report it). */
    isFallbackAdapter: boolean;
  } | null;
  readonly opfs: boolean;
  readonly crossOriginIsolated: boolean;
  readonly worker: boolean;
  readonly indexedDB: boolean;
}

let cached: Promise<Readonly<Capabilities>> | undefined;

export function detectCapabilities(): Promise<Readonly<Capabilities>> {
  cached ??= detect();
  return cached;
}

async function detect(): Promise<Readonly<Capabilities>> {
  const g = globalThis as typeof globalThis & { navigator?: Navigator };
  let adapter: GPUAdapter | null = null;
  try {
    adapter = (await g.navigator?.gpu?.requestAdapter()) ?? null;
  } catch {
    adapter = null;
  }
  const info = adapter?.info;
  return Object.freeze({
    webgpu: adapter !== null,
    shaderF16: adapter?.features.has('shader-f16') ?? false,
    subgroups: adapter?.features.has('subgroups') ?? false,
    timestampQuery: adapter?.features.has('timestamp-query') ?? false,
    maxStorageBufferBindingSize: adapter?.limits.maxStorageBufferBindingSize ?? 0,
    adapterInfo: info
      ? {
          vendor: info.vendor,
          architecture: info.architecture,
          device: info.device,
          description: info.description,
          isFallbackAdapter: (info as { isFallbackAdapter?: boolean }).isFallbackAdapter === true,
        }
      : null,
    opfs: typeof g.navigator?.storage?.getDirectory === 'function',
    crossOriginIsolated: (globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated === true,
    worker: typeof Worker !== 'undefined',
    indexedDB: typeof indexedDB !== 'undefined',
  });
}
