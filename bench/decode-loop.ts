/**
 * The bench's model-level greedy loop: the same per-step work as LocalEngine's decodeLoop/forward
 * (src/engine/engine.ts) — int64 ids/mask/positions, KV fed back as `past_key_values.*` (GPU buffers on
 * webgpu via preferredOutputLocation), only the last logits row read back, one MessageChannel hop
 * between steps — minus sampling options, detokenization and stop strings. It exists so that the
 * un-injected graph (which the engine never runs) and the LoRA-injected one are timed by identical
 * code. It never stops at eos: every repetition does exactly `decodeTokens` steps.
 */
import type * as OrtModule from 'onnxruntime-web';
import { yieldToEventLoop } from '../src/engine/engine.ts';
import { argmax, type KvLayout, kvLayoutFromNames } from '../src/engine/session.ts';
import type { ModelConfig } from '../src/model/package.ts';
import { median } from './stats.ts';
import type { LoopSeries } from './types.ts';

type Ort = typeof OrtModule;
type Tensor = OrtModule.Tensor;

export interface BenchSession {
  session: OrtModule.InferenceSession;
  layout: KvLayout;
  hasPositionIds: boolean;
}

/** A session with the engine's options (LocalEngine.createSession): KV outputs stay on the GPU. */
export async function createBenchSession(
  ort: Ort,
  bytes: Uint8Array,
  backend: 'webgpu' | 'wasm',
  config: ModelConfig,
): Promise<BenchSession> {
  const options: OrtModule.InferenceSession.SessionOptions = {
    executionProviders: [backend],
    logSeverityLevel: 3,
  };
  if (backend === 'webgpu') {
    // KV on the GPU between steps, logits on the CPU (HF layout: present.{i}.key|value).
    const where: Record<string, 'gpu-buffer' | 'cpu'> = { logits: 'cpu' };
    for (let i = 0; i < config.numLayers; i++) {
      where[`present.${i}.key`] = 'gpu-buffer';
      where[`present.${i}.value`] = 'gpu-buffer';
    }
    options.preferredOutputLocation = where;
  }
  return wrap(await ort.InferenceSession.create(bytes, options), config);
}

function wrap(session: OrtModule.InferenceSession, config: ModelConfig): BenchSession {
  return {
    session,
    layout: kvLayoutFromNames(session.inputNames, session.outputNames, config),
    hasPositionIds: session.inputNames.includes('position_ids'),
  };
}

async function forward(
  ort: Ort,
  s: BenchSession,
  ids: number[],
  past: Map<string, Tensor>,
  pastLen: number,
  extra: Record<string, Tensor>,
): Promise<{ next: number; present: Map<string, Tensor> }> {
  const T = ids.length;
  const feeds: Record<string, Tensor> = {
    ...extra,
    input_ids: new ort.Tensor(
      'int64',
      BigInt64Array.from(ids, (x) => BigInt(x)),
      [1, T],
    ),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(pastLen + T).fill(1n), [1, pastLen + T]),
  };
  if (s.hasPositionIds) {
    feeds.position_ids = new ort.Tensor(
      'int64',
      BigInt64Array.from({ length: T }, (_, i) => BigInt(pastLen + i)),
      [1, T],
    );
  }
  for (const [n, t] of past) feeds[n] = t;
  const out = await s.session.run(feeds, ['logits', ...s.layout.presentNames]);
  const logitsT = out.logits!;
  const V = logitsT.dims[logitsT.dims.length - 1]!;
  const all = (await logitsT.getData()) as Float32Array;
  const next = argmax(all.subarray((T - 1) * V, T * V));
  logitsT.dispose();
  const present = new Map<string, Tensor>();
  s.layout.presentNames.forEach((o, i) => {
    present.set(s.layout.pastNames[i]!, out[o]!);
  });
  return { next, present };
}

/**
 * One greedy generation, advanced a step at a time so several configurations can run in lockstep
 * (step i of a, b and c back to back): on a busy machine, paired steps see the same load.
 */
export class GreedyRun {
  readonly tokens: number[] = [];
  prefillMs = 0;
  readonly stepMs: number[] = [];
  private past = new Map<string, Tensor>();
  private pastLen = 0;

  constructor(
    private readonly ort: Ort,
    private readonly s: BenchSession,
    private readonly extra: Record<string, Tensor>,
  ) {
    const { numKvHeads, headDim, pastNames } = s.layout;
    for (const n of pastNames) {
      this.past.set(n, new ort.Tensor('float32', new Float32Array(0), [1, numKvHeads, 0, headDim]));
    }
  }

  /** The prompt's forward pass and first token; returns its time (ms). */
  async prefill(promptIds: number[]): Promise<number> {
    this.prefillMs = await this.advance(promptIds);
    return this.prefillMs;
  }

  /** One decode step (after a MessageChannel hop, like the engine's loop); returns its time (ms). */
  async step(): Promise<number> {
    await yieldToEventLoop();
    const dt = await this.advance([this.tokens.at(-1)!]);
    this.stepMs.push(dt);
    return dt;
  }

  private async advance(ids: number[]): Promise<number> {
    const t0 = performance.now();
    const { next, present } = await forward(this.ort, this.s, ids, this.past, this.pastLen, this.extra);
    for (const t of this.past.values()) t.dispose();
    const dt = performance.now() - t0;
    this.past = present;
    this.pastLen += ids.length;
    this.tokens.push(next);
    return dt;
  }

  dispose(): void {
    for (const t of this.past.values()) t.dispose();
    this.past.clear();
  }
}

/**
 * One repetition of every configuration in lockstep: prefill each, then `decodeTokens` rounds of one
 * step each (the order rotates every round so no configuration always goes first).
 */
export async function lockstepGreedy(
  ort: Ort,
  configs: ReadonlyArray<{ s: BenchSession; feeds: Record<string, Tensor> }>,
  promptIds: number[],
  decodeTokens: number,
): Promise<GreedyRun[]> {
  const runs = configs.map((c) => new GreedyRun(ort, c.s, c.feeds));
  try {
    for (const r of runs) await r.prefill(promptIds);
    for (let i = 0; i < decodeTokens; i++) {
      for (let k = 0; k < runs.length; k++) await runs[(i + k) % runs.length]!.step();
    }
  } finally {
    for (const r of runs) r.dispose();
  }
  return runs;
}

export function emptySeries(): LoopSeries {
  return { decodeTps: [], medianStepTps: [], prefillTps: [], ttftMs: [], stepMs: [], tokens: [] };
}

export function record(series: LoopSeries, r: GreedyRun, promptTokens: number): void {
  const total = r.stepMs.reduce((a, b) => a + b, 0);
  series.decodeTps.push((r.stepMs.length * 1000) / total);
  series.medianStepTps.push(1000 / median(r.stepMs));
  series.prefillTps.push((promptTokens * 1000) / r.prefillMs);
  series.ttftMs.push(r.prefillMs);
  series.stepMs.push([...r.stepMs]);
  if (series.tokens.length === 0) series.tokens = [...r.tokens];
}
