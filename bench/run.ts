/**
 * `npm run bench` — the benchmark driver (Node). Serves bench/index.html with Vite's dev server (ORT
 * runtimes mounted like vitest.config.ts: ours at /ort/, transformers.js' at /ort-transformers/; the
 * model from public/), launches Debian's Chromium through Playwright with the WebGPU flags the browser
 * tests use, runs the suite (ours + transformers.js, interleaved) per backend in a fresh page of that
 * one browser, prints one table per backend and writes all raw samples to bench/out/<date>.json. It is not
 * a test: nothing fails the process but errors (FAIL rows are reported, exit code stays 0).
 *
 *   tsx bench/run.ts [--backend wasm|webgpu|both] [--dtype q4|fp32] [--tokens N] [--reps N]
 *                    [--swaps N] [--no-transformers]
 * Defaults: both backends (wasm first), q4; wasm 32 decode tokens × 5 reps, webgpu 8 × 3; 20 swaps.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright';
import { createServer } from 'vite';
import { ORT_APP_MOUNT, ORT_RESOLVE_CONDITIONS, serveOrtFiles } from '../vite.config.ts';
import { CHROMIUM_ARGS } from '../vitest.config.ts';
import { renderTable, rowsFor } from './report.ts';
import type { BenchBackend, BenchDtype, OursResult, SuiteOptions } from './types.ts';

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
const dtype: BenchDtype =
  args.dtype === 'q4' || args.dtype === 'fp32'
    ? args.dtype
    : fail(`--dtype must be q4 or fp32 (got ${args.dtype})`);
const int = (s: string | undefined, name: string): number | undefined => {
  if (s === undefined) return undefined;
  const n = Number(s);
  return Number.isInteger(n) && n > 0 ? n : fail(`--${name} must be a positive integer (got ${s})`);
};

function optionsFor(backend: BenchBackend): SuiteOptions {
  return {
    backend,
    dtype,
    decodeTokens: int(args.tokens, 'tokens') ?? (backend === 'webgpu' ? 8 : 32),
    reps: int(args.reps, 'reps') ?? (backend === 'webgpu' ? 3 : 5),
    swaps: int(args.swaps, 'swaps')!,
    transformers: !args['no-transformers'],
  };
}

/** transformers.js brings its own onnxruntime-web build; its runtime is served too (no CDN). */
const ORT_TRANSFORMERS_MOUNT = {
  url: 'ort-transformers/',
  dir: resolve(ROOT, 'node_modules/@huggingface/transformers/node_modules/onnxruntime-web/dist'),
};

async function main(): Promise<void> {
  const server = await createServer({
    configFile: false,
    root: ROOT,
    publicDir: 'public',
    cacheDir: 'node_modules/.vite-bench',
    logLevel: 'warn',
    plugins: [serveOrtFiles([ORT_APP_MOUNT, ORT_TRANSFORMERS_MOUNT])],
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
  const results: OursResult[] = [];
  const tables: string[] = [];
  try {
    // Load once so Vite's dependency optimizer settles before anything is timed (a late
    // optimization reloads the page).
    const warm = await browser.newPage();
    await warm.goto(pageUrl);
    await warm.waitForFunction(() => window.wlBench !== undefined);
    await warm.evaluate(() => window.wlBench!.preload());
    await warm.close();

    const suite = async (opts: SuiteOptions): Promise<OursResult> => {
      const page = await browser.newPage();
      page.on('console', (m) => {
        if (m.type() === 'error' || m.text().startsWith('[bench]')) console.log(`  ${m.text()}`);
      });
      page.on('pageerror', (e) => console.log(`  [page error] ${e.message}`));
      try {
        await page.goto(pageUrl);
        await page.waitForFunction(() => window.wlBench !== undefined);
        const run = page.evaluate((o): Promise<OursResult> => window.wlBench!.ours(o), opts);
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<never>((_, rej) => {
          timer = setTimeout(() => rej(new Error(`${opts.backend} exceeded ${args.timeout} s`)), timeoutMs);
        });
        try {
          return await Promise.race([run, timeout]);
        } finally {
          clearTimeout(timer);
        }
      } finally {
        await page.close();
      }
    };

    for (const backend of backends) {
      const opts = optionsFor(backend);
      console.log(`\n== ${backend} / ${dtype}`);
      const ours = await suite(opts);
      results.push(ours);
      const gpu = ours.adapterInfo ? ` on ${ours.adapterInfo.vendor}/${ours.adapterInfo.architecture}` : '';
      tables.push(renderTable(`${backend}${gpu}, ${dtype}`, rowsFor(ours, ours.transformers)));
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
