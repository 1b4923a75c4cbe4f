/**
 * Entry of bench/index.html: exposes `window.wlBench` (types.ts BenchApi) for bench/run.ts to call
 * through Playwright, and mirrors progress to the console (which the driver prints). The suite is a
 * dynamic import (transformers.js only when asked for), so loading the page runs nothing.
 */
import type { BatchSuiteOptions } from './batch-report.ts';
import type { LoadOnceOptions } from './load.ts';
import type { SwapSuiteOptions } from './swap.ts';
import type { BenchApi, GatesSuiteOptions, SuiteOptions, TrainSuiteOptions, WasmQ4Options } from './types.ts';
import type { VariantsOptions, VariantsResult } from './variants.ts';

declare global {
  interface Window {
    wlBench?: BenchApi & {
      preload(): Promise<void>;
      variants(o: VariantsOptions): Promise<VariantsResult>;
      load(o: LoadOnceOptions): Promise<import('./load.ts').LoadOnceResult>;
      unload(): Promise<void>;
      swap(o: SwapSuiteOptions): Promise<import('./swap.ts').SwapSuiteResult>;
    };
  }
}

function log(msg: string): void {
  console.log(`[bench] ${msg}`);
  const pre = document.getElementById('log');
  if (pre) pre.textContent += `${msg}\n`;
}

window.wlBench = {
  async preload() {
    await Promise.all([
      import('./ours.ts'),
      import('./transformers.ts'),
      import('./train.ts'),
      import('./variants.ts'),
      import('./wasm-q4.ts'),
      import('./batch.ts'),
    ]);
  },
  async ours(opts: SuiteOptions) {
    return (await import('./ours.ts')).runOurs(opts, log);
  },
  async load(opts: LoadOnceOptions) {
    return (await import('./load.ts')).loadOnce(opts);
  },
  async swap(opts: SwapSuiteOptions) {
    return (await import('./swap.ts')).runSwap(opts, log);
  },
  async unload() {
    await (await import('./load.ts')).unload();
  },
  async train(opts: TrainSuiteOptions) {
    return (await import('./train.ts')).runTrain(opts, log);
  },
  async gates(opts: GatesSuiteOptions) {
    return (await import('./gates.ts')).runGates(opts, log);
  },
  async variants(opts: VariantsOptions) {
    return (await import('./variants.ts')).runVariants(opts, log);
  },
  async wasmQ4(opts: WasmQ4Options) {
    return (await import('./wasm-q4.ts')).runWasmQ4(opts, log);
  },
  async batch(opts: BatchSuiteOptions) {
    return (await import('./batch.ts')).runBatch(opts, log);
  },
};
