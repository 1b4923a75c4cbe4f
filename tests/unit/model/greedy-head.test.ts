// The greedy head pass (src/model/greedy-head.ts) on onnxruntime-web's Node/wasm build: the default model's
// sliced logits equal the full graph's last rows, ArgMax equals sampling.ts's argmax (first index on ties)
// on crafted ties, every head shape the walk accepts is sliced, others only get the ArgMax output.
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-web';
import { beforeAll, describe, expect, it } from 'vitest';
import { argmax } from '../../../src/engine/sampling.ts';
import { createDecoderSession, greedy, halfToFloat, KvStepper } from '../../../src/engine/session.ts';
import { ARGMAX_OUTPUT, NUM_LOGITS_TO_KEEP, withGreedyHead } from '../../../src/model/greedy-head.ts';
import {
  DataType,
  decodeModel,
  encodeModel,
  graphOf,
  type ModelProto,
  nodesOf,
  onnx,
} from '../../../src/model/onnx-io.ts';
import { expectClose, SAME_GRAPH } from '../../helpers/expect-close.ts';
import {
  loadReplicaSet,
  oracleGreedy,
  oracleLogits,
  promptLogits,
  REPLICAS,
  type ReplicaSet,
} from '../../helpers/replicas.ts';
import { defaultModelFeeds, f32, loadDefaultBytes, randn, tinyModel } from './graph-builders.ts';

ort.env.wasm.numThreads = 1;

async function run(model: ModelProto, feeds: Record<string, ort.Tensor>) {
  const s = await ort.InferenceSession.create(encodeModel(model), { executionProviders: ['wasm'] });
  try {
    return await s.run(feeds);
  } finally {
    await s.release();
  }
}

const keep = (k: number) => new ort.Tensor('int64', BigInt64Array.of(BigInt(k)), []);

/** Row r of a (1, T, V) logits tensor as float32. */
function row(t: ort.Tensor, r: number): Float32Array {
  const V = t.dims[2]!;
  return (t.data as Float32Array).slice(r * V, (r + 1) * V);
}

describe('withGreedyHead', () => {
  it('default model: num_logits_to_keep input and logits_argmax output added; idempotent; input untouched', () => {
    const m = decodeModel(loadDefaultBytes());
    const nodesBefore = graphOf(m).node.length;
    const { model, report } = withGreedyHead(m);
    expect(report).toEqual({ lastRows: 'added', argmax: true });
    expect(graphOf(m).node.length).toBe(nodesBefore);
    const g = graphOf(model);
    const keepIn = g.input.find((i) => i.name === NUM_LOGITS_TO_KEEP)!;
    expect(keepIn.type?.tensorType?.elemType).toBe(DataType.INT64);
    expect(keepIn.type?.tensorType?.shape?.dim).toEqual([]);
    expect(g.output.map((o) => o.name)).toContain(ARGMAX_OUTPUT);
    // Neg, Reshape, Slice, ArgMax; the lm_head itself is replaced, not added.
    expect(g.node.length).toBe(nodesBefore + 4);
    expect(nodesOf(g).find((n) => n.output[0] === 'logits')!.input[0]).toBe('/weblora/greedy_head/last_rows');
    const again = withGreedyHead(model);
    expect(again.model).toBe(model);
    expect(again.report).toEqual({ lastRows: 'present', argmax: true });
  });

  it('default model on wasm: k = 1 gives the full graph last row, k = T every row; ArgMax = argmax', async () => {
    const m = decodeModel(loadDefaultBytes());
    const head = withGreedyHead(m).model;
    const tokens = [5, 60, 7, 300, 12, 900, 44];
    const T = tokens.length;
    const full = (await run(m, defaultModelFeeds(tokens))).logits!;
    expect(full.dims).toEqual([1, T, 1024]);
    const one = await run(head, { ...defaultModelFeeds(tokens), [NUM_LOGITS_TO_KEEP]: keep(1) });
    expect(one.logits!.dims).toEqual([1, 1, 1024]);
    expectClose(row(one.logits!, 0), row(full, T - 1), SAME_GRAPH, 'last row, k = 1');
    expect(one[ARGMAX_OUTPUT]!.dims).toEqual([1, 1]);
    expect(one[ARGMAX_OUTPUT]!.type).toBe('int64');
    expect(Number((one[ARGMAX_OUTPUT]!.data as BigInt64Array)[0])).toBe(argmax(row(one.logits!, 0)));
    const all = await run(head, { ...defaultModelFeeds(tokens), [NUM_LOGITS_TO_KEEP]: keep(T) });
    expect(all.logits!.dims).toEqual([1, T, 1024]);
    expectClose(all.logits!.data as Float32Array, full.data as Float32Array, SAME_GRAPH, 'k = T');
    const ids = Array.from(all[ARGMAX_OUTPUT]!.data as BigInt64Array, Number);
    expect(ids).toEqual(Array.from({ length: T }, (_, r) => argmax(row(all.logits!, r))));
  });

  it('ArgMax breaks ties like sampling.ts argmax: the first maximal index, across a 49152-wide vocab', async () => {
    // logits = h·W with W (2, V): column j = (a_j, b_j). Row 0 (h = (1, 0)) reads a, row 1 (0, 1) reads b,
    // row 2 (0, 0) is all zeros (every index ties: argmax 0), row 3 (-1, 0) reads -a.
    const V = 49152;
    const a = new Float32Array(V).fill(-1);
    a[40000] = 3;
    a[7] = 3; // tie with 40000: 7 wins
    a[49151] = 3;
    const b = randn(V, 9, 1);
    b[123] = 5;
    b[124] = 5;
    b[30000] = 5;
    const W = new Float32Array(2 * V);
    W.set(a, 0);
    W.set(b, V);
    const model = tinyModel({
      nodes: [{ op: 'MatMul', inputs: ['h', 'W'], outputs: ['logits'] }],
      inputs: [{ name: 'h', dims: [1, 'T', 2] }],
      outputs: [{ name: 'logits', dims: [1, 'T', V] }],
      inits: [{ name: 'W', dims: [2, V], data: W }],
    });
    const { model: head, report } = withGreedyHead(model);
    expect(report.lastRows).toBe('added');
    const h = Float32Array.of(1, 0, 0, 1, 0, 0, -1, 0);
    const out = await run(head, { h: f32(h, [1, 4, 2]), [NUM_LOGITS_TO_KEEP]: keep(4) });
    const ids = Array.from(out[ARGMAX_OUTPUT]!.data as BigInt64Array, Number);
    expect(ids).toEqual([7, 123, 0, 0]);
    expect(ids).toEqual([0, 1, 2, 3].map((r) => argmax(row(out.logits!, r))));
  });

  it('walks back through a bias Add and an fp16 Cast; ArgMax reads fp16 logits through a Cast to float32', async () => {
    const C = 3;
    const V = 16;
    const W = randn(C * V, 4, 1);
    const bias = randn(V, 5, 0.5);
    const model = tinyModel({
      nodes: [
        { op: 'MatMul', inputs: ['h', 'W'], outputs: ['mm'] },
        { op: 'Add', inputs: ['bias', 'mm'], outputs: ['biased'] },
        { op: 'Cast', inputs: ['biased'], outputs: ['logits'], attrs: { to: DataType.FLOAT16 } },
      ],
      inputs: [{ name: 'h', dims: [1, 'T', C] }],
      outputs: [{ name: 'logits', dims: [1, 'T', V] }],
      inits: [
        { name: 'W', dims: [C, V], data: W },
        { name: 'bias', dims: [V], data: bias },
      ],
    });
    graphOf(model).output[0]!.type!.tensorType!.elemType = DataType.FLOAT16;
    const { model: head, report } = withGreedyHead(model);
    expect(report.lastRows).toBe('added');
    expect(nodesOf(graphOf(head)).some((n) => n.opType === 'Cast' && n.input[0] === 'logits')).toBe(true);
    const h = randn(5 * C, 6, 1);
    const full = await run(model, { h: f32(h, [1, 5, C]) });
    const last = await run(head, { h: f32(h, [1, 5, C]), [NUM_LOGITS_TO_KEEP]: keep(2) });
    expect(last.logits!.dims).toEqual([1, 2, V]);
    const fullBits = full.logits!.data as Uint16Array;
    expect(Array.from(last.logits!.data as Uint16Array)).toEqual(Array.from(fullBits.slice(3 * V)));
    expect(Array.from(last[ARGMAX_OUTPUT]!.data as BigInt64Array, Number)).toEqual(
      [3, 4].map((r) => argmax(Array.from(fullBits.slice(r * V, (r + 1) * V), halfToFloat))),
    );
  });

  it('an lm_head it cannot slice keeps every row and still gets ArgMax; a graph that declares num_logits_to_keep keeps it', async () => {
    const V = 8;
    // logits = h·Wh with Wh a graph input (not a constant): not sliced.
    const model = tinyModel({
      nodes: [{ op: 'MatMul', inputs: ['h', 'Wh'], outputs: ['logits'] }],
      inputs: [
        { name: 'h', dims: [1, 'T', 2] },
        { name: 'Wh', dims: [2, V] },
      ],
      outputs: [{ name: 'logits', dims: [1, 'T', V] }],
    });
    const { model: head, report } = withGreedyHead(model);
    expect(report).toEqual({ lastRows: 'unsupported', argmax: true });
    expect(graphOf(head).input.map((i) => i.name)).toEqual(['h', 'Wh']);
    const out = await run(head, { h: f32(randn(6, 1), [1, 3, 2]), Wh: f32(randn(2 * V, 2), [2, V]) });
    expect(out.logits!.dims).toEqual([1, 3, V]);
    expect(Array.from(out[ARGMAX_OUTPUT]!.data as BigInt64Array, Number)).toEqual(
      [0, 1, 2].map((r) => argmax(row(out.logits!, r))),
    );
    // A file that already has the input (newer Optimum exports): only the ArgMax output is added.
    const declared = onnx.ModelProto.decode(encodeModel(model));
    graphOf(declared).input.push(onnx.ValueInfoProto.create({ name: NUM_LOGITS_TO_KEEP }));
    const r2 = withGreedyHead(declared);
    expect(r2.report).toEqual({ lastRows: 'present', argmax: true });
    expect(graphOf(r2.model).node.length).toBe(2);
  });
});

// Every layout replica (Optimum: declares num_logits_to_keep, slices after its lm_head; builder: GQA,
// packed qkv, fp16 logits) through the product path with the head: greedy ids from the ArgMax output
// equal the PyTorch oracle's greedy tokens, and k = T still gives every position's logits (scoring).
describe('withGreedyHead on the layout replicas (wasm)', () => {
  const DIR = new URL('../../fixtures/replicas/', import.meta.url);
  const read = async (p: string) => new Uint8Array(readFileSync(new URL(p, DIR)));
  let set: ReplicaSet;
  beforeAll(async () => {
    set = await loadReplicaSet(read);
  });

  it.each(REPLICAS)(
    '$name: greedy ids = oracle greedy; all-rows logits = oracle; last row = all-rows last row',
    async (rep) => {
      const dir = rep.file.slice(0, rep.file.lastIndexOf('/') + 1);
      const externalData = rep.externalData
        ? [{ path: rep.externalData, data: await read(rep.externalDataFile ?? dir + rep.externalData) }]
        : undefined;
      const { model, report } = withGreedyHead(decodeModel(await read(rep.file)));
      expect(report).toEqual({ lastRows: rep.layout === 'optimum' ? 'present' : 'added', argmax: true });
      const graph = await createDecoderSession(ort, encodeModel(model), set.config, {
        backend: 'wasm',
        ...(externalData ? { externalData } : {}),
      });
      try {
        expect(graph.argmax).toBe(true);
        expect(graph.numLogitsToKeep).not.toBeNull();
        expect(await greedy(ort, graph, set.prompt, 8)).toEqual(oracleGreedy(set, rep.oracle));
        const all = await promptLogits(ort, graph, set.prompt, {}, [5, 1, 2]);
        expectClose(all, oracleLogits(set, rep.oracle), rep.tol, `${rep.name} all rows vs oracle`);
        const stepper = new KvStepper(ort, graph);
        try {
          const last = await stepper.step(set.prompt);
          const V = last.length;
          expectClose(
            last,
            all.slice(all.length - V),
            rep.f16 ? rep.tol : SAME_GRAPH,
            `${rep.name} last row`,
          );
        } finally {
          stepper.dispose();
        }
      } finally {
        await graph.session.release();
      }
    },
  );
});
