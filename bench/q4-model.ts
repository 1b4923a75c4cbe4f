/**
 * `npx tsx bench/q4-model.ts <package folder>` — whole-model decode on onnxruntime-web's wasm build in Node
 * (the wasm the browser runs, single-threaded like the bench page), several files or graph variants of ONE
 * package stepped in lockstep (step i of each back to back, order rotating) so a busy machine's load hits
 * them alike. Variants: the fp32 file, the q4 file as shipped (MatMulNBits), and the q4 file as the engine
 * runs it on wasm (model/dequantize.ts: fp32 MatMuls dequantized at load). Prints the median ms per decode
 * step, the ratio to fp32 (median of paired steps) and session-creation time. Not a test.
 *   npx tsx bench/q4-model.ts ~/.cache/weblora/smollm2-135m-replica [--steps 16] [--prompt 16] [--files a,b]
 * `--dequantize auto,128,…`: one dequantized variant per LoadOptions.wasmDequantize setting (a number is a
 * budget in MiB; default auto), to weigh decode speed against the fp32 bytes each keeps.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-web';
import { argmax } from '../src/engine/sampling.ts';
import { createDecoderSession, type DecoderGraph, KvStepper } from '../src/engine/session.ts';
import { type WasmDequantize, wasmGraphOf } from '../src/model/dequantize.ts';
import { decodeModel, encodeModel } from '../src/model/onnx-io.ts';
import { parseModelConfig } from '../src/model/package.ts';
import { median } from './stats.ts';

const { values: args, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    steps: { type: 'string', default: '16' },
    prompt: { type: 'string', default: '16' },
    files: { type: 'string', default: 'model.onnx,model_q4.onnx' },
    'no-dequantized': { type: 'boolean', default: false },
    dequantize: { type: 'string', default: 'auto' },
  },
});
const dir = positionals[0];
if (!dir) {
  console.error(
    'usage: npx tsx bench/q4-model.ts <package folder> [--steps N] [--prompt N] [--files a.onnx,b.onnx]',
  );
  process.exit(2);
}
ort.env.wasm.numThreads = 1;
const config = parseModelConfig(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')));

interface Variant {
  name: string;
  graph: DecoderGraph;
  stepMs: number[];
  prefillMs: number[];
  tokens: number[];
  createMs: number;
}

async function variant(name: string, bytes: Uint8Array): Promise<Variant> {
  const t0 = performance.now();
  const graph = await createDecoderSession(ort, bytes, config, { backend: 'wasm' });
  return { name, graph, stepMs: [], prefillMs: [], tokens: [], createMs: performance.now() - t0 };
}

async function main(): Promise<void> {
  const variants: Variant[] = [];
  for (const f of args.files!.split(',')) {
    const path = join(dir!, 'onnx', f);
    if (!existsSync(path)) continue;
    const bytes = new Uint8Array(readFileSync(path));
    const mb = (bytes.byteLength / 1e6).toFixed(0);
    variants.push(await variant(`${f} (${mb} MB) as is`, bytes));
    for (const m of args['no-dequantized'] ? [] : args.dequantize!.split(',')) {
      const mode: WasmDequantize = /^[\d.]+$/.test(m) ? Number(m) * 2 ** 20 : (m as WasmDequantize);
      const t0 = performance.now();
      const p = wasmGraphOf(decodeModel(bytes), mode);
      if (p.dequantized?.nodes) {
        const enc = encodeModel(p.model);
        const ms = performance.now() - t0;
        const d = p.dequantized;
        const mib = (n: number) => (n / 2 ** 20).toFixed(0);
        const name = `${f} dequantized at load, ${m}: ${d.nodes} nodes (${mib(d.fp32Bytes)} MiB f32), ${d.kept} kept 4-bit`;
        const v = await variant(name, enc);
        v.createMs += ms;
        variants.push(v);
      }
    }
  }
  const steps = Number(args.steps);
  const prompt = Array.from({ length: Number(args.prompt) }, (_, i) => (i * 7919 + 13) % config.vocabSize);
  // Prefill (the prompt's forward) three times per variant in rotation, then the decode run from the last.
  let steppers: KvStepper[] = [];
  for (let r = 0; r < 3; r++) {
    steppers = variants.map((v) => new KvStepper(ort, v.graph, {}));
    for (let j = 0; j < variants.length; j++) {
      const i = (j + r) % variants.length;
      const t0 = performance.now();
      const tok = argmax(await steppers[i]!.step(prompt));
      variants[i]!.prefillMs.push(performance.now() - t0);
      if (r === 2) variants[i]!.tokens.push(tok);
    }
  }
  for (let s = 0; s < steps; s++) {
    for (let j = 0; j < variants.length; j++) {
      const i = (j + s) % variants.length;
      const v = variants[i]!;
      const t0 = performance.now();
      const next = argmax(await steppers[i]!.step([v.tokens.at(-1)!]));
      v.stepMs.push(performance.now() - t0);
      v.tokens.push(next);
    }
  }
  const ref = variants[0]!;
  console.log(
    `onnxruntime-web ${ort.env.versions.web} wasm, 1 thread, ${dir}; ${prompt.length}-token prompt, ${steps} decode steps`,
  );
  console.log(
    '| variant | session create ms | prefill ms (median of 3) | ms/step (median) | tok/s | step ratio vs first (median of pairs) | tokens = first |',
  );
  console.log('|---|---|---|---|---|---|---|');
  for (const v of variants) {
    const ratio = median(v.stepMs.map((ms, i) => ms / ref.stepMs[i]!));
    console.log(
      `| ${v.name} | ${v.createMs.toFixed(0)} | ${median(v.prefillMs).toFixed(0)} | ${median(v.stepMs).toFixed(1)} | ${(1000 / median(v.stepMs)).toFixed(2)} | ${ratio.toFixed(2)} | ${v.tokens.join() === ref.tokens.join()} |`,
    );
  }
  for (const v of variants) await v.graph.session.release();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
