/**
 * One generate request's own side, after the engine chose its graph and feeds: `prepareRequest`
 * validates the request and turns the prompt (or chat messages) into ids; `TokenStream` takes each
 * sampled token — detokenize incrementally, match stop strings, stream deltas, stop on eos / length /
 * stop string — for the batch loop (batch.ts), which steps the model for every running request at once.
 * Abort is cooperative, checked by the loop before every step, and reported as finishReason 'abort',
 * never thrown. It deliberately knows nothing about queues, adapters, KV caches or workers.
 */
import { InvalidOptionError } from '../errors.ts';
import { renderChat } from '../model/chat.ts';
import type { LoadedModel } from './load.ts';
import { createSampler, type Sampler, type StopStringMatcher, stopStringMatcher } from './sampling.ts';
import type { FinishReason, GenerateRequest, GenerateResult, TokenDelta } from './types.ts';

export const DEFAULT_MAX_NEW_TOKENS = 128;

/** A validated request: prompt ids and how to pick and stop. */
export interface PreparedRequest {
  promptIds: number[];
  maxNew: number;
  sampler: Sampler;
  /**
   * True when the sampler is plain argmax (temperature 0, no repetition penalty): the batch loop may then
   * take the graph's own argmax (model/greedy-head.ts) instead of reading the logits row.
   */
  greedy: boolean;
  matcher: StopStringMatcher | null;
}

export function prepareRequest(m: LoadedModel, req: GenerateRequest): PreparedRequest {
  if ((req.prompt === undefined) === (req.messages === undefined)) {
    throw new InvalidOptionError('pass exactly one of `prompt` or `messages`', { option: 'prompt' });
  }
  const text =
    req.messages !== undefined
      ? renderChat(m.tokenizer.chatTemplate, req.messages, { specialTokens: m.specialTokens })
      : req.prompt!;
  if (typeof text !== 'string') throw new InvalidOptionError('prompt must be a string', { option: 'prompt' });
  let ids = m.tokenizer.encode(text);
  if (ids.length === 0) {
    if (m.bosId === null) {
      throw new InvalidOptionError('the prompt is empty and the model has no bos token to start from', {
        option: 'prompt',
      });
    }
    ids = [m.bosId];
  }
  if (ids.length >= m.maxPositions) {
    throw new InvalidOptionError(
      `the prompt has ${ids.length} tokens; this model's context is ${m.maxPositions} (max_position_embeddings)`,
      { option: 'prompt', promptTokens: ids.length, maxPositions: m.maxPositions },
    );
  }
  const wanted = req.maxNewTokens ?? DEFAULT_MAX_NEW_TOKENS;
  if (!Number.isInteger(wanted) || wanted < 0) {
    throw new InvalidOptionError(`maxNewTokens = ${wanted} is invalid: an integer ≥ 0`, {
      option: 'maxNewTokens',
      value: wanted,
    });
  }
  return {
    promptIds: ids,
    maxNew: Math.min(wanted, m.maxPositions - ids.length),
    sampler: createSampler({
      temperature: req.temperature,
      topK: req.topK,
      topP: req.topP,
      repetitionPenalty: req.repetitionPenalty,
      seed: req.seed,
    }),
    greedy: (req.temperature ?? 0) === 0 && (req.repetitionPenalty ?? 1) === 1,
    matcher: req.stop?.length ? stopStringMatcher(req.stop) : null,
  };
}

let yieldChannel: MessageChannel | null = null;
const yieldWaiters: (() => void)[] = [];

/**
 * Lets queued tasks (messages, input, rendering) run before the next step: a MessageChannel hop, i.e. a
 * plain task behind those already queued. Not scheduler.yield(), whose continuation is prioritized
 * ahead of pending messages and so would not let an abort message in.
 */
export function yieldToEventLoop(): Promise<void> {
  if (!yieldChannel) {
    // One channel for the whole thread: a new MessageChannel per decode step costs more than the turn.
    yieldChannel = new MessageChannel();
    yieldChannel.port1.onmessage = () => yieldWaiters.shift()?.();
    // Node: an open port with a listener would keep the process alive.
    (yieldChannel.port1 as { unref?: () => void }).unref?.();
  }
  const ch = yieldChannel;
  return new Promise((resolve) => {
    yieldWaiters.push(resolve);
    ch.port2.postMessage(null);
  });
}

/** Calls a user callback; a throw is logged, never propagated into the loop. */
export function callQuietly<A>(fn: ((a: A) => unknown) | undefined, arg: A): void {
  if (!fn) return;
  try {
    const r = fn(arg);
    if (r && typeof (r as Promise<unknown>).catch === 'function') (r as Promise<unknown>).catch(() => {});
  } catch (e) {
    console.warn('weblora: callback threw', e);
  }
}

/**
 * One request's output side: takes each sampled token, detokenizes incrementally (holding back a trailing
 * U+FFFD, a multi-byte character whose remaining bytes come with the next token), matches stop strings,
 * streams the visible delta and says when the request is done. decode() and the batch loop (batch.ts)
 * share it, so a row of a batch streams exactly what the same request streams alone.
 */
export class TokenStream {
  readonly history: number[];
  readonly generated: number[] = [];
  finish: FinishReason = 'length';
  prefillMs = 0;
  decodeMs = 0;
  private decoded = ''; // tokenizer text of `generated` already turned into deltas
  private text = '';

  constructor(
    private readonly m: LoadedModel,
    private readonly req: PreparedRequest,
    private readonly onToken: ((delta: TokenDelta) => void) | undefined,
  ) {
    this.history = [...req.promptIds];
  }

  /** Samples the next token from `logits`, streams it; true when the request is finished. */
  push(logits: Float32Array, ms: number): boolean {
    return this.pushId(this.req.sampler.next(logits, this.history), ms);
  }

  /** Whether the request picks by plain argmax (PreparedRequest.greedy). */
  get greedy(): boolean {
    return this.req.greedy;
  }

  /** Streams `next`, already chosen (the graph's argmax for a greedy request); true when finished. */
  pushId(next: number, ms: number): boolean {
    const { m, req } = this;
    const step = this.generated.length;
    if (step === 0) this.prefillMs = ms;
    else this.decodeMs += ms;
    this.generated.push(next);
    this.history.push(next);
    const isEos = m.eosIds.has(next);
    const last = isEos || step === req.maxNew - 1;
    let piece = '';
    const full = m.tokenizer.decode(this.generated);
    if (last || !full.endsWith('\uFFFD')) {
      piece = full.startsWith(this.decoded)
        ? full.slice(this.decoded.length)
        : full.slice(Math.min(this.decoded.length, full.length));
      this.decoded = full;
    }
    let visible = piece;
    if (req.matcher) {
      const r = req.matcher.push(piece);
      visible = r.text;
      if (r.stopped) this.finish = 'stop';
      else if (last) visible += req.matcher.flush();
    }
    this.text += visible;
    callQuietly(this.onToken, { tokenId: next, text: visible });
    if (this.finish === 'stop') return true;
    if (isEos) {
      this.finish = 'eos';
      return true;
    }
    return last;
  }

  /** The last sampled token (the next step's input). */
  get last(): number {
    return this.generated[this.generated.length - 1]!;
  }

  result(): GenerateResult {
    const decodeSteps = Math.max(0, this.generated.length - 1);
    const { decodeMs } = this;
    return {
      text: this.text,
      tokenIds: this.generated,
      finishReason: this.finish,
      timings: {
        prefillMs: this.prefillMs,
        decodeMs,
        tokensPerSecond: decodeSteps > 0 && decodeMs > 0 ? (decodeSteps * 1000) / decodeMs : 0,
        promptTokens: this.req.promptIds.length,
      },
    };
  }
}
