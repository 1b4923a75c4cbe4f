// The decoder fusion pass (src/model/fuse-decoder.ts, fuse-rotary.ts) on onnxruntime-web's Node/wasm build:
// which sites it rewrites on the default model and the layout replicas, that the rewritten graph computes
// the same logits as the original (prefill and KV-cached steps) and the PyTorch oracle's greedy tokens, and
// that a site differing from the exact pattern is left alone.
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-web';
import { beforeAll, describe, expect, it } from 'vitest';
import { createDecoderSession, type DecoderGraph, greedy, KvStepper } from '../../../src/engine/session.ts';
import { type FuseOptions, fuseDecoder, fuseOptionsFor } from '../../../src/model/fuse-decoder.ts';
import {
  decodeModel,
  encodeModel,
  graphOf,
  type ModelProto,
  makeTensor,
  nodesOf,
  onnx,
} from '../../../src/model/onnx-io.ts';
import { parseModelConfig } from '../../../src/model/package.ts';
import { expectClose, FP32_LOGITS, maxAbsDiff } from '../../helpers/expect-close.ts';
import {
  loadReplicaSet,
  oracleGreedy,
  oracleLogits,
  promptLogits,
  REPLICAS,
  type ReplicaSet,
} from '../../helpers/replicas.ts';
import { DEFAULT_MODEL } from './graph-builders.ts';

ort.env.wasm.numThreads = 1;

const PKG = DEFAULT_MODEL.slice(0, DEFAULT_MODEL.lastIndexOf('/onnx/'));
const config = parseModelConfig(JSON.parse(readFileSync(`${PKG}/config.json`, 'utf8')));
// Reassociated sums (fused RMSNorm, Einsum) move fp32 logits by a few ulps: FP32_LOGITS bounds fused vs unfused.
const PROMPT = [5, 71, 300, 12, 999, 64, 7, 128, 511, 3, 42, 800];

const ops = (m: ModelProto) => {
  const c = new Map<string, number>();
  for (const n of nodesOf(graphOf(m))) c.set(n.opType, (c.get(n.opType) ?? 0) + 1);
  return c;
};

async function session(m: ModelProto, cfg = config): Promise<DecoderGraph> {
  return createDecoderSession(ort, encodeModel(m), cfg, { backend: 'wasm' });
}

/** Prompt logits, then 4 cached single-token steps (fixed ids): every row, concatenated. */
async function trace(graph: DecoderGraph): Promise<Float32Array[]> {
  const st = new KvStepper(ort, graph);
  try {
    const rows = [await st.step(PROMPT)];
    for (const id of [17, 400, 2, 900]) rows.push(await st.step([id]));
    return rows;
  } finally {
    st.dispose();
  }
}

describe('fuseDecoder on the default model (wasm)', () => {
  for (const file of ['model.onnx', 'model_q4.onnx']) {
    for (const attention of ['einsum', 'matmul', 'einsum-matmul'] as const) {
      it(`${file}, attention ${attention}: every site fused; logits and 24 greedy tokens = unfused`, async () => {
        const m = decodeModel(new Uint8Array(readFileSync(`${PKG}/onnx/${file}`)));
        const before = graphOf(m).node.length;
        const { model, report } = fuseDecoder(m, config, { norms: true, rotary: true, attention });
        // 6 layers: 2 norms each + the final one; 12 of them read a residual sum; Q and K rotary per layer.
        expect(report).toEqual({ norms: 13, skipNorms: 12, rotary: 12, attention: 6, scaleFolds: 6 });
        expect(graphOf(m).node.length).toBe(before); // the input model is not modified
        const c = ops(model);
        expect(c.get('SimplifiedLayerNormalization')).toBe(1);
        expect(c.get('SkipSimplifiedLayerNormalization')).toBe(12);
        expect(c.get('RotaryEmbedding')).toBe(12);
        expect(c.get('Expand') ?? 0).toBe(0); // repeat_kv's copies are gone
        expect(c.get('Pow') ?? 0).toBe(0);
        expect(c.get('Neg') ?? 0).toBe(0);
        expect(c.get('Einsum') ?? 0).toBe({ einsum: 12, 'einsum-matmul': 6, matmul: 0 }[attention]);
        // The 1/√h score scale now rides in Q's rotary caches: the Mul after the scores is gone.
        expect(nodesOf(graphOf(model)).some((x) => x.name.endsWith('self_attn/Mul_6'))).toBe(false);
        const [a, b] = [await session(m), await session(model)];
        try {
          const [ta, tb] = [await trace(a), await trace(b)];
          for (const [i, row] of ta.entries()) expectClose(tb[i]!, row, FP32_LOGITS, `${file} row ${i}`);
          expect(await greedy(ort, b, PROMPT, 24)).toEqual(await greedy(ort, a, PROMPT, 24));
        } finally {
          await a.session.release();
          await b.session.release();
        }
      });
    }
  }

  it('is a no-op on its own output and with every rewrite off', () => {
    const m = decodeModel(new Uint8Array(readFileSync(DEFAULT_MODEL)));
    const once = fuseDecoder(m, config, fuseOptionsFor('webgpu')).model;
    const twice = fuseDecoder(once, config, fuseOptionsFor('webgpu'));
    expect(twice.report).toEqual({ norms: 0, skipNorms: 0, rotary: 0, attention: 0, scaleFolds: 0 });
    expect(twice.model).toBe(once);
    const off: FuseOptions = { norms: false, rotary: false, attention: false };
    expect(fuseDecoder(m, config, off).model).toBe(m);
  });

  it('a norm weight behind an Identity (torch.onnx dedups equal initializers that way) is fused too', async () => {
    const m = decodeModel(new Uint8Array(readFileSync(DEFAULT_MODEL)));
    const g = graphOf(m);
    // Every norm of layers 1..5 reads layer 0's input_layernorm weight through an Identity, as the
    // SmolLM2-135M replica's export does for its all-ones norm weights.
    let n = 0;
    for (const node of nodesOf(g)) {
      const i = node.input.findIndex((x) => /^model\.layers\.[1-5]\..*layernorm\.weight$/.test(x));
      if (i < 0) continue;
      const alias = `test/identity_${n++}`;
      g.node.unshift(
        onnx.NodeProto.create({
          name: alias,
          opType: 'Identity',
          input: ['model.layers.0.input_layernorm.weight'],
          output: [alias],
        }),
      );
      node.input[i] = alias;
    }
    expect(n).toBe(10);
    const fused = fuseDecoder(m, config, fuseOptionsFor('wasm'));
    expect(fused.report.norms).toBe(13);
    expect(fused.report.skipNorms).toBe(12);
    const [a, b] = [await session(m), await session(fused.model)];
    try {
      const [ta, tb] = [await trace(a), await trace(b)];
      for (const [i, row] of ta.entries())
        expectClose(tb[i]!, row, FP32_LOGITS, `identity weights, row ${i}`);
    } finally {
      await a.session.release();
      await b.session.release();
    }
  });

  it("HF's attention_scaling (cos and sin × 1.25) rides in the caches: fused, logits = the scaled graph's", async () => {
    const m = decodeModel(new Uint8Array(readFileSync(DEFAULT_MODEL)));
    const g = graphOf(m);
    g.initializer.push(makeTensor('test/scale', 1, [], Float32Array.of(1.25)));
    for (const op of ['Cos', 'Sin']) {
      const un = nodesOf(g).find((n) => n.opType === 'Unsqueeze' && n.input[0] === `/${op}_output_0`)!;
      g.node.splice(
        g.node.indexOf(un),
        0,
        onnx.NodeProto.create({
          name: `test/scale_${op}`,
          opType: 'Mul',
          input: [`/${op}_output_0`, 'test/scale'],
          output: [`test/${op}_scaled`],
        }),
      );
      un.input[0] = `test/${op}_scaled`;
    }
    const fused = fuseDecoder(m, config, fuseOptionsFor('wasm'));
    expect(fused.report.rotary).toBe(12);
    const [a, b] = [await session(m), await session(fused.model)];
    try {
      const [ta, tb] = [await trace(a), await trace(b)];
      for (const [i, row] of ta.entries()) expectClose(tb[i]!, row, FP32_LOGITS, `scaled rotary, row ${i}`);
      // The scale changed the model (the check is not vacuous).
      const plain = await session(decodeModel(new Uint8Array(readFileSync(DEFAULT_MODEL))));
      try {
        expect(maxAbsDiff(ta[0]!, (await trace(plain))[0]!)).toBeGreaterThan(1e-2);
      } finally {
        await plain.session.release();
      }
    } finally {
      await a.session.release();
      await b.session.release();
    }
  });

  it('leaves a site that differs from the pattern: a norm scaled by 2, a cos scaled without its sin, caches over 16 MiB', async () => {
    const m = decodeModel(new Uint8Array(readFileSync(DEFAULT_MODEL)));
    const g = graphOf(m);
    // Layer 2's post-attention norm computes 2 / rms instead of 1 / rms: not an RMSNorm.
    const div = nodesOf(g).find((n) => n.name === '/model/layers.2/post_attention_layernorm/Div')!;
    g.initializer.push(makeTensor('test/two', 1, [], Float32Array.of(2)));
    div.input[0] = 'test/two';
    const fused = fuseDecoder(m, config, fuseOptionsFor('wasm'));
    expect(fused.report.norms).toBe(12);
    expect(fused.report.skipNorms).toBe(11);
    expect(
      graphOf(fused.model).node.some((n) => n.name === '/model/layers.2/post_attention_layernorm/Div'),
    ).toBe(true);
    const [a, b] = [await session(m), await session(fused.model)];
    try {
      const [ta, tb] = [await trace(a), await trace(b)];
      for (const [i, row] of ta.entries()) expectClose(tb[i]!, row, FP32_LOGITS, `modified norm, row ${i}`);
      expect(
        maxAbsDiff(
          tb[0]!,
          (await trace(await session(decodeModel(new Uint8Array(readFileSync(DEFAULT_MODEL))))))[0]!,
        ),
      ).toBeGreaterThan(1e-3);
    } finally {
      await a.session.release();
      await b.session.release();
    }
    // Only the cos every layer reads gains a scale: cos and sin no longer agree, no rotary site matches.
    const m2 = decodeModel(new Uint8Array(readFileSync(DEFAULT_MODEL)));
    const g2 = graphOf(m2);
    const un = nodesOf(g2).find((n) => n.opType === 'Unsqueeze' && n.input[0] === '/Cos_output_0')!;
    g2.initializer.push(makeTensor('test/scale', 1, [], Float32Array.of(1.25)));
    g2.node.splice(
      g2.node.indexOf(un),
      0,
      onnx.NodeProto.create({
        name: 'test/scale_cos',
        opType: 'Mul',
        input: ['/Cos_output_0', 'test/scale'],
        output: ['test/cos_scaled'],
      }),
    );
    un.input[0] = 'test/cos_scaled';
    expect(fuseDecoder(m2, config, fuseOptionsFor('wasm')).report.rotary).toBe(0);
    // A context too long for the caches (2^20 positions × 16 × 2 × 4 bytes = 128 MiB): rotary kept.
    const long = fuseDecoder(
      decodeModel(new Uint8Array(readFileSync(DEFAULT_MODEL))),
      { ...config, maxPositionEmbeddings: 2 ** 20 },
      fuseOptionsFor('wasm'),
    );
    expect(long.report.rotary).toBe(0);
    expect(long.report.norms).toBe(13);
  });
});

// The Optimum replicas (fp32, fp16, q4, q4f16) fused: greedy tokens = the PyTorch oracle's, prompt logits
// within the replica's oracle tolerance; the builder replicas (GroupQueryAttention, fused norms) match nothing.
describe('fuseDecoder on the layout replicas (wasm)', () => {
  const DIR = new URL('../../fixtures/replicas/', import.meta.url);
  const read = async (p: string) => new Uint8Array(readFileSync(new URL(p, DIR)));
  let set: ReplicaSet;
  beforeAll(async () => {
    set = await loadReplicaSet(read);
  });

  it.each(REPLICAS)('$name', async (rep) => {
    const m = decodeModel(await read(rep.file));
    const { model, report } = fuseDecoder(m, set.config, fuseOptionsFor('wasm'));
    if (rep.layout === 'builder') {
      expect(report).toEqual({ norms: 0, skipNorms: 0, rotary: 0, attention: 0, scaleFolds: 0 });
      expect(model).toBe(m);
      return;
    }
    // 2 layers: 5 norms (4 after a residual), Q and K rotary per layer, 2 attentions.
    expect(report).toEqual({ norms: 5, skipNorms: 4, rotary: 4, attention: 2, scaleFolds: 2 });
    const graph = await createDecoderSession(ort, encodeModel(model), set.config, { backend: 'wasm' });
    try {
      expect(await greedy(ort, graph, set.prompt, 8)).toEqual(oracleGreedy(set, rep.oracle));
      expectClose(
        await promptLogits(ort, graph, set.prompt, {}),
        oracleLogits(set, rep.oracle),
        rep.tol,
        rep.name,
      );
    } finally {
      await graph.session.release();
    }
  });
});
