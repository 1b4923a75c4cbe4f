/**
 * The "ours" suite (runs in the bench page): our LocalEngine and the bench loop on one backend/dtype.
 * Decode/prefill for (a) the graph as shipped (never LoRA-injected), (b) the injected graph fed
 * "no adapter" (the engine's noAdapterFeeds), (c) the injected graph fed a random rank-8 adapter on all
 * 7 modules of every layer, (d) as (c) with the other LoRA branch operator (MatMul vs Einsum, see
 * src/model/inject-lora.ts), (e) (a) — or (b) without (a) — with the greedy head the engine adds at load
 * (src/model/greedy-head.ts: last-row lm_head, the ArgMax id read back) — all timed by the same loop (decode-loop.ts), steps run in lockstep so
 * drift hits them alike. Then the real engine.generate path (no adapter,
 * rank-8; TTFT from the call to the first token callback), interleaved with transformers.js on the
 * same file (transformers.ts) when asked, and adapter swap latency through the
 * engine's own provider (captured via LocalEngine's `adapterProvider` factory). Runs in the page's
 * main thread, not the app's worker: ORT's kernels are the same, and the page stays simple.
 */
import * as ortWebgpu from 'onnxruntime-web/webgpu';
import { buildPeftFiles } from '../src/adapters/peft-writer.ts';
import { type AdapterProvider, createAdapterProvider } from '../src/adapters/provider.ts';
import { AdapterStore } from '../src/adapters/store.ts';
import type { AdapterFeeds } from '../src/adapters/types.ts';
import { LocalEngine } from '../src/engine/engine.ts';
import { noAdapterFeeds } from '../src/engine/load.ts';
import type { Ort } from '../src/engine/session.ts';
import { TextTokenizer } from '../src/engine/tokenizer.ts';
import { wasmGraphOf } from '../src/model/dequantize.ts';
import type { LoraTarget } from '../src/model/inject-lora.ts';
import {
  injectLora,
  type LoraBranchOp,
  loraBranchOpFor,
  loraInjectOptionsFor,
} from '../src/model/inject-lora.ts';
import { decodeModel, encodeModel, type ModelProto } from '../src/model/onnx-io.ts';
import { fetchModelPackage, modelFileName } from '../src/model/package.ts';
import { prepareDecoderGraph } from '../src/model/prepare-decoder.ts';
import { createBenchSession, emptySeries, lockstepGreedy, record } from './decode-loop.ts';
import { withExternalData } from './external-data.ts';
import { PASSAGE, PROMPT_TOKENS } from './prompt.ts';
import { summarize } from './stats.ts';
import type { EngineSeries, OursResult, SuiteOptions, SwapResult } from './types.ts';

export const MODEL_NAME = 'weblora-shakespeare';
export const MODEL_BASE = `/models/${MODEL_NAME}/`;
export const ADAPTER = 'bench-r8';
export const RANK = 8;
const ACQUIRE_BATCH = 1000;

type Log = (msg: string) => void;

/** Deterministic uniform [-1, 1) (mulberry32), so every run benchmarks the same adapter. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  };
}

/**
 * PEFT files of a random rank-`r` adapter on every target (small values: outputs stay finite). A packed
 * target (the builder layout's qkv_proj) gets one module per part (q/k/v), as PEFT adapters name them.
 */
export function randomAdapter(
  targets: readonly LoraTarget[],
  r: number,
  baseModel = MODEL_NAME,
): ReturnType<typeof buildPeftFiles> {
  const rand = rng(1234);
  const fill = (n: number, scale: number): Float32Array =>
    Float32Array.from({ length: n }, () => rand() * scale);
  const modules = targets.flatMap((t): { layer: number; module: string; in: number; out: number }[] =>
    t.parts?.length ? t.parts.map((p) => ({ layer: t.layer, module: p.module, in: t.in, out: p.size })) : [t],
  );
  return buildPeftFiles({
    baseModel,
    r,
    loraAlpha: 2 * r,
    modules: modules.map((t) => ({
      layer: t.layer,
      module: t.module,
      in: t.in,
      out: t.out,
      A: fill(r * t.in, 1 / Math.sqrt(t.in)),
      B: fill(t.out * r, 0.01),
    })),
  });
}

/** The first `n` ids of the passage (repeated when one copy is too short for `n`). */
export function promptIdsOf(encode: (text: string) => number[], n = PROMPT_TOKENS): number[] {
  let text = PASSAGE;
  let ids = encode(text);
  for (let i = 0; ids.length < n && i < 64; i++) {
    text += `\n\n${PASSAGE}`;
    ids = encode(text);
  }
  if (ids.length < n) throw new Error(`bench prompt has only ${ids.length} tokens`);
  return ids.slice(0, n);
}

async function timeMs(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

export async function runOurs(opts: SuiteOptions, log: Log): Promise<OursResult> {
  const ort = ortWebgpu as unknown as Ort;
  const { backend, dtype, decodeTokens, reps } = opts;
  const injectOpts = { ...loraInjectOptionsFor(backend), ...(opts.packed ? { packed: opts.packed } : {}) };
  const modelBase = opts.model.base;
  ort.env.wasm.numThreads = 1;

  // Engine with its own store (fresh DB per run) and its provider captured for the swap timings.
  const store = new AdapterStore({ dbName: `weblora-bench-${Date.now()}` });
  let provider: AdapterProvider | null = null;
  const engine = new LocalEngine({
    ort,
    numThreads: 1,
    wasmPaths: new URL('/ort/', location.href).href,
    adapterStore: store,
    adapterProvider: (ctx) => {
      provider = createAdapterProvider({
        store,
        ort: ctx.ort,
        budgetBytes: 64 * 1024 * 1024,
        ...(ctx.device ? { device: ctx.device } : {}),
      });
      return provider;
    },
  });
  log(`ours/${backend}/${dtype}: loading model`);
  const report = await engine.loadModel(modelBase, {
    dtype,
    backend,
    ...(opts.packed ? { packedLora: opts.packed } : {}),
  });
  if (report.backend !== backend) throw new Error(`engine loaded on ${report.backend}, not ${backend}`);
  const p = provider as AdapterProvider | null;
  if (!p) throw new Error('adapter provider factory was not called');
  const targets = report.targets;

  const pkg = await fetchModelPackage(modelBase, { dtype });
  const tok = TextTokenizer.fromJSON(pkg.tokenizerJson, pkg.tokenizerConfig, pkg.config.eosTokenIds[0]);
  const promptIds = promptIdsOf((t) => tok.encode(t), opts.promptTokens);
  const promptText = tok.decode(promptIds);

  const files = randomAdapter(targets, RANK, opts.model.name);
  await engine.importAdapter(
    { config: files['adapter_config.json'], weights: files['adapter_model.safetensors'] },
    { name: ADAPTER },
  );

  // (c) uses the engine's branch operator for this backend; (d) the other one, for comparison.
  const branchOp = loraBranchOpFor(backend);
  const altBranchOp: LoraBranchOp = branchOp === 'einsum' ? 'matmul' : 'einsum';
  if (report.loraBranchOp !== branchOp)
    throw new Error(`engine used ${report.loraBranchOp}, bench ${branchOp}`);
  log(
    `ours/${backend}/${dtype}: creating bench sessions (${opts.baseGraph ? 'base, ' : ''}injected ${branchOp}, injected ${altBranchOp}, greedy head${opts.unfusedLoop === false ? '' : ', unfused'})`,
  );
  // As the engine does (load.ts → src/model/prepare-decoder.ts): on wasm, 4-bit MatMulNBits become fp32
  // MatMuls at load, then the decoder fusion with the backend's options; (e) also gets the greedy head.
  const fileGraph = decodeModel(pkg.model);
  const file = await withExternalData(fileGraph, modelBase, dtype); // builder layout: weights in .onnx_data
  // Dequantized once: prepareDecoderGraph's own wasmGraphOf then finds nothing left to convert (no copy).
  const deq = backend === 'wasm' ? wasmGraphOf(file).model : file;
  const prep = (o: { fuse?: boolean; greedyHead?: boolean } = {}) =>
    prepareDecoderGraph(deq, pkg.config, backend, { greedyHead: false, ...o }).model;
  const decoded = prep();
  const session = (model: ModelProto) =>
    createBenchSession(ort, model === fileGraph ? pkg.model : encodeModel(model), backend, pkg.config);
  const base = opts.baseGraph ? await session(decoded) : null;
  const injected = await session(injectLora(decoded, injectOpts).model);
  const injectedAlt = await session(injectLora(decoded, { ...injectOpts, branchOp: altBranchOp }).model);
  // (e): the reference graph ((a) base, else (b) injected) with the greedy head, as the engine loads it
  // (head before the injection, as load.ts).
  const withHead = prep({ greedyHead: true });
  const headed = await session(opts.baseGraph ? withHead : injectLora(withHead, injectOpts).model);
  // (f): the reference graph without the decoder fusion (what the engine ran before it; LoadSettings.fuse false).
  // --no-unfused skips it: at 135M on wasm a fifth fp32 session does not fit the 4 GiB wasm heap.
  const unfusedGraph = opts.unfusedLoop === false ? null : prep({ fuse: false });
  const unfused = unfusedGraph
    ? await session(opts.baseGraph ? unfusedGraph : injectLora(unfusedGraph, injectOpts).model)
    : null;
  const device = backend === 'webgpu' ? ((await ort.env.webgpu.device) as GPUDevice) : null;
  const none = noAdapterFeeds(ort, targets, device);
  const r8 = await adapterFeeds(p, targets);

  const baseSeries = emptySeries(); // stays empty with --no-base-graph
  const configs = [
    ...(base ? [{ name: '(a) base', s: base, feeds: {}, series: baseSeries }] : []),
    { name: '(b) injected, no adapter', s: injected, feeds: none.feeds, series: emptySeries() },
    { name: '(c) injected, rank-8', s: injected, feeds: r8.feeds, series: emptySeries() },
    { name: `(d) ${altBranchOp} branch, rank-8`, s: injectedAlt, feeds: r8.feeds, series: emptySeries() },
    { name: '(e) greedy head', s: headed, feeds: base ? {} : none.feeds, series: emptySeries() },
    ...(unfused
      ? [{ name: '(f) unfused', s: unfused, feeds: base ? {} : none.feeds, series: emptySeries() }]
      : []),
  ];
  const [injectedNoneSeries, injectedR8Series, injectedR8AltSeries, greedyHeadSeries] = configs
    .slice(base ? 1 : 0)
    .map((c) => c.series);
  const unfusedSeries = unfused ? configs.at(-1)!.series : emptySeries(); // stays empty with --no-unfused
  try {
    log(`ours/${backend}: warm-up ${configs.map((c) => c.name.slice(0, 3)).join(', ')}`);
    await lockstepGreedy(ort, configs, promptIds, 2);
    for (let rep = 0; rep < reps; rep++) {
      const runs = await lockstepGreedy(ort, configs, promptIds, decodeTokens);
      configs.forEach((c, i) => {
        record(c.series, runs[i]!, promptIds.length);
      });
      log(
        `ours/${backend}: rep ${rep + 1}/${reps} decode tok/s: ${configs.map((c) => `${c.name} ${c.series.decodeTps.at(-1)!.toFixed(2)}`).join(', ')}`,
      );
    }
  } finally {
    r8.release();
    none.dispose();
    await base?.session.release();
    await injected.session.release();
    await injectedAlt.session.release();
    await headed.session.release();
    await unfused?.session.release();
  }

  // The engine's own generate path (what users get), no adapter vs rank-8, interleaved.
  const series = (): EngineSeries => ({
    decodeTps: [],
    forwardTps: [],
    prefillTps: [],
    ttftMs: [],
    generated: [],
  });
  const engineNone = series();
  const engineR8 = series();
  const gen = async (adapter: string | null, maxNewTokens: number, into?: EngineSeries): Promise<void> => {
    const t0 = performance.now();
    const stamps: number[] = [];
    const res = await engine.generate({ prompt: promptText, adapter, maxNewTokens }, () => {
      stamps.push(performance.now());
    });
    if (!into) return;
    into.ttftMs.push(stamps[0]! - t0);
    into.prefillTps.push((res.timings.promptTokens * 1000) / res.timings.prefillMs);
    if (stamps.length > 1) into.decodeTps.push(((stamps.length - 1) * 1000) / (stamps.at(-1)! - stamps[0]!));
    if (res.timings.tokensPerSecond > 0) into.forwardTps.push(res.timings.tokensPerSecond);
    into.generated.push(res.tokenIds.length);
  };
  // transformers.js in this same page, its repetitions interleaved with ours (same load).
  const tjs = opts.transformers
    ? await (await import('./transformers.ts')).loadTransformers(opts, log)
    : null;
  log(`ours/${backend}: engine.generate warm-up`);
  await gen(null, 2);
  await gen(ADAPTER, 2);
  if (tjs) await tjs.run(3);
  try {
    // More repetitions where they are cheap (wasm): both libraries run the same onnxruntime kernels
    // there, so the ratio sits near 1 and a median of 5 pairs swings with the machine's noise. The
    // order alternates so that neither side always runs first.
    const genReps = backend === 'wasm' ? reps * 3 : reps;
    for (let rep = 0; rep < genReps; rep++) {
      if (tjs && rep % 2 === 1) await tjs.rep(decodeTokens);
      await gen(null, decodeTokens + 1, engineNone);
      await gen(ADAPTER, decodeTokens + 1, engineR8);
      if (tjs && rep % 2 === 0) await tjs.rep(decodeTokens);
      log(
        `ours/${backend}: rep ${rep + 1}/${genReps} generate decode tok/s: engine none ${engineNone.decodeTps.at(-1)?.toFixed(2)}, engine rank-8 ${engineR8.decodeTps.at(-1)?.toFixed(2)}${tjs ? `, transformers.js ${tjs.result.decodeTps.at(-1)?.toFixed(2)}` : ''}`,
      );
    }
  } finally {
    await tjs?.dispose();
  }

  log(`ours/${backend}: adapter swaps (${opts.swaps} hot, ${opts.swaps} cold)`);
  const swap = await measureSwaps(p, targets, device, opts.swaps);
  await engine.dispose();

  return {
    suite: 'ours',
    options: opts,
    backend,
    adapterInfo: report.adapterInfo
      ? { vendor: report.adapterInfo.vendor, architecture: report.adapterInfo.architecture }
      : null,
    modelFile: modelFileName(dtype),
    targetCount: report.targetCount,
    promptTokens: promptIds.length,
    promptIds,
    base: baseSeries,
    injectedNone: injectedNoneSeries!,
    injectedR8: injectedR8Series!,
    branchOp,
    altBranchOp,
    injectedR8Alt: injectedR8AltSeries!,
    greedyHead: greedyHeadSeries!,
    unfused: unfusedSeries!,
    fused: report.fused,
    engineNone,
    engineR8,
    swap,
    loadMs: report.loadMs,
    dequantizedAtLoad: report.dequantizedAtLoad,
    transformers: tjs?.result ?? null,
  };
}

/** The bench adapter's feeds (never "no adapter"). */
async function adapterFeeds(p: AdapterProvider, targets: LoraTarget[]): Promise<AdapterFeeds> {
  const f = await p.feedsFor(ADAPTER, targets);
  if (!f) throw new Error(`the provider answered "no adapter" for ${ADAPTER}`);
  return f;
}

export async function measureSwaps(
  p: AdapterProvider,
  targets: LoraTarget[],
  device: GPUDevice | null,
  n: number,
): Promise<SwapResult> {
  // Hot: already cached (warm it once), so feedsFor must upload nothing.
  (await adapterFeeds(p, targets)).release();
  const up0 = p.stats().uploads;
  const hotFeedsFor: number[] = [];
  for (let i = 0; i < n; i++) {
    hotFeedsFor.push(await timeMs(async () => (await adapterFeeds(p, targets)).release()));
  }
  const key = p.cache.keys().find((k) => k.startsWith(`a:${ADAPTER}@`));
  if (!key) throw new Error('adapter is not in the feed cache after feedsFor');
  // One acquire is far below the page's timer resolution (0.1 ms without cross-origin isolation):
  // time a batch of ACQUIRE_BATCH and divide.
  const t0 = performance.now();
  for (let i = 0; i < ACQUIRE_BATCH; i++) {
    (
      await p.cache.acquire(key, () => {
        throw new Error('hot acquire missed the cache');
      })
    ).release();
  }
  const hotAcquire = (performance.now() - t0) / ACQUIRE_BATCH;
  const hotUploads = p.stats().uploads - up0;

  // Cold: dropped from the cache first, so each call reads IndexedDB, parses, maps and uploads.
  const up1 = p.stats().uploads;
  const cold: number[] = [];
  for (let i = 0; i < n; i++) {
    p.forget(ADAPTER);
    cold.push(
      await timeMs(async () => {
        const f = await adapterFeeds(p, targets);
        if (device) await device.queue.onSubmittedWorkDone();
        f.release();
      }),
    );
  }
  const coldUploads = p.stats().uploads - up1;
  const st = p.stats();
  let expected = 0;
  for (const t of targets) expected += RANK * (t.in + t.out) * 4;
  return {
    hotFeedsForMs: summarize(hotFeedsFor),
    hotAcquireMs: hotAcquire,
    hotUploads,
    coldMs: summarize(cold),
    coldUploads,
    bytesPerAdapter: st.entries > 0 ? st.bytesHeld / st.entries : 0,
    expectedBytes: expected,
  };
}
