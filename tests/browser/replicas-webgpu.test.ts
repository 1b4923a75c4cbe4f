// The layout replicas (tests/fixtures/replicas; the wasm side is tests/unit/model/replicas.test.ts) on
// onnxruntime-web's WebGPU EP (SwiftShader here) through the product path: injectLora with the WebGPU branch
// operator → createDecoderSession (KV stays in GPU buffers) → KvStepper. Per replica: logits vs the PyTorch
// oracle within WEBGPU_REPLICA (see its justification), KV path = full forward, 4 greedy tokens, a PEFT adapter vs its merged oracle;
// and the same q/k/v adapter on the packed (builder; per-part, the default, and block-diagonal) and split
// (Optimum) graphs. fp16/q4f16 graphs need the
// adapter's `shader-f16`; where it is missing (SwiftShader) the test runs them anyway, expects the failure
// and skips with the error onnxruntime-web measured, never silently.
import * as ortWebgpu from 'onnxruntime-web/webgpu';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { greedy } from '../../src/engine/session.ts';
import { loraBranchOpFor } from '../../src/model/inject-lora.ts';
import { expectClose, maxAbsDiff, WEBGPU_REPLICA } from '../helpers/expect-close.ts';
import {
  type LoadedReplica,
  loadReplica,
  loadReplicaSet,
  oracleGreedy,
  oracleLogits,
  promptLogits,
  REPLICAS,
  type ReplicaSet,
} from '../helpers/replicas.ts';

ortWebgpu.env.wasm.wasmPaths = new URL('/ort/', location.href).href;
ortWebgpu.env.wasm.numThreads = 1;
const ort = ortWebgpu as unknown as typeof import('onnxruntime-web');

const BASE = '/tests/fixtures/replicas/';
const read = async (p: string) => {
  const r = await fetch(BASE + p);
  if (!r.ok) throw new Error(`fetch ${p}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
};
const branchOp = loraBranchOpFor('webgpu');
const GREEDY = 4;
/** Sessions by replica name, kept for the packed-vs-split test (released at the end). */
const loaded = new Map<string, LoadedReplica>();

let set: ReplicaSet;
let hasF16 = false;
const measured: string[] = [];
beforeAll(async () => {
  set = await loadReplicaSet(read);
  const adapter = await navigator.gpu.requestAdapter();
  hasF16 = adapter?.features.has('shader-f16') ?? false;
});
afterAll(async () => {
  for (const m of loaded.values()) await m.release();
  console.info(`replicas on webgpu (shader-f16: ${hasF16}), max |logit - oracle|:\n${measured.join('\n')}`);
});

describe.each(REPLICAS)('$name replica (webgpu)', (rep) => {
  let m: LoadedReplica | null = null;
  let failure: string | null = null;
  beforeAll(async () => {
    try {
      m = await loadReplica(ort, read, rep, set.config, 'webgpu', branchOp);
      loaded.set(rep.name, m);
      if (rep.f16) await promptLogits(ort, m.graph, set.prompt, m.noAdapter); // fails at run time, not creation
    } catch (e) {
      failure = String((e as Error).message ?? e).slice(0, 300);
      measured.push(`  ${rep.name.padEnd(18)} not run: ${failure}`);
    }
  });
  /** fp16 without shader-f16: the failure is the expected, measured outcome; anything else is a bug. */
  function skipWithoutF16(ctx: { skip(note?: string): never }): void {
    if (rep.f16 && !hasF16) {
      expect(failure, `${rep.name} should fail without shader-f16`).toMatch(/f16/);
      ctx.skip(`needs shader-f16, which this adapter lacks; onnxruntime-web said: ${failure}`);
    }
    expect(failure, `${rep.name} session`).toBeNull();
  }

  it('logits match the oracle; KV path equals the full forward (KV in GPU buffers); greedy tokens equal', async (ctx) => {
    skipWithoutF16(ctx);
    const g = m!.graph;
    const full = await promptLogits(ort, g, set.prompt, m!.noAdapter);
    const want = oracleLogits(set, rep.oracle);
    expectClose(full, want, WEBGPU_REPLICA, `${rep.name} webgpu logits vs oracle`);
    const kv = await promptLogits(ort, g, set.prompt, m!.noAdapter, [5, 3]);
    expectClose(kv, full, WEBGPU_REPLICA, `${rep.name} webgpu KV path vs full forward`);
    // 4 of the oracle's 8 greedy tokens: every new sequence length costs SwiftShader fresh shader work.
    expect(await greedy(ort, g, set.prompt, GREEDY, { extraFeeds: m!.noAdapter })).toEqual(
      oracleGreedy(set, rep.oracle).slice(0, GREEDY),
    );
    measured.push(
      `  ${rep.name.padEnd(18)} base ${maxAbsDiff(full, want).toExponential(1)}  KV-vs-full ${maxAbsDiff(kv, full).toExponential(1)}`,
    );
  });

  it('a PEFT adapter (rank_pattern, alpha_pattern) matches the merged-weights oracle', async (ctx) => {
    skipWithoutF16(ctx);
    const feeds = m!.feedsOf(set.adapter);
    const got = await promptLogits(ort, m!.graph, set.prompt, feeds);
    const want = oracleLogits(set, rep.loraOracle);
    expectClose(got, want, WEBGPU_REPLICA, `${rep.name} webgpu + adapter vs merged oracle`);
    measured.push(`  ${rep.name.padEnd(18)} +adapter ${maxAbsDiff(got, want).toExponential(1)}`);
  });
});

describe('packed vs split projections (webgpu)', () => {
  it('the same q/k/v adapter gives the same logits on the packed (builder) and split (Optimum) graphs', async () => {
    const split = loaded.get('optimum fp32')!;
    const packed = loaded.get('builder fp32')!;
    const a = await promptLogits(ort, split.graph, set.prompt, split.feedsOf(set.adapter));
    const b = await promptLogits(ort, packed.graph, set.prompt, packed.feedsOf(set.adapter));
    expectClose(b, a, WEBGPU_REPLICA, 'webgpu packed vs split, same adapter');
    measured.push(`  packed vs split +adapter ${maxAbsDiff(a, b).toExponential(1)}`);
  });

  it("packed: 'block-diagonal' (one wide Einsum branch, B block-diagonal) gives the split graph's logits too", async () => {
    const split = loaded.get('optimum fp32')!;
    const rep = REPLICAS.find((r) => r.name === 'builder fp32')!;
    const narrow = await loadReplica(ort, read, rep, set.config, 'webgpu', {
      branchOp,
      packed: 'block-diagonal',
    });
    try {
      expect(
        narrow.targets
          .filter((t) => t.layer === 0)
          .map((t) => t.module)
          .slice(0, 2),
      ).toEqual(['qkv_proj', 'o_proj']);
      const a = await promptLogits(ort, split.graph, set.prompt, split.feedsOf(set.adapter));
      const b = await promptLogits(ort, narrow.graph, set.prompt, narrow.feedsOf(set.adapter), [6, 2]);
      expectClose(b, a, WEBGPU_REPLICA, 'webgpu block-diagonal packed vs split, same adapter');
      measured.push(`  block-diagonal packed vs split +adapter ${maxAbsDiff(a, b).toExponential(1)}`);
    } finally {
      await narrow.release();
    }
  });
});
