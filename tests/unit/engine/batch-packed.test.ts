// The batch row mask on a packed qkv_proj graph with the default PACKED_LORA_DEFAULT 'per-part' branches (the
// builder-rope replica, wasm): rows with different adapters (the replica PEFT adapter, ranks 2/4/6 by
// rank_pattern; the Phi-3-style packed-module adapter) or none decode in one forward per step (BatchKv +
// batchLoraFeeds, adapters concatenated along the rank, each row masked to its own columns in every q/k/v
// part branch) and must give each row's solo run: exact greedy tokens, logits within FP32_LOGITS. Prompts
// have equal lengths: GroupQueryAttention graphs do not take left padding (it reads each row's length from
// the mask), so the engine never batches them (LoadedModel.leftPadding false); this checks the branch math.
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-web';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BatchRowAdapter, batchLoraFeeds } from '../../../src/engine/batch-feeds.ts';
import { BatchKv } from '../../../src/engine/batch-kv.ts';
import { argmax } from '../../../src/engine/sampling.ts';
import { KvStepper, type OrtTensor } from '../../../src/engine/session.ts';
import { expectClose, FP32_LOGITS, maxAbsDiff } from '../../helpers/expect-close.ts';
import { greedySteps } from '../../helpers/greedy-steps.ts';
import {
  type LoadedReplica,
  loadReplica,
  loadReplicaSet,
  REPLICAS,
  type ReplicaSet,
} from '../../helpers/replicas.ts';

const DIR = new URL('../../fixtures/replicas/', import.meta.url);
const read = async (p: string) => new Uint8Array(readFileSync(new URL(p, DIR)));
const NEW = 4;

let set: ReplicaSet;
let m: LoadedReplica;
const feeds = new Map<string, Record<string, OrtTensor>>();

beforeAll(async () => {
  ort.env.wasm.numThreads = 1;
  set = await loadReplicaSet(read);
  const rep = REPLICAS.find((r) => r.name === 'builder-rope fp32')!;
  m = await loadReplica(ort, read, rep, set.config, 'wasm', { rowMask: true });
  feeds.set('adapter', m.feedsOf(set.adapter));
  feeds.set('phi3', m.feedsOf(set.phi3));
});
afterAll(async () => {
  await m?.release();
});

const feedsOf = (key: string | null) => (key ? feeds.get(key)! : m.noAdapter);

/** `prompt` decoded alone under `key`'s adapter: the reference for a batched row. */
function solo(prompt: number[], key: string | null) {
  return greedySteps(ort, m.graph, feedsOf(key), prompt, NEW);
}

describe('batched decode on a packed qkv_proj graph (builder-rope, per-part, wasm)', () => {
  it('per-part targets: q/k/v narrow branches inside qkv_proj, and the row mask input', () => {
    expect(m.targets.filter((t) => t.layer === 0).map((t) => [t.module, t.packedIn])).toEqual([
      ['q_proj', 'qkv_proj'],
      ['k_proj', 'qkv_proj'],
      ['v_proj', 'qkv_proj'],
      ['o_proj', undefined],
      ['gate_proj', undefined],
      ['up_proj', undefined],
      ['down_proj', undefined],
    ]);
    expect(m.graph.hasPositionIds).toBe(true);
  });

  it('rows with different adapters (equal prompt lengths) equal their solo runs', async () => {
    const prompts = [set.prompt.slice(0, 5), set.prompt.slice(1, 6), set.prompt.slice(2, 7)];
    const keys = ['adapter', null, 'phi3'] as const;
    const refs: { tokens: number[]; logits: Float32Array[] }[] = [];
    for (const [i, k] of keys.entries()) refs.push(await solo(prompts[i]!, k));
    // The adapters change the logits (else equal rows would prove nothing about the mask).
    for (const b of [0, 2]) {
      const base = await solo(prompts[b]!, null);
      expect(maxAbsDiff(refs[b]!.logits[0]!, base.logits[0]!)).toBeGreaterThan(1e-2);
    }
    const kv = new BatchKv(ort, m.graph);
    const rows: { key: string | null; tokens: number[]; logits: Float32Array[] }[] = [];
    try {
      for (const [i, k] of keys.entries()) {
        const s = new KvStepper(ort, m.graph, feedsOf(k));
        const l = await s.step(prompts[i]!);
        await kv.join(s.takeKv());
        s.dispose();
        rows.push({ key: k, tokens: [argmax(l)], logits: [l] });
      }
      while (rows[0]!.tokens.length < NEW) {
        const spec: BatchRowAdapter[] = rows.map((r) => ({
          key: r.key ?? '',
          feeds: r.key ? { feeds: feeds.get(r.key)!, release: () => {} } : null,
        }));
        const lora = await batchLoraFeeds(ort, spec, m.targets, { noAdapter: m.noAdapter });
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
    } finally {
      kv.dispose();
    }
    rows.forEach((r, b) => {
      expect(r.tokens, `row ${b} tokens`).toEqual(refs[b]!.tokens);
      r.logits.forEach((l, i) => {
        expectClose(l, refs[b]!.logits[i]!, FP32_LOGITS, `row ${b} step ${i}`);
      });
    });
  });
});
