// Router (src/engine/route.ts, issue 13 §2): the scorer, the pick/mix rule and the option checks, and the
// acceptance case measured on the real model in Node (q4 on onnxruntime-web wasm, 1 thread) with the
// three example adapters (public/adapters): on held-out prompts written in each adapter's style
// (tests/fixtures/route-prompts.json, scripts/py/route_prompts.py, cut from the validation split the
// adapters never saw) 'pick' chooses that prompt's adapter for ≥ 90% of them. The NLL itself is checked
// against an independent float64 log-softmax.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-web';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { importPeftAdapter } from '../../../src/adapters/import.ts';
import { noAdapterFeeds } from '../../../src/engine/load.ts';
import {
  checkAutoOptions,
  chooseFromScores,
  isAutoRequest,
  MIN_MIX_WEIGHT,
  meanPromptNll,
  type PromptScorer,
  type RouteContext,
  routeRequest,
  sequentialScorer,
} from '../../../src/engine/route.ts';
import { createDecoderSession, type DecoderGraph } from '../../../src/engine/session.ts';
import { TextTokenizer } from '../../../src/engine/tokenizer.ts';
import { AbortError, InvalidOptionError, UnsupportedError } from '../../../src/errors.ts';
import { injectLora, type LoraTarget } from '../../../src/model/inject-lora.ts';
import { decodeModel, encodeModel } from '../../../src/model/onnx-io.ts';
import { parseModelConfig } from '../../../src/model/package.ts';
import { expectClose } from '../../helpers/expect-close.ts';

ort.env.wasm.numThreads = 1;
const MODEL = 'public/models/weblora-shakespeare';
const NAMES = ['weblora-shout', 'weblora-romeo', 'weblora-reverse'] as const;
const read = (p: string) => readFileSync(p, 'utf8');
const fixture = JSON.parse(read('tests/fixtures/route-prompts.json')) as {
  prompts: { style: 'shout' | 'romeo' | 'reverse'; text: string }[];
};

let session: DecoderGraph;
let targets: LoraTarget[];
let tok: TextTokenizer;
const feeds = new Map<string | null, Record<string, ort.Tensor>>();
let scorer: PromptScorer;

beforeAll(async () => {
  const config = parseModelConfig(JSON.parse(read(join(MODEL, 'config.json'))));
  tok = TextTokenizer.fromJSON(
    JSON.parse(read(join(MODEL, 'tokenizer.json'))),
    JSON.parse(read(join(MODEL, 'tokenizer_config.json'))),
  );
  const injected = injectLora(decodeModel(new Uint8Array(readFileSync(join(MODEL, 'onnx/model_q4.onnx')))));
  targets = injected.targets;
  session = await createDecoderSession(ort, encodeModel(injected.model), config, { backend: 'wasm' });
  for (const name of NAMES) {
    const dir = join('public/adapters', name);
    const imp = importPeftAdapter(
      {
        config: new Uint8Array(readFileSync(join(dir, 'adapter_config.json'))),
        weights: new Uint8Array(readFileSync(join(dir, 'adapter_model.safetensors'))),
      },
      { id: 'weblora-shakespeare', targets },
    );
    const f: Record<string, ort.Tensor> = {};
    for (const [k, v] of imp.feeds.feeds) f[k] = new ort.Tensor('float32', v.data, v.dims);
    feeds.set(name, f);
  }
  feeds.set(null, noAdapterFeeds(ort as never, targets, null).feeds); // the engine's own "no adapter" feeds
  scorer = sequentialScorer(ort, async (c) => ({ graph: session, feeds: feeds.get(c)!, release: () => {} }));
}, 60_000);
afterAll(async () => {
  await session?.session.release();
});

describe('meanPromptNll', () => {
  it('equals the mean of −log softmax at the next token (float64 reference), 0 for one token', () => {
    const V = 5;
    const logits = Float32Array.from([0.1, 2, -1, 0.5, 3, 1, 1, 1, 1, 1, -2, 0, 4, 0.25, 1]);
    const ids = [0, 4, 2, 1];
    let want = 0;
    for (let t = 0; t < 3; t++) {
      const row = [...logits.subarray(t * V, t * V + V)];
      const lse = Math.log(row.reduce((s, x) => s + Math.exp(x), 0));
      want += lse - row[ids[t + 1]!]!;
    }
    expectClose([meanPromptNll(logits, ids, V)], [want / 3], { rtol: 1e-12, atol: 0 });
    expect(meanPromptNll(logits, [3], V)).toBe(0);
  });
});

describe('choice rule and options', () => {
  it("'pick' takes the lowest score (ties: the first listed); 'mix' is softmax(−nll/T) without weights < 1%", () => {
    expect(chooseFromScores(['a', 'b', null], [2, 1.5, 1.5], 'pick', 0.1)).toEqual({
      selection: 'b',
      chosen: ['b'],
      weights: [1],
    });
    expect(chooseFromScores(['a', null], [2, 1], 'pick', 0.1).selection).toBe(null);
    const m = chooseFromScores(['a', 'b', 'c'], [1, 1 + Math.LN2 * 0.4, 3], 'mix', 0.4);
    // weights ∝ 1, 1/2, e^{-5}: c falls under MIN_MIX_WEIGHT and is dropped (weights are not renormalised)
    expect(m.chosen).toEqual(['a', 'b']);
    const z = 1 + 0.5 + Math.exp(-5);
    expectClose(m.weights, [1 / z, 0.5 / z], { rtol: 1e-12, atol: 0 });
    expect(Math.exp(-5) / z).toBeLessThan(MIN_MIX_WEIGHT);
    expect(m.selection).toEqual([
      { name: 'a', weight: m.weights[0] },
      { name: 'b', weight: m.weights[1] },
    ]);
    // the base model's share is left out of the mix (its ΔW is 0), but reported
    const b = chooseFromScores(['a', null], [1, 1], 'mix', 1);
    expect(b.chosen).toEqual(['a', null]);
    expect(b.selection).toEqual([{ name: 'a', weight: 0.5 }]);
  });

  it('recognises auto requests and rejects bad options with InvalidOptionError', () => {
    expect(isAutoRequest('auto')).toBe(true);
    expect(isAutoRequest({ auto: {} })).toBe(true);
    expect(isAutoRequest('weblora-shout')).toBe(false);
    expect(isAutoRequest([{ name: 'a', weight: 1 }])).toBe(false);
    expect(isAutoRequest(null)).toBe(false);
    expect(checkAutoOptions('auto')).toEqual({ mode: 'pick', temperature: 0.1, includeBase: false });
    for (const auto of [
      { mode: 'best' },
      { temperature: 0 },
      { temperature: Number.NaN },
      { candidates: 'a' },
      { candidates: ['a', 'a'] },
      { candidates: [''] },
    ]) {
      expect(() => checkAutoOptions({ auto } as never)).toThrow(InvalidOptionError);
    }
  });
});

describe('routeRequest (fake model, store and scorer)', () => {
  const stored = [
    { name: 'a', modelId: 'm' },
    { name: 'b', modelId: 'alias' },
    { name: 'other', modelId: 'another-model' },
  ];
  const ctx = (over: Partial<RouteContext> = {}): RouteContext => ({
    model: { report: { modelId: 'm', modelAliases: ['alias'] } } as never,
    provider: {} as never,
    graphFor: () => {
      throw new Error('not used: the scorer is injected');
    },
    store: () => ({ list: async () => stored }) as never,
    signal: new AbortController().signal,
    scorer: async (_ids, cs) => cs.map((c) => (c === 'b' ? 1 : 2)),
    ...over,
  });

  it('passes plain selections through; auto lists the stored adapters of this model (id or alias)', async () => {
    expect(await routeRequest(ctx(), 'x', [1, 2])).toEqual({ selection: 'x' });
    expect(await routeRequest(ctx(), undefined, [1, 2])).toEqual({ selection: null });
    const r = await routeRequest(ctx(), 'auto', [1, 2, 3]);
    expect(r.selection).toBe('b');
    expect(r.routing).toMatchObject({
      mode: 'pick',
      scores: [
        { adapter: 'a', nll: 2 },
        { adapter: 'b', nll: 1 },
      ],
      chosen: ['b'],
      weights: [1],
      scoredTokens: 2,
    });
  });

  it('typed errors: no candidates → InvalidOptionError, no store to list → UnsupportedError', async () => {
    await expect(
      routeRequest(ctx({ store: () => ({ list: async () => [] }) as never }), 'auto', [1]),
    ).rejects.toBeInstanceOf(InvalidOptionError);
    await expect(routeRequest(ctx({ store: () => null }), 'auto', [1])).rejects.toBeInstanceOf(
      UnsupportedError,
    );
    // explicit candidates need no store
    const r = await routeRequest(ctx({ store: () => null }), { auto: { candidates: ['a'] } }, [1]);
    expect(r.selection).toBe('a');
  });

  it('aborted while scoring: no adapter and no report (decode then ends with finishReason abort)', async () => {
    const ac = new AbortController();
    const scorer: PromptScorer = async () => {
      ac.abort();
      throw new AbortError('routing aborted', { queued: false });
    };
    expect(await routeRequest(ctx({ signal: ac.signal, scorer }), 'auto', [1, 2])).toEqual({
      selection: null,
    });
  });
});

describe('acceptance (issue 13 §2): held-out style prompts pick their own adapter', () => {
  it('≥ 90% of the prompts of each style pick that style’s adapter; the figures are printed', async () => {
    const candidates = [...NAMES, null];
    const hits: Record<string, number> = { shout: 0, romeo: 0, reverse: 0 };
    const count: Record<string, number> = { shout: 0, romeo: 0, reverse: 0 };
    const baseWins: Record<string, number> = { shout: 0, romeo: 0, reverse: 0 };
    const margins: number[] = [];
    for (const p of fixture.prompts) {
      const ids = tok.encode(p.text);
      const nll = await scorer(ids, candidates);
      const adapters = nll.slice(0, 3);
      const best = adapters.indexOf(Math.min(...adapters));
      count[p.style]!++;
      if (NAMES[best] === `weblora-${p.style}`) hits[p.style]!++;
      if (nll[3]! < Math.min(...adapters)) baseWins[p.style]!++;
      const sorted = [...adapters].sort((a, b) => a - b);
      margins.push(sorted[1]! - sorted[0]!);
    }
    margins.sort((a, b) => a - b);
    for (const s of ['shout', 'romeo', 'reverse'])
      console.log(
        `${s.padEnd(8)} picked ${hits[s]}/${count[s]}  (base model would beat all three adapters on ${baseWins[s]})`,
      );
    console.log(
      `lead of the best adapter over the second (nats/token): min ${margins[0]!.toFixed(3)}, median ${margins[margins.length >> 1]!.toFixed(3)}`,
    );
    const total = Object.values(hits).reduce((s, x) => s + x, 0);
    expect(total / fixture.prompts.length).toBeGreaterThanOrEqual(0.9);
    for (const s of ['shout', 'romeo', 'reverse']) expect(hits[s]! / count[s]!).toBeGreaterThanOrEqual(0.9);
  }, 120_000);
});
