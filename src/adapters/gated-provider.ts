/**
 * Runs selections on a gated graph (injectLora `gates: true`): wraps the ordinary provider (provider.ts)
 * and adds the gate inputs. A gated mix `{ gated: name }` becomes the ordinary weighted mix of its experts
 * (concatenated along the rank, cached as any mix) plus its gate feeds W, b, E (gated.ts) built from the
 * stored mix (one IndexedDB read per request, like the adapter metadata; a few KB, uploaded by ORT with
 * the run). Any other selection gets the neutral gate (n = 1), so it runs exactly as on the ungated graph.
 * Not here: the graph (model/inject-gates.ts), the format (gated.ts), storage (gated-store.ts).
 */
import { InvalidOptionError } from '../errors.ts';
import type { GateSite } from '../model/inject-gates.ts';
import type { LoraTarget } from '../model/inject-lora.ts';
import { type GatedMix, gateFeeds } from './gated.ts';
import type { GatedMixStore } from './gated-store.ts';
import type { AdapterStore } from './store.ts';
import type { AdapterFeedProvider, AdapterFeeds, AdapterSelection, LoraFeed, OrtLike } from './types.ts';

/** A `{ gated: name }` selection (the stored gated mix `name`). */
export function isGatedSelection(s: unknown): s is { gated: string } {
  return typeof s === 'object' && s !== null && !Array.isArray(s) && 'gated' in s;
}

export function toOrtFeeds(
  ort: OrtLike,
  feeds: Map<string, LoraFeed>,
): Record<string, InstanceType<OrtLike['Tensor']>> {
  const out: Record<string, InstanceType<OrtLike['Tensor']>> = {};
  for (const [k, v] of feeds) out[k] = new ort.Tensor('float32', v.data, v.dims);
  return out;
}

export interface GatedProviderOptions {
  inner: AdapterFeedProvider;
  sites: readonly GateSite[];
  gated: Pick<GatedMixStore, 'get'>;
  store: Pick<AdapterStore, 'getMeta'>;
  ort: OrtLike;
}

export function withGates(o: GatedProviderOptions): AdapterFeedProvider {
  const { inner, sites, ort } = o;
  const rankOf = (feeds: AdapterFeeds, targets: readonly LoraTarget[]): number =>
    Number(feeds.feeds[targets[0]!.inputA]!.dims[1]);

  async function gatedFeeds(name: string, targets: readonly LoraTarget[]): Promise<AdapterFeeds> {
    if (typeof name !== 'string')
      throw new InvalidOptionError(`gated mix name must be a string (got ${JSON.stringify(name)})`, { name });
    const { mix } = await o.gated.get(name);
    const ranks = await expertRanks(mix);
    const feeds = await inner.feedsFor(mix.experts, targets);
    if (!feeds)
      throw new InvalidOptionError(`gated mix "${name}" has no experts with a non-zero weight`, { name });
    const R = rankOf(feeds, targets);
    const sum = ranks.reduce((s, r) => s + r, 0);
    if (R !== sum) {
      feeds.release();
      throw new InvalidOptionError(
        `gated mix "${name}": the concatenated feeds have rank ${R}, the experts' ranks sum to ${sum}`,
        { name, rank: R, ranks },
      );
    }
    return {
      feeds: { ...feeds.feeds, ...toOrtFeeds(ort, gateFeeds(sites, mix, ranks)) },
      release: feeds.release,
    };
  }

  async function expertRanks(mix: GatedMix): Promise<number[]> {
    return Promise.all(
      mix.experts.map(async (e) => {
        const meta = await o.store.getMeta(e.name);
        if (!meta)
          throw new InvalidOptionError(`gated mix expert "${e.name}" is not in the store`, { name: e.name });
        return meta.rank;
      }),
    );
  }

  return {
    ...inner,
    async feedsFor(
      selection: AdapterSelection,
      targets: readonly LoraTarget[],
    ): Promise<AdapterFeeds | null> {
      if (isGatedSelection(selection)) return gatedFeeds(selection.gated, targets);
      const feeds = await inner.feedsFor(selection, targets);
      if (!feeds) return null;
      const neutral = toOrtFeeds(ort, gateFeeds(sites, null, [rankOf(feeds, targets)]));
      return { feeds: { ...feeds.feeds, ...neutral }, release: feeds.release };
    },
  };
}
