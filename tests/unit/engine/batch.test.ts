// Batched multi-adapter decode on Node (onnxruntime-web → wasm) with the default model package: rows of
// different prompt lengths, each with its own adapter (the two PEFT fixtures, ranks 4 and 8) or none, decode
// in one forward per step (BatchKv + batchLoraFeeds over the rowMask-injected graph) and must give each
// row's solo run: exact greedy tokens, logits within FP32_LOGITS. Also: the rowMask graph with the mask not
// fed equals the plain injected graph bit for bit, a row joining mid-batch, and a row leaving early.
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-web';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { peftToFeeds } from '../../../src/adapters/peft.ts';
import { type BatchRowAdapter, batchLoraFeeds } from '../../../src/engine/batch-feeds.ts';
import { BatchKv } from '../../../src/engine/batch-kv.ts';
import { promptNll, scoreUnderAdapters } from '../../../src/engine/batch-score.ts';
import { argmax } from '../../../src/engine/sampling.ts';
import {
  createDecoderSession,
  type DecoderGraph,
  KvStepper,
  type OrtTensor,
} from '../../../src/engine/session.ts';
import type { AdapterFeeds } from '../../../src/engine/types.ts';
import { InvalidOptionError } from '../../../src/errors.ts';
import { injectLora, LORA_ROW_MASK, type LoraTarget } from '../../../src/model/inject-lora.ts';
import { decodeModel, encodeModel } from '../../../src/model/onnx-io.ts';
import { parseModelConfig } from '../../../src/model/package.ts';
import { expectClose, FP32_LOGITS } from '../../helpers/expect-close.ts';
import { type AdapterFixture, loadPeftFixture, MODEL_DIR, MODEL_PATH } from '../../helpers/fixtures.ts';
import { greedySteps } from '../../helpers/greedy-steps.ts';

const config = parseModelConfig(JSON.parse(readFileSync(`${MODEL_DIR}/config.json`, 'utf8')));
const PROMPTS = [
  [813, 58, 10, 449, 365, 102, 116, 44], // "ROMEO:\nBut soft,"
  [813, 58, 10],
  [449, 365, 102, 116, 44, 10],
];
const NEW = 10;

let g: DecoderGraph;
let plain: DecoderGraph;
let targets: LoraTarget[];
const adapters = new Map<string, AdapterFeeds>();
let none: Record<string, OrtTensor>;

function fixtureFeeds(name: AdapterFixture): AdapterFeeds {
  const { config: c, st } = loadPeftFixture(name);
  const { feeds } = peftToFeeds(c, st.tensors, targets);
  const out: Record<string, OrtTensor> = {};
  for (const [k, v] of feeds) out[k] = new ort.Tensor('float32', v.data, v.dims);
  return { feeds: out, release: () => {} };
}

beforeAll(async () => {
  ort.env.wasm.numThreads = 1;
  const decoded = decodeModel(new Uint8Array(readFileSync(MODEL_PATH)));
  const inj = injectLora(decoded, { rowMask: true });
  targets = inj.targets;
  g = await createDecoderSession(ort, encodeModel(inj.model), config, { backend: 'wasm' });
  plain = await createDecoderSession(ort, encodeModel(injectLora(decoded).model), config, {
    backend: 'wasm',
  });
  adapters.set('peft-adapter', fixtureFeeds('peft-adapter'));
  adapters.set('peft-adapter-rslora', fixtureFeeds('peft-adapter-rslora'));
  none = {};
  for (const t of targets) {
    none[t.inputA] = new ort.Tensor('float32', new Float32Array(0), [t.in, 0]);
    none[t.inputB] = new ort.Tensor('float32', new Float32Array(0), [0, t.out]);
  }
});
afterAll(async () => {
  await g?.session.release();
  await plain?.session.release();
});

const feedsOf = (key: string | null): Record<string, OrtTensor> => (key ? adapters.get(key)!.feeds : none);

/** Solo run: prefill + NEW-1 greedy steps; tokens and every step's logits. */
/** `prompt` decoded alone under `key`'s adapter: the reference for a batched row. */
function solo(graph: DecoderGraph, prompt: number[], key: string | null, n = NEW) {
  return greedySteps(ort, graph, feedsOf(key), prompt, n);
}

interface Row {
  key: string | null;
  tokens: number[];
  logits: Float32Array[];
}

/** Prefills `prompt` alone, returns the row (first token taken) and its KV. */
async function prefill(
  prompt: number[],
  key: string | null,
): Promise<{ row: Row; kv: ReturnType<KvStepper['takeKv']> }> {
  const s = new KvStepper(ort, g, feedsOf(key));
  const l = await s.step(prompt);
  const kv = s.takeKv();
  s.dispose();
  return { row: { key, tokens: [argmax(l)], logits: [l] }, kv };
}

async function batchStep(kv: BatchKv, rows: Row[]): Promise<void> {
  const spec: BatchRowAdapter[] = rows.map((r) => ({
    key: r.key ?? '',
    feeds: r.key ? adapters.get(r.key)! : null,
  }));
  const lora = await batchLoraFeeds(ort, spec, targets, { noAdapter: none });
  const out = await kv.step(
    rows.map((r) => r.tokens.at(-1)!),
    lora.feeds,
  );
  lora.dispose();
  out.forEach((l, b) => {
    rows[b]!.logits.push(l);
    rows[b]!.tokens.push(argmax(l));
  });
}

function expectSameAsSolo(row: Row, ref: { tokens: number[]; logits: Float32Array[] }, what: string): void {
  expect(row.tokens, `${what} tokens`).toEqual(ref.tokens.slice(0, row.tokens.length));
  row.logits.forEach((l, i) => {
    expectClose(l, ref.logits[i]!, FP32_LOGITS, `${what} step ${i}`);
  });
}

describe('batched multi-adapter decode (wasm)', () => {
  it('the rowMask graph with the mask not fed equals the plain injected graph exactly', async () => {
    expect(g.session.inputNames).toContain(LORA_ROW_MASK);
    expect(plain.session.inputNames).not.toContain(LORA_ROW_MASK);
    for (const key of [null, 'peft-adapter'] as const) {
      const a = await solo(g, PROMPTS[0]!, key);
      const b = await solo(plain, PROMPTS[0]!, key);
      expect(a.tokens).toEqual(b.tokens);
      a.logits.forEach((l, i) => {
        expect(Array.from(l)).toEqual(Array.from(b.logits[i]!));
      });
    }
  });

  it('rows with different adapters, ranks and prompt lengths equal their solo runs', async () => {
    const keys = ['peft-adapter', null, 'peft-adapter-rslora'] as const;
    const refs = await Promise.all(keys.map((k, i) => solo(g, PROMPTS[i]!, k)));
    expect(new Set(refs.map((r) => r.tokens.join())).size).toBeGreaterThan(1);
    const kv = new BatchKv(ort, g);
    const rows: Row[] = [];
    for (const [i, k] of keys.entries()) {
      const p = await prefill(PROMPTS[i]!, k);
      await kv.join(p.kv);
      rows.push(p.row);
    }
    expect(kv.lengths).toEqual(PROMPTS.map((p) => p.length));
    expect(kv.paddedLength).toBe(8);
    try {
      while (rows[0]!.tokens.length < NEW) await batchStep(kv, rows);
    } finally {
      kv.dispose();
    }
    rows.forEach((r, i) => {
      expectSameAsSolo(r, refs[i]!, `row ${i} (${keys[i]})`);
    });
  });

  it('a row joins mid-batch and another leaves early; the rest are untouched', async () => {
    const refA = await solo(g, PROMPTS[0]!, 'peft-adapter-rslora', NEW + 2);
    const refB = await solo(g, PROMPTS[1]!, null);
    const refC = await solo(g, PROMPTS[2]!, 'peft-adapter');
    const kv = new BatchKv(ort, g);
    try {
      const a = await prefill(PROMPTS[0]!, 'peft-adapter-rslora');
      const b = await prefill(PROMPTS[1]!, null);
      await kv.join(a.kv);
      await kv.join(b.kv);
      let rows = [a.row, b.row];
      await batchStep(kv, rows);
      await batchStep(kv, rows);
      // C joins after two steps (its prompt is shorter than the cache: left-padded).
      const c = await prefill(PROMPTS[2]!, 'peft-adapter');
      await kv.join(c.kv);
      rows = [...rows, c.row];
      await batchStep(kv, rows);
      // B leaves (as an aborted row would); A and C go on.
      await kv.drop([1]);
      rows = [rows[0]!, rows[2]!];
      expect(kv.rows).toBe(2);
      while (rows[1]!.tokens.length < NEW) await batchStep(kv, rows);
      expectSameAsSolo(a.row, refA, 'A');
      expectSameAsSolo(b.row, refB, 'B (left)');
      expectSameAsSolo(c.row, refC, 'C (joined)');
      expect(a.row.tokens).toHaveLength(NEW + 2);
      expect(b.row.tokens).toHaveLength(4);
      expect(c.row.tokens).toHaveLength(NEW);
    } finally {
      kv.dispose();
    }
  });

  it('a lone row decodes exactly as KvStepper (its tensors adopted, no pads)', async () => {
    const ref = await solo(g, PROMPTS[1]!, 'peft-adapter');
    const kv = new BatchKv(ort, g);
    try {
      const a = await prefill(PROMPTS[1]!, 'peft-adapter');
      await kv.join(a.kv);
      while (a.row.tokens.length < NEW) await batchStep(kv, [a.row]);
      expect(a.row.tokens).toEqual(ref.tokens);
      a.row.logits.forEach((l, i) => {
        expect(Array.from(l)).toEqual(Array.from(ref.logits[i]!));
      });
    } finally {
      kv.dispose();
    }
  });

  it('rejects a step with the wrong number of ids', async () => {
    const kv = new BatchKv(ort, g);
    const a = await prefill(PROMPTS[1]!, null);
    await kv.join(a.kv);
    await expect(kv.step([1, 2], none)).rejects.toThrow(InvalidOptionError);
    kv.dispose();
  });

  it('scoreUnderAdapters: one forward, per-candidate prompt logits equal each candidate alone', async () => {
    const ids = PROMPTS[0]!;
    const keys = ['peft-adapter', null, 'peft-adapter-rslora', 'peft-adapter'] as const;
    const rows = await scoreUnderAdapters(
      { ort, graph: g, targets, noAdapterFeeds: none },
      ids,
      keys.map((k) => ({ key: k ?? '', feeds: k ? adapters.get(k)! : null })),
    );
    expect(rows).toHaveLength(keys.length);
    const V = config.vocabSize;
    for (const [i, k] of keys.entries()) {
      const s = new KvStepper(ort, g, feedsOf(k));
      const ref = await s.step(ids, { allLogits: true });
      s.dispose();
      expect(rows[i]!.length).toBe(ids.length * V);
      expectClose(rows[i]!, ref, FP32_LOGITS, `candidate ${i} (${k})`);
      // NLL from float64 log-softmax of the reference logits.
      let nll = 0;
      for (let t = 0; t + 1 < ids.length; t++) {
        const row = Array.from(ref.subarray(t * V, (t + 1) * V));
        const max = Math.max(...row);
        const lse = max + Math.log(row.reduce((z, x) => z + Math.exp(x - max), 0));
        nll += lse - row[ids[t + 1]!]!;
      }
      expect(promptNll(rows[i]!, ids)).toBeCloseTo(nll / (ids.length - 1), 4);
    }
    expect(promptNll(rows[0]!, [5])).toBeNaN();
    await expect(
      scoreUnderAdapters({ ort, graph: g, targets, noAdapterFeeds: none }, [], []),
    ).rejects.toThrow(InvalidOptionError);
  });
});
