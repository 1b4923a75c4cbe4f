/**
 * What crosses between the benchmark page (page.ts, ours.ts, transformers.ts) and the Node driver
 * (run.ts, report.ts) through Playwright's `page.evaluate`: plain JSON, no classes. Raw per-repetition
 * samples travel too, so the JSON file can be re-analysed later.
 */
import type { FuseReport } from '../src/model/fuse-decoder.ts';
import type { LoraBranchOp, PackedLoraMode } from '../src/model/inject-lora.ts';
import type { ModelDtype } from '../src/model/package.ts';
import type { Summary } from './stats.ts';

export type BenchBackend = 'webgpu' | 'wasm';
export type BenchDtype = ModelDtype;

export interface SuiteOptions {
  backend: BenchBackend;
  dtype: BenchDtype;
  /** Decode steps measured per repetition (after the prompt's first token). */
  decodeTokens: number;
  reps: number;
  /** Samples per swap-latency measurement (hot and cold). */
  swaps: number;
  /** Also run transformers.js in the same page, repetitions interleaved with engine.generate. */
  transformers: boolean;
  /** The model package: its name and the URL path it is served at (`--model <folder>` mounts one). */
  model: BenchModel;
  /** Measure (a), the base graph, too (`--no-base-graph` skips it; the engine makes none above 32 MiB). */
  baseGraph: boolean;
  /** Measure (f), the unfused graph (`--no-unfused` skips it: one fp32 session less in the wasm heap at 135M). */
  unfusedLoop?: boolean;
  /** Prompt length in tokens (`--prompt-tokens`, default PROMPT_TOKENS). */
  promptTokens: number;
  /** `--packed`: the engine's and the loops' packed-qkv LoRA mode; absent = PACKED_LORA_DEFAULT. */
  packed?: PackedLoraMode;
}

export interface BenchModel {
  /** Folder name under /models/ (what transformers.js is given). */
  name: string;
  /** URL path of the package, `/models/<name>/`. */
  base: string;
}

/** One decode configuration measured with the bench loop (decode-loop.ts). */
export interface LoopSeries {
  /** Decode tokens/s per repetition: decodeTokens / sum of decode step times. */
  decodeTps: number[];
  /** Per repetition: 1000 / median decode step time (robust to load spikes on a busy machine). */
  medianStepTps: number[];
  /** Prefill tokens/s per repetition: prompt tokens / prompt forward pass (incl. logits read-back). */
  prefillTps: number[];
  /** Time to first token per repetition (prompt forward pass + argmax), ms. */
  ttftMs: number[];
  /** Decode step times (ms), one array per repetition; steps of a, b, c ran in lockstep. */
  stepMs: number[][];
  /** Greedy tokens of the first repetition (a sanity check that the runs did real work). */
  tokens: number[];
}

export interface EngineSeries {
  /**
   * Tokens per second between the first and the last onToken callback: what a caller sees, measured
   * the way bench/transformers.ts measures transformers.js (its streamer's callbacks).
   */
  decodeTps: number[];
  /** The engine's own `timings.tokensPerSecond` (forward passes + sampling only). */
  forwardTps: number[];
  prefillTps: number[];
  /** generate() call → first onToken callback (feedsFor + tokenize + prefill), ms. */
  ttftMs: number[];
  generated: number[];
}

export interface SwapResult {
  /** provider.feedsFor of a cached adapter (incl. its one IndexedDB metadata read), ms. */
  hotFeedsForMs: Summary;
  /** The cache lookup alone (gpu-cache acquire of a cached key; a batch of 1000 / 1000), ms. */
  hotAcquireMs: number;
  /** Upload counter change over all hot calls (must be 0). */
  hotUploads: number;
  /**
   * forget → feedsFor: IndexedDB read, safetensors parse, PEFT mapping, upload (webgpu: until
   * queue.onSubmittedWorkDone), ms.
   */
  coldMs: Summary;
  /** Upload counter change over all cold calls (must equal the sample count). */
  coldUploads: number;
  /** adapterStats().bytesHeld with exactly this adapter cached. */
  bytesPerAdapter: number;
  /** rank·Σ(in+out)·4 over all targets: the f32 factor bytes without GPU padding. */
  expectedBytes: number;
}

export interface OursResult {
  suite: 'ours';
  options: SuiteOptions;
  backend: BenchBackend;
  adapterInfo: { vendor: string; architecture: string } | null;
  modelFile: string;
  targetCount: number;
  promptTokens: number;
  /** The exact prompt ids (the driver checks transformers.js got the same). */
  promptIds: number[];
  /** (a) the graph as shipped, (b) LoRA-injected fed "no adapter", (c) injected fed a rank-8 adapter. */
  base: LoopSeries;
  injectedNone: LoopSeries;
  injectedR8: LoopSeries;
  /** The engine's LoRA branch operator on this backend (used by (b), (c)) and the other one ((d)). */
  branchOp: LoraBranchOp;
  altBranchOp: LoraBranchOp;
  /** (d) injected with altBranchOp, fed the same rank-8 adapter as (c). */
  injectedR8Alt: LoopSeries;
  /**
   * (e) the reference loop's graph ((a) base, or (b) injected fed "no adapter" with --no-base-graph) with
   * the greedy head (src/model/greedy-head.ts): last-row lm_head, the ArgMax id read back instead of logits.
   * Absent in results written before it existed.
   */
  greedyHead?: LoopSeries;
  /**
   * (f) the reference loop's graph ((a), or (b) with --no-base-graph) prepared WITHOUT the decoder fusion
   * (src/model/fuse-decoder.ts; LoadSettings.fuse false), in the same lockstep: (a)/(f) is the fusion's
   * effect. Since 2026-11-30 (a)–(e) are fused as the engine loads them. Absent in older results.
   */
  unfused?: LoopSeries;
  /** The engine's LoadReport.fused (fusion counts; null = not fused). Absent in older results. */
  fused?: FuseReport | null;
  engineNone: EngineSeries;
  engineR8: EngineSeries;
  swap: SwapResult;
  loadMs: number;
  /** LoadReport.dequantizedAtLoad: 4-bit projections the engine ran as fp32 (wasm). */
  dequantizedAtLoad: { nodes: number; fp32Bytes: number; reason: string } | null;
  transformers: TjsResult | null;
}

export interface TjsResult {
  suite: 'transformers';
  options: SuiteOptions;
  version: string;
  ortVersion: string;
  /** Files transformers.js loaded (its progress callback) and its ORT runtime URLs: which file `dtype` chose. */
  files: string[];
  promptIds: number[];
  decodeTps: number[];
  prefillTps: number[];
  ttftMs: number[];
  tokens: number[];
  loadMs: number;
}

export interface BenchApi {
  ours(opts: SuiteOptions): Promise<OursResult>;
  train(opts: TrainSuiteOptions): Promise<TrainResult>;
  gates(opts: GatesSuiteOptions): Promise<GatesResult>;
  wasmQ4(opts: WasmQ4Options): Promise<WasmQ4Result>;
  batch(
    opts: import('./batch-report.ts').BatchSuiteOptions,
  ): Promise<import('./batch-report.ts').BatchResult>;
}

/** `npm run bench -- --suite train`: the training engine (src/train/) on one backend. */
export type TrainBenchBackend = 'cpu' | 'webgpu';

export interface TrainSuiteOptions {
  /** 'cpu': CpuTrainBackend, ORT forward on 'wasm'. 'webgpu': GpuTrainBackend on ORT's GPUDevice, ORT on 'webgpu'. */
  backend: TrainBenchBackend;
  dtype: BenchDtype;
  /** The model package, as SuiteOptions.model. */
  model: BenchModel;
  ranks: number[];
  /** Sequences per step (B) and tokens per sequence (T). */
  batch: number;
  seqLen: number;
  /**
   * Measured rounds per rank (after `warmup` unmeasured steps): one training step, one ORT forward and
   * one trainer forward (evalLoss) each, the order rotating.
   */
  steps: number;
  warmup: number;
  /** Also run the per-kernel profile (gpu-profile.ts) once per rank (webgpu only). */
  profile: boolean;
}

/** GPU bytes of one GpuTrainBackend, split by when they were allocated (gpuBytes read between calls). */
export interface TrainGpuBytes {
  /** After create(): frozen base weights (4-bit stays 4-bit) + LoRA A/B + a few dummies. */
  afterCreate: number;
  /** LoRA A|B buffer (n floats). */
  lora: number;
  /** The gradient buffer (n g16 values, 2 bytes each; allocated by the first accumulate). */
  grads: number;
  /** Forward activations + uniforms of the (B, T) plan (first evalLoss), plus backward scratch (first accumulate). */
  activations: number;
  /** Gradient buffer (g16) + AdamW m|v (packed f16, one u32 per parameter) + grad-norm scratch (first accumulate / step). */
  optimizer: number;
  /** Of the frozen base: the embedding table (also the tied lm_head): V·C·2 as f16 on a 4-bit base, else V·C·4. */
  embedding: number;
  embeddingF16: boolean;
  /** gpuBytes after a full step: everything. */
  total: number;
}

export interface TrainRankResult {
  rank: number;
  targets: number;
  /** LoRA parameters trained (Σ R·(K + O)). */
  params: number;
  /** Wall time of accumulate + step (forward, loss, backward, grad norm, AdamW; one readback each), ms. */
  stepMs: number[];
  /** accumulate alone (forward + backward) of the same steps, ms. */
  accumulateMs: number[];
  /** One ORT forward of the same B×T tokens (session.run, batch B, empty past, logits read back), ms; paired with stepMs. */
  ortForwardMs: number[];
  /** The trainer's own forward only (evalLoss), ms; one per round, paired with stepMs. */
  evalMs: number[];
  losses: number[];
  gpuBytes: TrainGpuBytes | null;
  /** Per kernel entry point: ms and dispatches in one profiled pass (forward + loss + backward). */
  profile: { method: string; kernels: { label: string; ms: number; count: number }[] } | null;
}

export interface TrainResult {
  suite: 'train';
  options: TrainSuiteOptions;
  adapterInfo: { vendor: string; architecture: string } | null;
  modelFile: string;
  modelFileBytes: number;
  config: { V: number; C: number; I: number; L: number; H: number; Hkv: number };
  ortBackend: BenchBackend;
  timestampQuery: boolean;
  ranks: TrainRankResult[];
  loadMs: number;
}

/** `npm run bench -- --suite gates` (bench/gates.ts): decode cost of per-token routing gates. */
export interface GatesSuiteOptions {
  backend: BenchBackend;
  dtype: BenchDtype;
  decodeTokens: number;
  reps: number;
}

/** `--suite wasm-q4` (bench/wasm-q4.ts). */
export interface WasmQ4Options {
  model: BenchModel;
  promptTokens: number;
  decodeTokens: number;
  reps: number;
}

export interface GatesResult {
  kind: 'gates';
  backend: BenchBackend;
  dtype: BenchDtype;
  /** Per configuration: the bench loop's series (decode tok/s per repetition, step times in lockstep). */
  rows: { label: string; series: LoopSeries }[];
}

export interface WasmQ4Result {
  suite: 'wasm-q4';
  options: WasmQ4Options;
  promptTokens: number;
  q4Bytes: number;
  dequantized: { nodes: number; fp32Bytes: number; reason: string } | null;
  /** Decode + dequantizeNBits + encode of the q4 file, ms. */
  dequantizeMs: number;
  /** fp32 file, q4 as shipped, q4 dequantized at load; steps in lockstep. */
  configs: { name: string; fileBytes: number; createMs: number; series: LoopSeries }[];
}
