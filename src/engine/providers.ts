/**
 * The engine's adapter feed providers: the default one (stored adapters through an LRU feed cache) and
 * the one used when no store is available.
 */
import { createAdapterProvider } from '../adapters/provider.ts';
import type { AdapterStore } from '../adapters/store.ts';
import { UnsupportedError } from '../errors.ts';
import type { AdapterFeedProvider, AdapterFeeds, AdapterProviderFactory, AdapterSelection } from './types.ts';

/** Default byte budget of the adapter feed cache (GPU buffers on webgpu, tensor data on wasm). */
export const DEFAULT_ADAPTER_CACHE_BYTES = 64 * 1024 * 1024;

/**
 * The provider used when none is installed: "no adapter" only; any named adapter or mix →
 * UnsupportedError, since nothing can resolve names without the adapter store.
 */
export function noStoreProvider(): AdapterFeedProvider {
  return {
    async feedsFor(selection: AdapterSelection): Promise<AdapterFeeds | null> {
      if (selection === null || selection === undefined) return null;
      throw new UnsupportedError(
        'adapter requested but no adapter provider is installed in this engine; generate with adapter: null ' +
          'or create the engine with an adapterProvider',
        { adapter: selection },
      );
    },
  };
}

/**
 * The engine's default provider factory: adapters from `store` through an LRU feed cache of
 * `budgetBytes` — GPU buffers on ORT's own device on webgpu (a hot adapter uploads nothing), CPU
 * tensors on wasm.
 */
export function storeAdapterProvider(
  store: AdapterStore,
  budgetBytes: number = DEFAULT_ADAPTER_CACHE_BYTES,
): AdapterProviderFactory {
  return (ctx) =>
    createAdapterProvider({
      store,
      ort: ctx.ort,
      budgetBytes,
      ...(ctx.device ? { device: ctx.device } : {}),
    });
}
