/**
 * `npx tsx bench/batch-forms.ts [package folder] [--rows 2,4,8] [--steps 16] [--rounds 2] [--prompt 32]
 * [--rank 8] [--builds 20] [--distinct K] [--fuse]` — issue 13 §1 "choose by measurement": the LoRA feed form of a batch whose rows
 * each have a DIFFERENT adapter, on onnxruntime-web's wasm build in Node (1 thread, like the bench page),
 * on the graph the engine's wasm load builds (model_q4.onnx dequantized at load, wasmGraphOf 'auto') minus
 * the decoder fusion load.ts applies since 2026-11-30, as the README figures were measured (`--fuse` adds it).
 *   concat   the engine's form: injectLora({ rowMask: true }), A (in, ΣRᵢ) / B (ΣRᵢ, out) concatenated by
 *            src/engine/batch-feeds.ts and the row mask (rows, 1, ΣRᵢ) on X·A
 *   per-row  A fed as (rows, in, r), B as (rows, r, out): the injected graph without the mask, its A/B
 *            inputs declared 3-D, so MatMul broadcasts over rows (X_b (1, in) · A_b · B_b per row)
 * Per row count: every row is prefilled alone (its own adapter, `prompt` tokens), then both forms decode
 * `steps` tokens from copies of that KV in lockstep (step i of each back to back, order alternating), fed
 * the same ids (the concat form's greedy picks); `rounds` restarts from the prefilled KV. Prints median
 * ms/step (wall and process CPU), the median of paired per-step ratios per-row / concat, the max |logit
 * difference| between the forms over every row and step, and the feed-build cost of one batch
 * composition (concatenation vs stacking, median of `builds`). `--distinct K`: only K distinct adapters,
 * rows cycling through them (the concat form then has K·R columns, per-row still rows·R). Not a test.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-web';
import { type BatchRowAdapter, batchLoraFeeds } from '../src/engine/batch-feeds.ts';
import { BatchKv } from '../src/engine/batch-kv.ts';
import { argmax } from '../src/engine/sampling.ts';
import {
  type DecoderGraph,
  decoderGraph,
  decoderSessionOptions,
  KvStepper,
  type Ort,
  type OrtTensor,
} from '../src/engine/session.ts';
import { weightsAsExternal } from '../src/model/external-weights.ts';
import { injectLora, type LoraTarget } from '../src/model/inject-lora.ts';
import { decodeModel, encodeModel, graphOf, type ModelProto, outputsOf } from '../src/model/onnx-io.ts';
import { parseModelConfig } from '../src/model/package.ts';
import { prepareDecoderGraph } from '../src/model/prepare-decoder.ts';
import { perRowGraph, randomLoraFeeds } from './random-lora.ts';
import { median } from './stats.ts';

const { values: args, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    rows: { type: 'string', default: '2,4,8' },
    steps: { type: 'string', default: '16' },
    rounds: { type: 'string', default: '2' },
    prompt: { type: 'string', default: '32' },
    rank: { type: 'string', default: '8' },
    builds: { type: 'string', default: '20' },
    /** Distinct adapters, rows cycling through them (0: every row its own). */
    distinct: { type: 'string', default: '0' },
    file: { type: 'string', default: 'model_q4.onnx' },
    fuse: { type: 'boolean', default: false },
  },
});
const dir = positionals[0] ?? 'public/models/weblora-shakespeare';
const rank = Number(args.rank);
const steps = Number(args.steps);
const rounds = Number(args.rounds);
const promptLen = Number(args.prompt);
ort.env.wasm.numThreads = 1;
const ortApi = ort as unknown as Ort;
const config = parseModelConfig(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')));
const fileBytes = new Uint8Array(readFileSync(join(dir, 'onnx', args.file!)));
// The engine's wasm load without the decoder fusion (the README figures' graph); --fuse: with it, as
// load.ts since 2026-11-30 (src/model/prepare-decoder.ts; no greedy head here either way).
const prepared = prepareDecoderGraph(decodeModel(fileBytes), config, 'wasm', {
  fuse: args.fuse === true,
  greedyHead: false,
}).model;

/**
 * The per-row form's feeds: each target's rows' A stacked to (rows, in, R), B to (rows, R, out). A row
 * with no adapter would need zeros (and ranks would be padded to the largest); here every row has one.
 */
async function stackedFeeds(
  rows: readonly Record<string, OrtTensor>[],
  targets: readonly LoraTarget[],
): Promise<Record<string, OrtTensor>> {
  const feeds: Record<string, OrtTensor> = {};
  const n = rows.length;
  for (const t of targets) {
    const A = new Float32Array(n * t.in * rank); // (rows, in, R)
    const B = new Float32Array(n * rank * t.out); // (rows, R, out)
    for (let b = 0; b < n; b++) {
      A.set((await rows[b]![t.inputA]!.getData()) as Float32Array, b * t.in * rank);
      B.set((await rows[b]![t.inputB]!.getData()) as Float32Array, b * rank * t.out);
    }
    feeds[t.inputA] = new ort.Tensor('float32', A, [n, t.in, rank]);
    feeds[t.inputB] = new ort.Tensor('float32', B, [n, rank, t.out]);
  }
  return feeds;
}

async function session(model: ModelProto): Promise<DecoderGraph> {
  const slim = weightsAsExternal(model, fileBytes);
  const present = outputsOf(graphOf(model))
    .map((o) => o.name)
    .filter((n) => n.startsWith('present.'));
  const options = { ...decoderSessionOptions('wasm', present), externalData: slim.externalData };
  return decoderGraph(await ort.InferenceSession.create(encodeModel(slim.model), options), config);
}

interface KvData {
  data: Float32Array[];
  dims: (readonly number[])[];
  length: number;
}

/** A fresh RowKv (new tensors) from downloaded KV data. */
function rowKv(kv: KvData): { tensors: OrtTensor[]; length: number } {
  return {
    tensors: kv.data.map((d, i) => new ort.Tensor('float32', d.slice(), kv.dims[i]!)),
    length: kv.length,
  };
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let k = 0; k < a.length; k++) m = Math.max(m, Math.abs(a[k]! - b[k]!));
  return m;
}

async function main(): Promise<void> {
  const concat = injectLora(prepared, { branchOp: 'matmul', rowMask: true });
  const plain = injectLora(prepared, { branchOp: 'matmul' });
  const targets = concat.targets;
  const concatGraph = await session(concat.model);
  const perRow = await session(perRowGraph(plain.model, plain.targets));
  const rowCounts = args.rows!.split(',').map(Number);
  const maxRows = Math.max(...rowCounts);
  const distinct = Number(args.distinct) || maxRows;
  const pool = Array.from({ length: Math.min(distinct, maxRows) }, (_, k) =>
    randomLoraFeeds(ortApi, targets, rank, 1 + k * 1000),
  );
  // Row b's adapter: pool[b % distinct] (keyed so batch-feeds.ts concatenates each distinct one once).
  const adapters = Array.from({ length: maxRows }, (_, b) => pool[b % pool.length]!);
  console.log(
    `onnxruntime-web ${ort.env.versions.web} wasm, 1 thread, ${dir}/onnx/${args.file} dequantized at load, ${args.fuse ? 'decoder fusion on' : 'unfused'}; ` +
      `${targets.length} targets, rank-${rank} adapters (${distinct >= maxRows ? 'a different one per row' : `${distinct} distinct, rows cycling`}), ${promptLen}-token prompts, ` +
      `${rounds} × ${steps} decode steps per form`,
  );
  // Prefill each row alone under its own adapter (mask defaults to 1): the KV both forms start from.
  const prefilled: KvData[] = [];
  const firstIds: number[] = [];
  for (let b = 0; b < maxRows; b++) {
    const prompt = Array.from({ length: promptLen }, (_, i) => (i * 7919 + 13 + b * 101) % config.vocabSize);
    const stepper = new KvStepper(ortApi, concatGraph, adapters[b]!);
    firstIds.push(argmax(await stepper.step(prompt)));
    const kv = stepper.takeKv();
    prefilled.push({
      data: await Promise.all(kv.tensors.map(async (t) => ((await t.getData()) as Float32Array).slice())),
      dims: kv.tensors.map((t) => [...t.dims]),
      length: kv.length,
    });
    for (const t of kv.tensors) t.dispose();
  }
  const stepRows: string[] = [];
  const buildRows: string[] = [];
  for (const n of rowCounts) {
    const rowAdapters: BatchRowAdapter[] = adapters.slice(0, n).map((feeds, b) => ({
      key: `a${b % pool.length}`,
      feeds: { feeds, release: () => {} },
    }));
    // Feed-build cost of one batch composition: concatenation (the engine's) vs stacking.
    const tConcat: number[] = [];
    const tStack: number[] = [];
    for (let i = 0; i < Number(args.builds); i++) {
      for (const which of i % 2 ? ['stack', 'concat'] : ['concat', 'stack']) {
        const t0 = performance.now();
        if (which === 'concat') {
          const f = await batchLoraFeeds(ortApi, rowAdapters, targets, { noAdapter: {} });
          tConcat.push(performance.now() - t0);
          f.dispose();
        } else {
          await stackedFeeds(adapters.slice(0, n), targets);
          tStack.push(performance.now() - t0);
        }
      }
    }
    const feedsA = (await batchLoraFeeds(ortApi, rowAdapters, targets, { noAdapter: {} })).feeds;
    const feedsB = await stackedFeeds(adapters.slice(0, n), targets);
    const wall = { a: [] as number[], b: [] as number[] };
    const cpu = { a: [] as number[], b: [] as number[] };
    let diff = 0;
    let tokenMismatch = 0;
    // Sanity: the per-row form with the rows' adapters rotated by one must differ (the adapters matter).
    let rotated = 0;
    {
      const feedsR = await stackedFeeds([...adapters.slice(1, n), adapters[0]!], targets);
      const kvA = new BatchKv(ortApi, concatGraph);
      const kvR = new BatchKv(ortApi, perRow);
      for (let b = 0; b < n; b++) {
        await kvA.join(rowKv(prefilled[b]!));
        await kvR.join(rowKv(prefilled[b]!));
      }
      const la = await kvA.step(firstIds.slice(0, n), feedsA, concatGraph);
      const lr = await kvR.step(firstIds.slice(0, n), feedsR, perRow);
      la.forEach((l, b) => {
        rotated = Math.max(rotated, maxAbsDiff(l, lr[b]!));
      });
      kvA.dispose();
      kvR.dispose();
    }
    for (let round = 0; round < rounds; round++) {
      const kvA = new BatchKv(ortApi, concatGraph);
      const kvB = new BatchKv(ortApi, perRow);
      for (let b = 0; b < n; b++) {
        await kvA.join(rowKv(prefilled[b]!));
        await kvB.join(rowKv(prefilled[b]!));
      }
      let ids = firstIds.slice(0, n);
      for (let s = 0; s < steps; s++) {
        const out: Record<'a' | 'b', Float32Array[]> = { a: [], b: [] };
        for (const which of (s + round) % 2 ? (['b', 'a'] as const) : (['a', 'b'] as const)) {
          const c0 = process.cpuUsage();
          const t0 = performance.now();
          out[which] =
            which === 'a' ? await kvA.step(ids, feedsA, concatGraph) : await kvB.step(ids, feedsB, perRow);
          wall[which].push(performance.now() - t0);
          const c = process.cpuUsage(c0);
          cpu[which].push((c.user + c.system) / 1000);
        }
        out.a.forEach((la, b) => {
          diff = Math.max(diff, maxAbsDiff(la, out.b[b]!));
          if (argmax(la) !== argmax(out.b[b]!)) tokenMismatch++;
        });
        ids = out.a.map((l) => argmax(l));
      }
      kvA.dispose();
      kvB.dispose();
    }
    const ratio = median(wall.b.map((ms, i) => ms / wall.a[i]!));
    const cpuRatio = median(cpu.b.map((ms, i) => ms / cpu.a[i]!));
    const ms = (xs: number[]) => median(xs).toFixed(2);
    stepRows.push(
      `| ${n} | ${ms(wall.a)} | ${ms(wall.b)} | ${ratio.toFixed(3)} | ${ms(cpu.a)} | ${ms(cpu.b)} | ${cpuRatio.toFixed(3)} | ${diff.toExponential(1)} | ${rotated.toFixed(2)} | ${tokenMismatch} / ${n * steps * rounds} |`,
    );
    buildRows.push(
      `| ${n} | ${Math.min(n, pool.length) * rank} | ${ms(tConcat)} | ${ms(tStack)} | ${median(tStack.map((t, i) => t / tConcat[i]!)).toFixed(2)} |`,
    );
  }
  console.log(
    '\n| rows | concat+mask wall ms/step | per-row wall ms/step | per-row / concat, median of paired steps | concat CPU ms/step | per-row CPU ms/step | CPU ratio | max abs logit diff | same, adapters rotated across rows (sanity) | argmax differences |',
  );
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  for (const r of stepRows) console.log(r);
  console.log(
    '\n| rows | ΣR (concat) | concatenate + mask, ms | stack (rows, in, R), ms | stack / concat, median of pairs |',
  );
  console.log('|---|---|---|---|---|');
  for (const r of buildRows) console.log(r);
  await concatGraph.session.release();
  await perRow.session.release();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
