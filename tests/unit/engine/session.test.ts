// DecoderSession on Node (onnxruntime-web → wasm): the KV-cache path (prefill, then one token per
// step) must reproduce a single full-sequence forward at every position, and greedy decoding must
// pick the same tokens either way. Uses the default model package (fp32).
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-web';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { argmax, DecoderSession, disposeCache, kvLayoutFromNames } from '../../../src/engine/session.ts';
import { ModelFormatError, ModelPackageError } from '../../../src/errors.ts';
import { parseModelConfig } from '../../../src/model/package.ts';
import { expectClose, SAME_GRAPH } from '../../helpers/expect-close.ts';

const PKG = fileURLToPath(new URL('../../../public/models/weblora-shakespeare/', import.meta.url));
const config = parseModelConfig(JSON.parse(readFileSync(`${PKG}config.json`, 'utf8')));
// "ROMEO:\nBut soft," in the package's tokenizer (see tokenizer.test.ts).
const PROMPT = [813, 58, 10, 449, 365, 102, 116, 44];
const NEW = 8;

let s: DecoderSession;
beforeAll(async () => {
  ort.env.wasm.numThreads = 1;
  s = await DecoderSession.create(ort, readFileSync(`${PKG}onnx/model.onnx`), config, {
    executionProviders: ['wasm'],
  });
});
afterAll(async () => {
  await s?.release();
});

describe('DecoderSession (wasm)', () => {
  it('reads the KV layout from the graph names', () => {
    expect(s.layout.numLayers).toBe(6);
    expect(s.layout.numKvHeads).toBe(4);
    expect(s.layout.headDim).toBe(32);
    expect(s.layout.pastNames.slice(0, 2)).toEqual(['past_key_values.0.key', 'past_key_values.0.value']);
    expect(s.layout.presentNames.at(-1)).toBe('present.5.value');
  });

  it('KV-cache decode equals a full-sequence forward at every position, and greedy agrees', async () => {
    const V = config.vocabSize;
    // Step-by-step: prefill the prompt, then feed each greedy token.
    const stepLogits: Float32Array[] = [];
    const tokens: number[] = [];
    let r = await s.forward(PROMPT);
    const prefillAll = await s.forward(PROMPT, undefined, undefined, { allLogits: true });
    disposeCache(prefillAll.present);
    for (let i = 0; i < NEW; i++) {
      stepLogits.push(r.logits);
      const next = argmax(r.logits);
      tokens.push(next);
      if (i === NEW - 1) break;
      const prev = r.present;
      r = await s.forward([next], prev);
      disposeCache(prev);
      expect(r.present.length).toBe(PROMPT.length + i + 1);
      const k = r.present.tensors.get('past_key_values.0.key')!;
      expect(k.dims).toEqual([1, 4, PROMPT.length + i + 1, 32]);
    }
    disposeCache(r.present);

    // One full forward over prompt + generated tokens (minus the last, whose logits we never need).
    const seq = [...PROMPT, ...tokens.slice(0, -1)];
    const full = await s.forward(BigInt64Array.from(seq, BigInt), undefined, undefined, { allLogits: true });
    disposeCache(full.present);
    expect(full.logits.length).toBe(seq.length * V);
    // Prompt positions: prefill with allLogits equals the full forward's prefix.
    expectClose(prefillAll.logits, full.logits.subarray(0, PROMPT.length * V), SAME_GRAPH, 'prefill logits');
    for (let i = 0; i < NEW; i++) {
      const row = full.logits.subarray((PROMPT.length - 1 + i) * V, (PROMPT.length + i) * V);
      expectClose(stepLogits[i]!, row, SAME_GRAPH, `decode step ${i} logits`);
      expect(argmax(row)).toBe(tokens[i]);
    }

    const greedy = await s.greedy(PROMPT, NEW, { eosTokenIds: [] });
    expect(greedy).toEqual(tokens);
  });

  it('greedy stops after eos and reports tokens as they come', async () => {
    const first = (await s.greedy(PROMPT, 1))[0]!;
    const seen: number[] = [];
    const out = await s.greedy(PROMPT, 5, { eosTokenIds: [first], onToken: (id) => seen.push(id) });
    expect(out).toEqual([first]);
    expect(seen).toEqual([first]);
    expect(await s.greedy(PROMPT, 0)).toEqual([]);
  });

  it('rejects feeds the graph does not have (LoRA inputs on a base graph)', async () => {
    const a = new ort.Tensor('float32', new Float32Array(0), [256, 0]);
    await expect(s.forward(PROMPT, undefined, { 'lora.0.q_proj.A': a })).rejects.toThrow(ModelFormatError);
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
