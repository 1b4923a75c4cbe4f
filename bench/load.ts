/**
 * The page side of the load suite (`npm run bench -- --suite load`, driven by load-run.ts): one model
 * load by one library, timed from the call to a ready model. Ours: `LocalEngine.loadModel` (files, parse,
 * inject, sessions; its `report.phases` say where the time went). transformers.js: its tokenizer plus
 * `AutoModelForCausalLM.from_pretrained` (what ours also does). Both libraries use their own Cache
 * Storage bucket (ours: the engine's model cache; transformers.js: `useBrowserCache`), so a first load
 * downloads and stores and a second load in the same browser context reads the cache. Memory is measured
 * outside the page (load-run.ts reads the processes' RSS), so this file only loads and reports times.
 * Since 2026-11-30 ours includes the decoder fusion (model/fuse-decoder.ts, in the 'inject' phase); the
 * README's load figures were measured before it.
 */
import * as ortWebgpu from 'onnxruntime-web/webgpu';
import { type LoadedModel, loadModel } from '../src/engine/load.ts';
import type { Ort } from '../src/engine/session.ts';
import type { LoadPhases } from '../src/engine/types.ts';
import type { BenchBackend, BenchDtype } from './types.ts';

export interface LoadOnceOptions {
  /**
   * 'ours-reencode': ours with the injected graph re-encoded with its weights (LoadSettings.fileWeights
   * false); 'ours-shaped': ours with every LoRA input's shape declared (LoadSettings.plannerShapes false,
   * the load before model/planner-shapes.ts); 'ours-q4': ours with `wasmDequantize: 'never'` (4-bit
   * weights on wasm; the same as ours on webgpu).
   */
  lib: 'ours' | 'ours-reencode' | 'ours-shaped' | 'ours-q4' | 'transformers';
  backend: BenchBackend;
  dtype: BenchDtype;
  /** Folder name under /models/. */
  model: string;
}

export interface LoadOnceResult {
  loadMs: number;
  /** Ours only: LoadReport.phases. */
  phases: LoadPhases | null;
  /** Ours only: every file came from Cache Storage. */
  fromCache: boolean | null;
  backend: string;
}

let keep: { dispose(): Promise<unknown> } | null = null;

/** Loads once and keeps the model alive until `unload` (so the driver can read memory with it loaded). */
export async function loadOnce(o: LoadOnceOptions): Promise<LoadOnceResult> {
  if (o.lib !== 'transformers') {
    // The engine's load (LocalEngine.loadModel calls exactly this), with the option it does not expose.
    const ort = ortWebgpu as unknown as Ort;
    ort.env.wasm.numThreads = 1;
    ort.env.wasm.wasmPaths = new URL('/ort/', location.href).href;
    let cached = true;
    const t0 = performance.now();
    const m: LoadedModel = await loadModel(
      ort,
      `/models/${o.model}/`,
      {
        dtype: o.dtype,
        backend: o.backend,
        ...(o.lib === 'ours-q4' ? { wasmDequantize: 'never' as const } : {}),
      },
      {
        fileWeights: o.lib !== 'ours-reencode',
        plannerShapes: o.lib !== 'ours-shaped',
        beforeSessions: async () => {},
        onDeviceLost: () => {},
      },
      (p) => {
        if (p.stage === 'download' && p.fromCache === false) cached = false;
      },
    );
    const loadMs = performance.now() - t0;
    keep = { dispose: () => m.release() };
    return { loadMs, phases: m.report.phases, fromCache: cached, backend: m.report.backend };
  }
  const { AutoModelForCausalLM, AutoTokenizer, env } = await import('@huggingface/transformers');
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = '/models/';
  env.useBrowserCache = true;
  env.useWasmCache = false;
  const w = env.backends.onnx.wasm;
  if (w) {
    w.wasmPaths = {
      mjs: new URL('/ort-transformers/ort-wasm-simd-threaded.asyncify.mjs', location.href).href,
      wasm: new URL('/ort-transformers/ort-wasm-simd-threaded.asyncify.wasm', location.href).href,
    };
    w.numThreads = 1;
  }
  const t0 = performance.now();
  await AutoTokenizer.from_pretrained(o.model);
  const model = await AutoModelForCausalLM.from_pretrained(o.model, { dtype: o.dtype, device: o.backend });
  const loadMs = performance.now() - t0;
  keep = model;
  return { loadMs, phases: null, fromCache: null, backend: o.backend };
}

export async function unload(): Promise<void> {
  await keep?.dispose();
  keep = null;
}
