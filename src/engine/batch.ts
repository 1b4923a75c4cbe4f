/**
 * Continuous batching of generate requests (as vLLM does; Kwon et al. 2023, arXiv:2309.06180), each row
 * with its own adapter, mix or none. The first request starts a batch loop as one task of the engine's
 * SerialQueue (so loads and training still wait for it); requests that arrive while it runs — the Compare
 * view's columns, several `<weblora-chat>` elements — join at the next step instead of queueing, as long
 * as nothing else waits in the queue (a waiting load keeps its turn). A joining request is prefilled alone
 * (batch 1, on the graph and feeds it would use alone: the un-injected base graph for "no adapter" when the
 * model has one), then its KV is merged into the batch (batch-kv.ts); every step then decodes all rows in
 * one forward, on the base graph when no row has an adapter, else on the injected graph with the rows'
 * adapters concatenated along the rank and a per-row mask (batch-feeds.ts). Rows stream on their own
 * (decode.ts's TokenStream), stop on their own (eos, length, stop string, abort — checked before every
 * step) and leave; the loop ends when no row is left. A lone request decodes exactly as decode() would.
 * GroupQueryAttention graphs (LoadedModel.leftPadding false: GQA takes each row's length from the mask
 * and expects its positions at the start of the cache), graphs without `position_ids`, and — for
 * different adapters — graphs without the row-mask input never batch: such requests run one after
 * another, as before.
 */
import type { AdapterStore } from '../adapters/store.ts';
import { AbortError, AdapterMismatchError, type DeviceLostError } from '../errors.ts';
import { LORA_ROW_MASK } from '../model/inject-lora.ts';
import { type BatchLoraFeeds, type BatchRowAdapter, batchLoraFeeds } from './batch-feeds.ts';
import { BatchKv } from './batch-kv.ts';
import { promptNll, scoreSelections } from './batch-score.ts';
import { type PreparedRequest, prepareRequest, TokenStream, yieldToEventLoop } from './decode.ts';
import type { LoadedModel } from './load.ts';
import type { SerialQueue } from './queue.ts';
import { isAutoRequest, type RouteContext, type RoutingReport, routeRequest } from './route.ts';
import { type DecoderGraph, KvStepper, type OrtTensor } from './session.ts';
import type {
  AdapterFeedProvider,
  AdapterFeeds,
  GenerateRequest,
  GenerateResult,
  TokenDelta,
} from './types.ts';

/** What the batch loop needs from the engine. */
export interface BatchHost {
  queue: SerialQueue;
  model(): { model: LoadedModel; provider: AdapterFeedProvider };
  lost(): DeviceLostError | null;
  /** The adapter store, for 'auto' routing without a candidate list (route.ts). */
  store(): AdapterStore | null;
  /** Diagnostics the engine exposes (EngineDebugState). */
  debug: {
    lastKvLocations: string[];
    lastPrefillLogits: Float32Array | null;
    lastGraph: 'base' | 'injected' | null;
    lastBatchRows: number;
    /** What the last decode step read back: one greedy id per row (greedy head) or the logits rows. */
    lastDecodeRead?: 'ids' | 'logits' | null;
  };
}

interface Row {
  /** Unique per request: the batch feeds are rebuilt when the set of rows changes (see loop). */
  id: number;
  req: GenerateRequest;
  signal: AbortSignal;
  onToken: ((delta: TokenDelta) => void) | undefined;
  resolve(r: GenerateResult): void;
  reject(e: unknown): void;
  adapter?: BatchRowAdapter;
  stream?: TokenStream;
  /** How 'auto' chose this row's adapters (route.ts). */
  routing?: RoutingReport;
  /** Most rows of a decode step this row was in (GenerateTimings.batchRows). */
  batchRows: number;
}

interface Batch {
  pending: Row[];
  rows: Row[];
  /** queue.enqueued right after this batch's task was enqueued. */
  seq: number;
}

/** Cache key of a selection: equal for selections that give the same feeds. */
export const selectionKey = (req: GenerateRequest): string => JSON.stringify(req.adapter ?? null);

let rowCounter = 0;

export class Batcher {
  /** The batch decoding now. */
  private active: Batch | null = null;
  /** The batch enqueued last and not started yet. */
  private next: Batch | null = null;

  constructor(private readonly host: BatchHost) {}

  /**
   * Requests waiting to join a batch, running or queued, beyond the one queue entry a queued batch holds
   * (the engine adds `queue.pending`, so a queued batch of n requests counts n).
   */
  get waiting(): number {
    return (this.active?.pending.length ?? 0) + (this.next ? this.next.pending.length - 1 : 0);
  }

  /**
   * Runs `req`: joins the running batch when nothing else waits in the queue, or the batch queued last
   * when nothing was queued after it, else queues a new batch. Resolves when this request is done;
   * rejects like a solo run would (AbortError `{ queued: true }` when aborted before it started).
   */
  generate(
    req: GenerateRequest,
    signal: AbortSignal,
    onToken: ((delta: TokenDelta) => void) | undefined,
  ): Promise<GenerateResult> {
    return new Promise<GenerateResult>((resolve, reject) => {
      if (signal.aborted) {
        reject(new AbortError('request aborted before it started', { queued: true }));
        return;
      }
      const row: Row = { id: ++rowCounter, req, signal, onToken, resolve, reject, batchRows: 1 };
      const q = this.host.queue;
      let b: Batch | null = null;
      if (this.active && q.pending === 0) b = this.active;
      else if (this.next && q.enqueued === this.next.seq) b = this.next;
      if (!b) {
        // The row goes in before the task is enqueued: an idle queue starts it synchronously.
        const fresh: Batch = { pending: [row], rows: [], seq: 0 };
        this.next = fresh;
        q.enqueue(() => this.loop(fresh)).catch((e) => {
          // Never started (engine disposed): every row waiting for it fails the same way.
          if (this.next === fresh) this.next = null;
          for (const r of fresh.pending.splice(0)) r.reject(e);
        });
        fresh.seq = q.enqueued;
        b = fresh;
      } else b.pending.push(row);
      const batch = b;
      // Aborted before it was admitted: leave at once, as a queued request does.
      signal.addEventListener(
        'abort',
        () => {
          const i = batch.pending.indexOf(row);
          if (i < 0) return;
          batch.pending.splice(i, 1);
          reject(new AbortError('request aborted while queued', { queued: true }));
        },
        { once: true },
      );
    });
  }

  /** Whether `row` may decode together with `rows` on this model's graphs. */
  private fits(m: LoadedModel, rows: readonly Row[], row: Row): boolean {
    if (rows.length === 0) return true;
    if (!m.graph.hasPositionIds || m.leftPadding === false) return false;
    // A gated graph's gate inputs belong to one selection (batch-feeds.ts concatenates only A/B): one
    // request at a time there.
    if (m.gates) return false;
    if (m.graph.session.inputNames.includes(LORA_ROW_MASK)) return true;
    // Without the row mask every row must use the same adapters; 'auto' is only known after routing.
    if (isAutoRequest(row.req.adapter)) return false;
    const key = selectionKey(row.req);
    return rows.every((r) => selectionKey(r.req) === key);
  }

  private async loop(b: Batch): Promise<void> {
    if (this.next === b) this.next = null;
    this.active = b;
    let feeds: { key: string; graph: DecoderGraph; lora: BatchLoraFeeds } | null = null;
    let kv: BatchKv | null = null;
    try {
      const { model: m, provider } = this.host.model();
      kv = new BatchKv(m.ort, m.graph);
      for (;;) {
        for (const row of [...b.pending]) {
          if (!this.fits(m, b.rows, row)) continue;
          b.pending.splice(b.pending.indexOf(row), 1);
          await this.admit(m, b, row, provider, kv);
        }
        if (b.rows.length === 0) {
          if (b.pending.length === 0) break;
          continue;
        }
        // A macrotask turn before every step: abort messages and joining requests get in.
        await yieldToEventLoop();
        const gone = b.rows.flatMap((r, i) => (r.signal.aborted ? [i] : []));
        if (gone.length > 0) {
          for (const i of gone) this.finish(b.rows[i]!, 'abort');
          b.rows = b.rows.filter((_, i) => !gone.includes(i));
          await kv.drop(gone);
        }
        if (b.pending.some((r) => this.fits(m, b.rows, r))) continue; // they join this step
        if (b.rows.length === 0) continue;
        // Rows, not only their adapters: shared feeds are a row's own provider tensors, released with it.
        const key = b.rows.map((r) => `${r.id}:${r.adapter!.key}`).join('\u0000');
        if (feeds?.key !== key) {
          feeds?.lora.dispose();
          feeds = null;
          feeds = await this.feedsFor(m, b.rows, key);
        }
        const t0 = performance.now();
        const last = b.rows.map((r) => r.stream!.last);
        // Every row greedy on a graph with the greedy head: read back one id per row, not the logits.
        const ids = feeds.graph.argmax && b.rows.every((r) => r.stream!.greedy);
        const picked = ids
          ? await kv.stepGreedy(last, feeds.lora.feeds, feeds.graph)
          : await kv.step(last, feeds.lora.feeds, feeds.graph);
        const ms = performance.now() - t0;
        this.host.debug.lastDecodeRead = ids ? 'ids' : 'logits';
        this.host.debug.lastKvLocations = kv.locations;
        this.host.debug.lastGraph = feeds.graph === m.baseGraph ? 'base' : 'injected';
        this.host.debug.lastBatchRows = b.rows.length;
        for (const r of b.rows) r.batchRows = Math.max(r.batchRows, b.rows.length);
        const done = b.rows.flatMap((r, i) => {
          const p = picked[i]!;
          return (typeof p === 'number' ? r.stream!.pushId(p, ms) : r.stream!.push(p, ms)) ? [i] : [];
        });
        if (done.length > 0) {
          for (const i of done) this.finish(b.rows[i]!);
          b.rows = b.rows.filter((_, i) => !done.includes(i));
          await kv.drop(done);
        }
      }
    } catch (e) {
      const err = this.host.lost() ?? e;
      for (const r of [...b.rows, ...b.pending]) {
        r.adapter?.feeds?.release();
        r.reject(err);
      }
      b.rows = [];
      b.pending = [];
    } finally {
      if (this.active === b) this.active = null;
      feeds?.lora.dispose();
      kv?.dispose();
    }
  }

  /** Prepares a row, prefills it alone and joins its KV (or finishes it when the prefill is its last step). */
  private async admit(
    m: LoadedModel,
    b: Batch,
    row: Row,
    provider: AdapterFeedProvider,
    kv: BatchKv,
  ): Promise<void> {
    let adapter: AdapterFeeds | null = null;
    try {
      const lost = this.host.lost();
      if (lost) throw lost;
      const prepared: PreparedRequest = prepareRequest(m, row.req);
      // 'auto' → route.ts scores the prompt under every candidate (one batched forward) and picks or mixes.
      const routed = await routeRequest(
        routeContext(m, provider, this.host, row.signal),
        row.req.adapter,
        prepared.promptIds,
      );
      if (routed.routing) row.routing = routed.routing;
      adapter = await provider.feedsFor(routed.selection, m.targets);
      row.adapter = { key: adapter ? JSON.stringify(routed.selection) : 'none', feeds: adapter };
      row.stream = new TokenStream(m, prepared, row.onToken);
      if (prepared.maxNew === 0 || row.signal.aborted) {
        this.finish(row, row.signal.aborted ? 'abort' : undefined);
        return;
      }
      const { graph, loraFeeds } = graphFor(m, adapter);
      const stepper = new KvStepper(m.ort, graph, loraFeeds);
      try {
        const t0 = performance.now();
        const logits = await stepper.step(prepared.promptIds);
        this.host.debug.lastKvLocations = [...stepper.lastKvLocations];
        this.host.debug.lastPrefillLogits = logits;
        this.host.debug.lastGraph = graph === m.baseGraph ? 'base' : 'injected';
        this.host.debug.lastBatchRows = 1;
        if (row.stream.push(logits, performance.now() - t0)) {
          this.finish(row);
          return;
        }
        await kv.join(stepper.takeKv());
      } finally {
        stepper.dispose();
      }
      b.rows.push(row);
    } catch (e) {
      adapter?.release();
      row.adapter = undefined;
      row.reject(this.host.lost() ?? e);
    }
  }

  private finish(row: Row, reason?: 'abort'): void {
    row.adapter?.feeds?.release();
    const stream = row.stream;
    if (reason && stream) stream.finish = reason;
    const r = stream!.result();
    const result = { ...r, timings: { ...r.timings, batchRows: row.batchRows } };
    const lost = this.host.lost();
    if (result.finishReason === 'abort' && lost) row.reject(lost);
    else row.resolve(row.routing ? { ...result, routing: row.routing } : result);
  }

  private async feedsFor(
    m: LoadedModel,
    rows: readonly Row[],
    key: string,
  ): Promise<{ key: string; graph: DecoderGraph; lora: BatchLoraFeeds }> {
    const adapters = rows.map((r) => r.adapter!);
    if (m.baseGraph && adapters.every((a) => !a.feeds)) {
      return { key, graph: m.baseGraph, lora: { feeds: {}, rank: 0, dispose: () => {} } };
    }
    const lora = await batchLoraFeeds(m.ort, adapters, m.targets, {
      device: m.device,
      noAdapter: m.noAdapterFeeds,
    });
    return { key, graph: m.graph, lora };
  }
}

/** The session and LoRA feeds of one request alone: "no adapter" (null) → the base graph, or the off feeds. */
export function graphFor(
  m: LoadedModel,
  adapter: AdapterFeeds | null,
): { graph: DecoderGraph; loraFeeds: Record<string, OrtTensor> } {
  if (!adapter) {
    return m.baseGraph
      ? { graph: m.baseGraph, loraFeeds: {} }
      : { graph: m.graph, loraFeeds: m.noAdapterFeeds };
  }
  const missing = m.graph.session.inputNames.filter((n) => n.startsWith('lora.') && !(n in adapter.feeds));
  if (missing.length > 0) {
    throw new AdapterMismatchError(
      `adapter provider gave no tensor for ${missing.length} LoRA input(s), e.g. ${missing[0]}`,
      { missing: missing.slice(0, 10) },
    );
  }
  return { graph: m.graph, loraFeeds: adapter.feeds };
}

/**
 * route.ts's context for one request. Candidates are scored in one batched forward (batch-score.ts) when the
 * graph has the row-mask input, else one prefill after another (route.ts's sequential scorer).
 */
function routeContext(
  m: LoadedModel,
  provider: AdapterFeedProvider,
  host: BatchHost,
  signal: AbortSignal,
): RouteContext {
  // A gated graph also needs gate inputs per selection: the sequential scorer (provider feeds) there.
  const batched = !m.gates && m.graph.session.inputNames.includes(LORA_ROW_MASK);
  return {
    model: m,
    provider,
    graphFor: (a) => graphFor(m, a),
    store: () => host.store(),
    signal,
    ...(batched
      ? {
          scorer: async (ids: readonly number[], candidates: readonly (string | null)[]) =>
            (await scoreSelections(m, provider, ids, candidates)).map((l) => promptNll(l, ids)),
        }
      : {}),
  };
}
