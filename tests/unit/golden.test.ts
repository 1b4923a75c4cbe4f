// The model against the independent PyTorch oracle (tests/fixtures, made by scripts/py/fixtures.py):
// onnx/model.onnx on onnxruntime-web (Node → wasm) must reproduce the golden fp32 logits and the greedy
// continuations (here decoded with a KV cache, one token per step, while the oracle recomputed the full
// sequence); onnx/model_q4.onnx must stay close; and the LoRA-injected graph fed with each
// PEFT fixture adapter through peftToFeeds must reproduce PyTorch's logits under that adapter.
// The KV loop is written out here on purpose (not src/engine/session.ts) so this test stays independent.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-web';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { peftToFeeds } from '../../src/adapters/peft.ts';
import { injectLora } from '../../src/model/inject-lora.ts';
import { decodeModel, encodeModel } from '../../src/model/onnx-io.ts';
import { expectClose, expectQ4Logits, FP32_LOGITS } from '../helpers/expect-close.ts';
import {
  ADAPTER_FIXTURES,
  assertFresh,
  FIXTURES_DIR,
  f32,
  type Golden,
  i32,
  loadGolden,
  loadPeftFixture,
  loadSafetensorsFile,
  MODEL_DIR,
  MODEL_PATH,
  Q4_PATH,
  tensor,
} from '../helpers/fixtures.ts';

ort.env.wasm.numThreads = 1;

const cfg = JSON.parse(readFileSync(join(MODEL_DIR, 'config.json'), 'utf8')) as Record<string, number>;
const L = cfg.num_hidden_layers!;
const KV = cfg.num_key_value_heads!;
const HD = cfg.head_dim ?? cfg.hidden_size! / cfg.num_attention_heads!;

type Feeds = Record<string, ort.Tensor>;
const i64 = (xs: number[]) => new ort.Tensor('int64', BigInt64Array.from(xs, BigInt), [1, xs.length]);

/** One forward: `ids` after `past` (P cached positions). Returns logits [T, V] and present.* as the next past. */
async function forward(s: ort.InferenceSession, ids: number[], past: Feeds | null, extra: Feeds = {}) {
  const P = past ? (past['past_key_values.0.key']!.dims[2] as number) : 0;
  const feeds: Feeds = {
    input_ids: i64(ids),
    attention_mask: i64(Array(P + ids.length).fill(1)),
    position_ids: i64(ids.map((_, i) => P + i)),
    ...extra,
  };
  for (let l = 0; l < L; l++) {
    for (const kv of ['key', 'value']) {
      const n = `past_key_values.${l}.${kv}`;
      feeds[n] = past?.[n] ?? new ort.Tensor('float32', new Float32Array(0), [1, KV, 0, HD]);
    }
  }
  const out = await s.run(feeds);
  const next: Feeds = {};
  for (let l = 0; l < L; l++) {
    for (const kv of ['key', 'value']) next[`past_key_values.${l}.${kv}`] = out[`present.${l}.${kv}`]!;
  }
  return { logits: out.logits!.data as Float32Array, present: next };
}

function argmax(x: Float32Array): number {
  let b = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[b]!) b = i;
  return b;
}

let golden: Golden;
let base: ort.InferenceSession;
beforeAll(async () => {
  expect(existsSync(MODEL_PATH), `${MODEL_PATH} (committed with the repo) is missing`).toBe(true);
  golden = loadGolden(); // throws "fixtures are stale: ..." when model.onnx changed since generation
  base = await ort.InferenceSession.create(MODEL_PATH, { executionProviders: ['wasm'] });
});
afterAll(async () => {
  await base?.release();
});

describe(`golden fixtures vs ${MODEL_PATH}`, () => {
  it('fp32 logits of each sequence (full forward, no cache) match PyTorch', async () => {
    expect(golden.seqs).toHaveLength(3);
    for (const [j, s] of golden.seqs.entries()) {
      const { logits } = await forward(base, s.tokens, null);
      expectClose(logits, s.logits.base, FP32_LOGITS, `seq${j} (${s.tokens.length} tokens) logits`);
    }
  });

  it('greedy 20-token continuation with a KV cache equals the golden tokens exactly', async () => {
    for (const [j, s] of golden.seqs.entries()) {
      let r = await forward(base, s.tokens, null);
      const got: number[] = [];
      for (let k = 0; k < s.greedy.length; k++) {
        const V = golden.vocab;
        const next = argmax(r.logits.subarray(r.logits.length - V));
        got.push(next);
        if (next !== s.greedy[k]) {
          expect.fail(
            `seq${j} step ${k}: got token ${next}, golden ${s.greedy[k]} (golden top1-top2 margin ` +
              `${s.greedyMargin[k]}); tokens so far ${JSON.stringify(got)}`,
          );
        }
        if (k < s.greedy.length - 1) r = await forward(base, [next], r.present);
      }
      expect(got).toEqual(s.greedy);
    }
  });
});

describe('training fixtures (for the LoRA training engine) are complete and consistent', () => {
  it('lora-grads and adamw-trajectory cover every peft-adapter tensor with its shape', () => {
    const adapter = loadPeftFixture('peft-adapter').st;
    const grads = loadSafetensorsFile(join(FIXTURES_DIR, 'lora-grads.safetensors'));
    const traj = loadSafetensorsFile(join(FIXTURES_DIR, 'adamw-trajectory.safetensors'));
    assertFresh(grads, 'tests/fixtures/lora-grads.safetensors');
    assertFresh(traj, 'tests/fixtures/adamw-trajectory.safetensors');
    expect(adapter.tensors.size).toBe(2 * 7 * L);
    for (const [k, t] of adapter.tensors) {
      for (const st of [grads, traj]) {
        expect(st.tensors.get(k)?.shape, k).toEqual(t.shape);
        expect(f32(st, k).every(Number.isFinite), k).toBe(true);
      }
    }
    expect(tensor(grads, 'batch').shape).toEqual([2, 32]);
    expect(i32(grads, 'batch')).toEqual(i32(traj, 'batch'));
    const losses = f32(traj, 'losses');
    expect(losses).toHaveLength(Number(traj.metadata.steps) + 1);
    expect(losses[0]).toBe(f32(grads, 'loss')[0]);
    expect(losses.at(-1)!).toBeLessThan(losses[0]!);
    expect(traj.metadata).toMatchObject({
      lr: '0.01',
      beta1: '0.9',
      beta2: '0.999',
      eps: '1e-08',
      weight_decay: '0.0',
    });
  });
});

describe('model_q4.onnx vs golden fp32', () => {
  it(`logits RMS error and top-1 agreement within the q4 bounds`, async () => {
    const q4 = await ort.InferenceSession.create(Q4_PATH, { executionProviders: ['wasm'] });
    const got: number[] = [];
    const want: number[] = [];
    for (const s of golden.seqs) {
      const { logits } = await forward(q4, s.tokens, null);
      for (const x of logits) got.push(x);
      for (const x of s.logits.base) want.push(x);
    }
    await q4.release();
    const m = expectQ4Logits(got, want, golden.vocab, 'q4 vs fp32 golden');
    console.info(
      `q4 vs fp32 golden: relative logit RMS error ${m.relRms.toFixed(4)}, top-1 agreement ${m.top1.toFixed(3)}`,
    );
  });
});

describe('LoRA-injected fp32 graph + PEFT fixture adapters', () => {
  let injected:
    | { session: ort.InferenceSession; targets: ReturnType<typeof injectLora>['targets'] }
    | undefined;
  afterAll(async () => {
    await injected?.session.release();
  });
  it.each(ADAPTER_FIXTURES)('%s: logits match PyTorch under the adapter', async (name) => {
    if (!injected) {
      const { model, targets } = injectLora(decodeModel(new Uint8Array(readFileSync(MODEL_PATH))));
      injected = {
        session: await ort.InferenceSession.create(encodeModel(model), { executionProviders: ['wasm'] }),
        targets,
      };
    }
    const { session: s, targets } = injected;
    const { config, st } = loadPeftFixture(name);
    const { feeds, rank } = peftToFeeds(config, st.tensors, targets);
    const extra: Feeds = {};
    for (const [k, v] of feeds) extra[k] = new ort.Tensor('float32', v.data, v.dims);
    expect(rank).toBe(name === 'peft-adapter' ? 4 : 8);
    for (const [j, seq] of golden.seqs.entries()) {
      const { logits } = await forward(s, seq.tokens, null, extra);
      expectClose(logits, seq.logits[name], FP32_LOGITS, `${name} seq${j} logits`);
    }
  });
});
