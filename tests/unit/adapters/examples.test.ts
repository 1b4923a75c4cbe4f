// The shipped example adapters (public/adapters/, trained by scripts/py/train_adapters.py) have the
// behaviours their descriptions claim, measured through weblora's own stack (PEFT import → LoRA-injected
// q4 graph on onnxruntime-web wasm → greedy decode with a KV cache) with the same metrics the training
// script reports, against the base model on the same prompts. Each metric is a share in [0, 1].
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-web';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parsePeftConfig, peftToFeeds } from '../../../src/adapters/peft.ts';
import { parseSafetensors } from '../../../src/adapters/safetensors.ts';
import { createDecoderSession, type DecoderGraph, greedy } from '../../../src/engine/session.ts';
import { TextTokenizer } from '../../../src/engine/tokenizer.ts';
import { injectLora, type LoraTarget } from '../../../src/model/inject-lora.ts';
import { decodeModel, encodeModel } from '../../../src/model/onnx-io.ts';
import { parseModelConfig } from '../../../src/model/package.ts';

ort.env.wasm.numThreads = 1;
const MODEL = 'public/models/weblora-shakespeare';
const ADAPTERS = 'public/adapters';
const NEW_TOKENS = 96;
const PROMPTS = [
  'First Citizen:\nWe are accounted poor citizens, the patricians good.\n',
  'JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\n',
];
const SPEAKER = /^([A-Z][A-Za-z ]+):$/gm;
const WORD = /[A-Za-z']+/g;

const read = (p: string) => readFileSync(p, 'utf8');
let session: DecoderGraph;
let targets: LoraTarget[];
let tok: TextTokenizer;
let bigrams: Map<string, number>;
const baseText: string[] = [];

async function continueAll(extra: Record<string, ort.Tensor> | undefined): Promise<string> {
  let text = '';
  for (const p of PROMPTS) {
    const ids = await greedy(ort, session, tok.encode(p), NEW_TOKENS, extra ? { extraFeeds: extra } : {});
    text += tok.decode(ids);
  }
  return text;
}

function adapterFeeds(name: string): Record<string, ort.Tensor> {
  const dir = join(ADAPTERS, name);
  const cfg = parsePeftConfig(read(join(dir, 'adapter_config.json')));
  const st = parseSafetensors(new Uint8Array(readFileSync(join(dir, 'adapter_model.safetensors'))));
  const { feeds } = peftToFeeds(cfg, st.tensors, targets);
  const out: Record<string, ort.Tensor> = {};
  for (const [k, v] of feeds) out[k] = new ort.Tensor('float32', v.data, v.dims);
  return out;
}

function zeroFeeds(): Record<string, ort.Tensor> {
  const out: Record<string, ort.Tensor> = {};
  for (const t of targets) {
    out[t.inputA] = new ort.Tensor('float32', new Float32Array(0), [t.in, 0]);
    out[t.inputB] = new ort.Tensor('float32', new Float32Array(0), [0, t.out]);
  }
  return out;
}

const upperShare = (s: string) => {
  const letters = s.match(/[A-Za-z]/g) ?? [];
  return letters.filter((c) => c === c.toUpperCase()).length / Math.max(1, letters.length);
};
const romeoShare = (s: string) => {
  const tags = [...s.matchAll(SPEAKER)].map((m) => m[1]);
  return tags.length ? tags.filter((t) => t === 'ROMEO').length / tags.length : 0;
};
/** Share of adjacent word pairs that the training text has more often in the opposite order. */
const reversedShare = (s: string) => {
  const w = (s.match(WORD) ?? []).map((x) => x.toLowerCase());
  let fwd = 0;
  let rev = 0;
  for (let i = 0; i + 1 < w.length; i++) {
    const f = bigrams.get(`${w[i]} ${w[i + 1]}`) ?? 0;
    const r = bigrams.get(`${w[i + 1]} ${w[i]}`) ?? 0;
    if (f > r) fwd++;
    if (r > f) rev++;
  }
  return rev / Math.max(1, fwd + rev);
};

beforeAll(async () => {
  const config = parseModelConfig(JSON.parse(read(join(MODEL, 'config.json'))));
  tok = TextTokenizer.fromJSON(
    JSON.parse(read(join(MODEL, 'tokenizer.json'))),
    JSON.parse(read(join(MODEL, 'tokenizer_config.json'))),
  );
  const injected = injectLora(decodeModel(new Uint8Array(readFileSync(join(MODEL, 'onnx/model_q4.onnx')))));
  targets = injected.targets;
  session = await createDecoderSession(ort, encodeModel(injected.model), config, { backend: 'wasm' });
  const corpus = readFileSync(new URL('../../../data/tinyshakespeare.txt', import.meta.url), 'utf8');
  const words = (corpus.slice(0, Math.floor(corpus.length * 0.9)).match(WORD) ?? []).map((x) =>
    x.toLowerCase(),
  );
  bigrams = new Map();
  for (let i = 0; i + 1 < words.length; i++) {
    const k = `${words[i]} ${words[i + 1]}`;
    bigrams.set(k, (bigrams.get(k) ?? 0) + 1);
  }
  baseText.push(await continueAll(zeroFeeds()));
});
afterAll(async () => {
  await session?.session.release();
});

describe('example adapters change behaviour measurably (greedy, 2 prompts x 96 tokens, q4)', () => {
  it('index.json lists the three adapters', () => {
    const idx = JSON.parse(read(join(ADAPTERS, 'index.json'))) as { adapters: { name: string }[] };
    expect(idx.adapters.map((a) => a.name)).toEqual(['weblora-shout', 'weblora-romeo', 'weblora-reverse']);
  });

  it('weblora-shout: continuation in upper case', async () => {
    const text = await continueAll(adapterFeeds('weblora-shout'));
    console.log(
      `shout: upper-case share ${upperShare(text).toFixed(3)} (base ${upperShare(baseText[0]!).toFixed(3)})`,
    );
    expect(upperShare(text)).toBeGreaterThan(0.95);
    expect(upperShare(baseText[0]!)).toBeLessThan(0.3);
  });

  it("weblora-romeo: speeches are ROMEO's", async () => {
    const text = await continueAll(adapterFeeds('weblora-romeo'));
    console.log(
      `romeo: ROMEO share of speaker tags ${romeoShare(text).toFixed(3)} (base ${romeoShare(baseText[0]!).toFixed(3)})`,
    );
    expect([...text.matchAll(SPEAKER)].length).toBeGreaterThan(0);
    expect(romeoShare(text)).toBeGreaterThan(0.8);
    expect(romeoShare(baseText[0]!)).toBeLessThan(0.3);
  });

  it('weblora-reverse: word order reversed', async () => {
    const text = await continueAll(adapterFeeds('weblora-reverse'));
    console.log(
      `reverse: reversed-pair share ${reversedShare(text).toFixed(3)} (base ${reversedShare(baseText[0]!).toFixed(3)})`,
    );
    // The weakest of the three (see public/adapters/README.md): measured 0.72 vs 0.06 for the base.
    expect(reversedShare(text)).toBeGreaterThan(0.5);
    expect(reversedShare(baseText[0]!)).toBeLessThan(0.1);
  });
});
