// Merging (src/adapters/merge.ts, merge-cluster.ts): LoRA-LEGO unit clustering vs the naive average
// baseline. Pure checks (determinism, ranks/shapes, exact concatenation when k ≥ all units, PEFT round trip
// through the real import path, the k-means against a brute-force oracle, ΔW closeness to the concatenation
// over seeds, typed errors) and issue 13 §3's acceptance, measured like examples.test.ts (q4 model on
// onnxruntime-web wasm in Node, greedy, 2 prompts × 96 tokens) and on the behaviour metric of the demo's
// "Behaviour vs rank" plot (src/app/rank-plot.ts): mean token NLL in nats/token as the router scores it
// (engine/route.ts meanPromptNll), here of the 20 held-out style prompts per behaviour of
// tests/fixtures/route-prompts.json (tinyshakespeare's validation split). The reference is the rank-16
// concatenation mix (mix.ts, weights 1 + 1); the rank-8 LEGO merge of shout + romeo must be closer to it
// than the rank-8 average, for seeds 0..7. The figures are printed.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-web';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FactoredAdapter, readFactored, toInApp } from '../../../src/adapters/factored.ts';
import { importPeftAdapter, type PeftFiles } from '../../../src/adapters/import.ts';
import { matmul, seededRandom } from '../../../src/adapters/linalg.ts';
import { concatModules, frobenius2, mergeFactored } from '../../../src/adapters/merge.ts';
import { centroidVectors, clusterUnits, gramOf } from '../../../src/adapters/merge-cluster.ts';
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
import { expectClose } from '../../helpers/expect-close.ts';

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

  it('k-means (Gram form) against a brute-force oracle: restarts never worse, best of 64 reaches the global optimum in 9 of 10 cases', () => {
    // 10 sets of 8 random 5-D vectors, k = 3. The oracle enumerates every assignment (3⁸) and, per cluster,
    // every sign pattern, with plain vectors: cost of a cluster = min over signs of Σ‖sᵢuᵢ − mean‖².
    // k-means is a heuristic: measured, best of 64 = the optimum in 9 of 10 sets (set 3: 1.05848 vs 1.01547).
    const D = 5;
    const N = 8;
    const k = 3;
    let hits = 0;
    let worst = 1;
    for (let set = 1; set <= 10; set++) {
      const rand = seededRandom(set);
      const vs = Array.from({ length: N }, () => Float64Array.from({ length: D }, () => rand() - 0.5));
      let oracle = Number.POSITIVE_INFINITY;
      for (let code = 0; code < k ** N; code++) {
        const cl = Array.from({ length: N }, (_, i) => Math.floor(code / k ** i) % k);
        if (new Set(cl).size < k) continue;
        let cost = 0;
        for (let j = 0; j < k; j++) {
          const idx = cl.flatMap((c, i) => (c === j ? [i] : []));
          let best = Number.POSITIVE_INFINITY;
          for (let sgn = 0; sgn < 2 ** idx.length; sgn++) {
            const sg = (p: number) => ((sgn >> p) & 1 ? -1 : 1);
            const mean = new Float64Array(D);
            for (let p = 0; p < idx.length; p++)
              for (let t = 0; t < D; t++) mean[t] = mean[t]! + (sg(p) * vs[idx[p]!]![t]!) / idx.length;
            let c = 0;
            for (let p = 0; p < idx.length; p++)
              for (let t = 0; t < D; t++) c += (sg(p) * vs[idx[p]!]![t]! - mean[t]!) ** 2;
            best = Math.min(best, c);
          }
          cost += best;
        }
        oracle = Math.min(oracle, cost);
      }
      const G = gramOf(vs);
      const objectives = [1, 4, 16, 64].map((r) => clusterUnits(G, N, k, 3, r).objective);
      for (let i = 1; i < objectives.length; i++)
        expect(objectives[i]!).toBeLessThanOrEqual(objectives[i - 1]!);
      expect(objectives[3]!).toBeGreaterThanOrEqual(oracle - 1e-9);
      if (objectives[3]! <= oracle + 1e-9) hits++;
      worst = Math.max(worst, objectives[3]! / oracle);
      // The reported objective is the plain-vector one: Σ min(‖u−c‖², ‖u+c‖²) to the centroid vectors.
      const c = clusterUnits(G, N, k, 3, 64);
      const cs = centroidVectors(vs, c, k);
      let direct = 0;
      vs.forEach((u, i) => {
        const m = cs[c.cluster[i]!]!;
        const dm = u.reduce((t, x, j) => t + (x - m[j]!) ** 2, 0);
        const dp = u.reduce((t, x, j) => t + (x + m[j]!) ** 2, 0);
        direct += Math.min(dm, dp);
      });
      expectClose([c.objective], [direct], { atol: 1e-9, rtol: 0 });
    }
    console.log(
      `k-means best of 64 = brute-force optimum in ${hits}/10 sets; worst ratio ${worst.toFixed(4)}`,
    );
    expect(hits).toBeGreaterThanOrEqual(9);
    expect(worst).toBeLessThan(1.05);
  });

  it('ΔW closeness to the concatenation, seeds 0..7: LEGO (SVD units, 32 restarts) beats one raw run at every seed, and the average', () => {
    const relErr = (ps: FactoredAdapter[], m: FactoredAdapter) => {
      let e = 0;
      let t = 0;
      m.modules.forEach((x, i) => {
        const cat = concatModules(ps.map((p) => p.modules[i]!));
        e += frobenius2(concatModules([x, cat], [1, -1]));
        t += frobenius2(cat);
      });
      return Math.sqrt(e / t);
    };
    const ps = [shout, romeo];
    const lego = [0, 1, 2, 3, 4, 5, 6, 7].map((seed) => relErr(ps, mergeFactored(ps, { rank: 8, seed })));
    const raw = [0, 1, 2, 3, 4, 5, 6, 7].map((seed) =>
      relErr(ps, mergeFactored(ps, { rank: 8, seed, units: 'raw', restarts: 1 })),
    );
    const avg = relErr(ps, mergeFactored(ps, { rank: 8, method: 'average' }));
    const f = (xs: number[]) => xs.map((x) => x.toFixed(3)).join(' ');
    console.log(
      `‖ΔW − ΣΔWᵢ‖/‖ΣΔWᵢ‖ rank 8, seeds 0..7: LEGO ${f(lego)}; raw, 1 run ${f(raw)}; average ${avg.toFixed(3)}`,
    );
    // Measured: LEGO 0.276–0.293, raw 1 run 0.402–0.445, average 0.543.
    expect(Math.max(...lego)).toBeLessThan(Math.min(...raw));
    expect(Math.max(...lego)).toBeLessThan(0.3);
    expect(Math.max(...raw)).toBeLessThan(avg);
  });

  it('typed errors: rank out of range, unknown method, bad restarts / units, shapes that disagree, nothing to merge', () => {
    expect(() => mergeFactored([shout, romeo], { rank: 0 })).toThrow(InvalidOptionError);
    expect(() => mergeFactored([shout, romeo], { rank: 65 })).toThrow(InvalidOptionError);
    expect(() => mergeFactored([shout], { rank: 4, method: 'ties' as never })).toThrow(InvalidOptionError);
    expect(() => mergeFactored([], { rank: 4 })).toThrow(InvalidOptionError);
    for (const restarts of [0, 1.5, 1001, Number.NaN])
      expect(() => mergeFactored([shout, romeo], { rank: 4, restarts })).toThrow(InvalidOptionError);
    expect(() => mergeFactored([shout, romeo], { rank: 4, units: 'qr' as never })).toThrow(
      InvalidOptionError,
    );
    const m0 = shout.modules[0]!;
    const odd: FactoredAdapter = {
      baseModel: null,
      modules: [{ ...m0, in: m0.in / 2, A: m0.A.slice(0, (m0.rank * m0.in) / 2) }],
    };
    expect(() => mergeFactored([shout, odd], { rank: 4 })).toThrow(AdapterShapeError);
  });
});

// Speaker tags. examples.test.ts counts every line matching SPEAKER; in shouted text that also catches verse
// lines ending in ':' ("THE MY THE MEE MEE THE MEE THE MEE THE MEE:"). In tinyshakespeare the tags that
// open a speech (after a blank line) have ≤ 3 words in 7,215 of 7,219 cases, while 555 of the 559 SPEAKER
// matches of ≥ 4 words are verse lines ("Go we to our tent:"), so a tag here is a SPEAKER line of ≤ 3 words;
// the literal SPEAKER share is printed next to it.
const tagShare = (s: string) => {
  const tags = [...s.matchAll(SPEAKER)].map((m) => m[1]!).filter((t) => t.trim().split(/ +/).length <= 3);
  return tags.length ? tags.filter((t) => t === 'ROMEO').length / tags.length : 0;
};
type Row = { upper: number; romeo: number };
type Greedy = Row & { tags: number };
const rows = new Map<string, Greedy>();
async function measure(label: string, feeds: CpuFeeds): Promise<Greedy> {
  const t = await continueAll(feeds);
  const r = { upper: upperShare(t), romeo: romeoShare(t), tags: tagShare(t) };
  rows.set(label, r);
  console.log(
    `${label.padEnd(28)} upper-case share ${r.upper.toFixed(3)}  ROMEO share ${r.tags.toFixed(3)} (literal SPEAKER ${r.romeo.toFixed(3)})`,
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
/**
 * The behaviour metric: mean token NLL (nats/token, route.ts meanPromptNll, as the router and the rank plot
 * score) of the 20 held-out shout / romeo style prompts under `feeds`.
 */
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

// Measured (this file, deterministic: greedy, 1 wasm thread; upper-case share / ROMEO tag share):
//   shout+romeo  concat r16 1.000/1.000 | k=8 average 1.000/1.000 | k=4: see that test
//   all three    concat r24 1.000/0.000 | k=8 LEGO 1.000/0.000, average 0.382/0.800; style NLL concat
//                4.6324/5.7737, LEGO 4.3942/5.1735 (former LEGO 4.1670/4.5526), average 4.0209/3.3080
// Seeds 0..7 of the rank-8 merge of shout + romeo (README.md "Merging adapters" has the table):
//   held-out NLL (concat 4.0785 / 4.9487, average 3.7694 / 3.4550): LEGO 4.0810–4.1382 / 4.6721–4.7228.
//   greedy shares: LEGO 1.000 / 1.000 at every seed (literal SPEAKER share 0.500 at seed 0: one shouted
//   10-word verse line). Before (raw units, one k-means run): ROMEO 1, 0, 0, 1, 1, 1, 1, 1 (seeds 1 and 2
//   left no ROMEO tag at all) and upper case 0.974 at seed 7.
const SEEDS = [0, 1, 2, 3, 4, 5, 6, 7];
type SeedRow = { seed: number; nll: Row; greedy: Greedy };
let seedRows: Promise<{
  concat: { nll: Row; greedy: Greedy };
  average: { nll: Row; greedy: Greedy };
  lego: SeedRow[];
}>;
function perSeed() {
  seedRows ??= (async () => {
    const cat = concatOf([shout, romeo]);
    const avg = feedsOf(mergeFactored([shout, romeo], { rank: 8, method: 'average' }));
    const concat = { nll: await styleNll(cat), greedy: await measure('shout+romeo concat r16', cat) };
    const average = { nll: await styleNll(avg), greedy: await measure('shout+romeo average k=8', avg) };
    const lego: SeedRow[] = [];
    for (const seed of SEEDS) {
      const f = feedsOf(mergeFactored([shout, romeo], { rank: 8, seed }));
      lego.push({
        seed,
        nll: await styleNll(f),
        greedy: await measure(`shout+romeo LEGO k=8 seed ${seed}`, f),
      });
    }
    console.log(
      `shout+romeo style NLL shout/romeo: concat r16 ${fmt(concat.nll)}, average k=8 ${fmt(average.nll)}\n${lego
        .map((r) => `  LEGO k=8 seed ${r.seed}: ${fmt(r.nll)}`)
        .join('\n')}`,
    );
    return { concat, average, lego };
  })();
  return seedRows;
}

describe('acceptance (issue 13 §3): LEGO vs average, reference = the concatenation mix (mix.ts, weights 1)', () => {
  it('shout + romeo at rank 8, held-out NLL per behaviour: LEGO strictly closer than the average, seeds 0..7', async () => {
    const { concat, average, lego } = await perSeed();
    const ga = gap(average.nll, concat.nll);
    for (const r of lego) {
      const gl = gap(r.nll, concat.nll);
      expect(gl.upper, `seed ${r.seed} shout`).toBeLessThan(ga.upper);
      expect(gl.romeo, `seed ${r.seed} romeo`).toBeLessThan(ga.romeo);
    }
  }, 300_000);

  // Ties are the best possible here: the rank-8 average already reproduces the concatenation's 1.000 / 1.000
  // (both shares saturate), so |LEGO − concat| ≤ |average − concat| = 0 means LEGO must hit 1.000 / 1.000.
  it('shout + romeo at rank 8, greedy shares: LEGO never further from the concatenation than the average, seeds 0..7', async () => {
    const { concat, average, lego } = await perSeed();
    const ga = {
      upper: Math.abs(average.greedy.upper - concat.greedy.upper),
      tags: Math.abs(average.greedy.tags - concat.greedy.tags),
    };
    expect([concat.greedy.upper, concat.greedy.tags, average.greedy.upper, average.greedy.tags]).toEqual([
      1, 1, 1, 1,
    ]);
    for (const r of lego) {
      expect(Math.abs(r.greedy.upper - concat.greedy.upper), `seed ${r.seed} upper case`).toBeLessThanOrEqual(
        ga.upper,
      );
      expect(Math.abs(r.greedy.tags - concat.greedy.tags), `seed ${r.seed} ROMEO`).toBeLessThanOrEqual(
        ga.tags,
      );
    }
  }, 300_000);

  it('why the literal SPEAKER share is not the yardstick: the best rank-8 ΔW of the concatenation scores 0.333 on it', async () => {
    // 2 × average = the best rank-8 approximation of Σᵢ ΔWᵢ in Frobenius norm (Eckart–Young): the closest any
    // rank-8 merge can be to the concatenation. Its only speaker tag is ROMEO; the other two SPEAKER matches
    // are shouted verse lines of 7 and 10 words.
    const avg = mergeFactored([shout, romeo], { rank: 8, method: 'average' });
    const best = { ...avg, modules: avg.modules.map((m) => ({ ...m, B: m.B.map((b) => 2 * b) })) };
    const r = await measure('shout+romeo best rank-8 ΔW', feedsOf(best));
    expect(r.tags).toBe(1);
    expect(r.romeo).toBeCloseTo(1 / 3, 12);
  }, 60_000);

  // Rank 4 (16 units → 4): the ROMEO tag share is noise-dominated for every merge — the shouted text holds
  // 1–5 tag-like lines in 2 × 96 tokens — so it is printed, not asserted. Measured, seeds 0..3: LEGO 0.500,
  // 1.000, 0.500, 0.500; the former LEGO (raw units, one run) 1.000, 0.333, 0.667, 0.667; average 1.000.
  // Held-out NLL (concat 4.0785 / 4.9487, average 3.8734 / 3.4268): LEGO 4.056–4.086 / 4.553–4.615; the
  // former LEGO's seed 0 (3.8584 / 3.7510) was farther than the average on shout.
  it('shout + romeo at rank 4, seeds 0..3: LEGO strictly closer on both held-out NLLs and on the upper-case share', async () => {
    const { concat } = await perSeed();
    const af = feedsOf(mergeFactored([shout, romeo], { rank: 4, method: 'average' }));
    const a = { nll: await styleNll(af), greedy: await measure('shout+romeo average k=4', af) };
    for (const seed of [0, 1, 2, 3]) {
      const lf = feedsOf(mergeFactored([shout, romeo], { rank: 4, seed }));
      const l = { nll: await styleNll(lf), greedy: await measure(`shout+romeo LEGO k=4 seed ${seed}`, lf) };
      console.log(`  style NLL shout/romeo: LEGO k=4 seed ${seed} ${fmt(l.nll)}, average k=4 ${fmt(a.nll)}`);
      expect(gap(l.nll, concat.nll).upper, `seed ${seed} shout NLL`).toBeLessThan(
        gap(a.nll, concat.nll).upper,
      );
      expect(gap(l.nll, concat.nll).romeo, `seed ${seed} romeo NLL`).toBeLessThan(
        gap(a.nll, concat.nll).romeo,
      );
      expect(gap(l.greedy, concat.greedy).upper, `seed ${seed} upper case`).toBeLessThan(
        gap(a.greedy, concat.greedy).upper,
      );
    }
  }, 300_000);

  it('shout + romeo + reverse at rank 8: LEGO strictly closer on upper case and on both style NLLs', async () => {
    const cat = concatOf([shout, romeo, reverse]);
    const c = await measure('all three concat r24', cat);
    const lf = feedsOf(mergeFactored([shout, romeo, reverse], { rank: 8 }));
    const af = feedsOf(mergeFactored([shout, romeo, reverse], { rank: 8, method: 'average' }));
    const l = await measure('all three LEGO k=8', lf);
    const a = await measure('all three average k=8', af);
    expect(gap(l, c).upper).toBeLessThan(gap(a, c).upper);
    // ROMEO share: not asserted (the concatenation itself loses ROMEO here; see the measured figures). The
    // style NLLs:
    const [nc, nl, na] = [await styleNll(cat), await styleNll(lf), await styleNll(af)];
    console.log(`all three style NLL shout/romeo: concat ${fmt(nc)}, LEGO ${fmt(nl)}, average ${fmt(na)}`);
    expect(gap(nl, nc).upper).toBeLessThan(gap(na, nc).upper);
    expect(gap(nl, nc).romeo).toBeLessThan(gap(na, nc).romeo);
  }, 120_000);
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
