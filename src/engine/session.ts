/**
 * The one decode step in the codebase. An HF-layout decoder graph (inputs input_ids, attention_mask,
 * position_ids, past_key_values.{i}.key|value; outputs logits, present.{i}.key|value — the names
 * Optimum and transformers.js use) becomes a `DecoderGraph` through `createDecoderSession` (the session
 * options the engine runs with: on webgpu every `present.*` stays on the GPU), and a `KvStepper` owns
 * one sequence's KV cache: `step(ids)` feeds ids after the cached positions and returns the logits row,
 * `dispose()` frees the cache. The engine's generate loop, the bench and the tests all step through
 * it. The ORT module is passed in, so it runs on Node (`onnxruntime-web` → wasm) and in the browser.
 * Dtypes come from the session's metadata, never from a config: the empty KV cache takes the type the
 * graph declares for `past_key_values.*` (float16 in fp16/q4f16 files; on webgpu the present tensors then
 * stay fp16 GPU buffers), fp16 logits are widened to float32 for sampling, `num_logits_to_keep` is fed when
 * declared (1, or T with allLogits), and graphs without `position_ids` (GroupQueryAttention with rotary
 * inside) get their positions from `attention_mask`.
 * It deliberately does not sample, detokenize or know about adapters beyond fixed extra feeds.
 */
import type * as OrtModule from 'onnxruntime-web';
import { InvalidOptionError, ModelFormatError, WebLoraError } from '../errors.ts';
import { ARGMAX_OUTPUT } from '../model/greedy-head.ts';
import { LORA_ROW_MASK } from '../model/inject-lora.ts';
import type { ModelConfig } from '../model/package.ts';
import { argmax } from './sampling.ts';
import type { Backend } from './types.ts';

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

const PAST_RE = /^past_key_values\.(\d+)\.(key|value)$/;

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

/** The LORA_ROW_MASK feed that leaves every row its whole rank: (1, 1, 1) = 1. */
export function rowMaskOne(ort: Ort): OrtTensor {
  return new ort.Tensor('float32', Float32Array.of(1), [1, 1, 1]);
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

/** Float dtypes a decoder's KV cache and logits may have. */
export type FloatDtype = 'float32' | 'float16';

/** A decoder session and what stepping it needs to know. */
export interface DecoderGraph {
  readonly session: OrtModule.InferenceSession;
  readonly layout: KvLayout;
  readonly hasPositionIds: boolean;
  /** Element type of `past_key_values.*` (from the input metadata; float32 when it is not exposed). */
  readonly kvDtype?: FloatDtype;
  /** Dims of the `num_logits_to_keep` input ([] scalar, [1]), or null when the graph has none. */
  readonly numLogitsToKeep?: readonly number[] | null;
  /** Whether the graph has the greedy head's `logits_argmax` output (model/greedy-head.ts). */
  readonly argmax?: boolean;
}

function metadataOf(
  list: readonly OrtModule.InferenceSession.ValueMetadata[] | undefined,
  name: string,
): OrtModule.InferenceSession.ValueMetadata | undefined {
  return list?.find((m) => m.name === name);
}

/** Reads a session's KV layout (kvLayoutFromNames), KV dtype and optional inputs. */
export function decoderGraph(session: OrtModule.InferenceSession, config: ModelConfig): DecoderGraph {
  const layout = kvLayoutFromNames(session.inputNames, session.outputNames, config);
  // inputMetadata exists from onnxruntime-web 1.22 on; stand-in sessions in tests may lack it.
  let inputs: readonly OrtModule.InferenceSession.ValueMetadata[] | undefined;
  try {
    inputs = session.inputMetadata;
  } catch {
    inputs = undefined;
  }
  const kv = metadataOf(inputs, layout.pastNames[0] ?? '');
  const kvType = kv?.isTensor ? kv.type : 'float32';
  if (kvType !== 'float32' && kvType !== 'float16') {
    throw new ModelFormatError(`KV cache input ${kv?.name} has type ${kvType}; expected float32 or float16`, {
      input: kv?.name,
      type: kvType,
    });
  }
  let keep: number[] | null = null;
  if (session.inputNames.includes('num_logits_to_keep')) {
    const m = metadataOf(inputs, 'num_logits_to_keep');
    keep = m?.isTensor && m.shape.length === 1 ? [1] : [];
  }
  return {
    session,
    layout,
    hasPositionIds: session.inputNames.includes('position_ids'),
    kvDtype: kvType,
    numLogitsToKeep: keep,
    argmax: session.outputNames.includes(ARGMAX_OUTPUT),
  };
}

/** float32 copy of logits data: Float32Array as is (sliced), fp16 as Uint16Array bits or Float16Array. */
export function logitsToFloat32(data: unknown, start: number, end: number): Float32Array {
  if (data instanceof Float32Array) return data.slice(start, end);
  if (data instanceof Uint16Array) {
    const out = new Float32Array(end - start);
    for (let i = start; i < end; i++) out[i - start] = halfToFloat(data[i]!);
    return out;
  }
  if (ArrayBuffer.isView(data) && !(data instanceof DataView)) {
    // Float16Array (where the JS engine has it; onnxruntime-web then returns fp16 data as one)
    return Float32Array.from(
      (data as unknown as ArrayLike<number> & { slice(a: number, b: number): ArrayLike<number> }).slice(
        start,
        end,
      ),
    );
  }
  throw new ModelFormatError('logits are not float32 or float16 data', { type: typeof data });
}

/** IEEE 754 binary16 bits → number (exact). */
export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? Number.NaN : s * Number.POSITIVE_INFINITY;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

/**
 * The session options every decoder runs with. Severity 3 (error): ORT otherwise warns that shape ops
 * run on the CPU, which is by design. On webgpu the KV outputs stay on the GPU between steps and only
 * the logits come to the CPU.
 */
export function decoderSessionOptions(
  backend: Backend,
  presentNames: readonly string[],
): OrtModule.InferenceSession.SessionOptions {
  const options: OrtModule.InferenceSession.SessionOptions = {
    executionProviders: [backend],
    logSeverityLevel: 3,
  };
  if (backend === 'webgpu') {
    const where: Record<string, 'gpu-buffer' | 'cpu'> = { logits: 'cpu' };
    for (const n of presentNames) where[n] = 'gpu-buffer';
    options.preferredOutputLocation = where;
  }
  return options;
}

/** `present.{i}.key|value` for every layer of `config`, layer-major, key before value. */
export function presentNamesOf(config: Pick<ModelConfig, 'numLayers'>): string[] {
  const out: string[] = [];
  for (let i = 0; i < config.numLayers; i++) out.push(`present.${i}.key`, `present.${i}.value`);
  return out;
}

/**
 * Creates a decoder session from ONNX bytes with `decoderSessionOptions`. `presentNames` defaults to
 * the HF names for config's layers. Throws ModelFormatError (and releases the session) when the graph
 * is not an HF-layout decoder.
 */
export async function createDecoderSession(
  ort: Ort,
  bytes: Uint8Array,
  config: ModelConfig,
  opts: {
    backend: Backend;
    presentNames?: readonly string[];
    /** External-data files the graph references (e.g. `model.onnx_data`), by the path it names. */
    externalData?: readonly { path: string; data: Uint8Array }[];
  },
): Promise<DecoderGraph> {
  const options = decoderSessionOptions(opts.backend, opts.presentNames ?? presentNamesOf(config));
  if (opts.externalData?.length) options.externalData = [...opts.externalData];
  const session = await ort.InferenceSession.create(bytes, options);
  try {
    return decoderGraph(session, config);
  } catch (e) {
    await session.release();
    throw e;
  }
}

/**
 * One sequence's KV cache over a DecoderGraph (batch 1). `step(ids)` runs ids after the cached
 * positions with `extraFeeds` (e.g. LoRA tensors) and returns the last position's logits — or every
 * position's, row-major (T, V), with `allLogits`; the new KV replaces the old, which is disposed.
 * Call `dispose()` when done (also after an error).
 */
export class KvStepper {
  private past = new Map<string, OrtTensor>();
  private length = 0;
  private kvLocations: string[] = [];

  constructor(
    private readonly ort: Ort,
    private readonly graph: DecoderGraph,
    private readonly extraFeeds: Record<string, OrtTensor> = {},
  ) {
    const { numKvHeads, headDim, pastNames } = graph.layout;
    const dims = [1, numKvHeads, 0, headDim];
    for (const n of pastNames) {
      this.past.set(
        n,
        graph.kvDtype === 'float16'
          ? new ort.Tensor('float16', new Uint16Array(0), dims)
          : new ort.Tensor('float32', new Float32Array(0), dims),
      );
    }
  }

  /** Positions in the cache. */
  get pastLen(): number {
    return this.length;
  }

  /** `tensor.location` of each KV tensor the last step produced (e.g. 'gpu-buffer' on webgpu). */
  get lastKvLocations(): readonly string[] {
    return this.kvLocations;
  }

  async step(ids: readonly number[] | BigInt64Array, { allLogits = false } = {}): Promise<Float32Array> {
    const out = await this.run(ids, allLogits ? ids.length : 1, 'logits');
    const logitsT = out.logits!;
    const V = logitsT.dims[logitsT.dims.length - 1]!;
    const rows = logitsT.dims[logitsT.dims.length - 2] ?? ids.length; // T, or 1 when num_logits_to_keep cut it
    const all = await logitsT.getData();
    const logits = allLogits
      ? logitsToFloat32(all, 0, rows * V)
      : logitsToFloat32(all, (rows - 1) * V, rows * V);
    logitsT.dispose();
    return logits;
  }

  /**
   * As `step`, returning the greedy next id (the last position's argmax, lowest id on ties). On a graph
   * with the greedy head (`graph.argmax`) only `logits_argmax` is read back, one int64, not the logits row.
   */
  async next(ids: readonly number[] | BigInt64Array): Promise<number> {
    if (!this.graph.argmax) {
      const id = argmax(await this.step(ids));
      if (id < 0) throw new WebLoraError('every logit is -Infinity or NaN', { step: this.length });
      return id;
    }
    const out = await this.run(ids, 1, ARGMAX_OUTPUT);
    const t = out[ARGMAX_OUTPUT]!;
    const data = (await t.getData()) as BigInt64Array;
    t.dispose();
    return Number(data[data.length - 1]);
  }

  /** Runs ids after the cache, fetching `what` and the KV (which replaces the old); returns the outputs. */
  private async run(
    ids: readonly number[] | BigInt64Array,
    keepRows: number,
    what: 'logits' | typeof ARGMAX_OUTPUT,
  ): Promise<OrtModule.InferenceSession.ReturnType> {
    if (ids.length === 0) {
      throw new InvalidOptionError('a decode step needs at least one token id', { option: 'ids' });
    }
    const { session, layout, hasPositionIds } = this.graph;
    const tokenFeeds = stepFeeds(this.ort, ids, this.length, hasPositionIds);
    const keep = this.graph.numLogitsToKeep;
    if (keep) {
      tokenFeeds.num_logits_to_keep = new this.ort.Tensor('int64', BigInt64Array.of(BigInt(keepRows)), [
        ...keep,
      ]);
    }
    const feeds: Record<string, OrtTensor> = { ...this.extraFeeds, ...tokenFeeds };
    if (!(LORA_ROW_MASK in feeds) && session.inputNames.includes(LORA_ROW_MASK)) {
      feeds[LORA_ROW_MASK] = tokenFeeds[LORA_ROW_MASK] = rowMaskOne(this.ort);
    }
    for (const [n, t] of this.past) feeds[n] = t;
    const out = await session.run(feeds, [what, ...layout.presentNames]);
    for (const t of Object.values(tokenFeeds)) t.dispose();
    for (const t of this.past.values()) t.dispose();
    this.past = new Map();
    layout.presentNames.forEach((o, i) => {
      this.past.set(layout.pastNames[i]!, out[o]!);
    });
    this.length += ids.length;
    this.kvLocations = [...this.past.values()].map((t) => t.location);
    return out;
  }

  /** Hands the cache over (tensors in `layout.pastNames` order) and empties this stepper. */
  takeKv(): { tensors: OrtTensor[]; length: number } {
    const tensors = this.graph.layout.pastNames.map((n) => this.past.get(n)!);
    const length = this.length;
    this.past = new Map();
    this.length = 0;
    return { tensors, length };
  }

  dispose(): void {
    for (const t of this.past.values()) t.dispose();
    this.past.clear();
  }
}

/**
 * A bare greedy loop for tests and tools: prefill `promptIds`, then one token per step, stopping after
 * an id in `eosIds` (included). Returns at most `maxNewTokens` ids. The engine's generate is the
 * product path (sampling, streaming, stop strings); this only picks argmax.
 */
export async function greedy(
  ort: Ort,
  graph: DecoderGraph,
  promptIds: readonly number[],
  maxNewTokens: number,
  opts: { eosIds?: Iterable<number>; extraFeeds?: Record<string, OrtTensor> } = {},
): Promise<number[]> {
  const eos = new Set(opts.eosIds ?? []);
  const stepper = new KvStepper(ort, graph, opts.extraFeeds);
  const out: number[] = [];
  try {
    let input: readonly number[] = promptIds;
    while (out.length < maxNewTokens) {
      const next = await stepper.next(input);
      out.push(next);
      if (eos.has(next)) break;
      input = [next];
    }
  } finally {
    stepper.dispose();
  }
  return out;
}
