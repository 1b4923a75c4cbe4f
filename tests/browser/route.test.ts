// adapter 'auto' (src/engine/route.ts) across the worker (client.ts → worker.ts → engine.ts): the router
// scores a held-out prompt under each stored candidate, the result's `routing` says what it chose, and the
// tokens are exactly those of generating with that choice explicitly ('pick' → the adapter, 'mix' → the
// weighted mix); bad options and unknown candidates fail with typed errors rebuilt on this side. wasm
// only (tiny: 3 candidates, one prompt of ~40 tokens, 8 new tokens).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWorkerEngine, type WorkerEngine } from '../../src/engine/client.ts';
import { AdapterNotFoundError, InvalidOptionError } from '../../src/errors.ts';
import fixture from '../fixtures/route-prompts.json';
import { MODEL_BASE, setupOrt } from './helpers/model.ts';

setupOrt();
const tag = `route-${Date.now().toString(36)}`;
const n = (s: string) => `${tag}-${s}`;
const STYLES = ['shout', 'romeo', 'reverse'];
const prompt = (style: string) => fixture.prompts.find((p) => p.style === style)!.text;

describe("adapter: 'auto' through the worker engine (wasm)", () => {
  let engine: WorkerEngine;

  beforeAll(async () => {
    engine = createWorkerEngine();
    await engine.loadModel(MODEL_BASE, { backend: 'wasm' });
    for (const a of STYLES) await engine.importAdapter({ url: `/adapters/weblora-${a}/` }, { name: n(a) });
  });

  afterAll(async () => {
    for (const a of STYLES) await engine?.deleteAdapter(n(a)).catch(() => {});
    await engine?.dispose();
    engine?.terminate();
  });

  it("'pick' chooses the prompt's style adapter and generates exactly as that adapter does", async () => {
    const candidates = STYLES.map(n);
    for (const style of ['romeo', 'reverse']) {
      const auto = await engine.generate({
        prompt: prompt(style),
        maxNewTokens: 8,
        adapter: { auto: { candidates } },
      });
      const r = auto.routing!;
      expect(r.mode).toBe('pick');
      expect(r.chosen).toEqual([n(style)]);
      expect(r.weights).toEqual([1]);
      expect(r.scores.map((s) => s.adapter)).toEqual(candidates);
      const best = Math.min(...r.scores.map((s) => s.nll));
      expect(r.scores.find((s) => s.adapter === n(style))!.nll).toBe(best);
      expect(r.scoredTokens).toBe(auto.timings.promptTokens - 1);
      const direct = await engine.generate({ prompt: prompt(style), maxNewTokens: 8, adapter: n(style) });
      expect(auto.tokenIds).toEqual(direct.tokenIds);
      expect(direct.routing).toBeUndefined();
    }
  }, 120_000);

  it("'mix' (with the base model as a candidate) runs the softmax-weighted mix it reports", async () => {
    const auto = await engine.generate({
      prompt: prompt('shout'),
      maxNewTokens: 8,
      adapter: { auto: { candidates: STYLES.map(n), mode: 'mix', temperature: 2, includeBase: true } },
    });
    const r = auto.routing!;
    expect(r.scores.map((s) => s.adapter)).toEqual([...STYLES.map(n), null]);
    const z = r.scores.reduce((s, x) => s + Math.exp(-x.nll / 2), 0);
    r.chosen.forEach((c, i) => {
      const nll = r.scores.find((s) => s.adapter === c)!.nll;
      expect(Math.abs(r.weights[i]! - Math.exp(-nll / 2) / z)).toBeLessThan(1e-9);
    });
    expect(r.chosen[0]).toBe(n('shout'));
    const mix = r.chosen.flatMap((c, i) => (c === null ? [] : [{ name: c, weight: r.weights[i]! }]));
    const direct = await engine.generate({ prompt: prompt('shout'), maxNewTokens: 8, adapter: mix });
    expect(auto.tokenIds).toEqual(direct.tokenIds);
  }, 120_000);

  it("'auto' without candidates scores every stored adapter of the model", async () => {
    const auto = await engine.generate({ prompt: prompt('reverse'), maxNewTokens: 2, adapter: 'auto' });
    const names = auto.routing!.scores.map((s) => s.adapter);
    for (const s of STYLES) expect(names).toContain(n(s));
    expect(auto.routing!.chosen).toHaveLength(1);
  }, 120_000);

  it('typed errors: bad options → InvalidOptionError, an unknown candidate → AdapterNotFoundError', async () => {
    await expect(
      engine.generate({ prompt: 'x', adapter: { auto: { mode: 'best' as never } } }),
    ).rejects.toBeInstanceOf(InvalidOptionError);
    await expect(
      engine.generate({ prompt: 'x', adapter: { auto: { temperature: -1 } } }),
    ).rejects.toBeInstanceOf(InvalidOptionError);
    await expect(
      engine.generate({ prompt: 'x y', adapter: { auto: { candidates: [n('shout'), n('nope')] } } }),
    ).rejects.toBeInstanceOf(AdapterNotFoundError);
  }, 60_000);
});
