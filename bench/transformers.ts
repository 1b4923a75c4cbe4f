/**
 * The transformers.js side of the comparison: the same model package driven by
 * @huggingface/transformers v4 (test/bench-only dependency) with remote loading off, from our origin.
 * Its bundled onnxruntime-web (a 1.31 dev build, not our 1.30) loads its runtime from
 * `/ort-transformers/` (run.ts mounts it). `dtype` 'q4' makes it load `onnx/model_q4.onnx` — the same
 * MatMulNBits file our engine loads for q4 — and 'fp32' `onnx/model.onnx`; the files it fetched are
 * reported (from its progress callback) so the comparison is checkably like with like. Timing comes
 * from a streamer's put() calls: the first is the prompt (before prefill), then one per generated
 * token. ours.ts loads it next to our engine in the same page and interleaves the repetitions.
 */
import { AutoModelForCausalLM, AutoTokenizer, env, Tensor } from '@huggingface/transformers';
import { promptIdsOf } from './ours.ts';
import type { SuiteOptions, TjsResult } from './types.ts';

type Log = (msg: string) => void;

function configureEnv(): void {
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = '/models/';
  env.useBrowserCache = false;
  env.useWasmCache = false;
  const o = env.backends.onnx;
  if (o.wasm) {
    o.wasm.wasmPaths = {
      mjs: new URL('/ort-transformers/ort-wasm-simd-threaded.asyncify.mjs', location.href).href,
      wasm: new URL('/ort-transformers/ort-wasm-simd-threaded.asyncify.wasm', location.href).href,
    };
    o.wasm.numThreads = 1;
  }
}

export interface TjsRun {
  ttftMs: number;
  prefillMs: number;
  decodeMs: number;
  tokens: number[];
}

export interface TjsModel {
  result: TjsResult;
  /** One greedy generation of exactly `newTokens` tokens from the benchmark prompt. */
  run(newTokens: number): Promise<TjsRun>;
  /** One measured repetition (`decodeTokens` decode steps after the first token), added to `result`. */
  rep(decodeTokens: number): Promise<void>;
  dispose(): Promise<void>;
}

/** Loads the model through transformers.js; `result` is filled by the caller's repetitions. */
export async function loadTransformers(opts: SuiteOptions, log: Log): Promise<TjsModel> {
  configureEnv();
  const { backend, dtype } = opts;
  const files: string[] = [];
  const progress_callback = (p: { status?: string; file?: string }): void => {
    if (p.status === 'done' && p.file) files.push(p.file);
  };
  const tokenizer = await AutoTokenizer.from_pretrained(opts.model.name, { progress_callback });
  const promptIds = promptIdsOf((t) => tokenizer.encode(t, { add_special_tokens: false }), opts.promptTokens);
  log(`transformers.js/${backend}/${dtype}: loading model`);
  const t0 = performance.now();
  const model = await AutoModelForCausalLM.from_pretrained(opts.model.name, {
    dtype,
    device: backend,
    progress_callback,
  });
  const loadMs = performance.now() - t0;
  const n = promptIds.length;

  const run = async (newTokens: number): Promise<TjsRun> => {
    const stamps: number[] = [];
    const streamer = {
      put: () => {
        stamps.push(performance.now());
      },
      end: () => {},
    };
    const input_ids = new Tensor('int64', BigInt64Array.from(promptIds, BigInt), [1, n]);
    const attention_mask = new Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]);
    const tCall = performance.now();
    const out = (await model.generate({
      input_ids,
      attention_mask,
      max_new_tokens: newTokens,
      min_new_tokens: newTokens,
      do_sample: false,
      // biome-ignore lint/suspicious/noExplicitAny: a duck-typed BaseStreamer (put/end is all generate calls)
      streamer: streamer as any,
    })) as Tensor;
    const tokens = Array.from(out.tolist()[0] as Array<number | bigint>, Number).slice(n);
    // stamps[0]: prompt put (before prefill); stamps[1]: first token; stamps[newTokens]: last.
    if (stamps.length !== newTokens + 1)
      throw new Error(`streamer saw ${stamps.length} puts, want ${newTokens + 1}`);
    return {
      ttftMs: stamps[1]! - tCall,
      prefillMs: stamps[1]! - stamps[0]!,
      decodeMs: stamps[newTokens]! - stamps[1]!,
      tokens,
    };
  };

  const runtime = performance
    .getEntriesByType('resource')
    .map((e) => new URL(e.name).pathname)
    .filter((u) => u.startsWith('/ort-transformers/'));
  const result: TjsResult = {
    suite: 'transformers',
    options: opts,
    version: env.version,
    ortVersion: String(env.backends.onnx.versions?.web ?? 'unknown'),
    files: [...new Set([...files, ...runtime])],
    promptIds,
    decodeTps: [],
    prefillTps: [],
    ttftMs: [],
    tokens: [],
    loadMs,
  };
  return {
    result,
    run,
    rep: async (decodeTokens) => recordTjs(result, await run(decodeTokens + 1), decodeTokens),
    dispose: async () => {
      await model.dispose();
    },
  };
}

/** Adds one repetition's figures to `res`. */
function recordTjs(res: TjsResult, r: TjsRun, decodeTokens: number): void {
  res.decodeTps.push((decodeTokens * 1000) / r.decodeMs);
  res.prefillTps.push((res.promptIds.length * 1000) / r.prefillMs);
  res.ttftMs.push(r.ttftMs);
  if (res.tokens.length === 0) res.tokens = r.tokens;
}
