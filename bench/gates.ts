/**
 * The gates suite (`npm run bench -- --suite gates`, runs in the bench page): what per-token routing
 * costs at decode time, through the real engine. Two LocalEngines on one backend/dtype, the example
 * adapters weblora-shout and weblora-romeo (rank 8 each, all 42 projections) imported into one store:
 *   (a) ordinary engine, static mix shout 0.5 + romeo 0.5 (rank 16)
 *   (b) engine loaded with { gates: true }, the same static mix (neutral gate, n = 1)
 *   (c) the gated engine, a gated mix of the two (random seeded gates: the cost does not depend on them)
 * generate() repetitions run interleaved, order rotating; decode tok/s is the engine's own
 * timings.tokensPerSecond (forward passes + sampling), and ratios are medians of per-repetition pairs.
 * Also: the gate expansion operator, MatMul vs Einsum (the gated graph writes the gate's two products with the
 * LoRA branch operator of the backend), is not separately switchable through the engine, so it is not here.
 */
import * as ortWebgpu from 'onnxruntime-web/webgpu';
import { GatedMixStore } from '../src/adapters/gated-store.ts';
import { AdapterStore } from '../src/adapters/store.ts';
import { LocalEngine } from '../src/engine/engine.ts';
import type { Ort } from '../src/engine/session.ts';
import type { AdapterSelection } from '../src/engine/types.ts';
import { MODEL_BASE } from './ours.ts';
import { PASSAGE } from './prompt.ts';
import type { GatesResult, GatesSuiteOptions } from './types.ts';

type Log = (msg: string) => void;
const EXPERTS = ['weblora-shout', 'weblora-romeo'];

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  };
}

export async function runGates(o: GatesSuiteOptions, log: Log): Promise<GatesResult> {
  const ort = ortWebgpu as unknown as Ort;
  ort.env.wasm.numThreads = 1;
  const store = new AdapterStore({ dbName: `weblora-bench-gates-${Date.now()}` });
  const make = () =>
    new LocalEngine({
      ort,
      numThreads: 1,
      wasmPaths: new URL('/ort/', location.href).href,
      adapterStore: store,
      baseGraphForNoAdapter: false,
    });
  const plain = make();
  const gated = make();
  log(`gates/${o.backend}/${o.dtype}: loading two engines`);
  const r1 = await plain.loadModel(MODEL_BASE, { backend: o.backend, dtype: o.dtype });
  const r2 = await gated.loadModel(MODEL_BASE, { backend: o.backend, dtype: o.dtype, gates: true });
  if (r1.backend !== o.backend || r2.backend !== o.backend)
    throw new Error(`engines loaded on ${r1.backend}`);
  for (const name of EXPERTS) await plain.importAdapter({ url: `/adapters/${name}/` }, { name });
  const C = r1.config.hiddenSize;
  const rand = rng(7);
  const gates = new Map<number, { W: Float32Array; b: Float32Array }>();
  for (let l = 0; l < r1.config.numLayers; l++)
    gates.set(l, {
      W: Float32Array.from({ length: 2 * C }, () => (rand() * 2) / Math.sqrt(C)),
      b: Float32Array.from({ length: 2 }, () => rand() * 0.5),
    });
  await new GatedMixStore(store).save('bench-gated', {
    experts: EXPERTS.map((name) => ({ name, weight: 1 })),
    hiddenSize: C,
    gates,
  });
  const mix: AdapterSelection = EXPERTS.map((name) => ({ name, weight: 0.5 }));
  const configs: { label: string; engine: LocalEngine; adapter: AdapterSelection }[] = [
    { label: '(a) ungated engine, static mix', engine: plain, adapter: mix },
    { label: '(b) gated engine, static mix (neutral gate)', engine: gated, adapter: mix },
    { label: '(c) gated engine, gated mix', engine: gated, adapter: { gated: 'bench-gated' } },
  ];
  const prompt = PASSAGE.slice(0, 200);
  // Warm-up: one short run each (feeds cached, shaders compiled).
  for (const c of configs) await c.engine.generate({ prompt, maxNewTokens: 2, adapter: c.adapter });
  const tokS = configs.map(() => [] as number[]);
  const tokens = configs.map(() => [] as number[]);
  for (let rep = 0; rep < o.reps; rep++) {
    for (let k = 0; k < configs.length; k++) {
      const i = (k + rep) % configs.length;
      const c = configs[i]!;
      const r = await c.engine.generate({ prompt, maxNewTokens: o.decodeTokens, adapter: c.adapter });
      tokS[i]!.push(r.timings.tokensPerSecond);
      tokens[i]!.push(r.tokenIds.length);
    }
    log(
      `gates/${o.backend}: rep ${rep + 1}/${o.reps}: ${tokS.map((t) => t.at(-1)!.toFixed(1)).join(' / ')} tok/s`,
    );
  }
  await plain.dispose();
  await gated.dispose();
  return {
    kind: 'gates',
    backend: o.backend,
    dtype: o.dtype,
    rows: configs.map((c, i) => ({ label: c.label, tokS: tokS[i]!, tokens: tokens[i]! })),
  };
}
