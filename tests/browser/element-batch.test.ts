// Several <weblora-chat> elements on one page share one worker engine per model (src/element/registry.ts),
// so their overlapping prompts decode as one batch (src/engine/batch.ts, continuous batching). Proven
// without timing: every GenerateResult reports `timings.batchRows`, the most requests that decoded in one
// forward with it — 1 when each element runs alone, 3 when the three run at once — and each element's
// reply then equals its solo reply exactly (greedy, temperature 0: same token ids, same text), with two
// different adapters (imported by URL) and no adapter in the batch. Real worker, wasm, default q4 model.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configureWebLora } from '../../src/element/index.ts';
import { sharedModels } from '../../src/element/registry.ts';
import type { WebLoraChat } from '../../src/element/weblora-chat.ts';
import type { GenerateResult } from '../../src/engine/types.ts';
import { MODEL_BASE } from './helpers/model.ts';

const ELEMENTS = [
  { adapter: '/adapters/weblora-shout/', prompt: 'ROMEO:\nBut soft, what light' },
  { adapter: '/adapters/weblora-romeo/', prompt: 'JULIET:\nO Romeo, Romeo' },
  { adapter: null, prompt: 'First Citizen:\nBefore we proceed any further, hear me speak.' },
];
const MAX_TOKENS = 6;

const els: WebLoraChat[] = [];

beforeAll(() => {
  configureWebLora({ wasmPaths: new URL('/ort/', location.href).href, defaultModel: MODEL_BASE });
  for (const e of ELEMENTS) {
    const el = document.createElement('weblora-chat') as WebLoraChat;
    el.setAttribute('backend', 'wasm');
    el.setAttribute('mode', 'completion');
    el.setAttribute('temperature', '0');
    el.setAttribute('max-tokens', String(MAX_TOKENS));
    if (e.adapter) el.setAttribute('adapter', e.adapter);
    document.body.append(el);
    els.push(el);
  }
});

afterAll(() => {
  for (const el of els) el.remove();
});

const reply = (r: GenerateResult) => ({ tokenIds: r.tokenIds, text: r.text });

describe('<weblora-chat> elements sharing one engine', () => {
  it('decode their overlapping prompts in one batch, each with its solo greedy reply', async () => {
    // Solo: one element after another (each also imports its adapter into the store once).
    const solo: GenerateResult[] = [];
    for (const [i, el] of els.entries()) solo.push(await el.generate(ELEMENTS[i]!.prompt));
    expect(sharedModels()).toHaveLength(1);
    for (const r of solo) {
      expect(r.timings.batchRows).toBe(1);
      expect(r.tokenIds).toHaveLength(MAX_TOKENS);
    }

    // Together: all three sent in the same task; the engine admits the later ones into the running batch.
    const together = await Promise.all(els.map((el, i) => el.generate(ELEMENTS[i]!.prompt)));
    expect(sharedModels()).toHaveLength(1);
    expect(together.map((r) => r.timings.batchRows)).toEqual([3, 3, 3]);
    expect(together.map(reply)).toEqual(solo.map(reply));
  });
});
