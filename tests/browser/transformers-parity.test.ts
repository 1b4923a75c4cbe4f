// The default package loads in @huggingface/transformers (v4, test-only dependency) from our own
// origin with remote loading off, and its greedy continuation equals ours — the product path,
// LocalEngine.generate at temperature 0 — token for token; its tokenizer gives our prompt ids. This proves the package is in the layout users' tools
// read. Both sides run the wasm EP so the comparison is about layout and decoding, not kernels.
import { AutoModelForCausalLM, AutoTokenizer, env, type Tensor } from '@huggingface/transformers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalEngine } from '../../src/engine/engine.ts';
import { loadPackage, MODEL_BASE, MODEL_NAME, PROMPT, setupOrt } from './helpers/model.ts';

const MAX_NEW = 20;

env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = '/models/';
env.useBrowserCache = false;
env.useWasmCache = false;
// transformers.js defaults wasmPaths to jsDelivr; serve its own ORT build's runtime from our origin
// (vitest.config.ts mounts it at /ort-transformers/).
const tjsOrt = env.backends.onnx;
if (tjsOrt.wasm) {
  tjsOrt.wasm.wasmPaths = {
    mjs: new URL('/ort-transformers/ort-wasm-simd-threaded.asyncify.mjs', location.href).href,
    wasm: new URL('/ort-transformers/ort-wasm-simd-threaded.asyncify.wasm', location.href).href,
  };
  tjsOrt.wasm.numThreads = 1;
}

describe('transformers.js parity', () => {
  let ours: LocalEngine;
  let ourPromptIds: number[];
  let ourTokens: number[];
  beforeAll(async () => {
    setupOrt();
    const { tok } = await loadPackage('fp32');
    ourPromptIds = tok.encode(PROMPT);
    ours = new LocalEngine({ numThreads: 1, adapterStore: null });
    await ours.loadModel(MODEL_BASE, { backend: 'wasm', dtype: 'fp32' });
    const r = await ours.generate({ prompt: PROMPT, maxNewTokens: MAX_NEW, temperature: 0 });
    expect(r.timings.promptTokens).toBe(ourPromptIds.length);
    ourTokens = r.tokenIds;
  });
  afterAll(async () => {
    await ours?.dispose();
  });

  it('its tokenizer gives our prompt ids', async () => {
    const tokenizer = await AutoTokenizer.from_pretrained(MODEL_NAME);
    expect(tokenizer.encode(PROMPT, { add_special_tokens: false })).toEqual(ourPromptIds);
    expect(tokenizer.decode(ourTokens, { skip_special_tokens: true }).length).toBeGreaterThan(0);
  });

  it(`its greedy continuation (${MAX_NEW} tokens, fp32, wasm) equals ours token for token`, async () => {
    const tokenizer = await AutoTokenizer.from_pretrained(MODEL_NAME);
    const model = await AutoModelForCausalLM.from_pretrained(MODEL_NAME, { dtype: 'fp32', device: 'wasm' });
    try {
      const inputs = tokenizer(PROMPT, { add_special_tokens: false });
      const out = (await model.generate({ ...inputs, max_new_tokens: MAX_NEW, do_sample: false })) as Tensor;
      const all = Array.from(out.tolist()[0] as Array<number | bigint>, Number);
      expect(all.slice(0, ourPromptIds.length)).toEqual(ourPromptIds);
      expect(ourTokens.length).toBeGreaterThan(0);
      expect(all.slice(ourPromptIds.length)).toEqual(ourTokens);
    } finally {
      await model.dispose();
    }
  });

  it('fetched everything from our origin (no CDN, no Hub)', () => {
    const urls = performance.getEntriesByType('resource').map((e) => e.name);
    expect(urls.filter((u) => new URL(u).origin !== location.origin)).toEqual([]);
    expect(urls.some((u) => u.includes('/ort-transformers/ort-wasm-simd-threaded.asyncify.wasm'))).toBe(true);
    expect(urls.some((u) => u.includes(`/models/${MODEL_NAME}/onnx/model.onnx`))).toBe(true);
  });
});
