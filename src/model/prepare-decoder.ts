/**
 * The graph a backend's decoder sessions are built from, up to (not including) the LoRA injection: the
 * passes engine/load.ts applies at load, in its order — on wasm the 4-bit MatMulNBits dequantized within
 * the budget (dequantize.ts `wasmGraphOf`), then the decoder fusion with the backend's options
 * (fuse-decoder.ts `fuseOptionsFor`), then the greedy head (greedy-head.ts). One function so that the
 * engine and the bench (bench/ours.ts loops (a)–(f), the Node scripts' `--fuse`) cannot drift apart.
 * It does not inline external data (the caller hands it a graph whose weights are readable on wasm) and
 * does not inject: injectLora with `loraInjectOptionsFor` stays with the caller.
 */
import { type DequantizedAtLoad, type WasmDequantize, wasmGraphOf } from './dequantize.ts';
import { type FuseReport, type FuseShape, fuseDecoder, fuseOptionsFor } from './fuse-decoder.ts';
import { withGreedyHead } from './greedy-head.ts';
import type { ModelProto } from './onnx-io.ts';

export interface PrepareDecoderOptions {
  /** LoadOptions.wasmDequantize (wasm only); default 'auto'. */
  wasmDequantize?: WasmDequantize;
  /** LoadSettings.fuse: false keeps the file's spelled-out RMSNorm, rotary and repeat_kv. Default true. */
  fuse?: boolean;
  /** Add the greedy head (the engine always does; bench loops (a)–(d) and (f) measure without). Default true. */
  greedyHead?: boolean;
}

export interface PreparedDecoder {
  model: ModelProto;
  /** What wasmGraphOf dequantized (wasm), else null. */
  dequantized: DequantizedAtLoad | null;
  /** The fusion's counts, or null when `fuse` was false. */
  fused: FuseReport | null;
}

/** `model` prepared for `backend` as the engine loads it (see the file header). */
export function prepareDecoderGraph(
  model: ModelProto,
  shape: FuseShape,
  backend: 'webgpu' | 'wasm',
  opts: PrepareDecoderOptions = {},
): PreparedDecoder {
  const p = backend === 'wasm' ? wasmGraphOf(model, opts.wasmDequantize) : { model, dequantized: null };
  let out = p.model;
  let fused: FuseReport | null = null;
  if (opts.fuse !== false) {
    const f = fuseDecoder(out, shape, fuseOptionsFor(backend));
    out = f.model;
    fused = f.report;
  }
  if (opts.greedyHead !== false) out = withGreedyHead(out).model;
  return { model: out, dequantized: p.dequantized, fused };
}
