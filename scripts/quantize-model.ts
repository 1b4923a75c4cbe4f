/**
 * Offline 4-bit quantization of an fp32 ONNX decoder: the same `quantize()` pass the browser can run,
 * as a Node command that writes the q4 file next to the fp32 one (e.g. onnx/model_q4.onnx).
 *   npm run quantize -- <in.onnx> <out.onnx> [--no-lm-head] [--embedding q4|fp32] [--zero-points] [--block-size 32] [--external-data]
 * Defaults: block 32, symmetric, lm_head 4-bit, a tied embedding read from the lm_head's 4-bit blocks
 * (src/model/quantize.ts). `--include-lm-head` is accepted for old scripts (it is the default now).
 * (= npx tsx scripts/quantize-model.ts ...; Node 20 has no --experimental-strip-types.)
 * It prints the per-node report and the sizes; it does not validate the output numerically
 * (tests/unit/model/quantize.test.ts does).
 * External data: an input whose weights live in `<file>_data` chunks (onnxruntime-genai builder packages:
 * model.onnx + model.onnx_data) is read with its chunks, found next to it under the names the graph gives
 * (src/model/external-data.ts). The output then keeps the weights in `<out>_data` too (basename + "_data",
 * e.g. model_q4.onnx_data); `--external-data` asks for that for an inline input as well.
 */
import { closeSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { inlineExternalData, moveToExternalData } from '../src/model/external-data.ts';
import { decodeModel, encodeModel, externalDataLocations } from '../src/model/onnx-io.ts';
import { quantize } from '../src/model/quantize.ts';

const args = process.argv.slice(2);
const valued = new Set(['--block-size', '--embedding']);
const positional = args.filter((a, i) => !a.startsWith('--') && !valued.has(args[i - 1] ?? ''));
const [input, output] = positional;
if (!input || !output) {
  console.error(
    'usage: tsx scripts/quantize-model.ts <in.onnx> <out.onnx> [--no-lm-head] [--embedding q4|fp32] [--zero-points] [--block-size N] [--external-data]',
  );
  process.exit(2);
}
const bs = args.indexOf('--block-size');
const blockSize = bs >= 0 ? Number(args[bs + 1]) : 32;
const em = args.indexOf('--embedding');
const embedding = em >= 0 ? args[em + 1] : 'q4';
if (embedding !== 'q4' && embedding !== 'fp32') {
  console.error(`--embedding must be q4 or fp32 (got ${embedding})`);
  process.exit(2);
}

const t0 = performance.now();
const bytes = new Uint8Array(readFileSync(input));
const decoded = decodeModel(bytes);
const locations = externalDataLocations(decoded);
const chunks = new Map(locations.map((l) => [l, new Uint8Array(readFileSync(join(dirname(input), l)))]));
const inBytes = bytes.byteLength + [...chunks.values()].reduce((n, c) => n + c.byteLength, 0);
const { model, report } = quantize(locations.length ? inlineExternalData(decoded, chunks) : decoded, {
  blockSize,
  includeLmHead: !args.includes('--no-lm-head'),
  embedding,
  zeroPoints: args.includes('--zero-points'),
});
const external = locations.length > 0 || args.includes('--external-data');
const dataName = `${basename(output)}_data`;
const ext = external ? moveToExternalData(model, dataName) : null;
const out = encodeModel(ext?.model ?? model);
writeFileSync(output, out);
if (ext) {
  const fd = openSync(join(dirname(output), dataName), 'w');
  for (const p of ext.parts) writeSync(fd, p);
  closeSync(fd);
}
const outBytes = out.byteLength + (ext?.bytes ?? 0);

const mb = (n: number) => `${(n / 1e6).toFixed(2)} MB`;
for (const e of report.quantized) {
  console.log(
    `  q4  ${e.node.padEnd(48)} K=${String(e.K).padStart(5)} N=${String(e.N).padStart(5)}  ` +
      `max|err| ${e.maxAbsError.toExponential(2)}${e.padded ? '  (K padded)' : ''}`,
  );
}
for (const s of report.skipped) console.log(`  skip ${s.node}: ${s.reason}`);
const worst = Math.max(0, ...report.quantized.map((e) => e.maxAbsError));
console.log(
  `quantized ${report.quantized.length} MatMul(s), skipped ${report.skipped.length}; block ${blockSize}; ` +
    `worst max|err| ${worst.toExponential(2)}`,
);
if (report.tiedEmbedding) {
  console.log(
    `  tied embedding: ${report.tiedEmbedding.gather} reads the lm_head's 4-bit blocks; ` +
      `fp32 table ${report.tiedEmbedding.table} dropped`,
  );
}
console.log(`weights ${mb(report.bytesBefore)} -> ${mb(report.bytesAfter)}`);
if (locations.length) console.log(`read external data: ${locations.join(', ')}`);
if (ext) console.log(`wrote external data: ${dataName} (${ext.tensors} tensors, ${mb(ext.bytes)})`);
console.log(
  `${input} ${mb(inBytes)} -> ${output} ${mb(outBytes)} ` +
    `(${((100 * outBytes) / inBytes).toFixed(1)}%) in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
);
