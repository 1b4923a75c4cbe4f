/**
 * `npm run bench -- --suite variants`: the two LoRA-branch choices issue 11 asks to measure, on the layout
 * replicas (tests/fixtures/replicas, loaded through tests/helpers/replicas.ts = the product path:
 * injectLora → createDecoderSession → KvStepper) with the replica's PEFT adapter fed. Per repetition each
 * form runs one greedy generation (prefill, then N KvStepper steps + argmax, no event-loop hop), the two
 * forms back to back in alternating order; the decode loop is timed as a whole (a step here is 0.1–1 ms,
 * the page's timer resolution is 0.1 ms) and the ratio is the median of the per-repetition pairs:
 *  - fp16 branch: on float16 graphs, the fp32 branch between Casts (float32 A/B) vs the all-float16 branch
 *    (`branchDtype: 'float16'`, float16 A/B). WebGPU needs shader-f16; without it the row says so.
 *  - packed qkv: on the builder graph, one block-diagonal branch vs three narrow branches + Concat
 *    (`packed: 'per-part'`).
 * The replicas are tiny (hidden 64, 2 layers, vocab 128), so the figures measure what the branch form costs
 * in operators and dispatches per step, not arithmetic at scale. Feeds live on the GPU on webgpu (uploaded
 * once), as the engine's GPU cache keeps them.
 */
import * as ortWebgpu from 'onnxruntime-web/webgpu';
import { argmax } from '../src/engine/sampling.ts';
import type { Ort, OrtTensor } from '../src/engine/session.ts';
import { type DecoderGraph, KvStepper } from '../src/engine/session.ts';
import type { InjectOptions } from '../src/model/inject-lora.ts';
import { loadReplica, loadReplicaSet, REPLICAS, type Replica } from '../tests/helpers/replicas.ts';
import { median, pairedRatio } from './stats.ts';
import type { BenchBackend } from './types.ts';

export interface VariantsOptions {
  backend: BenchBackend;
  decodeTokens: number;
  reps: number;
}

export interface VariantPair {
  comparison: 'fp16 branch' | 'packed qkv';
  replica: string;
  /** Labels of form a (the current default) and form b. */
  a: string;
  b: string;
  /** Per repetition: decode tokens/s of the whole loop. Empty when not run. */
  aTps: number[];
  bTps: number[];
  /** Why the pair was not run (e.g. no shader-f16), else null. */
  skipped: string | null;
  tokensEqual: boolean;
}

export interface VariantsResult {
  suite: 'variants';
  backend: BenchBackend;
  shaderF16: boolean;
  decodeTokens: number;
  reps: number;
  pairs: VariantPair[];
}

type Log = (msg: string) => void;

const FIXTURES = '/tests/fixtures/replicas/';
const read = async (p: string): Promise<Uint8Array> => {
  const r = await fetch(FIXTURES + p);
  if (!r.ok) throw new Error(`fetch ${p}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
};

const PAIRS: {
  comparison: VariantPair['comparison'];
  replica: string;
  a: InjectOptions;
  b: InjectOptions;
}[] = [
  ...['optimum fp16', 'optimum q4f16', 'builder fp16', 'builder q4f16'].map((replica) => ({
    comparison: 'fp16 branch' as const,
    replica,
    a: { branchDtype: 'float32' as const },
    b: { branchDtype: 'float16' as const },
  })),
  ...['builder fp32', 'builder q4'].map((replica) => ({
    comparison: 'packed qkv' as const,
    replica,
    a: { packed: 'block-diagonal' as const },
    b: { packed: 'per-part' as const },
  })),
];

function label(o: InjectOptions): string {
  return o.branchDtype ? `${o.branchDtype} branch` : o.packed!;
}

/** CPU feeds → GPU buffers (once), so a step uploads nothing. */
function onGpu(ort: Ort, device: GPUDevice, feeds: Record<string, OrtTensor>) {
  const out: Record<string, OrtTensor> = {};
  for (const [k, t] of Object.entries(feeds)) {
    const src = t.data as Float32Array | Uint16Array;
    const size = Math.max(16, Math.ceil(src.byteLength / 16) * 16);
    const buffer = device.createBuffer({
      size,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    const padded = new Uint8Array(size);
    padded.set(new Uint8Array(src.buffer, src.byteOffset, src.byteLength));
    device.queue.writeBuffer(buffer, 0, padded);
    out[k] = ort.Tensor.fromGpuBuffer(buffer, {
      dataType: t.type as 'float32' | 'float16',
      dims: t.dims,
      dispose: () => buffer.destroy(),
    });
  }
  return out;
}

export async function runVariants(opts: VariantsOptions, log: Log): Promise<VariantsResult> {
  const ort = ortWebgpu as unknown as Ort;
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = new URL('/ort/', location.href).href;
  const { backend, decodeTokens, reps } = opts;
  const set = await loadReplicaSet(read);
  const adapter = backend === 'webgpu' ? await navigator.gpu?.requestAdapter() : null;
  const shaderF16 = adapter?.features.has('shader-f16') ?? false;
  const branchOp = backend === 'webgpu' ? 'einsum' : 'matmul'; // loraBranchOpFor
  const pairs: VariantPair[] = [];
  for (const p of PAIRS) {
    const rep = REPLICAS.find((r) => r.name === p.replica) as Replica;
    const pair: VariantPair = {
      comparison: p.comparison,
      replica: p.replica,
      a: label(p.a),
      b: label(p.b),
      aTps: [],
      bTps: [],
      skipped: null,
      tokensEqual: true,
    };
    pairs.push(pair);
    if (backend === 'webgpu' && rep.f16 && !shaderF16) {
      pair.skipped = 'this WebGPU adapter has no shader-f16: float16 graphs cannot run';
      log(`variants/${backend}: ${p.replica} skipped (${pair.skipped})`);
      continue;
    }
    log(`variants/${backend}: ${p.comparison} on ${p.replica}: ${pair.a} vs ${pair.b}`);
    const ma = await loadReplica(ort, read, rep, set.config, backend, { branchOp, ...p.a });
    const mb = await loadReplica(ort, read, rep, set.config, backend, { branchOp, ...p.b });
    const device = backend === 'webgpu' ? ((await ort.env.webgpu.device) as GPUDevice) : null;
    const fa = ma.feedsOf(set.adapter);
    const fb = mb.feedsOf(set.adapter);
    const ga = device ? onGpu(ort, device, fa) : fa;
    const gb = device ? onGpu(ort, device, fb) : fb;
    try {
      const run = async (g: DecoderGraph, feeds: Record<string, OrtTensor>) => {
        const stepper = new KvStepper(ort, g, feeds);
        try {
          const tokens = [argmax(await stepper.step(set.prompt))];
          const t0 = performance.now();
          for (let i = 0; i < decodeTokens; i++) tokens.push(argmax(await stepper.step([tokens.at(-1)!])));
          return { tps: (decodeTokens * 1000) / (performance.now() - t0), tokens };
        } finally {
          stepper.dispose();
        }
      };
      await run(ma.graph, ga); // warm-up
      await run(mb.graph, gb);
      for (let r = 0; r < reps; r++) {
        const first = r % 2 === 0;
        const x = await run(first ? ma.graph : mb.graph, first ? ga : gb);
        const y = await run(first ? mb.graph : ma.graph, first ? gb : ga);
        const [ra, rb] = first ? [x, y] : [y, x];
        pair.aTps.push(ra.tps);
        pair.bTps.push(rb.tps);
        if (ra.tokens.join() !== rb.tokens.join()) pair.tokensEqual = false;
        log(
          `variants/${backend}: ${p.replica} rep ${r + 1}/${reps} tok/s ${ra.tps.toFixed(1)} vs ${rb.tps.toFixed(1)}`,
        );
      }
    } finally {
      if (device) for (const t of [...Object.values(ga), ...Object.values(gb)]) t.dispose();
      await ma.release();
      await mb.release();
    }
  }
  return { suite: 'variants', backend, shaderF16, decodeTokens, reps, pairs };
}

/** Table rows: per pair, median decode tok/s of each form (from the median step) and b/a paired. */
export function rowsForVariants(
  v: VariantsResult,
): { metric: string; value: string; target: string; result: 'info' }[] {
  const rows: { metric: string; value: string; target: string; result: 'info' }[] = [];
  const info = (metric: string, value: string) => rows.push({ metric, value, target: '', result: 'info' });
  info(
    'setup',
    `${v.decodeTokens} decode steps × ${v.reps} reps (forms alternating), replica adapter fed; shader-f16 ${v.shaderF16}`,
  );
  for (const p of v.pairs) {
    const what = `${p.comparison}, ${p.replica}`;
    if (p.skipped) {
      info(what, `not run: ${p.skipped}`);
      continue;
    }
    const range = (xs: number[]) =>
      `${median(xs).toFixed(1)} (${Math.min(...xs).toFixed(1)}–${Math.max(...xs).toFixed(1)})`;
    info(`${what}: ${p.a} decode tok/s`, range(p.aTps));
    info(`${what}: ${p.b} decode tok/s`, range(p.bTps));
    info(
      `${what}: ${p.b} / ${p.a} speed (paired reps)`,
      `${pairedRatio(p.bTps, p.aTps).toFixed(3)}${p.tokensEqual ? '' : ' (tokens differ)'}`,
    );
  }
  return rows;
}
