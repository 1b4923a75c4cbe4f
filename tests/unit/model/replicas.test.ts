// The decoder layouts browser users run (tests/fixtures/replicas, scripts/py/replicas.py: Optimum fp32/fp16/
// q4/q4f16, onnxruntime-genai builder fp32/fp16 with GroupQueryAttention, packed qkv_proj and external data)
// through the product path on Node (onnxruntime-web → wasm): injectLora → createDecoderSession → KvStepper.
// Per replica: logits vs the PyTorch oracle (fp32: FP32_LOGITS; fp16: FP16_LOGITS; q4 against the oracle of
// its own dequantized weights), greedy tokens, KV path = full forward, a PEFT adapter (rank_pattern,
// alpha_pattern) vs the merged-weights oracle. Then: the same q/k/v adapter on the packed and the split
// graph, Phi-3 packed PEFT modules, and the typed errors for layouts that cannot take LoRA.
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-web';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { importPeftAdapter } from '../../../src/adapters/import.ts';
import { parsePeftConfig, peftToFeeds } from '../../../src/adapters/peft.ts';
import { greedy } from '../../../src/engine/session.ts';
import { AdapterMismatchError, UnsupportedModelError } from '../../../src/errors.ts';
import { injectLora } from '../../../src/model/inject-lora.ts';
import { detectLayout } from '../../../src/model/layout.ts';
import { decodeModel, graphOf } from '../../../src/model/onnx-io.ts';
import { findProjections } from '../../../src/model/targets.ts';
import { expectClose, maxAbsDiff, SAME_GRAPH } from '../../helpers/expect-close.ts';
import {
  type LoadedReplica,
  loadReplica,
  loadReplicaSet,
  oracleGreedy,
  oracleLogits,
  promptLogits,
  REPLICAS,
  type ReplicaSet,
} from '../../helpers/replicas.ts';
import { tinyModel } from './graph-builders.ts';

const DIR = new URL('../../fixtures/replicas/', import.meta.url);
const read = async (p: string) => new Uint8Array(readFileSync(new URL(p, DIR)));

let set: ReplicaSet;
const measured: string[] = [];
beforeAll(async () => {
  ort.env.wasm.numThreads = 1;
  set = await loadReplicaSet(read);
});
afterAll(() => {
  console.log(`replicas on wasm, max |logit - oracle| (|logits| <= 19, RMS 4):\n${measured.join('\n')}`);
});

describe.each(REPLICAS)('$name replica (wasm)', (rep) => {
  let m: LoadedReplica;
  beforeAll(async () => {
    m = await loadReplica(ort, read, rep, set.config, 'wasm');
  });
  afterAll(async () => {
    await m?.release();
  });

  it('is recognised from the graph: layout, targets, dtype, packed parts', async () => {
    const builder = rep.layout === 'builder';
    expect(detectLayout(decodeModel(await read(rep.file)))).toEqual({
      family: rep.layout,
      weights: rep.dtype,
      packedQkv: builder,
      rotary: builder ? (rep.rotaryNodes ? 'rotary-nodes' : 'gqa') : 'graph',
      positionIds: !builder || rep.rotaryNodes === true,
      numLogitsToKeep: !builder,
      externalData: rep.externalData !== undefined,
      kvDtype: rep.f16 ? 'float16' : 'float32',
    });
    expect(m.targets.every((t) => t.dtype === (rep.f16 ? 'float16' : 'float32'))).toBe(true);
    const mods = m.targets.filter((t) => t.layer === 0).map((t) => t.module);
    if (rep.layout === 'builder') {
      // Default (PACKED_LORA_DEFAULT 'per-part'): one narrow branch per q/k/v part of the packed qkv_proj.
      expect(mods).toEqual(['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']);
      expect(m.targets.slice(0, 4).map((t) => t.packedIn)).toEqual([
        'qkv_proj',
        'qkv_proj',
        'qkv_proj',
        undefined,
      ]);
      // 'block-diagonal': one qkv_proj target that lists its parts.
      const wide = injectLora(decodeModel(await read(rep.file)), { packed: 'block-diagonal' }).targets;
      expect(wide.filter((t) => t.layer === 0).map((t) => t.module)).toEqual([
        'qkv_proj',
        'o_proj',
        'gate_proj',
        'up_proj',
        'down_proj',
      ]);
      expect(wide[0]!.parts).toEqual([
        { module: 'q_proj', offset: 0, size: 64 },
        { module: 'k_proj', offset: 64, size: 32 },
        { module: 'v_proj', offset: 96, size: 32 },
      ]);
      expect(m.graph.hasPositionIds).toBe(rep.rotaryNodes === true);
      expect(m.graph.numLogitsToKeep).toBeNull();
    } else {
      expect(mods).toEqual(['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']);
      expect(m.graph.numLogitsToKeep).toEqual([]);
    }
    expect(m.graph.kvDtype).toBe(rep.f16 ? 'float16' : 'float32');
  });

  it('logits match the oracle; the KV path equals the full forward; greedy tokens equal', async () => {
    const full = await promptLogits(ort, m.graph, set.prompt, m.noAdapter);
    const want = oracleLogits(set, rep.oracle);
    expectClose(full, want, rep.tol, `${rep.name} logits vs oracle`);
    const kv = await promptLogits(ort, m.graph, set.prompt, m.noAdapter, [5, 1, 2]);
    expectClose(kv, full, rep.f16 ? rep.tol : SAME_GRAPH, `${rep.name} KV path vs full forward`);
    const tokens = await greedy(ort, m.graph, set.prompt, 8, { extraFeeds: m.noAdapter });
    expect(tokens).toEqual(oracleGreedy(set, rep.oracle));
    measured.push(
      `  ${rep.name.padEnd(18)} base ${maxAbsDiff(full, want).toExponential(1)}  KV-vs-full ${maxAbsDiff(kv, full).toExponential(1)}`,
    );
  });

  it('a PEFT adapter (rank_pattern, alpha_pattern) matches the merged-weights oracle', async () => {
    const feeds = m.feedsOf(set.adapter);
    const got = await promptLogits(ort, m.graph, set.prompt, feeds, [6, 2]);
    const want = oracleLogits(set, rep.loraOracle);
    expectClose(got, want, rep.tol, `${rep.name} + adapter vs merged oracle`);
    expect(await greedy(ort, m.graph, set.prompt, 8, { extraFeeds: feeds })).toEqual(
      oracleGreedy(set, rep.loraOracle),
    );
    measured.push(`  ${rep.name.padEnd(18)} +adapter ${maxAbsDiff(got, want).toExponential(1)}`);
  });

  it('a Phi-3 adapter (packed qkv_proj, gate_up_proj PEFT modules) matches its merged oracle', async () => {
    const got = await promptLogits(ort, m.graph, set.prompt, m.feedsOf(set.phi3));
    const want = oracleLogits(set, rep.phi3Oracle);
    expectClose(got, want, rep.tol, `${rep.name} + Phi-3 adapter vs merged oracle`);
    measured.push(`  ${rep.name.padEnd(18)} +phi3 ${maxAbsDiff(got, want).toExponential(1)}`);
  });
});

describe('packed vs split projections (wasm)', () => {
  it('the same q/k/v adapter gives the same logits on the packed (builder) and split (Optimum) graphs', async () => {
    const split = await loadReplica(ort, read, REPLICAS[0]!, set.config, 'wasm');
    const packed = await loadReplica(ort, read, REPLICAS[4]!, set.config, 'wasm', {
      packed: 'block-diagonal',
    });
    try {
      const a = await promptLogits(ort, split.graph, set.prompt, split.feedsOf(set.adapter));
      const b = await promptLogits(ort, packed.graph, set.prompt, packed.feedsOf(set.adapter));
      expectClose(b, a, SAME_GRAPH, 'packed vs split, same adapter');
      // The packed target's feeds: A = [A_q | A_k | A_v] along the rank, B block-diagonal.
      const f = packed.peft(set.adapter);
      const qkvB = f.feeds.get('lora.0.qkv_proj.B')!;
      const [R, out] = qkvB.dims;
      expect(out).toBe(128);
      // ranks q 4, k 4, v 2 (rank_pattern) -> rows 0..3 write only Q columns, 8..9 only V columns
      const nonzero = (row: number, c0: number, c1: number) =>
        qkvB.data.slice(row * out + c0, row * out + c1).some((x) => x !== 0);
      expect([nonzero(0, 0, 64), nonzero(0, 64, 128)]).toEqual([true, false]);
      expect([nonzero(4, 0, 64), nonzero(4, 64, 96), nonzero(4, 96, 128)]).toEqual([false, true, false]);
      expect([nonzero(8, 0, 96), nonzero(8, 96, 128)]).toEqual([false, true]);
      expect(R).toBeGreaterThanOrEqual(10);
    } finally {
      await split.release();
      await packed.release();
    }
  });
});

describe('importPeftAdapter (the importer checks) on packed and split graphs', () => {
  it.each([
    ['adapter', 'optimum fp32'],
    ['adapter', 'builder fp32'],
    ['adapter-phi3', 'optimum fp32'],
    ['adapter-phi3', 'builder fp32'],
  ])('%s imports onto the %s targets and yields the peftToFeeds feeds', async (dir, name) => {
    const rep = REPLICAS.find((r) => r.name === name)!;
    const g = graphOf(decodeModel(await read(rep.file)));
    const { targets } = injectLora(decodeModel(await read(rep.file)));
    // Default 'per-part': a packed projection is one target per part (q, k, v).
    expect(findProjections(g).reduce((n, p) => n + (p.parts?.length ?? 1), 0)).toBe(targets.length);
    const imported = importPeftAdapter(
      {
        config: await read(`${dir}/adapter_config.json`),
        weights: await read(`${dir}/adapter_model.safetensors`),
      },
      { id: 'weblora/replica', targets },
    );
    const a = dir === 'adapter' ? set.adapter : set.phi3;
    const want = peftToFeeds(a.config, a.tensors, targets);
    expect(imported.feeds.rank).toBe(want.rank);
    for (const [k, f] of want.feeds) expect(imported.feeds.feeds.get(k)!.data).toEqual(f.data);
  });
});

describe('layouts that cannot take LoRA, and LoRA sub-scopes', () => {
  const proj = (op: string, name: string, domain = '') =>
    tinyModel({
      nodes: [{ op, domain, name, inputs: ['x', 'w'], outputs: ['y'] }],
      inputs: [{ name: 'x', dims: [1, 4] }],
      outputs: [{ name: 'y', dims: [1, 4] }],
      raw: [{ name: 'w', dataType: 3, dims: [4, 4], rawData: new Uint8Array(16) }],
    });

  it.each([
    ['MatMulInteger', '', 'int8'],
    ['MatMulBnb4', 'com.microsoft', 'bnb4'],
  ])('%s projections -> UnsupportedModelError naming the layout', (op, domain, layout) => {
    const model = proj(op, `/model/layers.0/self_attn/q_proj/${op}`, domain);
    let err: unknown;
    try {
      injectLora(model);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UnsupportedModelError);
    expect(detectLayout(model).weights).toBe(layout);
    expect((err as UnsupportedModelError).data.layout).toMatch(new RegExp(`^${layout}`));
    expect((err as Error).message).toMatch(/q_proj, layer 0/);
  });

  it('nodes inside a baked-in LoRA sub-scope (…/q_proj/lora_A/MatMul) are not targets', () => {
    const w = new Float32Array(16);
    const model = tinyModel({
      nodes: [
        { op: 'MatMul', name: '/model/layers.0/attn/q_proj/MatMul', inputs: ['x', 'wq'], outputs: ['q'] },
        {
          op: 'MatMul',
          name: '/model/layers.0/attn/q_proj/lora_A/MatMul',
          inputs: ['x', 'la'],
          outputs: ['a'],
        },
        {
          op: 'MatMul',
          name: '/model/layers.0/attn/q_proj/lora_B/MatMul',
          inputs: ['a', 'lb'],
          outputs: ['b'],
        },
        { op: 'Add', name: '/model/layers.0/attn/q_proj/lora/Add', inputs: ['q', 'b'], outputs: ['y'] },
      ],
      inputs: [{ name: 'x', dims: [1, 4] }],
      outputs: [{ name: 'y', dims: [1, 4] }],
      inits: ['wq', 'la', 'lb'].map((name) => ({ name, dims: [4, 4], data: w })),
    });
    expect(findProjections(graphOf(model)).map((p) => p.label)).toEqual([
      '/model/layers.0/attn/q_proj/MatMul',
    ]);
  });

  it('a q/k/v adapter on a packed projection whose split is unknown is a typed mismatch', async () => {
    // The builder graph without its GroupQueryAttention head counts: qkv_proj has no parts.
    const g = graphOf(decodeModel(await read('builder/model.onnx')));
    for (const n of g.node) if (n.opType === 'GroupQueryAttention') n.opType = 'GroupQueryAttentionX';
    const t = findProjections(g).find((p) => p.module === 'qkv_proj')!;
    expect(t.parts).toBeUndefined();
    const targets = findProjections(g).map((p) => ({
      layer: p.layer,
      module: p.module,
      in: p.in,
      out: p.out,
    }));
    expect(() => peftToFeeds(set.adapter.config, set.adapter.tensors, targets)).toThrow(AdapterMismatchError);
  });
});

describe('a packed gate_up_proj projection in the graph (Phi-3 exports)', () => {
  it('block-diagonal: is one target with gate/up parts; gate_proj and up_proj PEFT modules map onto it block-diagonally', () => {
    const model = tinyModel({
      nodes: [
        { op: 'MatMul', name: '/model/layers.0/mlp/gate_up_proj/MatMul', inputs: ['x', 'w'], outputs: ['y'] },
      ],
      inputs: [{ name: 'x', dims: [1, 4] }],
      outputs: [{ name: 'y', dims: [1, 6] }],
      inits: [{ name: 'w', dims: [4, 6], data: new Float32Array(24) }],
    });
    const { targets } = injectLora(model, { targets: ['up_proj'], packed: 'block-diagonal' });
    expect(targets.map((t) => [t.module, t.in, t.out])).toEqual([['gate_up_proj', 4, 6]]);
    // packed 'per-part': one narrow branch per part, each a target named by its part.
    const perPart = injectLora(model, { packed: 'per-part' });
    expect(perPart.targets.map((t) => [t.module, t.in, t.out, t.packedIn, t.inputA])).toEqual([
      ['gate_proj', 4, 3, 'gate_up_proj', 'lora.0.gate_proj.A'],
      ['up_proj', 4, 3, 'gate_up_proj', 'lora.0.up_proj.A'],
    ]);
    expect(graphOf(perPart.model).node.find((n) => n.opType === 'Concat')?.input).toEqual([
      '/lora.0.gate_up_proj/gate_proj/xAB',
      '/lora.0.gate_up_proj/up_proj/xAB',
    ]);
    expect(targets[0]!.parts).toEqual([
      { module: 'gate_proj', offset: 0, size: 3 },
      { module: 'up_proj', offset: 3, size: 3 },
    ]);
    const cfg = parsePeftConfig({
      peft_type: 'LORA',
      r: 1,
      lora_alpha: 1,
      target_modules: ['gate_proj', 'up_proj'],
    });
    const t = (v: number[], shape: number[]) => ({
      dtype: 'F32' as const,
      shape,
      data: new Uint8Array(new Float32Array(v).buffer),
    });
    const tensors = new Map([
      ['base_model.model.model.layers.0.mlp.gate_proj.lora_A.weight', t([1, 0, 0, 0], [1, 4])],
      ['base_model.model.model.layers.0.mlp.gate_proj.lora_B.weight', t([1, 2, 3], [3, 1])],
      ['base_model.model.model.layers.0.mlp.up_proj.lora_A.weight', t([0, 1, 0, 0], [1, 4])],
      ['base_model.model.model.layers.0.mlp.up_proj.lora_B.weight', t([4, 5, 6], [3, 1])],
    ]);
    const f = peftToFeeds(cfg, tensors, targets);
    expect(f.rank).toBe(2);
    expect([...f.feeds.get('lora.0.gate_up_proj.A')!.data]).toEqual([1, 0, 0, 1, 0, 0, 0, 0]); // (4, 2)
    expect([...f.feeds.get('lora.0.gate_up_proj.B')!.data]).toEqual([1, 2, 3, 0, 0, 0, 0, 0, 0, 4, 5, 6]); // (2, 6)
  });
});

// Issue 11: the two measured choices (bench/README.md "Branch variants") must both be exact-enough.
describe('LoRA branch variants (wasm): float16 branch, per-part packed branches', () => {
  const f16 = REPLICAS.filter((r) => r.f16);
  it.each(f16.map((r) => [r.name, r] as const))(
    '%s: branchDtype float16 (fp16 A/B, no Casts) matches the merged oracle like the fp32 branch',
    async (_n, rep) => {
      const m32 = await loadReplica(ort, read, rep, set.config, 'wasm');
      const m16 = await loadReplica(ort, read, rep, set.config, 'wasm', { branchDtype: 'float16' });
      try {
        expect(m16.targets.every((t) => t.inputDtype === 'float16')).toBe(true);
        expect(m32.targets.every((t) => t.inputDtype === 'float32')).toBe(true);
        const want = oracleLogits(set, rep.loraOracle);
        const a = await promptLogits(ort, m32.graph, set.prompt, m32.feedsOf(set.adapter));
        const b = await promptLogits(ort, m16.graph, set.prompt, m16.feedsOf(set.adapter), [6, 2]);
        expectClose(b, want, rep.tol, `${rep.name} fp16 branch vs merged oracle`);
        expect(await greedy(ort, m16.graph, set.prompt, 8, { extraFeeds: m16.feedsOf(set.adapter) })).toEqual(
          oracleGreedy(set, rep.loraOracle),
        );
        // Rank 0 (no adapter) feeds are float16 too and reproduce the base model.
        const base = await promptLogits(ort, m16.graph, set.prompt, m16.noAdapter);
        expectClose(base, oracleLogits(set, rep.oracle), rep.tol, `${rep.name} fp16 branch, rank 0`);
        measured.push(
          `  ${rep.name.padEnd(18)} +adapter fp32 branch ${maxAbsDiff(a, want).toExponential(2)}  fp16 branch ${maxAbsDiff(b, want).toExponential(2)}  fp16-vs-fp32 ${maxAbsDiff(a, b).toExponential(2)}`,
        );
      } finally {
        await m32.release();
        await m16.release();
      }
    },
  );

  it('branchDtype float16 leaves float32 projections alone (inputs stay float32)', async () => {
    const { targets } = injectLora(decodeModel(await read('optimum/model.onnx')), { branchDtype: 'float16' });
    expect(targets.every((t) => t.inputDtype === 'float32')).toBe(true);
  });

  const builders = REPLICAS.filter((r) => r.layout === 'builder');
  it.each(builders.map((r) => [r.name, r] as const))(
    '%s: per-part packed branches (q, k, v narrow) give the block-diagonal logits and the oracle',
    async (_n, rep) => {
      const wide = await loadReplica(ort, read, rep, set.config, 'wasm', { packed: 'block-diagonal' });
      const narrow = await loadReplica(ort, read, rep, set.config, 'wasm', { packed: 'per-part' });
      try {
        expect(narrow.targets.filter((t) => t.layer === 0).map((t) => [t.module, t.out, t.packedIn])).toEqual(
          [
            ['q_proj', 64, 'qkv_proj'],
            ['k_proj', 32, 'qkv_proj'],
            ['v_proj', 32, 'qkv_proj'],
            ['o_proj', 64, undefined],
            ['gate_proj', 64, undefined],
            ['up_proj', 64, undefined],
            ['down_proj', 64, undefined],
          ],
        );
        for (const [a, oracle] of [
          [set.adapter, rep.loraOracle],
          [set.phi3, rep.phi3Oracle],
        ] as const) {
          const x = await promptLogits(ort, wide.graph, set.prompt, wide.feedsOf(a));
          const y = await promptLogits(ort, narrow.graph, set.prompt, narrow.feedsOf(a), [6, 2]);
          expectClose(y, x, rep.f16 ? rep.tol : SAME_GRAPH, `${rep.name} per-part vs block-diagonal`);
          expectClose(y, oracleLogits(set, oracle), rep.tol, `${rep.name} per-part vs merged oracle`);
          measured.push(
            `  ${rep.name.padEnd(18)} ${a === set.adapter ? 'adapter' : 'phi3   '} per-part vs block-diag ${maxAbsDiff(x, y).toExponential(2)}  vs oracle ${maxAbsDiff(y, oracleLogits(set, oracle)).toExponential(2)}`,
          );
        }
        expectClose(
          await promptLogits(ort, narrow.graph, set.prompt, narrow.noAdapter),
          oracleLogits(set, rep.oracle),
          rep.tol,
          `${rep.name} per-part, rank 0`,
        );
      } finally {
        await wide.release();
        await narrow.release();
      }
    },
  );

  it('per-part on the packed graph equals the split (Optimum) graph with the same adapter', async () => {
    const split = await loadReplica(ort, read, REPLICAS[0]!, set.config, 'wasm');
    const narrow = await loadReplica(ort, read, REPLICAS[4]!, set.config, 'wasm', { packed: 'per-part' });
    try {
      const a = await promptLogits(ort, split.graph, set.prompt, split.feedsOf(set.adapter));
      const b = await promptLogits(ort, narrow.graph, set.prompt, narrow.feedsOf(set.adapter));
      expectClose(b, a, SAME_GRAPH, 'per-part packed vs split, same adapter');
    } finally {
      await split.release();
      await narrow.release();
    }
  });
});
