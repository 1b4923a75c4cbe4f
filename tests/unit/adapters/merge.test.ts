// Merging (src/adapters/merge.ts): LoRA-LEGO unit clustering vs the naive average baseline. Pure checks
// (determinism, ranks/shapes, exact concatenation when k ≥ all units, PEFT round trip through the real
// import path, typed errors) and issue 13's acceptance, measured like examples.test.ts (q4 model on
// onnxruntime-web wasm in Node, greedy, 2 prompts × 96 tokens) and on a continuous behaviour metric (mean
// NLL of the held-out style prompts of tests/fixtures/route-prompts.json, 20 per behaviour): the rank-8
// merge of shout + romeo should keep each behaviour's metric closer to the rank-16 concatenation mix
// (mix.ts, weights 1 + 1) than the rank-8 average does. The figures are printed.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-web';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FactoredAdapter, readFactored, toInApp } from '../../../src/adapters/factored.ts';
import { importPeftAdapter, type PeftFiles } from '../../../src/adapters/import.ts';
import { matmul } from '../../../src/adapters/linalg.ts';
import { concatModules, mergeFactored } from '../../../src/adapters/merge.ts';
import { mixFeeds } from '../../../src/adapters/mix.ts';
import { buildPeftFiles } from '../../../src/adapters/peft-writer.ts';
import { truncateFactored } from '../../../src/adapters/truncate.ts';
import type { CpuFeeds } from '../../../src/adapters/types.ts';
import { meanPromptNll } from '../../../src/engine/route.ts';
import { createDecoderSession, type DecoderGraph, greedy, KvStepper } from '../../../src/engine/session.ts';
import { TextTokenizer } from '../../../src/engine/tokenizer.ts';
import { AdapterShapeError, InvalidOptionError } from '../../../src/errors.ts';
import { injectLora, type LoraTarget } from '../../../src/model/inject-lora.ts';
import { decodeModel, encodeModel } from '../../../src/model/onnx-io.ts';
import { parseModelConfig } from '../../../src/model/package.ts';

ort.env.wasm.numThreads = 1;
const MODEL = 'public/models/weblora-shakespeare';
const NEW_TOKENS = 96;
const PROMPTS = [
  'First Citizen:\nWe are accounted poor citizens, the patricians good.\n',
  'JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\n',
];
const SPEAKER = /^([A-Z][A-Za-z ]+):$/gm;
const read = (p: string) => readFileSync(p, 'utf8');

function files(name: string): PeftFiles {
  const dir = join('public/adapters', name);
  return {
    'adapter_config.json': new Uint8Array(readFileSync(join(dir, 'adapter_config.json'))),
    'adapter_model.safetensors': new Uint8Array(readFileSync(join(dir, 'adapter_model.safetensors'))),
  };
}
const shout = readFactored(files('weblora-shout'));
const romeo = readFactored(files('weblora-romeo'));
const reverse = readFactored(files('weblora-reverse'));

const upperShare = (s: string) => {
  const letters = s.match(/[A-Za-z]/g) ?? [];
  return letters.filter((c) => c === c.toUpperCase()).length / Math.max(1, letters.length);
};
const romeoShare = (s: string) => {
  const tags = [...s.matchAll(SPEAKER)].map((m) => m[1]);
  return tags.length ? tags.filter((t) => t === 'ROMEO').length / tags.length : 0;
};
const dense = (m: FactoredAdapter['modules'][number]) =>
  matmul(Float64Array.from(m.B), Float64Array.from(m.A), m.out, m.rank, m.in);

let session: DecoderGraph;
let targets: LoraTarget[];
let tok: TextTokenizer;

/** Feeds through the real path: PEFT files written, validated and mapped by import.ts. */
function feedsOf(a: FactoredAdapter): CpuFeeds {
  const f = buildPeftFiles(toInApp(a, 'weblora-shakespeare'));
  return importPeftAdapter(
    { config: f['adapter_config.json'], weights: f['adapter_model.safetensors'] },
    { id: 'weblora-shakespeare', targets },
  ).feeds;
}

async function continueAll(feeds: CpuFeeds): Promise<string> {
  const extra: Record<string, ort.Tensor> = {};
  for (const [k, v] of feeds.feeds) extra[k] = new ort.Tensor('float32', v.data, v.dims);
  let text = '';
  for (const p of PROMPTS)
    text += tok.decode(await greedy(ort, session, tok.encode(p), NEW_TOKENS, { extraFeeds: extra }));
  return text;
}

beforeAll(async () => {
  const config = parseModelConfig(JSON.parse(read(join(MODEL, 'config.json'))));
  tok = TextTokenizer.fromJSON(
    JSON.parse(read(join(MODEL, 'tokenizer.json'))),
    JSON.parse(read(join(MODEL, 'tokenizer_config.json'))),
  );
  const injected = injectLora(decodeModel(new Uint8Array(readFileSync(join(MODEL, 'onnx/model_q4.onnx')))));
  targets = injected.targets;
  session = await createDecoderSession(ort, encodeModel(injected.model), config, { backend: 'wasm' });
});
afterAll(async () => {
  await session?.session.release();
});

describe('mergeFactored (pure)', () => {
  it('deterministic: same seed → byte-identical PEFT files; rank 8 per module, shapes kept', () => {
    const a = buildPeftFiles(toInApp(mergeFactored([shout, romeo], { rank: 8, seed: 7 }), 'm'));
    const b = buildPeftFiles(toInApp(mergeFactored([shout, romeo], { rank: 8, seed: 7 }), 'm'));
    expect(a['adapter_model.safetensors']).toEqual(b['adapter_model.safetensors']);
    expect(a['adapter_config.json']).toEqual(b['adapter_config.json']);
    for (const method of ['lego', 'average'] as const) {
      const m = mergeFactored([shout, romeo, reverse], { rank: 8, method });
      expect(m.modules.length).toBe(shout.modules.length);
      m.modules.forEach((x, i) => {
        const s = shout.modules[i]!;
        expect([x.layer, x.module, x.in, x.out, x.rank]).toEqual([s.layer, s.module, s.in, s.out, 8]);
        expect(x.A.length).toBe(8 * x.in);
        expect(x.B.length).toBe(8 * x.out);
        expect(x.A.every(Number.isFinite) && x.B.every(Number.isFinite)).toBe(true);
      });
    }
  });

  it('k ≥ all units: LEGO is the exact concatenation (ΔW = Σ ΔWᵢ); average is (1/n)·Σ ΔWᵢ', () => {
    const lego = mergeFactored([shout, romeo], { rank: 16 });
    const avg = mergeFactored([shout, romeo], { rank: 16, method: 'average' });
    for (const i of [0, 13, 41]) {
      const sum = dense(concatModules([shout.modules[i]!, romeo.modules[i]!]));
      const l = dense(lego.modules[i]!);
      const a = dense(avg.modules[i]!);
      const nrm = Math.sqrt(sum.reduce((s, v) => s + v * v, 0));
      expect(Math.sqrt(l.reduce((s, v, j) => s + (v - sum[j]!) ** 2, 0))).toBeLessThan(1e-6 * nrm);
      expect(Math.sqrt(a.reduce((s, v, j) => s + (v - sum[j]! / 2) ** 2, 0))).toBeLessThan(1e-6 * nrm);
    }
  });

  it('PEFT round trip through import.ts: the written merged adapter reads back to the same factors', () => {
    const m = mergeFactored([shout, romeo], { rank: 8 });
    const back = readFactored(buildPeftFiles(toInApp(m, 'weblora-shakespeare')));
    back.modules.forEach((x, i) => {
      const want = dense(m.modules[i]!);
      const got = dense(x);
      const nrm = Math.sqrt(want.reduce((s, v) => s + v * v, 0));
      expect(Math.sqrt(got.reduce((s, v, j) => s + (v - want[j]!) ** 2, 0))).toBeLessThan(1e-6 * nrm);
    });
    expect(feedsOf(m).rank).toBe(8);
  });

  it('one parent (LEGO pruning, as in the paper): rank k < r clusters its own units; k ≥ r returns it unchanged', () => {
    const p = mergeFactored([romeo], { rank: 4 });
    expect(p.modules.every((m) => m.rank === 4)).toBe(true);
    const same = mergeFactored([romeo], { rank: 8 });
    same.modules.forEach((m, i) => {
      expect(m.A).toEqual(romeo.modules[i]!.A);
      expect(m.B).toEqual(romeo.modules[i]!.B);
    });
  });

  it('typed errors: rank out of range, unknown method, shapes that disagree, nothing to merge', () => {
    expect(() => mergeFactored([shout, romeo], { rank: 0 })).toThrow(InvalidOptionError);
    expect(() => mergeFactored([shout, romeo], { rank: 65 })).toThrow(InvalidOptionError);
    expect(() => mergeFactored([shout], { rank: 4, method: 'ties' as never })).toThrow(InvalidOptionError);
    expect(() => mergeFactored([], { rank: 4 })).toThrow(InvalidOptionError);
    const m0 = shout.modules[0]!;
    const odd: FactoredAdapter = {
      baseModel: null,
      modules: [{ ...m0, in: m0.in / 2, A: m0.A.slice(0, (m0.rank * m0.in) / 2) }],
    };
    expect(() => mergeFactored([shout, odd], { rank: 4 })).toThrow(AdapterShapeError);
  });
});

// Measured (this file, deterministic: greedy, 1 wasm thread), upper-case share / ROMEO share:
//   shout+romeo  concat r16 1.000/1.000 | k=8 LEGO 1.000/1.000, average 1.000/1.000 | k=4 LEGO 1.000/1.000,
//                average 0.975/1.000
//   all three    concat r24 1.000/0.000 | k=8 LEGO 1.000/1.000, average 0.382/0.333
// The literal case (two behaviours at rank 8) cannot be met strictly on these metrics: the rank-8
// average reproduces the concatenation's 1.000/1.000 exactly (both saturate), so LEGO can at best tie —
// and the ROMEO share (a handful of speaker tags in 2 × 96 tokens) is fragile: LEGO seeds 0..3 give
// 1.000, 0.000, 0.000, 1.000 (upper-case 1.000 for all). The paper-style centroid ('mean' + dual
// re-weighting, the former default) gave 0.979/0.500 at seed 0 and 0.844–0.989 / 0.000–0.750 over
// seeds 0..3. On the continuous metric (held-out style NLL, nats/token; concat r16: shout 4.079, romeo
// 4.949) LEGO is closer than the average for every seed 0..3: gaps ≤ 0.08 / ≤ 0.72 vs 0.309 / 1.494.
type Row = { upper: number; romeo: number };
const rows = new Map<string, Row>();
async function measure(label: string, feeds: CpuFeeds): Promise<Row> {
  const t = await continueAll(feeds);
  const r = { upper: upperShare(t), romeo: romeoShare(t) };
  rows.set(label, r);
  console.log(
    `${label.padEnd(28)} upper-case share ${r.upper.toFixed(3)}  ROMEO share ${r.romeo.toFixed(3)}`,
  );
  return r;
}
const fmt = (r: Row) => `${r.upper.toFixed(4)}/${r.romeo.toFixed(4)}`;
const gap = (x: Row, ref: Row) => ({
  upper: Math.abs(x.upper - ref.upper),
  romeo: Math.abs(x.romeo - ref.romeo),
});
const styles = JSON.parse(read('tests/fixtures/route-prompts.json')).prompts as {
  style: string;
  text: string;
}[];
/** Mean prompt NLL of the held-out shout / romeo style prompts under `feeds` (a continuous behaviour metric). */
async function styleNll(feeds: CpuFeeds): Promise<Row> {
  const extra: Record<string, ort.Tensor> = {};
  for (const [k, v] of feeds.feeds) extra[k] = new ort.Tensor('float32', v.data, v.dims);
  const mean = async (style: string) => {
    const ps = styles.filter((p) => p.style === style);
    let total = 0;
    for (const p of ps) {
      const ids = tok.encode(p.text);
      const stepper = new KvStepper(ort, session, extra);
      const logits = await stepper.step(ids, { allLogits: true });
      stepper.dispose();
      total += meanPromptNll(logits, ids, logits.length / ids.length);
    }
    return total / ps.length;
  };
  return { upper: await mean('shout'), romeo: await mean('romeo') };
}
const concatOf = (ps: FactoredAdapter[]) =>
  mixFeeds(
    ps.map((p) => ({ feeds: feedsOf(p), weight: 1 })),
    targets,
  );

describe('acceptance (issue 13 §3): LEGO vs average, reference = the concatenation mix (mix.ts, weights 1)', () => {
  it('shout + romeo at rank 4: LEGO at least as close on both metrics, strictly on one', async () => {
    const c = await measure('shout+romeo concat r16', concatOf([shout, romeo]));
    const l = await measure('shout+romeo LEGO k=4', feedsOf(mergeFactored([shout, romeo], { rank: 4 })));
    const a = await measure(
      'shout+romeo average k=4',
      feedsOf(mergeFactored([shout, romeo], { rank: 4, method: 'average' })),
    );
    const gl = gap(l, c);
    const ga = gap(a, c);
    expect(gl.upper).toBeLessThanOrEqual(ga.upper);
    expect(gl.romeo).toBeLessThanOrEqual(ga.romeo);
    expect(gl.upper + gl.romeo).toBeLessThan(ga.upper + ga.romeo);
  }, 60_000);

  it('shout + romeo + reverse at rank 8: LEGO strictly closer on upper case and on both style NLLs', async () => {
    const cat = concatOf([shout, romeo, reverse]);
    const c = await measure('all three concat r24', cat);
    const lf = feedsOf(mergeFactored([shout, romeo, reverse], { rank: 8 }));
    const af = feedsOf(mergeFactored([shout, romeo, reverse], { rank: 8, method: 'average' }));
    const l = await measure('all three LEGO k=8', lf);
    const a = await measure('all three average k=8', af);
    expect(gap(l, c).upper).toBeLessThan(gap(a, c).upper);
    // ROMEO share: LEGO keeps ROMEO (1.000) where the concatenation itself loses it (0.000), so it is
    // farther than the average (0.333) on that metric; not asserted. The style NLLs:
    const [nc, nl, na] = [await styleNll(cat), await styleNll(lf), await styleNll(af)];
    console.log(`all three style NLL shout/romeo: concat ${fmt(nc)}, LEGO ${fmt(nl)}, average ${fmt(na)}`);
    expect(gap(nl, nc).upper).toBeLessThan(gap(na, nc).upper);
    expect(gap(nl, nc).romeo).toBeLessThan(gap(na, nc).romeo);
  }, 120_000);

  it('shout + romeo at rank 8 on the held-out style NLLs: LEGO strictly closer on both, seeds 0..3', async () => {
    const nc = await styleNll(concatOf([shout, romeo]));
    const na = await styleNll(feedsOf(mergeFactored([shout, romeo], { rank: 8, method: 'average' })));
    console.log(`shout+romeo style NLL shout/romeo: concat r16 ${fmt(nc)}, average k=8 ${fmt(na)}`);
    for (const seed of [0, 1, 2, 3]) {
      const nl = await styleNll(feedsOf(mergeFactored([shout, romeo], { rank: 8, seed })));
      console.log(`  LEGO k=8 seed ${seed}: ${fmt(nl)}`);
      expect(gap(nl, nc).upper).toBeLessThan(gap(na, nc).upper);
      expect(gap(nl, nc).romeo).toBeLessThan(gap(na, nc).romeo);
    }
  }, 120_000);

  // Known failure, kept visible: vitest's `fails` passes while the assertion fails and alerts once it holds.
  // Strictly closer on the greedy shares is impossible here: the average already equals the reference.
  it.fails("shout + romeo at rank 8, greedy shares (the issue's literal case): a tie at best, see above", async () => {
    const c =
      rows.get('shout+romeo concat r16') ??
      (await measure('shout+romeo concat r16', concatOf([shout, romeo])));
    const l = await measure('shout+romeo LEGO k=8', feedsOf(mergeFactored([shout, romeo], { rank: 8 })));
    const a = await measure(
      'shout+romeo average k=8',
      feedsOf(mergeFactored([shout, romeo], { rank: 8, method: 'average' })),
    );
    expect(gap(l, c).upper).toBeLessThan(gap(a, c).upper);
    expect(gap(l, c).romeo).toBeLessThan(gap(a, c).romeo);
  }, 60_000);
});

describe('truncation: behaviour metric vs rank (issue 13 §3, the figures behind a rank plot)', () => {
  it('shout and romeo keep their behaviour at ranks 1 and 2 (of 8); the figures are printed', async () => {
    const lines: string[] = [];
    const at: Record<string, number[]> = { shout: [], romeo: [] };
    // Measured 1.000 / 1.000 at k = 1, 2, 4 and 8: both metrics saturate, even rank 1 keeps the behaviour.
    for (const k of [1, 2]) {
      const s = await continueAll(feedsOf(truncateFactored(shout, k)));
      const r = await continueAll(feedsOf(truncateFactored(romeo, k)));
      at.shout!.push(upperShare(s));
      at.romeo!.push(romeoShare(r));
      lines.push(
        `  k=${k}: shout upper-case share ${upperShare(s).toFixed(3)}, romeo ROMEO share ${romeoShare(r).toFixed(3)}`,
      );
    }
    console.log(`truncation (rank 8 adapters):\n${lines.join('\n')}`);
    expect(Math.min(...at.shout!)).toBeGreaterThan(0.95);
    expect(Math.min(...at.romeo!)).toBeGreaterThan(0.8);
  }, 90_000);
});
