/**
 * Training data → token examples → right-padded `Batch`es (cpu-model.ts) for the trainer. Formats: plain
 * text (language-model style: tokenized once and cut into `seqLen` windows, every token a target) and
 * JSONL with `{"prompt","completion"}` (loss on completion tokens + eos) or `{"messages":[...]}` (the
 * model's chat template, loss on assistant turns only). Segments are tokenized separately and
 * concatenated — exactly the ids inference sees, since generate tokenizes the rendered prompt on its own.
 * Limits are checked before anything is tokenized; every failure is a TrainDataError with a `reason` code
 * (and the 1-based `line` for JSONL). The example order is a seeded permutation per epoch, so a data
 * cursor (micro-batches consumed) fully determines what comes next: resume recomputes it from the seed.
 * Not here: the loop (trainer.ts), packing several short examples into one row.
 */

import { ModelPackageError, TrainDataError } from '../errors.ts';
import type { ChatMessage } from '../model/chat.ts';
import { renderChat } from '../model/chat.ts';
import type { Batch } from './cpu-model.ts';
import { seededUniform } from './lora.ts';
import type { TrainDataFormat } from './types.ts';

/** Largest `data` accepted, in UTF-8 bytes (checked before tokenizing). */
export const MAX_DATA_BYTES = 8 * 1024 * 1024;
/** Most JSONL examples (non-empty lines) or plain-text windows accepted. */
export const MAX_EXAMPLES = 100_000;

/** What the data pipeline needs from the model's tokenizer. */
export interface DataTokenizer {
  encode(text: string): number[];
  /** Appended after each completion / final assistant turn; null: nothing appended. */
  eosTokenId: number | null;
  chatTemplate: string | null;
  specialTokens?: Record<string, string>;
}

/** One training sequence: ids and which of them are targets (1) — position 0 never counts. */
export interface Example {
  ids: Int32Array; // (n) n ≤ seqLen
  target: Uint8Array; // (n)
}

export interface ParsedData {
  format: 'text' | 'jsonl';
  examples: Example[];
}

function fail(reason: string, message: string, data: Record<string, unknown> = {}): never {
  throw new TrainDataError(message, { reason, ...data });
}

/** UTF-8 byte length without allocating (lone surrogates count 3, as TextEncoder writes U+FFFD). */
export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d < 0xe000) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}

/**
 * 'auto': JSONL when the first non-empty line is a JSON object, else plain text. Deciding on the first
 * line (not "every line parses") means a JSONL file with one broken line gets that line's error instead
 * of silently training as prose.
 */
export function detectFormat(data: string): 'text' | 'jsonl' {
  for (const raw of data.split('\n')) {
    const line = raw.trim();
    if (!line) continue;
    if (!line.startsWith('{')) return 'text';
    try {
      const v: unknown = JSON.parse(line);
      return typeof v === 'object' && v !== null && !Array.isArray(v) ? 'jsonl' : 'text';
    } catch {
      return 'text';
    }
  }
  return 'text';
}

/** Checks `data` and its limits, then tokenizes it into examples of at most `seqLen` tokens. */
export function parseTrainData(
  data: unknown,
  format: TrainDataFormat,
  tok: DataTokenizer,
  seqLen: number,
): ParsedData {
  if (typeof data !== 'string') fail('not-a-string', 'training data must be a string (text or JSONL)');
  if (data.trim() === '') fail('empty', 'the training data is empty');
  const bytes = data.length > MAX_DATA_BYTES ? data.length : utf8Length(data);
  if (bytes > MAX_DATA_BYTES) {
    fail(
      'too-large',
      `the training data is ${bytes} bytes; at most ${MAX_DATA_BYTES} bytes (8 MiB) are accepted — ` +
        'train on a sample, or split it into several runs',
      { bytes, maxBytes: MAX_DATA_BYTES },
    );
  }
  const fmt = format === 'auto' ? detectFormat(data) : format;
  if (fmt !== 'text' && fmt !== 'jsonl') {
    throw new TrainDataError(`unknown data format ${JSON.stringify(format)} (auto, text or jsonl)`, {
      reason: 'bad-format',
      format,
    });
  }
  const examples = fmt === 'text' ? textExamples(data, tok, seqLen) : jsonlExamples(data, tok, seqLen);
  return { format: fmt, examples };
}

function textExamples(data: string, tok: DataTokenizer, seqLen: number): Example[] {
  const ids = tok.encode(data);
  const out: Example[] = [];
  for (let s = 0; s < ids.length; s += seqLen) {
    const w = ids.slice(s, s + seqLen);
    if (w.length < 2) break; // a lone token predicts nothing
    out.push({ ids: Int32Array.from(w), target: new Uint8Array(w.length).fill(1, 1) });
  }
  if (out.length === 0) fail('no-targets', 'the text is a single token: nothing to predict');
  if (out.length > MAX_EXAMPLES) {
    fail('too-large', `the text makes ${out.length} windows of ${seqLen} tokens; at most ${MAX_EXAMPLES}`, {
      examples: out.length,
      maxExamples: MAX_EXAMPLES,
    });
  }
  return out;
}

/** Segments → one example: ids concatenated, targets where the segment is one, cut at seqLen. */
function assemble(segments: { ids: number[]; target: boolean }[], seqLen: number): Example {
  const ids: number[] = [];
  const target: number[] = [];
  for (const s of segments) {
    for (const id of s.ids) {
      ids.push(id);
      target.push(s.target ? 1 : 0);
    }
  }
  const n = Math.min(ids.length, seqLen);
  const t = Uint8Array.from(target.slice(0, n));
  t[0] = 0;
  return { ids: Int32Array.from(ids.slice(0, n)), target: t };
}

function jsonlExamples(data: string, tok: DataTokenizer, seqLen: number): Example[] {
  const lines = data.split('\n');
  let count = 0;
  for (const l of lines) if (l.trim()) count++;
  if (count > MAX_EXAMPLES) {
    fail('too-large', `the JSONL has ${count} examples; at most ${MAX_EXAMPLES} are accepted`, {
      examples: count,
      maxExamples: MAX_EXAMPLES,
    });
  }
  const eos = tok.eosTokenId === null ? [] : [tok.eosTokenId];
  const out: Example[] = [];
  lines.forEach((raw, i) => {
    const line = i + 1;
    const text = raw.trim();
    if (!text) return;
    let obj: unknown;
    try {
      obj = JSON.parse(text);
    } catch (e) {
      fail('malformed-json', `line ${line}: not valid JSON (${(e as Error).message})`, { line });
    }
    if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
      fail('not-object', `line ${line}: expected a JSON object, got ${JSON.stringify(obj).slice(0, 40)}`, {
        line,
      });
    }
    const o = obj as Record<string, unknown>;
    let ex: Example;
    if (typeof o.prompt === 'string' && typeof o.completion === 'string') {
      ex = assemble(
        [
          { ids: tok.encode(o.prompt), target: false },
          { ids: [...tok.encode(o.completion), ...eos], target: true },
        ],
        seqLen,
      );
    } else if (Array.isArray(o.messages)) {
      ex = assemble(chatSegments(o.messages, tok, eos, line), seqLen);
    } else {
      fail(
        'missing-fields',
        `line ${line}: expected {"prompt": string, "completion": string} or {"messages": [{role, content}, …]}` +
          ` (keys: ${Object.keys(o).join(', ') || 'none'})`,
        { line, keys: Object.keys(o) },
      );
    }
    let targets = 0;
    for (const t of ex.target) targets += t;
    if (targets === 0) {
      fail(
        'no-targets',
        `line ${line}: no target tokens left (an empty completion / no assistant turn, or the prompt fills ` +
          `all ${seqLen} tokens of seqLen)`,
        { line, seqLen },
      );
    }
    out.push(ex);
  });
  return out;
}

/**
 * Chat → segments: the assistant span of turn i is what rendering messages[0..i] adds to rendering
 * messages[0..i) with the generation prompt (the "ASSISTANT:" opener is context, not target).
 */
function chatSegments(
  messages: unknown[],
  tok: DataTokenizer,
  eos: number[],
  line: number,
): { ids: number[]; target: boolean }[] {
  messages.forEach((m, j) => {
    const r = m as Partial<ChatMessage> | null;
    if (typeof r?.role !== 'string' || typeof r?.content !== 'string') {
      fail('missing-fields', `line ${line}: messages[${j}] must be {"role": string, "content": string}`, {
        line,
        index: j,
      });
    }
  });
  const msgs = messages as ChatMessage[];
  const render = (upTo: number, gen: boolean): string => {
    try {
      return upTo === 0 ? '' : renderChat(tok.chatTemplate, msgs.slice(0, upTo), renderOpts(tok, gen));
    } catch (e) {
      if (e instanceof ModelPackageError) {
        fail(
          tok.chatTemplate === null ? 'no-chat-template' : 'template-error',
          `line ${line}: ${e.message}`,
          {
            line,
          },
        );
      }
      throw e;
    }
  };
  const segments: { ids: number[]; target: boolean }[] = [];
  let done = ''; // text already turned into segments
  const push = (text: string, target: boolean, why: string): void => {
    if (!text.startsWith(done)) {
      fail(
        'template-not-prefix',
        `line ${line}: the chat template does not render ${why} as an extension of the turns before it, ` +
          'so assistant tokens cannot be located',
        { line },
      );
    }
    const add = text.slice(done.length);
    if (add) segments.push({ ids: tok.encode(add), target });
    done = text;
  };
  let lastAssistant = -1;
  msgs.forEach((m, i) => {
    if (m.role !== 'assistant') return;
    if (i > 0) push(render(i, true), false, `turn ${i}'s opener`);
    push(render(i + 1, false), true, `assistant turn ${i}`);
    lastAssistant = i;
  });
  if (lastAssistant < 0) {
    fail('no-targets', `line ${line}: the conversation has no "assistant" message to learn`, { line });
  }
  // Turns after the last assistant one are context for nothing: dropped. eos closes the last answer.
  const last = segments[segments.length - 1];
  if (last?.target && eos.length) last.ids.push(...eos);
  return segments;
}

function renderOpts(tok: DataTokenizer, addGenerationPrompt: boolean) {
  return { addGenerationPrompt, ...(tok.specialTokens ? { specialTokens: tok.specialTokens } : {}) };
}

// ---------------------------------------------------------------- order, split, batches

/** Fisher–Yates with mulberry32(seed): the same seed gives the same permutation of 0..n-1. */
export function seededPermutation(n: number, seed: number): Int32Array {
  const p = Int32Array.from({ length: n }, (_, i) => i);
  const rnd = seededUniform(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    const t = p[i]!;
    p[i] = p[j]!;
    p[j] = t;
  }
  return p;
}

/** Derived seeds, so the split and each epoch's order are independent streams of one user seed. */
const SPLIT_SALT = 0x5eed5;
const epochSeed = (seed: number, epoch: number): number => (Math.imul(seed ^ 0x9e3779b9, 31) + epoch) | 0;

/**
 * A seeded shuffle splits off `round(n·evalSplit)` eval examples (at least one when evalSplit > 0, and
 * always at least one train example).
 */
export function splitExamples<T>(
  examples: readonly T[],
  evalSplit: number,
  seed: number,
): { train: T[]; eval: T[] } {
  const n = examples.length;
  let nEval = evalSplit > 0 ? Math.max(1, Math.round(n * evalSplit)) : 0;
  nEval = Math.min(nEval, n - 1);
  const perm = seededPermutation(n, seed ^ SPLIT_SALT);
  const evalIdx = Array.from(perm.subarray(0, nEval)).sort((a, b) => a - b);
  const inEval = new Set(evalIdx);
  return {
    eval: evalIdx.map((i) => examples[i]!),
    train: examples.filter((_, i) => !inEval.has(i)),
  };
}

/**
 * The micro-batch schedule: each epoch is a fresh seeded permutation of the train examples cut into
 * ceil(n / batchSize) micro-batches (the last may be smaller). Micro-batch k is a pure function of
 * (seed, k), so a checkpoint stores only k.
 */
export class BatchSchedule {
  readonly perEpoch: number;
  private cached: { epoch: number; perm: Int32Array } | null = null;

  constructor(
    private readonly train: readonly Example[],
    private readonly batchSize: number,
    private readonly seed: number,
    private readonly padId: number,
  ) {
    this.perEpoch = Math.ceil(train.length / batchSize);
  }

  /** Example indices of micro-batch k (k = 0, 1, … across epochs). */
  indices(k: number): number[] {
    const epoch = Math.floor(k / this.perEpoch);
    if (this.cached?.epoch !== epoch) {
      this.cached = { epoch, perm: seededPermutation(this.train.length, epochSeed(this.seed, epoch)) };
    }
    const j = k % this.perEpoch;
    return Array.from(this.cached.perm.subarray(j * this.batchSize, (j + 1) * this.batchSize));
  }

  batch(k: number): Batch {
    return makeBatch(
      this.indices(k).map((i) => this.train[i]!),
      this.padId,
    );
  }
}

/**
 * Right-padded batch: T = the longest example; pads are `padId` with labelMask 0 and attentionMask 0;
 * positions 0..T-1 in every row (real tokens come first, so their positions are exact).
 */
export function makeBatch(examples: readonly Example[], padId: number): Batch {
  const B = examples.length;
  const T = Math.max(2, ...examples.map((e) => e.ids.length));
  const tokens = new Int32Array(B * T).fill(padId); // (B, T)
  const labelMask = new Uint8Array(B * T); // (B, T)
  const attentionMask = new Uint8Array(B * T); // (B, T)
  const positions = new Int32Array(B * T); // (B, T)
  examples.forEach((e, b) => {
    tokens.set(e.ids, b * T);
    labelMask.set(e.target, b * T);
    attentionMask.fill(1, b * T, b * T + e.ids.length);
  });
  for (let i = 0; i < B * T; i++) positions[i] = i % T;
  return { B, T, tokens, labelMask, attentionMask, positions };
}

/** Target tokens of a batch (what its loss averages over). */
export function targetCount(b: Batch): number {
  let n = 0;
  for (let r = 0; r < b.B; r++)
    for (let t = 1; t < b.T; t++) n += b.labelMask ? (b.labelMask[r * b.T + t] ? 1 : 0) : 1;
  return n;
}

/** Real (unpadded) tokens of a batch: what tokens/s counts. */
export function realTokenCount(b: Batch): number {
  if (!b.attentionMask) return b.B * b.T;
  let n = 0;
  for (let i = 0; i < b.B * b.T; i++) n += b.attentionMask[i] ? 1 : 0;
  return n;
}

/** Eval batches: the eval examples in order, batchSize at a time. */
export function evalBatches(examples: readonly Example[], batchSize: number, padId: number): Batch[] {
  const out: Batch[] = [];
  for (let i = 0; i < examples.length; i += batchSize)
    out.push(makeBatch(examples.slice(i, i + batchSize), padId));
  return out;
}
