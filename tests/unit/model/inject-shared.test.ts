// injectLora's node-count options (src/model/inject-shared.ts) on the default model and on hand-built
// graphs: foldResidual and packShared give the logits of the plain injected graph (the oracle: it is checked
// against (X·A)·B in inject-lora.test.ts) with the same adapter, fed in each graph's layout; the node counts
// they promise; rank 0 and a zero row mask give the base model; Split before and after opset 13; typed errors.
import { describe, expect, it } from 'vitest';
import { ModelFormatError } from '../../../src/errors.ts';
import { injectLora, type LoraTarget, loraInjectOptionsFor } from '../../../src/model/inject-lora.ts';
import {
  decodeModel,
  encodeModel,
  graphOf,
  type ModelProto,
  nodesOf,
  onnx,
} from '../../../src/model/onnx-io.ts';
import { quantize } from '../../../src/model/quantize.ts';
import { expectClose, SAME_GRAPH } from '../../helpers/expect-close.ts';
import {
  defaultModelFeeds,
  type Feeds,
  f32,
  loadDefaultBytes,
  randn,
  runModel,
  tinyModel,
} from './graph-builders.ts';

const tokens = [1023, 5, 17, 300, 42, 9, 77, 512];
const R = 3;

/** A rank-R adapter per module (A (in, R), B (R, out)), by `layer.module`. */
function moduleAdapter(targets: readonly LoraTarget[]): Map<string, { A: Float32Array; B: Float32Array }> {
  const m = new Map<string, { A: Float32Array; B: Float32Array }>();
  targets.forEach((t, i) => {
    m.set(`${t.layer}.${t.module}`, { A: randn(t.in * R, 300 + i, 0.1), B: randn(R * t.out, 400 + i, 0.1) });
  });
  return m;
}

/**
 * Feeds for `targets` holding the per-module adapter: a packed target gets A = [A_q|A_k|A_v] and a
 * block-diagonal B, every target padded to the largest rank with zeros (what src/adapters/peft.ts feeds).
 */
function feedsFor(
  targets: readonly LoraTarget[],
  ad: Map<string, { A: Float32Array; B: Float32Array }>,
): Feeds {
  const partsOf = (t: LoraTarget) => t.parts?.map((p) => p.module as string) ?? [t.module];
  const Rt = Math.max(...targets.map((t) => partsOf(t).length * R));
  const f: Feeds = {};
  for (const t of targets) {
    const A = new Float32Array(t.in * Rt);
    const B = new Float32Array(Rt * t.out);
    let col = 0;
    partsOf(t).forEach((m, j) => {
      const { A: a, B: b } = ad.get(`${t.layer}.${m}`)!;
      const w = b.length / R; // this part's out
      for (let i = 0; i < t.in; i++) for (let r = 0; r < R; r++) A[i * Rt + j * R + r] = a[i * R + r]!;
      for (let r = 0; r < R; r++)
        for (let o = 0; o < w; o++) B[(j * R + r) * t.out + col + o] = b[r * w + o]!;
      col += w;
    });
    f[t.inputA] = f32(A, [t.in, Rt]);
    f[t.inputB] = f32(B, [Rt, t.out]);
  }
  return f;
}

const count = (m: ModelProto, op: string) => nodesOf(graphOf(m)).filter((n) => n.opType === op).length;
const loraNodes = (m: ModelProto) => nodesOf(graphOf(m)).filter((n) => n.name?.startsWith('/lora.')).length;

describe('injectLora foldResidual / packShared on the default model', () => {
  const base = decodeModel(loadDefaultBytes());
  const plain = injectLora(base, { rowMask: true });
  const adapter = moduleAdapter(plain.targets);
  const feeds = defaultModelFeeds(tokens);
  const one = { lora_row_mask: f32(Float32Array.of(1), [1, 1, 1]) };

  it('foldResidual: the o_proj / down_proj Adds merge into the residual Adds (12 Sums), same logits', async () => {
    const folded = injectLora(base, { rowMask: true, foldResidual: true });
    expect(folded.targets).toEqual(plain.targets); // feeds unchanged
    expect(count(folded.model, 'Sum') - count(base, 'Sum')).toBe(12);
    expect(count(plain.model, 'Add') - count(folded.model, 'Add')).toBe(2 * 12);
    expect(nodesOf(graphOf(plain.model)).length - nodesOf(graphOf(folded.model)).length).toBe(12);
    const f = { ...feeds, ...one, ...feedsFor(plain.targets, adapter) };
    const want = (await runModel(plain.model, f)).logits!;
    const got = (await runModel(decodeModel(encodeModel(folded.model)), f)).logits!;
    expectClose(got, want, SAME_GRAPH, 'foldResidual logits');
  });

  it('packShared: 24 targets (qkv_proj, o, gate_up_proj, down per layer), 28 → 21 branch nodes, same logits', async () => {
    const packed = injectLora(base, { rowMask: true, packShared: true });
    expect(packed.targets.map((t) => t.module).slice(0, 4)).toEqual([
      'qkv_proj',
      'o_proj',
      'gate_up_proj',
      'down_proj',
    ]);
    expect(packed.targets).toHaveLength(24);
    const qkv = packed.targets[0]!;
    expect(qkv).toMatchObject({ layer: 0, in: 256, out: 512, inputA: 'lora.0.qkv_proj.A' });
    expect(qkv.parts).toEqual([
      { module: 'q_proj', offset: 0, size: 256 },
      { module: 'k_proj', offset: 256, size: 128 },
      { module: 'v_proj', offset: 384, size: 128 },
    ]);
    expect(packed.targets[2]!.parts!.map((p) => p.size)).toEqual([704, 704]);
    // Per layer: qkv A, mask, B, Split, 3 Adds; gate_up 1+1+1+1+2; o and down 4 each (+ 2 Split-size Constants).
    expect(loraNodes(packed.model)).toBe(6 * (7 + 6 + 4 + 4 + 2));
    expect(count(packed.model, 'Split') - count(base, 'Split')).toBe(12);

    const both = injectLora(base, { rowMask: true, packShared: true, foldResidual: true });
    expect(loraNodes(both.model)).toBe(6 * (7 + 6 + 3 + 3 + 2));

    const want = (await runModel(plain.model, { ...feeds, ...one, ...feedsFor(plain.targets, adapter) }))
      .logits!;
    const pf: Feeds = { ...feeds, ...one, ...feedsFor(packed.targets, adapter) };
    expect(pf['lora.0.o_proj.A']!.dims).toEqual([256, 3 * R]); // padded to the packed rank
    for (const m of [packed.model, both.model]) {
      const got = (await runModel(decodeModel(encodeModel(m)), pf)).logits!;
      expectClose(got, want, SAME_GRAPH, 'packShared logits');
    }
    // A zero row mask turns every branch off: the base model's logits.
    const ref = (await runModel(base, feeds)).logits!;
    expect(Math.max(...want.map((v, i) => Math.abs(v - ref[i]!)))).toBeGreaterThan(1e-3); // the adapter acts
    const zero = { lora_row_mask: f32(new Float32Array(3 * R), [1, 1, 3 * R]) };
    const off = (await runModel(packed.model, { ...pf, ...zero })).logits!;
    expectClose(off, ref, SAME_GRAPH, 'packShared, mask 0');
  });

  it('packShared on the 4-bit graph: rank 0 is the base model; a subset without all parts stays unpacked', async () => {
    const q = quantize(base).model;
    const { model, targets } = injectLora(q, { packShared: true });
    expect(targets.filter((t) => t.parts)).toHaveLength(12);
    const f: Feeds = {};
    for (const t of targets) {
      f[t.inputA] = f32(new Float32Array(0), [t.in, 0]);
      f[t.inputB] = f32(new Float32Array(0), [0, t.out]);
    }
    const ref = (await runModel(q, feeds)).logits!;
    const got = (await runModel(model, { ...feeds, ...f })).logits!;
    expect(Array.from(got)).toEqual(Array.from(ref)); // + 0 everywhere: bit-exact

    const sub = injectLora(q, { packShared: true, targets: ['q_proj', 'v_proj', 'gate_proj', 'up_proj'] });
    expect(sub.targets.slice(0, 3).map((t) => t.module)).toEqual(['q_proj', 'v_proj', 'gate_up_proj']);
  });

  it('packShared with gates -> ModelFormatError; the engine options per backend', () => {
    expect(() => injectLora(base, { packShared: true, gates: true })).toThrow(ModelFormatError);
    expect(loraInjectOptionsFor('wasm')).toEqual({ branchOp: 'matmul', rowMask: true });
    expect(loraInjectOptionsFor('webgpu')).toEqual({ branchOp: 'einsum', rowMask: true });
  });
});

describe('packShared on a hand-built q/k/v block: Split sizes as an input (opset 17) or attribute (opset 11)', () => {
  const K = 8;
  const outs = { q_proj: 8, k_proj: 4, v_proj: 4 };
  const block = () =>
    tinyModel({
      nodes: [
        ...Object.entries(outs).map(([m]) => ({
          op: 'MatMul',
          name: `/model/layers.0/self_attn/${m}/MatMul`,
          inputs: ['X', `W_${m}`],
          outputs: [`Y_${m}`],
        })),
        { op: 'Concat', inputs: ['Y_q_proj', 'Y_k_proj', 'Y_v_proj'], outputs: ['Z'], attrs: { axis: -1 } },
      ],
      inputs: [{ name: 'X', dims: [1, 2, K] }],
      outputs: [{ name: 'Z', dims: [1, 2, 16] }],
      inits: Object.entries(outs).map(([m, n], i) => ({
        name: `W_${m}`,
        dims: [K, n],
        data: randn(K * n, 50 + i),
      })),
    });

  for (const opset of [17, 11]) {
    it(`opset ${opset}`, async () => {
      const m0 = block();
      const m = onnx.ModelProto.create({ ...m0, opsetImport: [{ domain: '', version: opset }] });
      const plain = injectLora(m);
      const packed = injectLora(m, { packShared: true });
      expect(packed.targets.map((t) => t.module)).toEqual(['qkv_proj']);
      const split = nodesOf(graphOf(packed.model)).find((n) => n.opType === 'Split')!;
      expect(split.input).toHaveLength(opset >= 13 ? 2 : 1);
      const ad = moduleAdapter(plain.targets);
      const X = { X: f32(randn(2 * K, 60), [1, 2, K]) };
      const want = (await runModel(plain.model, { ...X, ...feedsFor(plain.targets, ad) })).Z!;
      const got = (
        await runModel(decodeModel(encodeModel(packed.model)), { ...X, ...feedsFor(packed.targets, ad) })
      ).Z!;
      expectClose(got, want, SAME_GRAPH, `packShared, opset ${opset}`);
    });
  }
});
