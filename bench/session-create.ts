/**
 * `npx tsx bench/session-create.ts [never|auto] [raw|inject] [all|basic|extended|disabled] [model.onnx]` —
 * CPU and wall ms of one onnxruntime-web (Node, wasm, 1 thread) InferenceSession.create for the 135M
 * replica's q4 graph (default path) as the engine's wasm load hands it over: dequantized at load or not
 * (wasmGraphOf 'auto' | 'never'), LoRA-injected (injectLora with the row mask, as load.ts) or the file's
 * own graph, weights as external data (weightsAsExternal), the engine's session options. A small session
 * is created first so the wasm module's compilation is not counted. One variant per process, so each
 * starts from a fresh heap. Says which part of the load's "session" phase each graph pass costs. Not a test.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-web';
import { decoderSessionOptions } from '../src/engine/session.ts';
import { wasmGraphOf } from '../src/model/dequantize.ts';
import { weightsAsExternal } from '../src/model/external-weights.ts';
import { injectLora, loraBranchOpFor } from '../src/model/inject-lora.ts';
import { decodeModel, encodeModel, graphOf, outputsOf } from '../src/model/onnx-io.ts';

const [deq = 'auto', graph = 'inject', level = 'all', file] = process.argv.slice(2);
ort.env.wasm.numThreads = 1;
const warm = await ort.InferenceSession.create(
  new Uint8Array(readFileSync('public/models/weblora-shakespeare/onnx/model_q4.onnx')),
);
await warm.release();
const path = file ?? join(homedir(), '.cache/weblora/smollm2-135m-replica/onnx/model_q4.onnx');
const bytes = new Uint8Array(readFileSync(path));
let model = decodeModel(bytes);
if (deq === 'auto') model = wasmGraphOf(model, 'auto').model;
if (graph === 'inject') model = injectLora(model, { branchOp: loraBranchOpFor('wasm'), rowMask: true }).model;
const slim = weightsAsExternal(model, bytes);
const g = encodeModel(slim.model);
const present = outputsOf(graphOf(model))
  .map((o) => o.name)
  .filter((n) => n.startsWith('present.'));
const options = decoderSessionOptions('wasm', present);
options.externalData = slim.externalData;
if (level !== 'all') options.graphOptimizationLevel = level as 'basic' | 'extended' | 'disabled';
const cpu0 = process.cpuUsage();
const t0 = performance.now();
const session = await ort.InferenceSession.create(g, options);
const cpu = process.cpuUsage(cpu0);
console.log(
  `${deq} ${graph} ${level}: session create ${(performance.now() - t0).toFixed(0)} ms wall, ` +
    `${((cpu.user + cpu.system) / 1000).toFixed(0)} ms CPU`,
);
await session.release();
