/**
 * The derive suite (`npm run bench -- --suite derive`, also in `--suite all`): the router's overhead per
 * prompt and the merge / truncate times (issue 13 §2–3). All CPU algorithms, so it runs in Node on
 * onnxruntime-web's wasm EP (1 thread) with the q4 default model and the shipped example adapters — no
 * browser. Router, on the graph the engine loads (injected with the row mask), hot feeds as the provider
 * cache would hold them (IndexedDB reads are not included), on a held-out prompt of
 * tests/fixtures/route-prompts.json, for 3 candidates (the examples) and 8 (the examples plus 5 random
 * rank-8 adapters): the product path — what `adapter: 'auto'` runs inside the batcher (batch.ts
 * `routeContext`: `scoreSelections` = all candidates as rows of ONE forward, then `promptNll`) — and
 * `sequentialScorer` (src/engine/route.ts, one prefill per candidate; the engine's fallback for a graph
 * without the row mask), each next to one plain prefill of the same prompt in the same rotation (paired).
 * Merge: mergeFactored of shout + romeo (and all three) at rank 8, LEGO and average; truncate:
 * truncateFactored of romeo (rank 8) to 4 and 1, and of a random rank-64 adapter to 8.
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as ort from 'onnxruntime-web';
import { type FactoredAdapter, readFactored, toInApp } from '../src/adapters/factored.ts';
import { importPeftAdapter } from '../src/adapters/import.ts';
import { seededRandom } from '../src/adapters/linalg.ts';
import { mergeFactored } from '../src/adapters/merge.ts';
import { buildPeftFiles } from '../src/adapters/peft-writer.ts';
import { truncateFactored } from '../src/adapters/truncate.ts';
import { promptNll, scoreSelections } from '../src/engine/batch-score.ts';
import { sequentialScorer } from '../src/engine/route.ts';
import { createDecoderSession, KvStepper } from '../src/engine/session.ts';
import { TextTokenizer } from '../src/engine/tokenizer.ts';
import { injectLora } from '../src/model/inject-lora.ts';
import { decodeModel, encodeModel } from '../src/model/onnx-io.ts';
import { parseModelConfig } from '../src/model/package.ts';
import type { Row } from './report.ts';
import { pairedRatio, summarize } from './stats.ts';

const ROOT = resolve(import.meta.dirname, '..');
const MODEL = join(ROOT, 'public/models/weblora-shakespeare');
const read = (p: string): string => readFileSync(p, 'utf8');

export interface DeriveResult {
  suite: 'derive';
  reps: number;
  promptTokens: number;
  /** Largest |batched − sequential| prompt NLL over the 8 candidates (nats/token). */
  nllMaxDiff: number;
  /** Milliseconds per sample, by row name. */
  samples: Record<string, number[]>;
}

function exampleFiles(name: string) {
  const dir = join(ROOT, 'public/adapters', name);
  return {
    'adapter_config.json': new Uint8Array(readFileSync(join(dir, 'adapter_config.json'))),
    'adapter_model.safetensors': new Uint8Array(readFileSync(join(dir, 'adapter_model.safetensors'))),
  };
}

/** A random adapter shaped like `like`, of rank r (scale folded, small values). */
function randomLike(like: FactoredAdapter, r: number, seed: number): FactoredAdapter {
  const rand = seededRandom(seed);
  const fill = (n: number, s: number): Float32Array =>
    Float32Array.from({ length: n }, () => (rand() - 0.5) * s);
  return {
    baseModel: like.baseModel,
    modules: like.modules.map((m) => ({ ...m, rank: r, A: fill(r * m.in, 0.1), B: fill(m.out * r, 0.05) })),
  };
}

const time = async (f: () => unknown): Promise<number> => {
  const t0 = performance.now();
  await f();
  return performance.now() - t0;
};

export async function runDeriveSuite(reps = 5): Promise<DeriveResult> {
  ort.env.wasm.numThreads = 1;
  const config = parseModelConfig(JSON.parse(read(join(MODEL, 'config.json'))));
  const tok = TextTokenizer.fromJSON(
    JSON.parse(read(join(MODEL, 'tokenizer.json'))),
    JSON.parse(read(join(MODEL, 'tokenizer_config.json'))),
  );
  // rowMask: true as the engine loads it (load.ts), so the batched scorer can run on it.
  const injected = injectLora(decodeModel(new Uint8Array(readFileSync(join(MODEL, 'onnx/model_q4.onnx')))), {
    rowMask: true,
  });
  const session = await createDecoderSession(ort, encodeModel(injected.model), config, { backend: 'wasm' });
  const examples = ['weblora-shout', 'weblora-romeo', 'weblora-reverse'].map((n) =>
    readFactored(exampleFiles(n)),
  );
  const [shout, romeo] = examples as [FactoredAdapter, FactoredAdapter, FactoredAdapter];
  const adapters = [...examples, ...[1, 2, 3, 4, 5].map((s) => randomLike(shout, 8, s))];
  const feeds = adapters.map((a, i) => {
    const f = buildPeftFiles(toInApp(a, 'weblora-shakespeare'));
    const imp = importPeftAdapter(
      { config: f['adapter_config.json'], weights: f['adapter_model.safetensors'] },
      { id: 'weblora-shakespeare', targets: injected.targets },
    );
    const t: Record<string, ort.Tensor> = {};
    for (const [k, v] of imp.feeds.feeds) t[k] = new ort.Tensor('float32', v.data, v.dims);
    return [`a${i}`, t] as const;
  });
  const byName = new Map<string | null, Record<string, ort.Tensor>>(feeds);
  const score = sequentialScorer(ort, async (c) => ({
    graph: session,
    feeds: byName.get(c)!,
    release: () => {},
  }));
  // The product path: the provider hands out the hot feeds by name (as its cache would), scoreSelections
  // stacks the candidates as rows of one forward, promptNll reduces each row (batch.ts routeContext).
  const provider = {
    feedsFor: async (sel: unknown) => ({ feeds: byName.get(sel as string)!, release: () => {} }),
  };
  const scoreModel = { ort, graph: session, targets: injected.targets, noAdapterFeeds: {} };
  const batched = async (ids: readonly number[], cands: string[]): Promise<number[]> =>
    (await scoreSelections(scoreModel, provider, ids, cands)).map((l) => promptNll(l, ids));
  const prompts = JSON.parse(read(join(ROOT, 'tests/fixtures/route-prompts.json'))).prompts as {
    text: string;
  }[];
  const ids = tok.encode(prompts[0]!.text);
  const samples: Record<string, number[]> = {};
  const push = (k: string, v: number): void => {
    samples[k] = [...(samples[k] ?? []), v];
  };
  const names = feeds.map(([n]) => n);
  // Warm-up, then the router rows rotate with one plain prefill so load drift hits them alike. Both
  // scorers must agree (same NLLs within float noise), else the rows would time different work.
  const seqNll = await score(ids, names);
  const batNll = await batched(ids, names);
  const maxDiff = Math.max(...seqNll.map((x, i) => Math.abs(x - batNll[i]!)));
  if (!(maxDiff < 1e-3)) throw new Error(`batched and sequential NLLs differ by ${maxDiff}`);
  for (let i = 0; i < reps; i++) {
    push(
      'prefill',
      await time(async () => {
        const s = new KvStepper(ort, session, byName.get('a0')!);
        await s.step(ids);
        s.dispose();
      }),
    );
    push('route3', await time(() => score(ids, names.slice(0, 3))));
    push('batch3', await time(() => batched(ids, names.slice(0, 3))));
    push('route8', await time(() => score(ids, names)));
    push('batch8', await time(() => batched(ids, names)));
  }
  for (let i = 0; i < reps; i++) {
    push('lego2', await time(() => mergeFactored([shout, romeo], { rank: 8 })));
    push('lego2mean', await time(() => mergeFactored([shout, romeo], { rank: 8, centroid: 'mean' })));
    push('avg2', await time(() => mergeFactored([shout, romeo], { rank: 8, method: 'average' })));
    push('lego3', await time(() => mergeFactored(examples, { rank: 8 })));
    push('avg3', await time(() => mergeFactored(examples, { rank: 8, method: 'average' })));
    push('trunc4', await time(() => truncateFactored(romeo, 4)));
    push('trunc1', await time(() => truncateFactored(romeo, 1)));
  }
  const big = randomLike(shout, 64, 9);
  for (let i = 0; i < reps; i++) push('trunc64', await time(() => truncateFactored(big, 8)));
  await session.session.release();
  return { suite: 'derive', reps, promptTokens: ids.length, nllMaxDiff: maxDiff, samples };
}

const ROWS: [string, string][] = [
  ['prefill', 'one prefill (no routing), same prompt'],
  ['batch3', "router, 3 candidates, batched (engine's path)"],
  ['route3', 'router, 3 candidates, sequential'],
  ['batch8', "router, 8 candidates, batched (engine's path)"],
  ['route8', 'router, 8 candidates, sequential'],
  ['lego2', 'merge shout+romeo → r8, LEGO (sum)'],
  ['lego2mean', "merge shout+romeo → r8, LEGO 'mean'"],
  ['avg2', 'merge shout+romeo → r8, average'],
  ['lego3', 'merge all three → r8, LEGO (sum)'],
  ['avg3', 'merge all three → r8, average'],
  ['trunc4', 'truncate romeo r8 → r4'],
  ['trunc1', 'truncate romeo r8 → r1'],
  ['trunc64', 'truncate random r64 → r8'],
];

export function rowsForDerive(d: DeriveResult): Row[] {
  const ms = (k: string): string => {
    const s = summarize(d.samples[k] ?? []);
    return `${s.median.toFixed(1)} ms (${s.min.toFixed(1)}–${s.max.toFixed(1)})`;
  };
  const rows: Row[] = ROWS.map(([k, label]) => ({
    metric: k === 'prefill' ? `${label} (${d.promptTokens} tokens)` : label,
    value: ms(k),
    target: '',
    result: 'info',
  }));
  const ratio = (metric: string, a: string, b: string): void => {
    const r = pairedRatio(d.samples[a] ?? [], d.samples[b] ?? []);
    rows.push({ metric, value: `${r.toFixed(2)}×`, target: '', result: 'info' });
  };
  rows.push({
    metric: 'max abs. NLL difference batched vs sequential, 8 candidates',
    value: `${d.nllMaxDiff.toExponential(1)} nats/token`,
    target: '',
    result: 'info',
  });
  for (const n of [3, 8]) {
    ratio(`batched, ${n} candidates × one prefill (paired)`, `batch${n}`, 'prefill');
    ratio(`sequential, ${n} candidates × one prefill (paired)`, `route${n}`, 'prefill');
    ratio(`batched / sequential, ${n} candidates (paired)`, `batch${n}`, `route${n}`);
  }
  return rows;
}
