/**
 * A thin typed wrapper over one onnxruntime-web InferenceSession for an HF-layout decoder graph
 * (inputs input_ids, attention_mask, position_ids, past_key_values.{i}.key|value; outputs logits,
 * present.{i}.key|value — the names Optimum and transformers.js use). It runs one forward pass
 * and a greedy loop with a host-side KV cache (prefill once, then one token per step).
 * The ORT module is passed in, so the same code runs on Node (`onnxruntime-web` → wasm) and in the
 * browser (`onnxruntime-web/webgpu` → webgpu or wasm EP). It deliberately does not sample, keep the KV
 * cache on the GPU, or run in a worker: the full engine does that.
 */
import type * as OrtModule from 'onnxruntime-web';
import { AbortError, ModelFormatError } from '../errors.ts';
import type { ModelConfig } from '../model/package.ts';
import { argmax as argmaxOrMinusOne } from './sampling.ts';

export type Ort = typeof OrtModule;
export type OrtTensor = OrtModule.Tensor;
export type ExecutionProviders = OrtModule.InferenceSession.SessionOptions['executionProviders'];

/** Where each layer's KV lives in the graph: names, and the dims every past/present tensor has. */
export interface KvLayout {
  numLayers: number;
  numKvHeads: number;
  headDim: number;
  /** `past_key_values.{i}.key|value`, layer-major, key before value. */
  pastNames: string[];
  /** `present.{i}.key|value`, same order as pastNames. */
  presentNames: string[];
}

/** KV state after `length` tokens: one `[1, kvHeads, length, headDim]` tensor per past input name. */
export interface KvCache {
  length: number;
  tensors: Map<string, OrtTensor>;
}

export interface ForwardResult {
  /** `[V]` logits of the last position, or `[T, V]` row-major when `allLogits` was asked for. */
  logits: Float32Array;
  present: KvCache;
}

export interface GreedyOptions {
  /** Inputs fed on every step (e.g. LoRA tensors `lora.{layer}.{module}.A|B`). */
  extraFeeds?: Record<string, OrtTensor>;
  /** Ids that stop generation (included as the last token). Defaults to the config's eos ids. */
  eosTokenIds?: number[];
  /** Called with each new token as soon as it is chosen. */
  onToken?: (id: number, step: number) => void;
  signal?: AbortSignal;
}

const PAST_RE = /^past_key_values\.(\d+)\.(key|value)$/;

/**
 * Index of the largest value; the first one on ties (like torch.argmax), NaN never wins. 0 when no
 * value is > -Infinity (sampling.ts's `argmax` says -1 there).
 */
export function argmax(x: ArrayLike<number>): number {
  return Math.max(0, argmaxOrMinusOne(x));
}

/**
 * The token feeds of one step of a batch-1 decoder: `input_ids` [1, T], `attention_mask` [1, P + T] (all
 * ones) and, when the graph has it, `position_ids` [1, T] = P..P+T-1, after P cached positions.
 */
export function stepFeeds(
  ort: Ort,
  ids: readonly number[] | BigInt64Array,
  pastLen: number,
  withPositionIds: boolean,
): Record<string, OrtTensor> {
  const T = ids.length;
  const idData = ids instanceof BigInt64Array ? ids : BigInt64Array.from(ids, (x) => BigInt(x));
  const feeds: Record<string, OrtTensor> = {
    input_ids: new ort.Tensor('int64', idData, [1, T]),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(pastLen + T).fill(1n), [1, pastLen + T]),
  };
  if (withPositionIds) {
    feeds.position_ids = new ort.Tensor(
      'int64',
      BigInt64Array.from({ length: T }, (_, i) => BigInt(pastLen + i)),
      [1, T],
    );
  }
  return feeds;
}

/** Reads the KV layout from the graph's input/output names, cross-checked against config.json. */
export function kvLayoutFromNames(
  inputNames: readonly string[],
  outputNames: readonly string[],
  config: ModelConfig,
): KvLayout {
  const found = new Set<string>();
  for (const n of inputNames) if (PAST_RE.test(n)) found.add(n);
  const pastNames: string[] = [];
  const presentNames: string[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    for (const kv of ['key', 'value']) {
      const p = `past_key_values.${i}.${kv}`;
      const o = `present.${i}.${kv}`;
      if (!found.has(p) || !outputNames.includes(o)) {
        throw new ModelFormatError(
          `graph lacks KV cache I/O "${p}" / "${o}" for layer ${i} of ${config.numLayers} (config.json num_hidden_layers)`,
          { missing: found.has(p) ? o : p },
        );
      }
      pastNames.push(p);
      presentNames.push(o);
    }
  }
  if (found.size !== pastNames.length) {
    throw new ModelFormatError(
      `graph has ${found.size / 2} KV layers but config.json says num_hidden_layers=${config.numLayers}`,
      { graphLayers: found.size / 2, configLayers: config.numLayers },
    );
  }
  for (const n of ['input_ids', 'attention_mask', 'logits']) {
    if (!inputNames.includes(n) && !outputNames.includes(n)) {
      throw new ModelFormatError(`graph lacks "${n}"`, { missing: n });
    }
  }
  return {
    numLayers: config.numLayers,
    numKvHeads: config.numKvHeads,
    headDim: config.headDim,
    pastNames,
    presentNames,
  };
}

export class DecoderSession {
  readonly session: OrtModule.InferenceSession;
  readonly layout: KvLayout;
  readonly config: ModelConfig;
  private readonly ort: Ort;
  private readonly hasPositionIds: boolean;

  private constructor(ort: Ort, session: OrtModule.InferenceSession, config: ModelConfig) {
    this.ort = ort;
    this.session = session;
    this.config = config;
    this.layout = kvLayoutFromNames(session.inputNames, session.outputNames, config);
    this.hasPositionIds = session.inputNames.includes('position_ids');
  }

  /**
   * Creates a session from ONNX bytes. `executionProviders` e.g. `['webgpu', 'wasm']` (ORT falls back
   * in order) or `['wasm']`. Throws ModelFormatError when the graph is not an HF-layout decoder.
   */
  static async create(
    ort: Ort,
    bytes: Uint8Array,
    config: ModelConfig,
    opts: {
      executionProviders?: ExecutionProviders;
      sessionOptions?: OrtModule.InferenceSession.SessionOptions;
    } = {},
  ): Promise<DecoderSession> {
    const session = await ort.InferenceSession.create(bytes, {
      ...opts.sessionOptions,
      executionProviders: opts.executionProviders ?? ['wasm'],
    });
    try {
      return new DecoderSession(ort, session, config);
    } catch (e) {
      await session.release();
      throw e;
    }
  }

  /** An empty cache (`past_sequence_length` 0) for the first forward. */
  emptyCache(): KvCache {
    const { numKvHeads, headDim, pastNames } = this.layout;
    const tensors = new Map<string, OrtTensor>();
    for (const n of pastNames)
      tensors.set(n, new this.ort.Tensor('float32', new Float32Array(0), [1, numKvHeads, 0, headDim]));
    return { length: 0, tensors };
  }

  /**
   * One forward pass over `ids` (batch 1) after `past` (default: empty). Returns the last position's
   * logits (or all, with `allLogits`) and the new KV cache. `past` is not disposed: the caller owns it.
   */
  async forward(
    ids: number[] | BigInt64Array,
    past?: KvCache,
    extraFeeds?: Record<string, OrtTensor>,
    { allLogits = false }: { allLogits?: boolean } = {},
  ): Promise<ForwardResult> {
    const T = ids.length;
    if (T === 0) throw new RangeError('forward: ids must not be empty');
    const cache = past ?? this.emptyCache();
    const P = cache.length;
    const feeds = stepFeeds(this.ort, ids, P, this.hasPositionIds);
    for (const n of this.layout.pastNames) feeds[n] = cache.tensors.get(n)!;
    if (extraFeeds) {
      for (const [k, v] of Object.entries(extraFeeds)) {
        if (!this.session.inputNames.includes(k)) {
          throw new ModelFormatError(`extra feed "${k}" is not an input of this graph`, { input: k });
        }
        feeds[k] = v;
      }
    }
    const fetches = ['logits', ...this.layout.presentNames];
    const out = await this.session.run(feeds, fetches);
    feeds.input_ids!.dispose();
    feeds.attention_mask!.dispose();
    feeds.position_ids?.dispose();
    if (!past) for (const t of cache.tensors.values()) t.dispose();

    const logitsT = out.logits!;
    const V = logitsT.dims[logitsT.dims.length - 1]!;
    const all = (await logitsT.getData()) as Float32Array;
    const logits = allLogits ? all.slice(0, T * V) : all.slice((T - 1) * V, T * V);
    logitsT.dispose();
    const tensors = new Map<string, OrtTensor>();
    this.layout.presentNames.forEach((o, i) => {
      tensors.set(this.layout.pastNames[i]!, out[o]!);
    });
    return { logits, present: { length: P + T, tensors } };
  }

  /**
   * Greedy decoding with the KV cache: prefill `promptIds` once, then feed one token per step.
   * Returns the new tokens (stopping after an eos id, which is included) — at most `maxNewTokens`.
   */
  async greedy(promptIds: number[], maxNewTokens: number, opts: GreedyOptions = {}): Promise<number[]> {
    const eos = new Set(opts.eosTokenIds ?? this.config.eosTokenIds);
    const out: number[] = [];
    if (maxNewTokens <= 0) return out;
    let past: KvCache | undefined;
    let input = promptIds;
    try {
      for (let step = 0; step < maxNewTokens; step++) {
        if (opts.signal?.aborted) throw new AbortError('generation aborted', { step });
        const r = await this.forward(input, past, opts.extraFeeds);
        if (past) disposeCache(past);
        past = r.present;
        const next = argmax(r.logits);
        out.push(next);
        opts.onToken?.(next, step);
        if (eos.has(next)) break;
        input = [next];
      }
    } finally {
      if (past) disposeCache(past);
    }
    return out;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

export function disposeCache(c: KvCache): void {
  for (const t of c.tensors.values()) t.dispose();
  c.tensors.clear();
}
