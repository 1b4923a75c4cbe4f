// The gated graph on every layout replica (tests/fixtures/replicas: Optimum and onnxruntime-genai builder
// graphs, fp32/fp16/q4/q4f16, packed qkv_proj, external data) on wasm: the gate finds its input (the q_proj or
// packed qkv_proj activation, Cast to float32 in fp16 graphs), an ordinary adapter with the neutral gate
// equals the ungated graph exactly (softmax of one logit is exactly 1), and a two-expert gated mix whose
// gates are forced to expert 0 (b = ±30: expert 1 gets e⁻⁶⁰) equals expert 0 alone.
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-web';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gateFeeds } from '../../../src/adapters/gated.ts';
import { mixFeeds } from '../../../src/adapters/mix.ts';
import type { LoraFeed } from '../../../src/adapters/types.ts';
import { expectClose, maxAbsDiff, SAME_GRAPH } from '../../helpers/expect-close.ts';
import {
  type LoadedReplica,
  loadReplica,
  loadReplicaSet,
  promptLogits,
  REPLICAS,
  type ReplicaSet,
} from '../../helpers/replicas.ts';

const DIR = new URL('../../fixtures/replicas/', import.meta.url);
const read = async (p: string) => new Uint8Array(readFileSync(new URL(p, DIR)));
const toOrt = (m: Map<string, LoraFeed>) =>
  Object.fromEntries([...m].map(([k, v]) => [k, new ort.Tensor('float32', v.data, v.dims)]));

let set: ReplicaSet;
beforeAll(async () => {
  ort.env.wasm.numThreads = 1;
  set = await loadReplicaSet(read);
});

describe.each(REPLICAS)('$name replica, gated graph (wasm)', (rep) => {
  let plain: LoadedReplica;
  let gated: LoadedReplica;
  beforeAll(async () => {
    plain = await loadReplica(ort, read, rep, set.config, 'wasm');
    gated = await loadReplica(ort, read, rep, set.config, 'wasm', { branchOp: 'matmul', gates: true });
  });
  afterAll(async () => {
    await plain?.release();
    await gated?.release();
  });

  it('one gate per layer; neutral gate = ungated; a gate forced to one expert = that expert alone', async () => {
    expect(gated.gates!.map((g) => g.layer)).toEqual([...new Set(gated.targets.map((t) => t.layer))]);
    const a = gated.peft(set.adapter);
    const want = await promptLogits(ort, plain.graph, set.prompt, plain.feedsOf(set.adapter));
    const neutral = await promptLogits(ort, gated.graph, set.prompt, {
      ...gated.feedsOf(set.adapter),
      ...toOrt(gateFeeds(gated.gates!, null, [a.rank])),
    });
    expectClose(neutral, want, SAME_GRAPH, `${rep.name}: neutral gate vs ungated`);
    const C = gated.gates![0]!.in;
    const mix = mixFeeds(
      [
        { weight: 1, feeds: a },
        { weight: 1, feeds: gated.peft(set.phi3) },
      ],
      gated.targets,
    );
    const gates = new Map(
      gated.gates!.map((g) => [g.layer, { W: new Float32Array(2 * C), b: Float32Array.of(30, -30) }]),
    );
    const mixed = {
      experts: [
        { name: 'a', weight: 1 },
        { name: 'b', weight: 1 },
      ],
      hiddenSize: C,
      gates,
    };
    const got = await promptLogits(ort, gated.graph, set.prompt, {
      ...toOrt(mix.feeds),
      ...toOrt(gateFeeds(gated.gates!, mixed, [a.rank, mix.rank - a.rank])),
    });
    expectClose(
      got,
      want,
      rep.f16 ? rep.tol : { atol: 1e-4, rtol: 1e-4 },
      `${rep.name}: forced gate vs expert alone`,
    );
    // and the gate really selects: forced to the other expert, the logits move away.
    for (const g of gates.values()) g.b.set([-30, 30]);
    const other = await promptLogits(ort, gated.graph, set.prompt, {
      ...toOrt(mix.feeds),
      ...toOrt(gateFeeds(gated.gates!, mixed, [a.rank, mix.rank - a.rank])),
    });
    expect(maxAbsDiff(other, want)).toBeGreaterThan(rep.f16 ? 1 : 1e-2);
  });
});
