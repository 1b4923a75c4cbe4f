/**
 * `npx tsx bench/wasm-heap.ts <package folder> [--dequantize auto|always|never|<MiB>] [--dtype q4]` — the
 * engine's model load (engine/load.ts loadModel, wasm, no base session) in Node on onnxruntime-web's wasm
 * build, and what it costs in the wasm heap: the heap's size after the load and a short greedy decode
 * (a wasm heap never shrinks, so this is its peak; Emscripten grows it in steps of up to ~96 MiB, so
 * read it to that grain), LoadReport.sessionBytes and dequantizedAtLoad, load ms and decode ms/token. One
 * setting per process, so each starts from a fresh heap. The heap is wasm32: at most 4 GiB. Not a test.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-web';
import { loadModel } from '../src/engine/load.ts';
import { argmax } from '../src/engine/sampling.ts';
import { KvStepper, type Ort } from '../src/engine/session.ts';
import type { WasmDequantize } from '../src/model/dequantize.ts';
import { modelFileName } from '../src/model/package.ts';
import { median } from './stats.ts';

const { values: args, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    dequantize: { type: 'string', default: 'auto' },
    dtype: { type: 'string', default: 'q4' },
    tokens: { type: 'string', default: '8' },
  },
});
const dir = positionals[0];
if (!dir) {
  console.error('usage: npx tsx bench/wasm-heap.ts <package folder> [--dequantize auto|always|never|<MiB>]');
  process.exit(2);
}

// Every WebAssembly.Memory onnxruntime-web creates (its threaded build makes the heap in JS).
const memories: WebAssembly.Memory[] = [];
const RealMemory = WebAssembly.Memory;
WebAssembly.Memory = new Proxy(RealMemory, {
  construct(target, argv: [WebAssembly.MemoryDescriptor]) {
    const m = new target(...argv);
    memories.push(m);
    return m;
  },
});
const heapBytes = () => Math.max(0, ...memories.map((m) => m.buffer.byteLength));

async function main(): Promise<void> {
  const m = args.dequantize!;
  const mode: WasmDequantize = /^[\d.]+$/.test(m) ? Number(m) * 2 ** 20 : (m as WasmDequantize);
  const dtype = args.dtype as 'q4' | 'fp32';
  const files = [
    'config.json',
    'generation_config.json',
    'tokenizer.json',
    'tokenizer_config.json',
    modelFileName(dtype),
  ].map((p) => new File([readFileSync(join(dir!, p))], p));
  ort.env.wasm.numThreads = 1;
  const t0 = performance.now();
  const model = await loadModel(
    ort as unknown as Ort,
    files,
    { backend: 'wasm', dtype, wasmDequantize: mode },
    { baseGraphForNoAdapter: false, beforeSessions: async () => {}, onDeviceLost: () => {} },
    () => {},
  );
  const loadMs = performance.now() - t0;
  const report = model.report;
  const afterLoad = heapBytes();
  // Greedy decode from a fixed prompt, one token per step.
  const stepper = new KvStepper(ort as unknown as Ort, model.graph, model.noAdapterFeeds);
  const tokens = [argmax(await stepper.step(model.tokenizer.encode('The king said')))];
  const stepMs: number[] = [];
  for (let i = 1; i < Number(args.tokens); i++) {
    const t = performance.now();
    tokens.push(argmax(await stepper.step([tokens.at(-1)!])));
    stepMs.push(performance.now() - t);
  }
  stepper.dispose();
  const mib = (n: number) => (n / 2 ** 20).toFixed(0);
  const dq = report.dequantizedAtLoad;
  console.log(
    JSON.stringify({
      dtype,
      wasmDequantize: m,
      converted: dq ? `${dq.nodes} nodes, ${mib(dq.fp32Bytes)} MiB f32` : 'none',
      kept4bit: dq ? `${dq.kept} nodes (${mib(dq.keptFp32Bytes)} MiB as f32)` : 'none',
      sessionMiB: mib(report.sessionBytes),
      heapAfterLoadMiB: mib(afterLoad),
      heapAfterDecodeMiB: mib(heapBytes()),
      loadMs: Math.round(loadMs),
      msPerStepMedian: +median(stepMs).toFixed(1),
      tokens: tokens.join(),
    }),
  );
  await model.release();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
