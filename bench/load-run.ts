/**
 * The load suite's driver (Node side of `npm run bench -- --suite load`): for each backend and
 * repetition, each library (ours, ours with the weights re-encoded, transformers.js; order rotating)
 * loads the model in a FRESH browser context (empty Cache Storage: the first load downloads and
 * stores), then again in a new page of that context (cached). Load time comes from the page (load.ts).
 * CPU time and memory come from outside the page. Chromium 156 headless has no per-process memory in
 * CDP (`SystemInfo.getProcessInfo` lists process ids and CPU time only), and
 * `performance.measureUserAgentSpecificMemory` needs cross-origin isolation and counts neither the wasm
 * heap's native pages nor GPU memory. So the driver takes the process ids and CPU times from
 * `SystemInfo.getProcessInfo` (every renderer of this browser, summed: which one hosts the page cannot
 * be told, and the others are idle) and samples their resident set (`VmRSS` in /proc/<pid>/status,
 * Linux) every 25 ms during the load: peak = the highest sample minus the sample just before the load;
 * held = the RSS after the load and a forced GC (CDP `HeapProfiler.collectGarbage`) minus the same
 * baseline. SwiftShader's "GPU memory" is the GPU process's ordinary memory, so on webgpu the
 * GPU-process figure is the weights on the "device". CPU time (renderers + GPU process) is reported
 * next to wall time: on a shared machine it does not include the time spent waiting for other processes.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Browser, CDPSession, Page } from 'playwright';
import type { LoadOnceOptions, LoadOnceResult } from './load.ts';
import { pairedRatio, summarize } from './stats.ts';
import type { BenchBackend, BenchDtype } from './types.ts';

export type LoadLib = LoadOnceOptions['lib'];

const LIBS: readonly LoadLib[] = ['ours', 'ours-reencode', 'ours-shaped', 'ours-q4', 'transformers'];

/** `--load-libs a,b` → the libraries, or null when one is unknown. */
export function loadLibs(list: string): LoadLib[] | null {
  const libs = list.split(',').map((s) => s.trim());
  return libs.every((l) => (LIBS as readonly string[]).includes(l)) ? (libs as LoadLib[]) : null;
}

export interface LoadSuiteOptions {
  backends: BenchBackend[];
  dtype: BenchDtype;
  /** Name of the model folder, served at /models/<model>/. */
  model: string;
  /** That folder on disk (for the file size). */
  modelDir: string;
  reps: number;
  libs: LoadLib[];
}

export interface LoadSample extends LoadOnceResult {
  lib: LoadLib;
  mode: 'first' | 'cached';
  rep: number;
  /** MB above the pre-load baseline: highest RSS sample during the load, and RSS once loaded. */
  rendererPeakMb: number;
  rendererHeldMb: number;
  gpuPeakMb: number;
  gpuHeldMb: number;
  /**
   * CPU time the renderers (and the GPU process) spent from the load's start to after the GC: on a
   * shared machine far steadier than wall time, which waits for other processes.
   */
  rendererCpuMs: number;
  gpuCpuMs: number;
}

export interface LoadSuiteResult {
  suite: 'load';
  options: LoadSuiteOptions;
  backend: BenchBackend;
  modelFile: string;
  modelFileBytes: number;
  samples: LoadSample[];
}

type Log = (msg: string) => void;

const MB = 1024 * 1024;

function rssBytes(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

async function processIds(
  cdp: CDPSession,
): Promise<{ renderers: number[]; gpu: number | null; rendererCpuS: number; gpuCpuS: number }> {
  const { processInfo } = (await cdp.send('SystemInfo.getProcessInfo')) as {
    processInfo: { type: string; id: number; cpuTime: number }[];
  };
  const renderers = processInfo.filter((p) => p.type === 'renderer');
  const gpu = processInfo.find((p) => p.type === 'GPU');
  return {
    renderers: renderers.map((p) => p.id),
    gpu: gpu?.id ?? null,
    rendererCpuS: renderers.reduce((n, p) => n + p.cpuTime, 0),
    gpuCpuS: gpu?.cpuTime ?? 0,
  };
}

/** Summed RSS of a group of processes (0 for none). */
const groupRss = (pids: readonly number[]): number => pids.reduce((n, p) => n + rssBytes(p), 0);

/**
 * Samples the summed RSS of each group of `groups` every 25 ms while `run` runs; peak and final, above
 * the starting sample.
 */
async function sampled<T>(
  groups: (readonly number[])[],
  run: () => Promise<T>,
  settle: () => Promise<void>,
): Promise<{ value: T; peak: number[]; held: number[] }> {
  const base = groups.map(groupRss);
  const peak = [...base];
  const timer = setInterval(() => {
    groups.forEach((g, i) => {
      peak[i] = Math.max(peak[i]!, groupRss(g));
    });
  }, 25);
  try {
    const value = await run();
    await settle();
    const now = groups.map(groupRss);
    now.forEach((n, i) => {
      peak[i] = Math.max(peak[i]!, n);
    });
    return {
      value,
      peak: peak.map((p, i) => (p - base[i]!) / MB),
      held: now.map((n, i) => (n - base[i]!) / MB),
    };
  } finally {
    clearInterval(timer);
  }
}

export async function runLoadSuite(
  browser: Browser,
  pageUrl: string,
  opts: LoadSuiteOptions,
  backend: BenchBackend,
  log: Log,
): Promise<LoadSuiteResult> {
  const modelFile = opts.dtype === 'fp32' ? 'onnx/model.onnx' : `onnx/model_${opts.dtype}.onnx`;
  let modelFileBytes = statSync(resolve(opts.modelDir, modelFile)).size;
  // Weights in external data (builder packages: onnx/model_q4.onnx_data, then _data_1, …) are the file's too.
  const chunks: string[] = [];
  for (let i = 0; existsSync(resolve(opts.modelDir, `${modelFile}_data${i ? `_${i}` : ''}`)); i++) {
    chunks.push(`${modelFile}_data${i ? `_${i}` : ''}`);
    modelFileBytes += statSync(resolve(opts.modelDir, chunks.at(-1)!)).size;
  }
  const fileLabel = chunks.length ? `${modelFile} + ${chunks.map((c) => c.slice(5)).join(' + ')}` : modelFile;
  const cdp = await browser.newBrowserCDPSession();
  const samples: LoadSample[] = [];
  for (let rep = 0; rep < opts.reps; rep++) {
    const libs = opts.libs.map((_, i) => opts.libs[(i + rep) % opts.libs.length]!);
    for (const lib of libs) {
      const ctx = await browser.newContext();
      try {
        for (const mode of ['first', 'cached'] as const) {
          // Each load in a new page, so in a renderer process of its own (what the previous load left
          // in its allocator would hide in the baseline); the context keeps Cache Storage between them.
          const page: Page = await ctx.newPage();
          page.on('pageerror', (e) => log(`[page error] ${e.message}`));
          const pageCdp = await ctx.newCDPSession(page);
          await page.goto(pageUrl);
          await page.waitForFunction(() => window.wlBench !== undefined);
          await page.evaluate(() => window.wlBench!.preload());
          // Every renderer of this browser, summed: the others are idle (closed pages, spares), and which
          // one hosts the page cannot be told from CDP.
          const ids = await processIds(cdp);
          const renderers = ids.renderers;
          const o: LoadOnceOptions = { lib, backend, dtype: opts.dtype, model: opts.model };
          const s = await sampled(
            [renderers, ids.gpu === null ? [] : [ids.gpu]],
            () => page.evaluate((x): Promise<LoadOnceResult> => window.wlBench!.load(x), o),
            async () => {
              // "held": after a full GC (garbage such as the fetched buffers would otherwise count).
              await pageCdp.send('HeapProfiler.collectGarbage');
              await new Promise((r) => setTimeout(r, 300));
            },
          );
          const after = await processIds(cdp);
          const sample: LoadSample = {
            ...s.value,
            rendererCpuMs: (after.rendererCpuS - ids.rendererCpuS) * 1000,
            gpuCpuMs: (after.gpuCpuS - ids.gpuCpuS) * 1000,
            lib,
            mode,
            rep,
            rendererPeakMb: s.peak[0]!,
            rendererHeldMb: s.held[0]!,
            gpuPeakMb: s.peak[1]!,
            gpuHeldMb: s.held[1]!,
          };
          samples.push(sample);
          log(
            `load/${backend}/${lib}/${mode}: ${sample.loadMs.toFixed(0)} ms (CPU: renderers ${sample.rendererCpuMs.toFixed(0)}, GPU process ${sample.gpuCpuMs.toFixed(0)}), renderer +${sample.rendererPeakMb.toFixed(0)} MB peak / +${sample.rendererHeldMb.toFixed(0)} held, GPU process +${sample.gpuPeakMb.toFixed(0)} / +${sample.gpuHeldMb.toFixed(0)}${sample.phases ? ` phases ${JSON.stringify(Object.fromEntries(Object.entries(sample.phases).map(([k, v]) => [k, Math.round(v)])))}` : ''}`,
          );
          await page.evaluate(() => window.wlBench!.unload());
          await page.close();
        }
      } finally {
        await ctx.close();
      }
    }
  }
  await cdp.detach();
  return { suite: 'load', options: opts, backend, modelFile: fileLabel, modelFileBytes, samples };
}

/** Table rows: times side by side with paired ratios, memory against the file size, our phases. */
export function rowsForLoad(
  r: LoadSuiteResult,
): { metric: string; value: string; target: string; result: 'PASS' | 'FAIL' | 'info' }[] {
  const rows: ReturnType<typeof rowsForLoad> = [];
  const fileMb = r.modelFileBytes / MB;
  const pick = (lib: LoadLib, mode: 'first' | 'cached') =>
    r.samples.filter((s) => s.lib === lib && s.mode === mode).sort((a, b) => a.rep - b.rep);
  const med = (xs: number[], d = 0): string => {
    const s = summarize(xs);
    return s.n === 0
      ? 'n/a'
      : s.n === 1
        ? s.median.toFixed(d)
        : `${s.median.toFixed(d)} (${s.min.toFixed(d)}–${s.max.toFixed(d)})`;
  };
  rows.push({
    metric: 'model file',
    value: `${r.modelFile} (${fileMb.toFixed(1)} MiB)`,
    target: '',
    result: 'info',
  });
  for (const mode of ['first', 'cached'] as const) {
    for (const lib of r.options.libs) {
      const xs = pick(lib, mode);
      if (xs.length === 0) continue;
      rows.push({
        metric: `${mode} load ms: ${lib}`,
        value: med(xs.map((s) => s.loadMs)),
        target: '',
        result: 'info',
      });
    }
    for (const lib of r.options.libs) {
      const xs = pick(lib, mode);
      if (xs.length === 0) continue;
      rows.push({
        metric: `${mode} load CPU ms (renderers + GPU process): ${lib}`,
        value: med(xs.map((s) => s.rendererCpuMs + s.gpuCpuMs)),
        target: '',
        result: 'info',
      });
    }
    const cpu = (lib: LoadLib) => pick(lib, mode).map((s) => s.rendererCpuMs + s.gpuCpuMs);
    if (cpu('ours').length && cpu('transformers').length) {
      rows.push({
        metric: `${mode} load CPU: ours / transformers.js`,
        value: pairedRatio(cpu('ours'), cpu('transformers')).toFixed(2),
        target: '',
        result: 'info',
      });
    }
    const ours = pick('ours', mode).map((s) => s.loadMs);
    const tjs = pick('transformers', mode).map((s) => s.loadMs);
    if (ours.length && tjs.length) {
      const ratio = pairedRatio(ours, tjs);
      rows.push({
        metric: `${mode} load: ours / transformers.js`,
        value: ratio.toFixed(2),
        target: '≤ 1.2',
        result: ratio <= 1.2 ? 'PASS' : 'FAIL',
      });
    }
  }
  for (const mode of ['first', 'cached'] as const) {
    for (const lib of r.options.libs) {
      const xs = pick(lib, mode);
      if (xs.length === 0) continue;
      const peak = xs.map((s) => s.rendererPeakMb);
      const ok = summarize(peak).median <= 2 * fileMb;
      rows.push({
        metric: `${mode} load, renderer MB above baseline, peak / held after GC: ${lib}`,
        value: `${med(peak)} / ${med(xs.map((s) => s.rendererHeldMb))}`,
        target: lib === 'transformers' ? '' : `peak ≤ ${(2 * fileMb).toFixed(0)} (2× file)`,
        result: lib === 'transformers' ? 'info' : ok ? 'PASS' : 'FAIL',
      });
      if (r.backend === 'webgpu') {
        rows.push({
          metric: `${mode} load, GPU process MB above baseline, peak / held: ${lib}`,
          value: `${med(xs.map((s) => s.gpuPeakMb))} / ${med(xs.map((s) => s.gpuHeldMb))}`,
          target: '',
          result: 'info',
        });
      }
    }
  }
  for (const lib of ['ours', 'ours-reencode', 'ours-shaped', 'ours-q4'] as const) {
    for (const mode of ['first', 'cached'] as const) {
      const xs = pick(lib, mode).filter((s) => s.phases);
      if (xs.length === 0) continue;
      const keys = Object.keys(xs[0]!.phases!) as (keyof NonNullable<LoadSample['phases']>)[];
      rows.push({
        metric: `${lib} ${mode}: phases ms`,
        value: keys.map((k) => `${k} ${summarize(xs.map((s) => s.phases![k])).median.toFixed(0)}`).join(', '),
        target: '',
        result: 'info',
      });
    }
  }
  return rows;
}
