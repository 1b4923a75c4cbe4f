/**
 * The bench's model-level greedy loop: the product's decode step (src/engine/session.ts: KvStepper over a
 * session made by createDecoderSession, exactly what the engine runs) plus the greedy pick (KvStepper.next) and
 * the engine's event-loop hop between steps — minus sampling options, detokenization and stop strings. It exists so
 * that the un-injected graph and the LoRA-injected one can be timed in lockstep by identical code. It
 * never stops at eos: every repetition does exactly `decodeTokens` steps.
 */
import type * as OrtModule from 'onnxruntime-web';
import { yieldToEventLoop } from '../src/engine/decode.ts';
import { createDecoderSession, type DecoderGraph, KvStepper } from '../src/engine/session.ts';
import type { ModelConfig } from '../src/model/package.ts';
import { median } from './stats.ts';
import type { LoopSeries } from './types.ts';

type Ort = typeof OrtModule;
type Tensor = OrtModule.Tensor;

/** A session with the engine's options (createDecoderSession): KV outputs stay on the GPU. */
export function createBenchSession(
  ort: Ort,
  bytes: Uint8Array,
  backend: 'webgpu' | 'wasm',
  config: ModelConfig,
): Promise<DecoderGraph> {
  return createDecoderSession(ort, bytes, config, { backend });
}

/**
 * One greedy generation, advanced a step at a time so several configurations can run in lockstep
 * (step i of a, b and c back to back): on a busy machine, paired steps see the same load.
 */
export class GreedyRun {
  readonly tokens: number[] = [];
  prefillMs = 0;
  readonly stepMs: number[] = [];
  private readonly stepper: KvStepper;

  constructor(ort: Ort, s: DecoderGraph, extra: Record<string, Tensor>) {
    this.stepper = new KvStepper(ort, s, extra);
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
    // The greedy pick as the engine makes it: the graph's ArgMax output when it has the greedy head
    // (src/model/greedy-head.ts: one id read back), else argmax over the logits row read back.
    const next = await this.stepper.next(ids);
    const dt = performance.now() - t0;
    this.tokens.push(next);
    return dt;
  }

  dispose(): void {
    this.stepper.dispose();
  }
}

/**
 * One repetition of every configuration in lockstep: prefill each, then `decodeTokens` rounds of one
 * step each (the order rotates every round so no configuration always goes first).
 */
export async function lockstepGreedy(
  ort: Ort,
  configs: ReadonlyArray<{ s: DecoderGraph; feeds: Record<string, Tensor> }>,
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
