// The gated LoRA graph (injectLora(..., { gates: true }), src/model/inject-gates.ts) on onnxruntime-web
// (Node → wasm) against the PyTorch gate oracle (tests/fixtures/gates.safetensors, scripts/py/gate_fixtures.py):
// the default fp32 model, experts weblora-shout (weight 1) and weblora-romeo (0.5), random per-layer gates.
// Also: the ungated graph is unchanged by the option's existence, and an ordinary selection on the gated
// graph (neutral gate: n = 1) gives the ungated graph's logits.
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-web';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GatedMix, gateFeeds, parseGatedMix, serializeGatedMix } from '../../../src/adapters/gated.ts';
import { peftToFeeds } from '../../../src/adapters/peft.ts';
import type { LoraFeed } from '../../../src/adapters/types.ts';
import { AdapterFormatError, InvalidOptionError } from '../../../src/errors.ts';
import { GATE_EXPAND_INPUT, gateInputName } from '../../../src/model/inject-gates.ts';
import { injectLora, type LoraBranchOp } from '../../../src/model/inject-lora.ts';
import { decodeModel, encodeModel, graphOf, inputsOf, nodesOf } from '../../../src/model/onnx-io.ts';
import { expectClose, FP32_LOGITS, SAME_GRAPH } from '../../helpers/expect-close.ts';
import { MODEL_PATH } from '../../helpers/fixtures.ts';
import { type GateFixture, gatedMixFeeds, loadGateFixture, readExample } from '../../helpers/gates.ts';

ort.env.wasm.numThreads = 1;
const L = 6;
const KV = 4;
const HD = 32;
type Feeds = Record<string, ort.Tensor>;
const i64 = (xs: number[]) => new ort.Tensor('int64', BigInt64Array.from(xs, BigInt), [1, xs.length]);
const toOrt = (m: Map<string, LoraFeed>): Feeds =>
  Object.fromEntries([...m].map(([k, v]) => [k, new ort.Tensor('float32', v.data, v.dims)]));

async function logits(s: ort.InferenceSession, ids: number[], extra: Feeds): Promise<Float32Array> {
  const feeds: Feeds = {
    input_ids: i64(ids),
    attention_mask: i64(ids.map(() => 1)),
    position_ids: i64(ids.map((_, i) => i)),
    ...extra,
  };
  for (let l = 0; l < L; l++)
    for (const kv of ['key', 'value'])
      feeds[`past_key_values.${l}.${kv}`] = new ort.Tensor('float32', new Float32Array(0), [1, KV, 0, HD]);
  return (await s.run(feeds)).logits!.data as Float32Array;
}

let fx: GateFixture;
const base = decodeModel(new Uint8Array(readFileSync(MODEL_PATH)));
const sessions: ort.InferenceSession[] = [];
async function session(opts: { gates?: boolean; branchOp?: LoraBranchOp }) {
  const inj = injectLora(base, opts);
  const s = await ort.InferenceSession.create(encodeModel(inj.model), { executionProviders: ['wasm'] });
  sessions.push(s);
  return { s, ...inj };
}
beforeAll(() => {
  fx = loadGateFixture();
});
afterAll(async () => {
  for (const s of sessions) await s.release();
});

describe('injectLora gates: true', () => {
  it('adds one gate per layer (W, b), the expansion input, and nothing without the option', () => {
    const plain = injectLora(base);
    const gated = injectLora(base, { gates: true });
    expect(plain.gates).toBeUndefined();
    expect(nodesOf(graphOf(plain.model)).some((n) => (n.name ?? '').includes('gate/'))).toBe(false);
    expect(gated.gates!.map((g) => [g.layer, g.in, g.inputW, g.inputB])).toEqual(
      [0, 1, 2, 3, 4, 5].map((l) => [l, 256, gateInputName(l, 'W'), gateInputName(l, 'b')]),
    );
    const names = inputsOf(graphOf(gated.model)).map((i) => i.name);
    expect(names).toContain(GATE_EXPAND_INPUT);
    expect(names.filter((n) => /^lora\.\d+\.gate\.[Wb]$/.test(n))).toHaveLength(12);
    const ops = nodesOf(graphOf(gated.model)).map((n) => n.opType);
    const plainOps = nodesOf(graphOf(plain.model)).map((n) => n.opType);
    // per layer: MatMul W, Add b, Softmax, MatMul E; per target: one Mul.
    expect(ops.length - plainOps.length).toBe(6 * 4 + 42);
    expect(ops.filter((o) => o === 'Softmax').length - plainOps.filter((o) => o === 'Softmax').length).toBe(
      6,
    );
  });

  for (const branchOp of ['matmul', 'einsum'] as const) {
    it(`${branchOp}: gated logits of the shout+romeo mix match the PyTorch gate oracle`, async () => {
      const { s, targets, gates } = await session({ gates: true, branchOp });
      const feeds = gatedMixFeeds(fx.mix, targets, gates!);
      const got = await logits(s, fx.tokens, toOrt(feeds));
      expectClose(got, fx.logits, FP32_LOGITS, `gated logits (${branchOp})`);
    });
  }

  it('an ordinary adapter on the gated graph (neutral gate) equals the ungated graph', async () => {
    const plain = await session({});
    const gated = await session({ gates: true });
    const { cfg, tensors } = readExample('weblora-shout');
    const f = peftToFeeds(cfg, tensors, plain.targets);
    const want = await logits(plain.s, fx.tokens, toOrt(f.feeds));
    const neutral = gateFeeds(gated.gates!, null, [f.rank]);
    const got = await logits(gated.s, fx.tokens, toOrt(new Map([...f.feeds, ...neutral])));
    expectClose(got, want, SAME_GRAPH, 'neutral gate vs ungated');
    // and the gated mix really routes: it differs from the static mix on the same graph
    const staticMix = gatedMixFeeds(fx.mix, gated.targets, gated.gates!, false);
    const mixed = await logits(gated.s, fx.tokens, toOrt(staticMix));
    let diff = 0;
    for (let i = 0; i < mixed.length; i++) diff = Math.max(diff, Math.abs(mixed[i]! - fx.logits[i]!));
    expect(diff).toBeGreaterThan(0.1);
  });
});

describe('gated mix files (gated_mix_config.json + gates.safetensors)', () => {
  it('round-trips exactly', () => {
    const files = serializeGatedMix(fx.mix);
    const back = parseGatedMix(files);
    expect(back.experts).toEqual(fx.mix.experts);
    expect(back.hiddenSize).toBe(256);
    expect([...back.gates.keys()]).toEqual([0, 1, 2, 3, 4, 5]);
    for (const [l, g] of fx.mix.gates) {
      expect(back.gates.get(l)!.W).toEqual(g.W);
      expect(back.gates.get(l)!.b).toEqual(g.b);
    }
    expect(JSON.parse(files.config)).toMatchObject({ format: 'weblora-gated-mix', format_version: 1 });
  });

  it('rejects bad files and bad mixes with typed errors', () => {
    const files = serializeGatedMix(fx.mix);
    const cfg = JSON.parse(files.config);
    const withCfg = (c: object) => ({ config: JSON.stringify(c), weights: files.weights });
    expect(() => parseGatedMix({ config: '{', weights: files.weights })).toThrow(AdapterFormatError);
    expect(() => parseGatedMix(withCfg({ ...cfg, format: 'peft' }))).toThrow(/"format" must be/);
    expect(() => parseGatedMix(withCfg({ ...cfg, hidden_size: 128 }))).toThrow(/must be \[2, 128\]/);
    expect(() => parseGatedMix(withCfg({ ...cfg, layers: [0, 9] }))).toThrow(/layer 9: missing/);
    const bad: GatedMix = { ...fx.mix, experts: [{ name: 'a', weight: 0 }, fx.mix.experts[1]!] };
    expect(() => serializeGatedMix(bad)).toThrow(InvalidOptionError);
    expect(() => serializeGatedMix({ ...fx.mix, experts: [] })).toThrow(/at least one expert/);
  });
});
