/**
 * `npm run bench` — the benchmark driver (Node). Serves bench/index.html with Vite's dev server (ORT
 * runtimes mounted like vitest.config.ts: ours at /ort/, transformers.js' at /ort-transformers/; the
 * model from public/), launches Debian's Chromium through Playwright with the WebGPU flags the browser
 * tests use, runs the suite (ours + transformers.js, interleaved) per backend in a fresh page of that
 * one browser, prints one table per backend and writes all raw samples to bench/out/<date>.json. It is not
 * a test: nothing fails the process but errors (FAIL rows are reported, exit code stays 0).
 *
 *   tsx bench/run.ts [--suite inference|train|derive|gates|variants|wasm-q4|all] [--backend wasm|webgpu|both] [--dtype q4|fp32]
 *                    [--tokens N] [--reps N] [--swaps N] [--no-transformers]
 *                    [--train-backend cpu|webgpu|both] [--ranks 1,4,16] [--steps N] [--warmup N]
 *                    [--batch B] [--seq T] [--no-profile] [--columns 2,4,8]
 *                    [--model <folder>] [--no-base-graph] [--no-unfused] [--prompt-tokens N] [--packed per-part|block-diagonal]
 *                    [--suite load [--load-reps N] [--load-libs ours,ours-reencode,ours-shaped,ours-q4,transformers]]
 *                    [--suite swap]
 * Defaults: the inference suite only; both backends (wasm first), q4; wasm 32 decode tokens × 5 reps,
 * webgpu 8 × 3; 20 swaps. Training suite (bench/train.ts): cpu then webgpu, ranks 1,4,16, B 2 × T 32,
 * 2 warm-up + 7 measured steps per rank, one kernel profile per rank on webgpu.
 * `--model <folder>`: a model package outside public/ (e.g. scripts/py/replica_135m.py's), served at
 * /models/<folder name>/ (model-mount.ts); `--no-base-graph` skips loop (a); `--prompt-tokens` (default 128).
 * Batch suite (bench/batch.ts, `--suite batch`): batched vs sequential Compare for --columns × --tokens
 * (default 32), reps 3 on wasm, 1 on webgpu.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium, type Page } from 'playwright';
import { createServer } from 'vite';
import type { PackedLoraMode } from '../src/model/inject-lora.ts';
import { isModelDtype, MODEL_DTYPES } from '../src/model/package.ts';
import { ORT_APP_MOUNT, ORT_RESOLVE_CONDITIONS, serveOrtFiles } from '../vite.config.ts';
import { CHROMIUM_ARGS } from '../vitest.config.ts';
import { type BatchResult, type BatchSuiteOptions, rowsForBatch } from './batch-report.ts';
import { type DeriveResult, rowsForDerive, runDeriveSuite } from './derive.ts';
import { type LoadSuiteResult, loadLibs, rowsForLoad, runLoadSuite } from './load-run.ts';
import { mountModelFolder } from './model-mount.ts';
import { renderTable, rowsFor, rowsForGates, rowsForTrain } from './report.ts';
import type { SwapSuiteOptions, SwapSuiteResult } from './swap.ts';
import { rowsForSwap } from './swap-report.ts';
import type {
  BenchBackend,
  BenchDtype,
  BenchModel,
  GatesResult,
  OursResult,
  SuiteOptions,
  TrainBenchBackend,
  TrainResult,
  TrainSuiteOptions,
  WasmQ4Result,
} from './types.ts';
import { rowsForVariants, type VariantsResult } from './variants.ts';
import { rowsForWasmQ4 } from './wasm-q4-rows.ts';

const ROOT = resolve(import.meta.dirname, '..');

const { values: args } = parseArgs({
  options: {
    backend: { type: 'string', default: 'both' },
    dtype: { type: 'string', default: 'q4' },
    tokens: { type: 'string' },
    reps: { type: 'string' },
    swaps: { type: 'string', default: '20' },
    'no-transformers': { type: 'boolean', default: false },
    timeout: { type: 'string', default: '1200' },
    suite: { type: 'string', default: 'inference' },
    'train-backend': { type: 'string', default: 'both' },
    ranks: { type: 'string', default: '1,4,16' },
    steps: { type: 'string', default: '7' },
    warmup: { type: 'string', default: '2' },
    batch: { type: 'string', default: '2' },
    seq: { type: 'string', default: '32' },
    'no-profile': { type: 'boolean', default: false },
    model: { type: 'string' },
    'no-base-graph': { type: 'boolean', default: false },
    'no-unfused': { type: 'boolean', default: false },
    'prompt-tokens': { type: 'string', default: '128' },
    columns: { type: 'string', default: '2,4,8' },
    'load-reps': { type: 'string', default: '2' },
    'load-libs': { type: 'string', default: 'ours,transformers' },
    packed: { type: 'string' },
  },
});

function fail(msg: string): never {
  console.error(`bench: ${msg}`);
  process.exit(2);
}

const backends: BenchBackend[] =
  args.backend === 'both'
    ? ['wasm', 'webgpu']
    : args.backend === 'wasm' || args.backend === 'webgpu'
      ? [args.backend]
      : fail(`--backend must be wasm, webgpu or both (got ${args.backend})`);
const dtype: BenchDtype = isModelDtype(args.dtype)
  ? args.dtype
  : fail(`--dtype must be one of ${MODEL_DTYPES.join(', ')} (got ${args.dtype})`);
const int = (s: string | undefined, name: string): number | undefined => {
  if (s === undefined) return undefined;
  const n = Number(s);
  return Number.isInteger(n) && n > 0 ? n : fail(`--${name} must be a positive integer (got ${s})`);
};
/** `--packed per-part|block-diagonal`: the packed-qkv LoRA mode for the engine and the loops. */
const packedOption = (): { packed?: PackedLoraMode } => {
  const v = args.packed;
  if (v === undefined) return {};
  return v === 'per-part' || v === 'block-diagonal'
    ? { packed: v }
    : fail(`--packed must be per-part or block-diagonal (got ${v})`);
};
// --suite gates (bench/gates.ts) and --suite wasm-q4 (bench/wasm-q4.ts: fp32 vs q4 files on wasm,
// lockstep) run alone.
const gatesSuite = args.suite === 'gates';
const wasmQ4Suite = args.suite === 'wasm-q4';
if (gatesSuite || wasmQ4Suite) args.suite = 'none';
const SUITES = ['inference', 'train', 'derive', 'variants', 'batch', 'load', 'swap'] as const;
type Suite = (typeof SUITES)[number];
// 'all' = inference, train, derive, batch (variants, load, swap, gates and wasm-q4 only when named).
const ALL: readonly Suite[] = ['inference', 'train', 'derive', 'batch'];
const suites: Record<Suite, boolean> =
  args.suite === 'none' || args.suite === 'all' || (SUITES as readonly string[]).includes(args.suite!)
    ? (Object.fromEntries(
        SUITES.map((s) => [s, args.suite === s || (args.suite === 'all' && ALL.includes(s))]),
      ) as Record<Suite, boolean>)
    : fail(
        `--suite must be inference, train, derive, batch, load, swap, gates, variants, wasm-q4 or all (got ${args.suite})`,
      );
const trainBackends: TrainBenchBackend[] =
  args['train-backend'] === 'both'
    ? ['cpu', 'webgpu']
    : args['train-backend'] === 'cpu' || args['train-backend'] === 'webgpu'
      ? [args['train-backend']]
      : fail(`--train-backend must be cpu, webgpu or both (got ${args['train-backend']})`);
const ranks = args.ranks!.split(',').map((r) => {
  const n = Number(r);
  return Number.isInteger(n) && n >= 1 && n <= 64 ? n : fail(`--ranks: each rank must be 1..64 (got ${r})`);
});

const mount = args.model === undefined ? null : mountModelFolder(args.model, fail);
const model: BenchModel = mount?.model ?? {
  name: 'weblora-shakespeare',
  base: '/models/weblora-shakespeare/',
};

function trainOptionsFor(backend: TrainBenchBackend): TrainSuiteOptions {
  return {
    backend,
    dtype,
    model,
    ranks,
    batch: int(args.batch, 'batch')!,
    seqLen: int(args.seq, 'seq')!,
    steps: int(args.steps, 'steps')!,
    warmup: args.warmup === '0' ? 0 : int(args.warmup, 'warmup')!,
    profile: !args['no-profile'],
  };
}

function optionsFor(backend: BenchBackend): SuiteOptions {
  return {
    backend,
    dtype,
    decodeTokens: int(args.tokens, 'tokens') ?? (backend === 'webgpu' ? 8 : 32),
    reps: int(args.reps, 'reps') ?? (backend === 'webgpu' ? 3 : 5),
    swaps: int(args.swaps, 'swaps')!,
    transformers: !args['no-transformers'],
    model,
    baseGraph: !args['no-base-graph'],
    unfusedLoop: !args['no-unfused'],
    promptTokens: int(args['prompt-tokens'], 'prompt-tokens')!,
    ...packedOption(),
  };
}

function loadOptions() {
  const name = model.name;
  const dir = args.model === undefined ? resolve(ROOT, 'public/models', name) : resolve(args.model);
  const libs =
    loadLibs(args['load-libs']!) ??
    fail(`--load-libs: ours, ours-reencode, ours-shaped, ours-q4, transformers`);
  const reps = int(args['load-reps'], 'load-reps')!;
  return { backends, dtype, model: name, modelDir: dir, reps, libs };
}

/** transformers.js brings its own onnxruntime-web build; its runtime is served too (no CDN). */
const ORT_TRANSFORMERS_MOUNT = {
  url: 'ort-transformers/',
  dir: resolve(ROOT, 'node_modules/@huggingface/transformers/node_modules/onnxruntime-web/dist'),
};

async function main(): Promise<void> {
  const started = Date.now();
  const server = await createServer({
    configFile: false,
    root: ROOT,
    publicDir: 'public',
    cacheDir: 'node_modules/.vite-bench',
    logLevel: 'warn',
    plugins: [serveOrtFiles([ORT_APP_MOUNT, ORT_TRANSFORMERS_MOUNT]), ...(mount ? [mount.plugin] : [])],
    resolve: { conditions: ORT_RESOLVE_CONDITIONS },
    optimizeDeps: {
      entries: ['bench/index.html'],
      exclude: ['onnxruntime-web'],
      include: [
        '@huggingface/transformers',
        '@huggingface/jinja',
        '@huggingface/tokenizers',
        'onnx-proto',
        'comlink',
        'idb-keyval',
      ],
    },
    server: { host: '127.0.0.1', port: 0, hmr: false, watch: null },
  });
  await server.listen();
  const address = server.httpServer?.address();
  if (!address || typeof address === 'string') throw new Error('vite server has no TCP address');
  const pageUrl = `http://127.0.0.1:${address.port}/bench/index.html`;

  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: CHROMIUM_ARGS,
  });
  const timeoutMs = Number(args.timeout) * 1000;
  const results: (
    | OursResult
    | TrainResult
    | DeriveResult
    | GatesResult
    | VariantsResult
    | WasmQ4Result
    | LoadSuiteResult
    | SwapSuiteResult
  )[] = [];
  const tables: string[] = [];
  try {
    // Load once so Vite's dependency optimizer settles before anything is timed (a late
    // optimization reloads the page).
    const warm = await browser.newPage();
    await warm.goto(pageUrl);
    await warm.waitForFunction(() => window.wlBench !== undefined);
    await warm.evaluate(() => window.wlBench!.preload());
    await warm.close();

    const inPage = async <R>(name: string, run: (page: Page) => Promise<R>): Promise<R> => {
      const page = await browser.newPage();
      page.on('console', (m) => {
        if (m.type() === 'error' || m.text().startsWith('[bench]')) console.log(`  ${m.text()}`);
      });
      page.on('pageerror', (e) => console.log(`  [page error] ${e.message}`));
      try {
        await page.goto(pageUrl);
        await page.waitForFunction(() => window.wlBench !== undefined);
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<never>((_, rej) => {
          timer = setTimeout(() => rej(new Error(`${name} exceeded ${args.timeout} s`)), timeoutMs);
        });
        try {
          return await Promise.race([run(page), timeout]);
        } finally {
          clearTimeout(timer);
        }
      } finally {
        await page.close();
      }
    };

    for (const backend of suites.inference ? backends : []) {
      const opts = optionsFor(backend);
      console.log(`\n== ${backend} / ${dtype}${mount ? ` / ${model.name}` : ''}`);
      const ours = await inPage(backend, (page) =>
        page.evaluate((o): Promise<OursResult> => window.wlBench!.ours(o), opts),
      );
      results.push(ours);
      const gpu = ours.adapterInfo ? ` on ${ours.adapterInfo.vendor}/${ours.adapterInfo.architecture}` : '';
      tables.push(renderTable(`${backend}${gpu}, ${dtype}`, rowsFor(ours, ours.transformers)));
    }
    for (const backend of gatesSuite ? backends : []) {
      const opts = optionsFor(backend);
      console.log(`\n== gates / ${backend} / ${dtype}`);
      const g = await inPage(`gates/${backend}`, (page) =>
        page.evaluate((o): Promise<GatesResult> => window.wlBench!.gates(o), opts),
      );
      results.push(g);
      tables.push(renderTable(`gates: ${backend}, ${dtype}`, rowsForGates(g)));
    }
    for (const backend of suites.variants ? backends : []) {
      // LoRA branch forms on the layout replicas (bench/variants.ts): fp16 branch, packed qkv.
      const opts = {
        backend,
        decodeTokens: int(args.tokens, 'tokens') ?? (backend === 'webgpu' ? 16 : 96),
        reps: int(args.reps, 'reps') ?? (backend === 'webgpu' ? 4 : 15),
      };
      console.log(`\n== variants / ${backend}`);
      const v = await inPage(`variants/${backend}`, (page) =>
        page.evaluate((o): Promise<VariantsResult> => window.wlBench!.variants(o), opts),
      );
      results.push(v);
      tables.push(renderTable(`LoRA branch variants on the replicas: ${backend}`, rowsForVariants(v)));
    }
    for (const backend of suites.swap ? backends : []) {
      console.log(`\n== swap / ${backend} / ${model.name}`);
      const o: SwapSuiteOptions = {
        backend,
        dtype,
        model,
        swaps: int(args.swaps, 'swaps')!,
        ...packedOption(),
      };
      const r = await inPage(`swap/${backend}`, (page) =>
        page.evaluate((x): Promise<SwapSuiteResult> => window.wlBench!.swap(x), o),
      );
      results.push(r);
      tables.push(renderTable(`swap: ${backend}, ${model.name}, ${r.targetCount} targets`, rowsForSwap(r)));
    }
    for (const backend of suites.load ? backends : []) {
      console.log(`\n== load / ${backend} / ${dtype}`);
      const r = await runLoadSuite(browser, pageUrl, loadOptions(), backend, (m) => console.log(`  ${m}`));
      results.push(r);
      tables.push(renderTable(`load: ${backend}, ${dtype}`, rowsForLoad(r)));
    }
    if (wasmQ4Suite) {
      const o = {
        model,
        promptTokens: int(args['prompt-tokens'], 'prompt-tokens')!,
        decodeTokens: int(args.tokens, 'tokens') ?? 16,
        reps: int(args.reps, 'reps') ?? 3,
      };
      console.log(`\n== wasm-q4 / ${model.name}`);
      const r = await inPage('wasm-q4', (page) => page.evaluate((x) => window.wlBench!.wasmQ4(x), o));
      results.push(r);
      tables.push(renderTable(`wasm: fp32 vs q4 files, ${model.name}`, rowsForWasmQ4(r)));
    }
    for (const backend of suites.train ? trainBackends : []) {
      const opts = trainOptionsFor(backend);
      console.log(`\n== train / ${backend} / ${dtype}`);
      const t0 = Date.now();
      const tr = await inPage(`train/${backend}`, (page) =>
        page.evaluate((o): Promise<TrainResult> => window.wlBench!.train(o), opts),
      );
      results.push(tr);
      console.log(`  train/${backend}: ${((Date.now() - t0) / 1000).toFixed(0)} s`);
      const gpu = tr.adapterInfo ? ` on ${tr.adapterInfo.vendor}/${tr.adapterInfo.architecture}` : '';
      tables.push(
        renderTable(
          `training: ${backend === 'cpu' ? 'CpuTrainBackend vs ORT wasm' : `GpuTrainBackend vs ORT webgpu${gpu}`}, ${dtype}`,
          rowsForTrain(tr),
        ),
      );
    }
    if (suites.derive) {
      console.log('\n== derive (Node, ORT wasm, 1 thread)');
      const d = await runDeriveSuite(int(args.reps, 'reps') ?? 5);
      results.push(d);
      tables.push(renderTable('derive: router overhead, merge, truncate (Node, wasm)', rowsForDerive(d)));
    }
    for (const backend of suites.batch ? backends : []) {
      const opts: BatchSuiteOptions = {
        backend,
        dtype,
        sizes: args.columns!.split(',').map((c) => int(c, 'columns')!),
        tokens: int(args.tokens, 'tokens') ?? 32,
        reps: int(args.reps, 'reps') ?? (backend === 'webgpu' ? 1 : 3),
      };
      console.log(`\n== batch / ${backend} / ${dtype}`);
      const r = await inPage(`batch/${backend}`, (page) =>
        page.evaluate((o): Promise<BatchResult> => window.wlBench!.batch(o), opts),
      );
      results.push(r as never);
      tables.push(renderTable(`batched vs sequential Compare: ${backend}, ${dtype}`, rowsForBatch(r)));
    }
  } finally {
    const version = browser.version();
    await browser.close();
    await server.close();
    if (results.length > 0) {
      console.log(`\n${tables.join('\n\n')}\n`);
      const date = new Date().toISOString().replace(/[:.]/g, '-');
      const dir = resolve(ROOT, 'bench/out');
      mkdirSync(dir, { recursive: true });
      const file = resolve(dir, `${date}.json`);
      const machine = {
        cpus: cpus().length,
        cpuModel: cpus()[0]?.model ?? '',
        loadavg: loadavg(),
        chromium: version,
      };
      console.log(`total ${((Date.now() - started) / 1000).toFixed(0)} s`);
      writeFileSync(
        file,
        `${JSON.stringify({ date, argv: process.argv.slice(2), machine, results }, null, 2)}\n`,
      );
      console.log(`wrote ${file}`);
    }
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
