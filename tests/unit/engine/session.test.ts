// The one decode step (KvStepper over createDecoderSession, what the engine and the bench run) on Node
// (onnxruntime-web → wasm): the KV-cache path (prefill, then one token per step) must reproduce a single
// full-sequence forward at every position, and greedy decoding must pick the same tokens either way.
// Uses the default model package (fp32).
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-web';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { argmax } from '../../../src/engine/sampling.ts';
import {
  createDecoderSession,
  type DecoderGraph,
  greedy,
  halfToFloat,
  KvStepper,
  kvLayoutFromNames,
  logitsToFloat32,
} from '../../../src/engine/session.ts';
import { InvalidOptionError, ModelFormatError, ModelPackageError } from '../../../src/errors.ts';
import { parseModelConfig } from '../../../src/model/package.ts';
import { expectClose, SAME_GRAPH } from '../../helpers/expect-close.ts';

const PKG = fileURLToPath(new URL('../../../public/models/weblora-shakespeare/', import.meta.url));
const config = parseModelConfig(JSON.parse(readFileSync(`${PKG}config.json`, 'utf8')));
// "ROMEO:\nBut soft," in the package's tokenizer (see tokenizer.test.ts).
const PROMPT = [813, 58, 10, 449, 365, 102, 116, 44];
const NEW = 8;

let g: DecoderGraph;
beforeAll(async () => {
  ort.env.wasm.numThreads = 1;
  g = await createDecoderSession(ort, readFileSync(`${PKG}onnx/model.onnx`), config, { backend: 'wasm' });
});
afterAll(async () => {
  await g?.session.release();
});

describe('KvStepper (wasm)', () => {
  it('reads the KV layout from the graph names', () => {
    expect(g.layout.numLayers).toBe(6);
    expect(g.layout.numKvHeads).toBe(4);
    expect(g.layout.headDim).toBe(32);
    expect(g.layout.pastNames.slice(0, 2)).toEqual(['past_key_values.0.key', 'past_key_values.0.value']);
    expect(g.layout.presentNames.at(-1)).toBe('present.5.value');
    expect(g.hasPositionIds).toBe(true);
  });

  it('KV-cache decode equals a full-sequence forward at every position, and greedy agrees', async () => {
    const V = config.vocabSize;
    // Step-by-step: prefill the prompt, then feed each greedy token.
    const stepLogits: Float32Array[] = [];
    const tokens: number[] = [];
    const stepper = new KvStepper(ort, g);
    const prefill = new KvStepper(ort, g);
    const full = new KvStepper(ort, g);
    try {
      let logits = await stepper.step(PROMPT);
      const prefillAll = await prefill.step(PROMPT, { allLogits: true });
      for (let i = 0; i < NEW; i++) {
        stepLogits.push(logits);
        const next = argmax(logits);
        tokens.push(next);
        if (i === NEW - 1) break;
        logits = await stepper.step([next]);
        expect(stepper.pastLen).toBe(PROMPT.length + i + 1);
        expect(stepper.lastKvLocations).toEqual(new Array(12).fill('cpu'));
      }

      // One full forward over prompt + generated tokens (minus the last, whose logits we never need).
      const seq = [...PROMPT, ...tokens.slice(0, -1)];
      const all = await full.step(BigInt64Array.from(seq, BigInt), { allLogits: true });
      expect(all.length).toBe(seq.length * V);
      // Prompt positions: prefill with allLogits equals the full forward's prefix.
      expectClose(prefillAll, all.subarray(0, PROMPT.length * V), SAME_GRAPH, 'prefill logits');
      for (let i = 0; i < NEW; i++) {
        const row = all.subarray((PROMPT.length - 1 + i) * V, (PROMPT.length + i) * V);
        expectClose(stepLogits[i]!, row, SAME_GRAPH, `decode step ${i} logits`);
        expect(argmax(row)).toBe(tokens[i]);
      }
    } finally {
      stepper.dispose();
      prefill.dispose();
      full.dispose();
    }

    expect(await greedy(ort, g, PROMPT, NEW)).toEqual(tokens);
  });

  it('greedy stops after eos (included) and at maxNewTokens', async () => {
    const first = (await greedy(ort, g, PROMPT, 1))[0]!;
    expect(await greedy(ort, g, PROMPT, 5, { eosIds: [first] })).toEqual([first]);
    expect(await greedy(ort, g, PROMPT, 0)).toEqual([]);
  });

  it('rejects an empty step with InvalidOptionError, and feeds the graph does not have', async () => {
    const stepper = new KvStepper(ort, g);
    try {
      await expect(stepper.step([])).rejects.toThrow(InvalidOptionError);
    } finally {
      stepper.dispose();
    }
    const a = new ort.Tensor('float32', new Float32Array(0), [256, 0]);
    const withLora = new KvStepper(ort, g, { 'lora.0.q_proj.A': a });
    try {
      await expect(withLora.step(PROMPT)).rejects.toThrow(/lora\.0\.q_proj\.A/);
    } finally {
      withLora.dispose();
    }
  });
});

describe('layout and config validation', () => {
  it('kvLayoutFromNames throws ModelFormatError when layers disagree with config', () => {
    const names = ['input_ids', 'attention_mask', 'past_key_values.0.key', 'past_key_values.0.value'];
    const outs = ['logits', 'present.0.key', 'present.0.value'];
    expect(() => kvLayoutFromNames(names, outs, config)).toThrow(ModelFormatError);
    expect(() => kvLayoutFromNames(names, outs, { ...config, numLayers: 1 })).not.toThrow();
  });

  it('parseModelConfig throws ModelPackageError on missing or bad fields', () => {
    expect(() => parseModelConfig({ model_type: 'llama' })).toThrow(ModelPackageError);
    expect(() => parseModelConfig([])).toThrow(ModelPackageError);
    const raw = JSON.parse(readFileSync(`${PKG}config.json`, 'utf8'));
    expect(() => parseModelConfig({ ...raw, num_key_value_heads: 3 })).toThrow(/multiple/);
    expect(parseModelConfig({ ...raw, eos_token_id: [1, 2] }).eosTokenIds).toEqual([1, 2]);
  });
});

describe('fp16 logits (model_fp16 / q4f16 graphs)', () => {
  it('halfToFloat decodes IEEE binary16 exactly, subnormals and specials included', () => {
    const cases: [number, number][] = [
      [0x3c00, 1],
      [0xc000, -2],
      [0x3555, 0.333251953125],
      [0x7bff, 65504],
      [0x0001, 2 ** -24],
      [0x0400, 2 ** -14],
      [0x8000, -0],
      [0x7c00, Number.POSITIVE_INFINITY],
      [0xfc00, Number.NEGATIVE_INFINITY],
    ];
    for (const [bits, v] of cases) expect(halfToFloat(bits), bits.toString(16)).toBe(v);
    expect(halfToFloat(0x7e00)).toBeNaN();
  });

  it('logitsToFloat32 widens fp16 bits (Uint16Array) and copies float32 rows', () => {
    const half = Uint16Array.of(0x3c00, 0xc000, 0x3800, 0x0000);
    expect([...logitsToFloat32(half, 1, 3)]).toEqual([-2, 0.5]);
    const f = Float32Array.of(1, 2, 3);
    const row = logitsToFloat32(f, 1, 3);
    expect([...row]).toEqual([2, 3]);
    row[0] = 9;
    expect(f[1]).toBe(2); // a copy, not a view into ORT's output buffer
  });
});
