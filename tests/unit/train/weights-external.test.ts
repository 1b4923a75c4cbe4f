/**
 * Training on models whose weights sit in external data, with a packed qkv_proj (the onnxruntime-genai
 * builder layout, tests/fixtures/replicas): loadFrozenWeights reads the tensors from the chunks the loader
 * holds (views, no copy), splits the packed projection into q/k/v rows, and the CPU trainer's forward
 * then gives the PyTorch oracle's logits. Missing chunks and q/k/v biases (Qwen2) are typed errors.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ModelFormatError } from '../../../src/errors.ts';
import { decodeModel } from '../../../src/model/onnx-io.ts';
import { parseModelConfig } from '../../../src/model/package.ts';
import { CpuLoraModel } from '../../../src/train/cpu-model.ts';
import { decoderConfig, loadFrozenWeights } from '../../../src/train/weights.ts';
import { errorOf } from '../../helpers/errors.ts';
import { expectClose, FP16_LOGITS, FP32_LOGITS } from '../../helpers/expect-close.ts';
import { loadReplicaSet, oracleLogits, REPLICAS } from '../../helpers/replicas.ts';

const DIR = new URL('../../fixtures/replicas/', import.meta.url);
const read = async (p: string) => new Uint8Array(readFileSync(new URL(p, DIR)));
const CFG = decoderConfig(parseModelConfig(JSON.parse(readFileSync(new URL('config.json', DIR), 'utf8'))));

async function chunksOf(name: string) {
  const rep = REPLICAS.find((r) => r.name === name)!;
  const dir = rep.file.slice(0, rep.file.lastIndexOf('/') + 1);
  const data = await read(rep.externalDataFile ?? dir + rep.externalData!);
  return { rep, model: decodeModel(await read(rep.file)), chunks: [{ path: rep.externalData!, data }] };
}

describe('loadFrozenWeights on external data + packed qkv_proj (builder replicas)', () => {
  it.each([
    ['builder fp32', FP32_LOGITS],
    ['builder-rope fp32', FP32_LOGITS],
    ['builder q4', FP32_LOGITS],
    ['builder fp16', FP16_LOGITS],
    ['builder q4f16', FP16_LOGITS],
  ] as const)('%s: the CPU trainer forward gives the oracle logits', async (name, tol) => {
    const set = await loadReplicaSet(read);
    const { rep, model, chunks } = await chunksOf(name);
    const w = loadFrozenWeights(model, CFG, chunks);
    const q = w.layers[0]!.proj;
    expect([q.q_proj.O, q.k_proj.O, q.v_proj.O, q.q_proj.K]).toEqual([64, 32, 32, 64]);
    if (q.q_proj.kind === 'q4' && q.v_proj.kind === 'q4') {
      // Parts are views of the packed blocks, not copies.
      expect(q.v_proj.packed.buffer).toBe(q.q_proj.packed.buffer);
      expect(q.q_proj.packed.buffer).toBe(chunks[0]!.data.buffer);
    }
    const T = set.prompt.length;
    const m = new CpuLoraModel(w, []);
    m.forward({ B: 1, T, tokens: Int32Array.from(set.prompt) });
    const logits = Float32Array.from(m.logits as ArrayLike<number>);
    expectClose(logits, oracleLogits(set, rep.oracle), tol, `${name} trainer forward vs oracle`);
  });

  it('without the chunk: a ModelFormatError naming the tensor and the file', async () => {
    const { model } = await chunksOf('builder fp32');
    const e = errorOf(() => loadFrozenWeights(model, CFG));
    expect(e).toBeInstanceOf(ModelFormatError);
    expect(e.message).toMatch(/external data 'model\.onnx_data', which was not passed/);
  });

  it('Qwen2-style q/k/v bias (builder-qwen): a ModelFormatError naming the bias', async () => {
    const { model, chunks } = await chunksOf('builder-qwen fp32');
    const e = errorOf(() => loadFrozenWeights(model, CFG, chunks));
    expect(e).toBeInstanceOf(ModelFormatError);
    expect(e.message).toMatch(/qkv_proj.*adds a bias/);
  });
});
