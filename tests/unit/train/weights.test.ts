/**
 * Reading the frozen base for training from the ONNX files: fp16 scales are converted on read (the
 * model_q4.onnx scales rewritten as float16 give the same loss within half-precision rounding), and each
 * layout the reader does not support yet fails with a ModelFormatError that names it. Cases are made by
 * editing a freshly decoded copy of the real model, so everything else about the graph stays realistic.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { ModelFormatError } from '../../../src/errors.ts';
import {
  DataType,
  decodeModel,
  graphOf,
  initializersOf,
  intAttr,
  type ModelProto,
  type NodeProto,
  nodesOf,
  onnx,
} from '../../../src/model/onnx-io.ts';
import { parseModelConfig } from '../../../src/model/package.ts';
import { CpuLoraModel, type DecoderConfig } from '../../../src/train/cpu-model.ts';
import { decoderConfig, loadFrozenWeights } from '../../../src/train/weights.ts';
import { errorOf } from '../../helpers/errors.ts';
import { expectClose } from '../../helpers/expect-close.ts';
import { i32, MODEL_DIR, MODEL_PATH, Q4_PATH } from '../../helpers/fixtures.ts';
import { loadFixture } from './helpers.ts';

const CONFIG_JSON = JSON.parse(readFileSync(join(MODEL_DIR, 'config.json'), 'utf8'));
const CFG: DecoderConfig = decoderConfig(parseModelConfig(CONFIG_JSON));
const fresh = (path: string): ModelProto => decodeModel(new Uint8Array(readFileSync(path)));
const nodeNamed = (m: ModelProto, name: string): NodeProto => {
  const n = nodesOf(graphOf(m)).find((x) => x.name === name);
  if (!n) throw new Error(`no node ${name}`);
  return n;
};
const Q_PROJ = '/model/layers.0/self_attn/q_proj/MatMul';

/** float → IEEE half bits, round to nearest (ties away; fine for a test), subnormals included. */
function toHalf(x: number): number {
  const u = new Uint32Array(Float32Array.of(x).buffer)[0]!;
  const sign = (u >>> 16) & 0x8000;
  const exp = ((u >>> 23) & 0xff) - 127 + 15;
  const mant = u & 0x7fffff;
  if (exp >= 31) return sign | 0x7c00;
  if (exp <= 0) {
    if (exp < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - exp;
    return sign | ((m >> shift) + ((m >> (shift - 1)) & 1));
  }
  return (sign | (exp << 10) | (mant >> 13)) + ((mant >> 12) & 1);
}

function loss(m: ModelProto): number {
  const tokens = i32(loadFixture('lora-grads'), 'batch');
  return new CpuLoraModel(loadFrozenWeights(m, CFG), []).forward({ B: 2, T: 32, tokens });
}

function expectFormatError(m: ModelProto, ...parts: string[]): void {
  const e = errorOf(() => loadFrozenWeights(m, CFG));
  expect(e).toBeInstanceOf(ModelFormatError);
  for (const p of parts) expect(e.message).toContain(p);
}

describe('fp16 scales', () => {
  test('model_q4.onnx with every scale stored as float16: converted on read, same loss within fp16 rounding', () => {
    const m = fresh(Q4_PATH);
    const base = loadFrozenWeights(fresh(Q4_PATH), CFG);
    let n = 0;
    for (const t of initializersOf(graphOf(m))) {
      if (!t.name.endsWith('_scales')) continue;
      const dv = new DataView(t.rawData.buffer, t.rawData.byteOffset, t.rawData.byteLength);
      const half = new Uint16Array(t.rawData.byteLength / 4);
      for (let i = 0; i < half.length; i++) half[i] = toHalf(dv.getFloat32(4 * i, true));
      t.dataType = DataType.FLOAT16;
      t.rawData = new Uint8Array(half.buffer);
      n++;
    }
    expect(n).toBe(42);
    const w = loadFrozenWeights(m, CFG);
    const q = w.layers[3]!.proj.up_proj;
    const q0 = base.layers[3]!.proj.up_proj;
    if (q.kind !== 'q4' || q0.kind !== 'q4') throw new Error('q4 expected');
    // half has an 11-bit significand: relative rounding ≤ 2^-11 ≈ 4.9e-4
    expectClose(q.scales, q0.scales, { atol: 1e-9, rtol: 4.9e-4 }, 'fp16 scales vs fp32 scales');
    const l16 = loss(m);
    const l32 = loss(fresh(Q4_PATH));
    console.log(
      `q4 loss with fp16 scales ${l16} vs fp32 scales ${l32} (gap ${Math.abs(l16 - l32).toExponential(2)})`,
    );
    // Each weight moves by ≤ 4.9e-4 relative (~1/60 of the 4-bit error, whose loss gap is ~1.2e-3).
    expectClose([l16], [l32], { atol: 1e-3, rtol: 0 }, 'loss');
  });
});

describe('lm_head layouts', () => {
  const tokens = [5, 77, 300, 12, 999, 1023];
  const logitsOf = (m: ModelProto) => {
    const w = loadFrozenWeights(m, CFG);
    const model = new CpuLoraModel(w, []);
    model.forward({ B: 1, T: tokens.length, tokens });
    return { tied: w.tied, logits: Float32Array.from(model.logits) };
  };
  const headNode = (m: ModelProto) => nodesOf(graphOf(m)).find((n) => n.output.includes('logits'))!;

  test('untied: a [C, V] weight different from the embedding is read and transposed (2x weight = 2x logits)', () => {
    const ref = logitsOf(fresh(MODEL_PATH));
    expect(ref.tied).toBe(true); // the export's [C, V] copy equals the embedding, so it is shared
    const m = fresh(MODEL_PATH);
    const t = initializersOf(graphOf(m)).find((x) => x.name === headNode(m).input[1])!;
    const v = new Float32Array(t.rawData.slice().buffer).map((x) => 2 * x);
    t.rawData = new Uint8Array(v.buffer);
    const un = logitsOf(m);
    expect(un.tied).toBe(false);
    expectClose(
      un.logits,
      ref.logits.map((x) => 2 * x),
      { atol: 0, rtol: 0 },
      'logits',
    );
  });

  test('tied through Transpose(embed_tokens): shares the table, same logits', () => {
    const ref = logitsOf(fresh(MODEL_PATH));
    const m = fresh(MODEL_PATH);
    const g = graphOf(m);
    g.node.push(
      onnx.NodeProto.create({
        name: 'lm_head_T',
        opType: 'Transpose',
        input: ['model.embed_tokens.weight'],
        output: ['embT'],
        attribute: [{ name: 'perm', type: onnx.AttributeProto.AttributeType.INTS, ints: [1, 0] }],
      }),
    );
    headNode(m).input[1] = 'embT';
    const t = logitsOf(m);
    expect(t.tied).toBe(true);
    expectClose(t.logits, ref.logits, { atol: 0, rtol: 0 }, 'logits');
  });
});

describe('unsupported layouts fail with a ModelFormatError naming them', () => {
  test('MatMulNBits with bits = 8', () => {
    const m = fresh(Q4_PATH);
    const n = nodeNamed(m, Q_PROJ);
    n.attribute = n.attribute.filter((a) => a.name !== 'bits');
    n.attribute.push(intAttr('bits', 8));
    expectFormatError(m, 'bits=8', 'q_proj, layer 0');
  });

  test('MatMulNBits with a g_idx input (act-order)', () => {
    const m = fresh(Q4_PATH);
    const n = nodeNamed(m, Q_PROJ);
    n.input = [...n.input, '', 'some_g_idx'];
    expectFormatError(m, 'g_idx');
  });

  test('MatMulNBits with float zero points', () => {
    const m = fresh(Q4_PATH);
    const n = nodeNamed(m, Q_PROJ);
    n.input = [...n.input, 'zp_float'];
    graphOf(m).initializer.push(
      onnx.TensorProto.create({ name: 'zp_float', dataType: DataType.FLOAT, dims: [2048], floatData: [] }),
    );
    expectFormatError(m, 'zero points of ONNX data_type 1');
  });

  test('a Gemm projection', () => {
    const m = fresh(MODEL_PATH);
    nodeNamed(m, Q_PROJ).opType = 'Gemm';
    expectFormatError(m, 'Gemm');
  });

  test('a quantized embedding (GatherBlockQuantized)', () => {
    const m = fresh(Q4_PATH);
    const g = nodeNamed(m, '/model/embed_tokens/Gather');
    g.opType = 'GatherBlockQuantized';
    g.domain = 'com.microsoft';
    expectFormatError(m, 'GatherBlockQuantized');
  });

  test('an int8 projection weight', () => {
    const m = fresh(MODEL_PATH);
    const w = initializersOf(graphOf(m)).find((t) => t.name === nodeNamed(m, Q_PROJ).input[1])!;
    w.dataType = 3; // INT8
    expectFormatError(m, 'data_type 3', 'float32 or float16');
  });

  test('external-data weights', () => {
    const m = fresh(MODEL_PATH);
    const w = initializersOf(graphOf(m)).find((t) => t.name === nodeNamed(m, Q_PROJ).input[1])!;
    w.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
    expectFormatError(m, 'external data');
  });

  test('a missing RMSNorm weight and a config that does not fit the graph', () => {
    const m = fresh(MODEL_PATH);
    const g = graphOf(m);
    for (const n of nodesOf(g))
      if (n.name.startsWith('/model/layers.2/post_attention_layernorm/')) n.name = 'x';
    const t = initializersOf(g).find((x) => x.name === 'model.layers.2.post_attention_layernorm.weight')!;
    t.name = 'renamed';
    for (const n of nodesOf(g))
      n.input = n.input.map((i) => (i === 'model.layers.2.post_attention_layernorm.weight' ? 'renamed' : i));
    expectFormatError(m, 'layers.2.post_attention_layernorm');
    const e = errorOf(() => loadFrozenWeights(fresh(MODEL_PATH), { ...CFG, I: 512 }));
    expect(e).toBeInstanceOf(ModelFormatError);
    expect(e.message).toContain('config implies 256 → 512');
  });

  test('rope_scaling in config.json', () => {
    const e = errorOf(() =>
      decoderConfig(parseModelConfig({ ...CONFIG_JSON, rope_scaling: { type: 'yarn' } })),
    );
    expect(e).toBeInstanceOf(ModelFormatError);
    expect(e.message).toContain('rope_scaling');
  });
});
