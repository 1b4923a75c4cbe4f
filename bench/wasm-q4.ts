/**
 * The wasm 4-bit suite (`npm run bench -- --suite wasm-q4`, runs in the bench page): one package's fp32
 * file, its q4 file as shipped (MatMulNBits, which onnxruntime-web's wasm build dequantizes on every run)
 * and the q4 file as the engine runs it on wasm (model/dequantize.ts: fp32 MatMuls dequantized at load),
 * timed by the bench loop (decode-loop.ts) in lockstep, so the q4-vs-fp32 ratios are medians of paired
 * steps. Issue 12's row "decode, wasm: q4 vs fp32". Not injected with LoRA: the weights' format is the
 * only difference between the three.
 */
import * as ortWebgpu from 'onnxruntime-web/webgpu';
import type { DecoderGraph, Ort } from '../src/engine/session.ts';
import { TextTokenizer } from '../src/engine/tokenizer.ts';
import { wasmGraphOf } from '../src/model/dequantize.ts';
import { decodeModel, encodeModel } from '../src/model/onnx-io.ts';
import { fetchModelPackage } from '../src/model/package.ts';
import { createBenchSession, emptySeries, lockstepGreedy, record } from './decode-loop.ts';
import { promptIdsOf } from './ours.ts';
import type { LoopSeries, WasmQ4Options, WasmQ4Result } from './types.ts';

export async function runWasmQ4(opts: WasmQ4Options, log: (msg: string) => void): Promise<WasmQ4Result> {
  const ort = ortWebgpu as unknown as Ort;
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = new URL('/ort/', location.href).href; // as the engine sets it
  const base = opts.model.base;
  log(`wasm-q4: fetching ${base} fp32 and q4`);
  const fp = await fetchModelPackage(base, { dtype: 'fp32' });
  const q4 = await fetchModelPackage(base, { dtype: 'q4' });
  const tok = TextTokenizer.fromJSON(fp.tokenizerJson, fp.tokenizerConfig, fp.config.eosTokenIds[0]);
  const promptIds = promptIdsOf((t) => tok.encode(t), opts.promptTokens);
  const t0 = performance.now();
  const prepared = wasmGraphOf(decodeModel(q4.model));
  const dequantizedBytes = encodeModel(prepared.model);
  const dequantizeMs = performance.now() - t0;
  const files = [
    { name: 'fp32 file', bytes: fp.model },
    { name: 'q4 file, MatMulNBits', bytes: q4.model },
    { name: 'q4 file, dequantized at load (engine on wasm)', bytes: dequantizedBytes },
  ];
  const configs: {
    name: string;
    s: DecoderGraph;
    feeds: Record<string, never>;
    series: LoopSeries;
    fileBytes: number;
    createMs: number;
  }[] = [];
  try {
    for (const f of files) {
      log(`wasm-q4: session ${f.name}`);
      const t = performance.now();
      const s = await createBenchSession(ort, f.bytes, 'wasm', fp.config);
      configs.push({
        name: f.name,
        s,
        feeds: {},
        series: emptySeries(),
        fileBytes: f.bytes.byteLength,
        createMs: performance.now() - t,
      });
    }
    await lockstepGreedy(ort, configs, promptIds, 2); // warm-up
    for (let rep = 0; rep < opts.reps; rep++) {
      const runs = await lockstepGreedy(ort, configs, promptIds, opts.decodeTokens);
      configs.forEach((c, i) => {
        record(c.series, runs[i]!, promptIds.length);
      });
      log(
        `wasm-q4: rep ${rep + 1}/${opts.reps} decode tok/s ${configs.map((c) => c.series.decodeTps.at(-1)!.toFixed(2)).join(' / ')}`,
      );
    }
  } finally {
    for (const c of configs) await c.s.session.release();
  }
  return {
    suite: 'wasm-q4',
    options: opts,
    promptTokens: promptIds.length,
    q4Bytes: q4.model.byteLength,
    dequantized: prepared.dequantized,
    dequantizeMs,
    configs: configs.map((c) => ({
      name: c.name,
      fileBytes: c.fileBytes,
      createMs: c.createMs,
      series: c.series,
    })),
  };
}
