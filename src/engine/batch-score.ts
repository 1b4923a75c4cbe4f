/**
 * One forward of one prompt under several adapters at once — the primitive adapter routing needs (score
 * a prompt under candidates a₁…aₙ, pick the best): the prompt becomes n identical rows of one batch on the
 * rowMask-injected graph, row i with candidate i's feeds (batch-feeds.ts; null = the base model), an empty
 * KV cache, no padding. Returns every row's logits for every prompt position, and `promptNll` turns them
 * into the mean next-token negative log-likelihood of the prompt (lower = the adapter fits it better).
 * The base weights are read once for all candidates. It deliberately does not resolve adapter names or
 * queue: callers run it inside the engine's queue with feeds from the AdapterFeedProvider.
 */
import { InvalidOptionError } from '../errors.ts';
import { LORA_ROW_MASK, type LoraTarget } from '../model/inject-lora.ts';
import { type BatchRowAdapter, batchLoraFeeds } from './batch-feeds.ts';
import { type DecoderGraph, logitsToFloat32, type Ort, type OrtTensor } from './session.ts';
import type { AdapterFeedProvider, AdapterFeeds, AdapterSelection } from './types.ts';

export interface ScoreModel {
  ort: Ort;
  /** The injected graph (with the row-mask input when candidates differ). */
  graph: DecoderGraph;
  targets: LoraTarget[];
  noAdapterFeeds: Record<string, OrtTensor>;
  device?: GPUDevice | null;
}

/**
 * Logits (T, V) row-major per candidate for prompt `ids` (T ≥ 1), candidate i under `candidates[i]`.
 * Throws InvalidOptionError for an empty prompt or no candidates, or when candidates differ and the
 * graph has no row mask.
 */
export async function scoreUnderAdapters(
  m: ScoreModel,
  ids: readonly number[],
  candidates: readonly BatchRowAdapter[],
): Promise<Float32Array[]> {
  const T = ids.length;
  const B = candidates.length;
  if (T === 0 || B === 0) {
    throw new InvalidOptionError('scoring needs a non-empty prompt and at least one candidate', {
      option: T === 0 ? 'ids' : 'candidates',
    });
  }
  const { graph, ort } = m;
  const keys = new Set(candidates.map((c) => (c.feeds ? c.key : '')));
  if (keys.size > 1 && !graph.session.inputNames.includes(LORA_ROW_MASK)) {
    throw new InvalidOptionError(
      'this graph has no row mask: candidates in one batch must share one adapter',
      {
        option: 'candidates',
      },
    );
  }
  const lora = await batchLoraFeeds(ort, candidates, m.targets, {
    device: m.device ?? null,
    noAdapter: m.noAdapterFeeds,
  });
  const { numKvHeads, headDim, pastNames, presentNames } = graph.layout;
  const own: OrtTensor[] = [];
  const t = (tensor: OrtTensor): OrtTensor => {
    own.push(tensor);
    return tensor;
  };
  const row = BigInt64Array.from(ids, (x) => BigInt(x));
  const allIds = new BigInt64Array(B * T);
  for (let b = 0; b < B; b++) allIds.set(row, b * T);
  const feeds: Record<string, OrtTensor> = {
    ...lora.feeds,
    input_ids: t(new ort.Tensor('int64', allIds, [B, T])),
    attention_mask: t(new ort.Tensor('int64', new BigInt64Array(B * T).fill(1n), [B, T])),
  };
  if (graph.hasPositionIds) {
    const pos = BigInt64Array.from({ length: B * T }, (_, i) => BigInt(i % T));
    feeds.position_ids = t(new ort.Tensor('int64', pos, [B, T]));
  }
  if (graph.numLogitsToKeep) {
    feeds.num_logits_to_keep = t(
      new ort.Tensor('int64', BigInt64Array.of(BigInt(T)), [...graph.numLogitsToKeep]),
    );
  }
  if (!(LORA_ROW_MASK in feeds) && graph.session.inputNames.includes(LORA_ROW_MASK)) {
    feeds[LORA_ROW_MASK] = t(new ort.Tensor('float32', Float32Array.of(1), [1, 1, 1]));
  }
  const dims = [B, numKvHeads, 0, headDim];
  for (const n of pastNames) {
    feeds[n] = t(
      graph.kvDtype === 'float16'
        ? new ort.Tensor('float16', new Uint16Array(0), dims)
        : new ort.Tensor('float32', new Float32Array(0), dims),
    );
  }
  try {
    const out = await graph.session.run(feeds, ['logits', ...presentNames]);
    for (const n of presentNames) out[n]?.dispose();
    const logitsT = out.logits!;
    const V = logitsT.dims[logitsT.dims.length - 1]!;
    const data = await logitsT.getData();
    logitsT.dispose();
    return Array.from({ length: B }, (_, b) => logitsToFloat32(data, b * T * V, (b + 1) * T * V));
  } finally {
    for (const x of own) x.dispose();
    lora.dispose();
  }
}

/**
 * scoreUnderAdapters with the candidates given as selections (names, mixes, null), resolved by the
 * engine's AdapterFeedProvider and released afterwards. Run it inside the engine's queue.
 */
export async function scoreSelections(
  m: ScoreModel,
  provider: AdapterFeedProvider,
  ids: readonly number[],
  selections: readonly AdapterSelection[],
): Promise<Float32Array[]> {
  const held: AdapterFeeds[] = [];
  try {
    const rows: BatchRowAdapter[] = [];
    for (const sel of selections) {
      const feeds = await provider.feedsFor(sel, m.targets);
      if (feeds) held.push(feeds);
      rows.push({ key: JSON.stringify(sel ?? null), feeds });
    }
    return await scoreUnderAdapters(m, ids, rows);
  } finally {
    for (const f of held) f.release();
  }
}

/**
 * Mean negative log-likelihood (nats) of ids[1..T-1] given their prefixes, from logits (T, V) of a
 * forward over `ids`. NaN when T < 2 (nothing to predict).
 */
export function promptNll(logits: Float32Array, ids: readonly number[]): number {
  const T = ids.length;
  const V = logits.length / T;
  if (T < 2) return Number.NaN;
  let sum = 0;
  for (let i = 0; i < T - 1; i++) {
    const row = logits.subarray(i * V, (i + 1) * V);
    let max = Number.NEGATIVE_INFINITY;
    for (const x of row) if (x > max) max = x;
    let z = 0;
    for (const x of row) z += Math.exp(x - max);
    sum += max + Math.log(z) - row[ids[i + 1]!]!;
  }
  return sum / (T - 1);
}
