/**
 * Automatic adapter choice per prompt (issue 13 §2): `adapter: 'auto'` or `{ auto: { … } }` scores the
 * prompt under each candidate — mean negative log-likelihood of the prompt's tokens 1..T−1 given their
 * prefix (nats/token; token 0 has no prediction) — and either picks the lowest ('pick', default) or mixes
 * the candidates with weights softmax(−nll / temperature) ('mix'; the base model's share, when it is a
 * candidate, is simply left out: its ΔW is 0). The idea follows prompt-aware LoRA routing (WavLLM,
 * LoRA-Mixer) without a trained gate: the adapter that explains the prompt best is the one whose style it is.
 * Scoring goes through `PromptScorer`: the engine passes a batched one (batch.ts `routeContext`, one
 * forward for all candidates) when the graph has the row mask, else `sequentialScorer` runs one prefill
 * per candidate through a KvStepper. Not here: the
 * generation itself (decode.ts) or feed caching (adapters/provider.ts).
 */
import type { AdapterStore } from '../adapters/store.ts';
import type { AdapterFeedProvider, AdapterFeeds, AdapterSelection } from '../adapters/types.ts';
import { AbortError, InvalidOptionError, UnsupportedError } from '../errors.ts';
import type { LoadedModel } from './load.ts';
import { type DecoderGraph, KvStepper, type Ort, type OrtTensor } from './session.ts';

export interface AutoAdapterOptions {
  /** Stored adapter names to choose among; default: every stored adapter of the loaded model. */
  candidates?: string[];
  /** 'pick' (default): the best-scoring candidate alone; 'mix': all, weighted softmax(−nll/temperature). */
  mode?: 'pick' | 'mix';
  /** Softmax temperature in nats/token for 'mix' (> 0); default DEFAULT_ROUTE_TEMPERATURE. */
  temperature?: number;
  /** Also score the base model (no adapter); when it wins 'pick', the request runs without adapter. */
  includeBase?: boolean;
}

/**
 * What `GenerateRequest.adapter` accepts: a selection (adapters/types.ts) or automatic choice. The string
 * 'auto' always means routing, so a stored adapter named "auto" can only be chosen inside a mix or list.
 */
export type AdapterRequest = AdapterSelection | 'auto' | { auto: AutoAdapterOptions };

/** How a routed request chose its adapter(s) (`GenerateResult.routing`). */
export interface RoutingReport {
  mode: 'pick' | 'mix';
  /** Each candidate's mean prompt NLL (nats/token), in the order scored; adapter null = base model. */
  scores: { adapter: string | null; nll: number }[];
  /** The adapters the request ran with (null = base model), with their weights (1 for 'pick'). */
  chosen: (string | null)[];
  weights: number[];
  /** Prompt tokens scored per candidate (T − 1; 0 for a one-token prompt: every score is then 0). */
  scoredTokens: number;
  temperature: number;
  /** Wall time of the scoring (all candidates). */
  ms: number;
}

/** Mix temperature default: a 0.1 nat/token lead is a factor e between two candidates' weights. */
export const DEFAULT_ROUTE_TEMPERATURE = 0.1;
/** 'mix' drops candidates whose weight falls below this (they would only add rank to the mix). */
export const MIN_MIX_WEIGHT = 0.01;

/** Scores `promptIds` under each candidate (null = base model): mean NLL per scored token. */
export type PromptScorer = (
  promptIds: readonly number[],
  candidates: readonly (string | null)[],
) => Promise<number[]>;

/** A graph and LoRA feeds to score under; `release` once done. */
export interface ScoreTarget {
  graph: DecoderGraph;
  feeds: Record<string, OrtTensor>;
  release(): void;
}

/** Mean over t of −log softmax(logits[t])[ids[t+1]], logits row-major (T, V). */
export function meanPromptNll(logits: Float32Array, ids: readonly number[], V: number): number {
  const T = ids.length;
  if (T < 2) return 0;
  let total = 0;
  for (let t = 0; t < T - 1; t++) {
    const row = logits.subarray(t * V, (t + 1) * V);
    let max = Number.NEGATIVE_INFINITY;
    for (let v = 0; v < V; v++) if (row[v]! > max) max = row[v]!;
    let sum = 0;
    for (let v = 0; v < V; v++) sum += Math.exp(row[v]! - max);
    total += max + Math.log(sum) - row[ids[t + 1]!]!;
  }
  return total / (T - 1);
}

/** One prefill per candidate through a KvStepper (all logits), one after another. */
export function sequentialScorer(
  ort: Ort,
  open: (candidate: string | null) => Promise<ScoreTarget>,
  signal?: AbortSignal,
): PromptScorer {
  return async (promptIds, candidates) => {
    const out: number[] = [];
    for (const c of candidates) {
      if (signal?.aborted) throw new AbortError('routing aborted', { queued: false });
      const target = await open(c);
      const stepper = new KvStepper(ort, target.graph, target.feeds);
      try {
        const logits = await stepper.step(promptIds, { allLogits: true });
        out.push(meanPromptNll(logits, promptIds, logits.length / promptIds.length));
      } finally {
        stepper.dispose();
        target.release();
      }
    }
    return out;
  };
}

export function isAutoRequest(a: AdapterRequest | undefined): a is 'auto' | { auto: AutoAdapterOptions } {
  return a === 'auto' || (typeof a === 'object' && a !== null && !Array.isArray(a) && 'auto' in a);
}

function bad(msg: string, value: unknown): never {
  throw new InvalidOptionError(msg, { option: 'adapter.auto', value });
}

/** Checked options with defaults filled in (candidates still undefined = all stored). */
export function checkAutoOptions(
  a: 'auto' | { auto: AutoAdapterOptions },
): Required<Omit<AutoAdapterOptions, 'candidates'>> & { candidates?: string[] } {
  const o = a === 'auto' ? {} : a.auto;
  if (typeof o !== 'object' || o === null) bad('adapter.auto must be an object of options', o);
  const mode = o.mode ?? 'pick';
  if (mode !== 'pick' && mode !== 'mix')
    bad(`adapter.auto.mode must be 'pick' or 'mix' (got ${String(mode)})`, mode);
  const temperature = o.temperature ?? DEFAULT_ROUTE_TEMPERATURE;
  if (typeof temperature !== 'number' || !(temperature > 0) || !Number.isFinite(temperature))
    bad(`adapter.auto.temperature must be a finite number > 0 (got ${String(temperature)})`, temperature);
  const c = o.candidates;
  if (c !== undefined) {
    if (!Array.isArray(c) || c.some((n) => typeof n !== 'string' || n === ''))
      bad('adapter.auto.candidates must be an array of adapter names', c);
    if (new Set(c).size !== c.length) bad('adapter.auto.candidates lists a name twice', c);
  }
  return { mode, temperature, includeBase: o.includeBase === true, ...(c ? { candidates: [...c] } : {}) };
}

/** Pick or mix from the scores: the selection to run and the report (without `ms`). */
export function chooseFromScores(
  candidates: readonly (string | null)[],
  nll: readonly number[],
  mode: 'pick' | 'mix',
  temperature: number,
): { selection: AdapterSelection; chosen: (string | null)[]; weights: number[] } {
  if (mode === 'pick') {
    let best = 0;
    for (let i = 1; i < nll.length; i++) if (nll[i]! < nll[best]!) best = i; // ties: the first listed
    return { selection: candidates[best]!, chosen: [candidates[best]!], weights: [1] };
  }
  const lo = Math.min(...nll);
  const e = nll.map((s) => Math.exp(-(s - lo) / temperature));
  const z = e.reduce((s, x) => s + x, 0);
  const chosen: (string | null)[] = [];
  const weights: number[] = [];
  e.forEach((x, i) => {
    if (x / z < MIN_MIX_WEIGHT) return;
    chosen.push(candidates[i]!);
    weights.push(x / z);
  });
  const parts = chosen.flatMap((name, i) => (name === null ? [] : [{ name, weight: weights[i]! }]));
  return { selection: parts.length === 0 ? null : parts, chosen, weights };
}

/** What the engine hands the router for one request. */
export interface RouteContext {
  model: LoadedModel;
  provider: AdapterFeedProvider;
  /** The engine's graph choice for resolved feeds (null = no adapter). */
  graphFor(a: AdapterFeeds | null): { graph: DecoderGraph; loraFeeds: Record<string, OrtTensor> };
  store(): AdapterStore | null;
  signal: AbortSignal;
  /** Replaces the default sequential scorer (e.g. a batched forward). */
  scorer?: PromptScorer;
}

/**
 * Resolves `adapter` for a request: a plain selection passes through; 'auto' is scored and turned into a
 * selection plus its RoutingReport. Errors: InvalidOptionError (options, no candidates),
 * AdapterNotFoundError (a candidate not stored, from the provider), UnsupportedError (no store to list).
 */
export async function routeRequest(
  ctx: RouteContext,
  adapter: AdapterRequest | undefined,
  promptIds: readonly number[],
): Promise<{ selection: AdapterSelection; routing?: RoutingReport }> {
  if (!isAutoRequest(adapter)) return { selection: adapter ?? null };
  const opts = checkAutoOptions(adapter);
  let names = opts.candidates;
  if (!names) {
    const store = ctx.store();
    if (!store)
      throw new UnsupportedError(
        "adapter 'auto' without candidates lists the adapter store, and there is none",
        {
          feature: 'indexeddb',
        },
      );
    const { modelId, modelAliases } = ctx.model.report;
    const ids = new Set([modelId, ...modelAliases]);
    names = (await store.list()).filter((m) => ids.has(m.modelId)).map((m) => m.name);
  }
  const candidates: (string | null)[] = [...names, ...(opts.includeBase ? [null] : [])];
  if (candidates.length === 0)
    bad("adapter 'auto': no stored adapters of this model to choose among (import or train one)", adapter);
  const m = ctx.model;
  const scorer =
    ctx.scorer ??
    sequentialScorer(
      m.ort,
      async (c) => {
        const feeds = await ctx.provider.feedsFor(c, m.targets);
        const { graph, loraFeeds } = ctx.graphFor(feeds);
        return { graph, feeds: loraFeeds, release: () => feeds?.release() };
      },
      ctx.signal,
    );
  const t0 = performance.now();
  let nll: number[];
  try {
    nll = await scorer(promptIds, candidates);
  } catch (e) {
    // Aborted while scoring: no adapter; decode then ends at once with finishReason 'abort'.
    if (e instanceof AbortError && ctx.signal.aborted) return { selection: null };
    throw e;
  }
  const ms = performance.now() - t0;
  const { selection, chosen, weights } = chooseFromScores(candidates, nll, opts.mode, opts.temperature);
  return {
    selection,
    routing: {
      mode: opts.mode,
      scores: candidates.map((a, i) => ({ adapter: a, nll: nll[i]! })),
      chosen,
      weights,
      scoredTokens: Math.max(0, promptIds.length - 1),
      temperature: opts.temperature,
      ms,
    },
  };
}
