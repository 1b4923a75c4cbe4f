/**
 * `npm run bench -- --suite variants`: the two LoRA-branch choices issue 11 asks to measure, on the layout
 * replicas (tests/fixtures/replicas, loaded through tests/helpers/replicas.ts = the product path:
 * injectLora → createDecoderSession → KvStepper) with the replica's PEFT adapter fed. Per repetition both
 * forms run one greedy generation side by side (prefill, then N KvStepper steps + argmax, no event-loop
 * hop) in blocks of 16 steps, a block of one form followed by the same positions of the other (order
 * alternating); a step here is 0.1–1 ms and the page's timer has 0.1 ms resolution, so blocks are timed,
 * and the speed ratio is the median over all block pairs:
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
import { KvStepper } from '../src/engine/session.ts';
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
  /** Per repetition: decode tokens/s over all its blocks. Empty when not run. */
  aTps: number[];
  bTps: number[];
  /** Per pair of adjacent blocks: speed of b / speed of a (= time a / time b). */
  blockRatios: number[];
  /** Block times (ms) per repetition, per block index: [rep][k]. */
  aBlockMs: number[][];
  bBlockMs: number[][];
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

/** Decode steps per timed block (a block is 2–10 ms here; the page's timer has 0.1 ms resolution). */
const BLOCK = 16;

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
      blockRatios: [],
      aBlockMs: [],
      bBlockMs: [],
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
      // Both forms decode side by side: each block of BLOCK steps of one form is followed by the same
      // BLOCK positions of the other (order alternating), so each pair of blocks sees the same load and
      // the same KV length. Speed ratio per block pair = time(a) / time(b).
      const rep = async (r: number) => {
        const sa = new KvStepper(ort, ma.graph, ga);
        const sb = new KvStepper(ort, mb.graph, gb);
        try {
          const ta = [argmax(await sa.step(set.prompt))];
          const tb = [argmax(await sb.step(set.prompt))];
          let msA = 0;
          let msB = 0;
          const blocksA: number[] = [];
          const blocksB: number[] = [];
          const block = async (s: KvStepper, toks: number[], n: number) => {
            const t0 = performance.now();
            for (let i = 0; i < n; i++) toks.push(argmax(await s.step([toks.at(-1)!])));
            return performance.now() - t0;
          };
          for (let done = 0, k = 0; done < decodeTokens; k++) {
            const n = Math.min(BLOCK, decodeTokens - done);
            const aFirst = (r + k) % 2 === 0;
            const x = await block(aFirst ? sa : sb, aFirst ? ta : tb, n);
            const y = await block(aFirst ? sb : sa, aFirst ? tb : ta, n);
            const [a, b] = aFirst ? [x, y] : [y, x];
            if (b > 0) pair.blockRatios.push(a / b);
            blocksA.push(a);
            blocksB.push(b);
            msA += a;
            msB += b;
            done += n;
          }
          pair.aBlockMs.push(blocksA);
          pair.bBlockMs.push(blocksB);
          return {
            a: (decodeTokens * 1000) / msA,
            b: (decodeTokens * 1000) / msB,
            same: ta.join() === tb.join(),
          };
        } finally {
          sa.dispose();
          sb.dispose();
        }
      };
      await rep(0); // warm-up
      pair.blockRatios.length = 0;
      pair.aBlockMs.length = 0;
      pair.bBlockMs.length = 0;
      for (let r = 0; r < reps; r++) {
        const x = await rep(r);
        pair.aTps.push(x.a);
        pair.bTps.push(x.b);
        if (!x.same) pair.tokensEqual = false;
        log(
          `variants/${backend}: ${p.replica} rep ${r + 1}/${reps} tok/s ${x.a.toFixed(1)} vs ${x.b.toFixed(1)}`,
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
    `${v.decodeTokens} decode steps × ${v.reps} reps, blocks of ${BLOCK} steps alternating, replica adapter fed; shader-f16 ${v.shaderF16}`,
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
    const q = [...p.blockRatios].sort((x, y) => x - y);
    const at = (f: number) => q[Math.min(q.length - 1, Math.floor(f * q.length))]!;
    info(
      `${what}: ${p.b} / ${p.a} speed (paired blocks)`,
      `${median(q).toFixed(3)} (quartiles ${at(0.25).toFixed(3)}–${at(0.75).toFixed(3)}, ${q.length} pairs)${p.tokensEqual ? '' : ' (tokens differ)'}`,
    );
    info(`${what}: ${p.b} / ${p.a} speed (paired reps)`, pairedRatio(p.bTps, p.aTps).toFixed(3));
    // Least-disturbed estimate: per block position, the fastest repetition of each form; median over positions.
    const nk = p.aBlockMs.length ? Math.min(...p.aBlockMs.map((x) => x.length)) : 0;
    const best: number[] = [];
    for (let k = 0; k < nk; k++) {
      const a = Math.min(...p.aBlockMs.map((x) => x[k]!));
      const b = Math.min(...p.bBlockMs.map((x) => x[k]!));
      if (b > 0) best.push(a / b);
    }
    info(
      `${what}: ${p.b} / ${p.a} speed (fastest rep per block)`,
      `${median(best).toFixed(3)} (${best.map((x) => x.toFixed(2)).join(' ')})`,
    );
  }
  return rows;
}
