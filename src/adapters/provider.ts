/**
 * The AdapterFeedProvider the engine uses per prompt: a selection (none, an adapter name, or a weighted
 * mix) → LoRA feeds for the graph's targets, through an LRU cache (GPU buffers when given ORT's
 * GPUDevice, CPU tensors otherwise). Cache keys: `none#<targets>`, `a:<name>@<version>#<targets>`,
 * `mix:<name>@<version>*<weight>|…#<targets>`; the version comes from the store's metadata (one small
 * IndexedDB read per call), so a re-imported or renamed adapter never serves stale tensors. A cold
 * adapter goes IndexedDB → CPU feeds → GPU once; mixes are concatenated on the CPU (mix.ts) and cached
 * under their own key. "No adapter" (null, [], or a mix whose weights are all 0) is `null`: the engine
 * runs the base model its own way. Not here: storage (store.ts), validation (import.ts).
 */

import { AdapterNotFoundError, InvalidOptionError, UnsupportedError } from '../errors.ts';
import type { LoraTarget } from '../model/inject-lora.ts';
import { targetsSignature } from './feed-pack.ts';
import { isGatedSelection } from './gated-provider.ts';
import { AdapterCpuCache, AdapterGpuCache } from './gpu-cache.ts';
import { mixFeeds } from './mix.ts';
import type { AdapterStore, StoredAdapterMeta } from './store.ts';
import type {
  AdapterFeedProvider,
  AdapterFeeds,
  AdapterSelection,
  AdapterStats,
  CpuFeeds,
  OrtLike,
  ReadyGpuFeeds,
} from './types.ts';

export interface AdapterProviderOptions {
  store: Pick<AdapterStore, 'getMeta' | 'loadFeeds'> & Partial<Pick<AdapterStore, 'loadPackedFeeds'>>;
  /** ORT's GPUDevice (`await ort.env.webgpu.device` after the first WebGPU session); omit for wasm. */
  device?: GPUDevice;
  /** Cache budget in bytes (GPU buffers or CPU tensor data). */
  budgetBytes: number;
  ort: OrtLike;
}

/** The engine's `AdapterStats` (GPU cache: adapters uploaded; CPU cache: adapter tensor sets built). */
export type AdapterProviderStats = AdapterStats;

export interface AdapterProvider extends AdapterFeedProvider {
  readonly cache: AdapterGpuCache | AdapterCpuCache;
  /** Drop cached tensors of an adapter (all versions, alone or in mixes), e.g. after delete/rename. */
  forget(name: string): void;
  /** Takes ready GPU feeds of `name@version` into the GPU cache (false on a CPU cache or another device). */
  adopt(name: string, version: string, targets: readonly LoraTarget[], feeds: ReadyGpuFeeds): boolean;
  stats(): AdapterProviderStats;
  /** Evicts everything (buffers of in-use entries go when released). */
  dispose(): void;
}

export { targetsSignature };

const enc = (name: string): string => encodeURIComponent(name);
/** The cache key of one stored adapter version for one target set. */
const adapterKey = (name: string, version: string, sig: string): string => `a:${enc(name)}@${version}#${sig}`;

export function createAdapterProvider(opts: AdapterProviderOptions): AdapterProvider {
  const { store, ort, budgetBytes } = opts;
  const cache = opts.device
    ? new AdapterGpuCache({ device: opts.device, budgetBytes, ort })
    : new AdapterCpuCache({ budgetBytes, ort });
  let built = 0;

  async function metaOf(name: string): Promise<StoredAdapterMeta> {
    if (typeof name !== 'string') {
      throw new InvalidOptionError(`adapter name must be a string (got ${JSON.stringify(name)})`, { name });
    }
    const meta = await store.getMeta(name);
    if (!meta) throw new AdapterNotFoundError(`no adapter named "${name}" in the store`, { name });
    return meta;
  }

  async function load(name: string, targets: readonly LoraTarget[], version: string): Promise<CpuFeeds> {
    const { meta, feeds } = store.loadPackedFeeds
      ? await store.loadPackedFeeds(name, targets)
      : await store.loadFeeds(name, targets);
    if (meta.version !== version) {
      // Re-imported between the metadata read and the load: key and tensors would disagree.
      throw new AdapterNotFoundError(`adapter "${name}" changed while loading; retry`, { name });
    }
    return feeds;
  }

  async function feedsFor(
    selection: AdapterSelection,
    targets: readonly LoraTarget[],
  ): Promise<AdapterFeeds | null> {
    const sig = targetsSignature(targets);
    if (selection === null || (Array.isArray(selection) && selection.length === 0)) return null;
    if (typeof selection === 'string') {
      const meta = await metaOf(selection);
      return cache.acquire(adapterKey(selection, meta.version, sig), async () => {
        const feeds = await load(selection, targets, meta.version);
        built++;
        return feeds;
      });
    }
    if (isGatedSelection(selection)) {
      throw new UnsupportedError('a gated mix runs only on a model loaded with { gates: true }', {
        gated: selection.gated,
      });
    }
    if (!Array.isArray(selection)) {
      throw new InvalidOptionError('adapter selection must be null, a name, or a list of {name, weight}', {
        selection: String(selection),
      });
    }
    for (const [i, p] of selection.entries()) {
      if (typeof p?.weight !== 'number' || !Number.isFinite(p.weight)) {
        throw new InvalidOptionError(`mix entry ${i}: weight must be a finite number`, { index: i });
      }
    }
    const metas = await Promise.all(selection.map((p) => metaOf(p.name)));
    // Every weight 0: exactly the base model.
    if (selection.every((p) => p.weight === 0)) return null;
    const key = `mix:${selection.map((p, i) => `${enc(p.name)}@${metas[i]!.version}*${p.weight}`).join('|')}#${sig}`;
    return cache.acquire(key, async () => {
      const parts = await Promise.all(
        selection.map(async (p, i) => ({
          weight: p.weight,
          feeds: await load(p.name, targets, metas[i]!.version),
        })),
      );
      const mixed = mixFeeds(parts, targets);
      built++;
      return mixed;
    });
  }

  return {
    cache,
    feedsFor,
    adopt(name, version, targets, ready) {
      if (!(cache instanceof AdapterGpuCache) || ready.device !== cache.device) return false;
      const key = adapterKey(name, version, targetsSignature(targets));
      cache.insert(key, ready.feeds, ready.bytes, ready.dispose);
      return true;
    },
    forget(name: string) {
      const n = enc(name);
      cache.evictWhere((k) => {
        if (k.startsWith(`a:${n}@`)) return true;
        if (!k.startsWith('mix:')) return false;
        return k
          .slice(4, k.lastIndexOf('#'))
          .split('|')
          .some((part) => part.startsWith(`${n}@`));
      });
    },
    stats() {
      const s = cache.stats;
      return {
        bytesHeld: cache.bytesHeld,
        entries: cache.size,
        hits: s.hits,
        misses: s.misses,
        uploads: opts.device ? s.uploads : built,
        evictions: s.evictions,
        budgetBytes: cache.budgetBytes,
      };
    },
    dispose() {
      cache.clear();
    },
  };
}
