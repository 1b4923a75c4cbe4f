/**
 * `npx tsx bench/dequantize-profile.ts [model.onnx] [--reps 5]` — what the wasm load pass costs in Node,
 * phase by phase, on a 4-bit file (default: the 135M replica's model_q4.onnx): decodeModel, wasmGraphOf
 * (dequantize.ts: unpack every MatMulNBits weight to fp32 and rebuild the graph), injectLora (as the
 * engine's wasm load does), weightsAsExternal + encodeModel (the graph bytes handed to onnxruntime-web).
 * Prints per-phase medians (min–max) over the repetitions and the unpack throughput. Not a test.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { wasmGraphOf } from '../src/model/dequantize.ts';
import { weightsAsExternal } from '../src/model/external-weights.ts';
import { injectLora, loraBranchOpFor } from '../src/model/inject-lora.ts';
import { decodeModel, encodeModel } from '../src/model/onnx-io.ts';
import { median } from './stats.ts';

const { values: args, positionals } = parseArgs({
  allowPositionals: true,
  options: { reps: { type: 'string', default: '5' } },
});
const file = positionals[0] ?? join(homedir(), '.cache/weblora/smollm2-135m-replica/onnx/model_q4.onnx');
const reps = Number(args.reps);
const bytes = new Uint8Array(readFileSync(file));
const times: Record<string, number[]> = { decode: [], dequantize: [], inject: [], encode: [] };
let fp32Bytes = 0;
let nodes = 0;
for (let r = 0; r < reps; r++) {
  let t = performance.now();
  const lap = (k: string) => {
    const now = performance.now();
    times[k]!.push(now - t);
    t = now;
  };
  const decoded = decodeModel(bytes);
  lap('decode');
  const { model, dequantized } = wasmGraphOf(decoded, 'auto');
  lap('dequantize');
  const injected = injectLora(model, { branchOp: loraBranchOpFor('wasm'), rowMask: true });
  lap('inject');
  const slim = weightsAsExternal(injected.model, bytes);
  const graphBytes = encodeModel(slim.model);
  lap('encode');
  fp32Bytes = dequantized?.fp32Bytes ?? 0;
  nodes = dequantized?.nodes ?? 0;
  if (r === 0)
    console.log(
      `${file}: ${(bytes.byteLength / 2 ** 20).toFixed(1)} MiB; ${nodes} MatMulNBits -> ${(fp32Bytes / 2 ** 20).toFixed(0)} MiB fp32; graph ${(graphBytes.byteLength / 2 ** 10).toFixed(0)} KiB + ${slim.externalData.length} external buffers`,
    );
}
const fmt = (xs: number[]) =>
  `${median(xs).toFixed(0)} ms (${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)})`;
for (const [k, xs] of Object.entries(times)) console.log(`${k.padEnd(11)} ${fmt(xs)}`);
console.log(
  `dequantize throughput: ${(fp32Bytes / 2 ** 20 / (median(times.dequantize!) / 1000)).toFixed(0)} MiB/s of fp32`,
);
