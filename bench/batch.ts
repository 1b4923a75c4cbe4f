/**
 * The batching suite (issue 13 §1; runs in the bench page): the Compare view's workload through our
 * LocalEngine — N columns, each its own adapter (cycled: a random rank-8 adapter, none, a 50/50 mix
 * of it and a random rank-4 adapter, the rank-4 one), `tokens` greedy tokens each — run one after another
 * (awaiting each, what the engine did before batching) and all at once (Promise.all: the columns join
 * one batch, src/engine/batch.ts). Per repetition the two orders alternate, so drift hits both alike;
 * the batched/sequential ratio is the median of per-repetition ratios. Also aggregate decode tok/s
 * (all generated tokens / wall time) against batch size. Target: 4 columns batched ≤ 0.5× sequential.
 * Also checks that every batched column's tokens equal its sequential run (reported, not timed).
 */
import * as ortWebgpu from 'onnxruntime-web/webgpu';
import { AdapterStore } from '../src/adapters/store.ts';
import { LocalEngine } from '../src/engine/engine.ts';
import type { Ort } from '../src/engine/session.ts';
import type { AdapterSelection, GenerateRequest, GenerateResult } from '../src/engine/types.ts';
import type { BatchResult, BatchSizeResult, BatchSuiteOptions } from './batch-report.ts';
import { MODEL_BASE, randomAdapter } from './ours.ts';
import { PASSAGE } from './prompt.ts';

type Log = (msg: string) => void;

const SELECTIONS: AdapterSelection[] = [
  'bench-r8',
  null,
  [
    { name: 'bench-r8', weight: 0.5 },
    { name: 'bench-r4', weight: 0.5 },
  ],
  'bench-r4',
];

export async function runBatch(opts: BatchSuiteOptions, log: Log): Promise<BatchResult> {
  const ort = ortWebgpu as unknown as Ort;
  ort.env.wasm.numThreads = 1;
  const store = new AdapterStore({ dbName: `weblora-bench-batch-${Date.now()}` });
  const engine = new LocalEngine({ numThreads: 1, adapterStore: store });
  try {
    const report = await engine.loadModel(MODEL_BASE, { backend: opts.backend, dtype: opts.dtype });
    const targets = report.targets;
    for (const [name, rank] of [
      ['bench-r8', 8],
      ['bench-r4', 4],
    ] as const) {
      const files = randomAdapter(targets, rank);
      await engine.importAdapter(
        { config: files['adapter_config.json'], weights: files['adapter_model.safetensors'] },
        { name },
      );
    }
    const prompts = PASSAGE.split('\n')
      .filter((l) => l.trim().length > 0)
      .slice(0, 8);
    const reqs = (n: number): GenerateRequest[] =>
      Array.from({ length: n }, (_, i) => ({
        prompt: prompts[i % prompts.length]!,
        adapter: SELECTIONS[i % SELECTIONS.length]!,
        maxNewTokens: opts.tokens,
      }));
    // Warm-up: one batched and one sequential round of 2 (session warm-up, adapter uploads).
    await Promise.all(reqs(2).map((r) => engine.generate(r)));
    for (const r of reqs(2)) await engine.generate(r);
    const sizes: BatchSizeResult[] = [];
    for (const n of opts.sizes) {
      const seq: number[] = [];
      const bat: number[] = [];
      let equal = 0;
      let tokens = 0;
      for (let rep = 0; rep < opts.reps; rep++) {
        const order = rep % 2 === 0 ? ['seq', 'bat'] : ['bat', 'seq'];
        let seqOut: GenerateResult[] = [];
        let batOut: GenerateResult[] = [];
        for (const o of order) {
          const t0 = performance.now();
          if (o === 'seq') {
            seqOut = [];
            for (const r of reqs(n)) seqOut.push(await engine.generate(r));
            seq.push(performance.now() - t0);
          } else {
            batOut = await Promise.all(reqs(n).map((r) => engine.generate(r)));
            bat.push(performance.now() - t0);
          }
        }
        equal = seqOut.filter((s, i) => s.tokenIds.join() === batOut[i]?.tokenIds.join()).length;
        tokens = batOut.reduce((s, r) => s + r.tokenIds.length, 0);
        log(
          `${opts.backend} ${n} columns rep ${rep}: sequential ${seq.at(-1)!.toFixed(0)} ms, batched ${bat.at(-1)!.toFixed(0)} ms, ${equal}/${n} equal`,
        );
      }
      sizes.push({ columns: n, sequentialMs: seq, batchedMs: bat, tokens, equalColumns: equal });
    }
    return { kind: 'batch', backend: opts.backend, dtype: opts.dtype, tokensPerColumn: opts.tokens, sizes };
  } finally {
    await engine.dispose();
  }
}
