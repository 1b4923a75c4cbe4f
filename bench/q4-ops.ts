/**
 * `npx tsx bench/q4-ops.ts` — why 4-bit decode is slow on wasm: single-op graphs on onnxruntime-web's wasm
 * build in Node (the same wasm the browser runs; single-threaded like the bench page), one decode step's
 * shapes (M = 1 row) of the SmolLM2-135M replica. Per shape: fp32 MatMul against com.microsoft.MatMulNBits
 * at several block sizes and accuracy levels, and ONNX DequantizeLinear (int4, blocked, opset 21) + MatMul,
 * which onnxruntime constant-folds to an fp32 weight at session creation. Prints median ms per run.
 *   npx tsx bench/q4-ops.ts [--reps 40] [--m 1] [--threads 1]
 */
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-web';
import { encodeModel, intAttr, MS_DOMAIN, makeTensor, onnx } from '../src/model/onnx-io.ts';
import { quantizeBlock4 } from '../src/model/quantize.ts';
import { median } from './stats.ts';

const { values: args } = parseArgs({
  options: {
    reps: { type: 'string', default: '40' },
    m: { type: 'string', default: '1' },
    threads: { type: 'string', default: '1' },
    shapes: { type: 'string', default: '576x1536,1536x576,576x576,576x49152' },
  },
});
ort.env.wasm.numThreads = Number(args.threads);
const REPS = Number(args.reps);
const M = Number(args.m);

type Variant =
  | { kind: 'fp32' }
  | { kind: 'nbits'; bs: number; acc: number }
  | { kind: 'dql'; bs: number }
  | { kind: 'int8' }
  | { kind: 'gather' }
  | { kind: 'gbq'; bs: number };

function rand(n: number, seed: number, scale: number): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

const vi = (name: string, elemType: number, dims: (number | string)[]) => ({
  name,
  type: {
    tensorType: {
      elemType,
      shape: { dim: dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) },
    },
  },
});

/** One-op model: Y[1, M, N] = X[1, M, K] · W (or a Gather of `M` ids from a [N, K] table). */
function build(v: Variant, K: number, N: number, w: Float32Array): Uint8Array {
  const nodes: object[] = [];
  const inits: object[] = [];
  let opset = 17;
  let input = vi('X', 1, [1, M, K]);
  if (v.kind === 'fp32') {
    inits.push(makeTensor('W', 1, [K, N], w));
    nodes.push({ opType: 'MatMul', input: ['X', 'W'], output: ['Y'], name: 'mm' });
  } else if (v.kind === 'nbits') {
    const q = quantizeBlock4(w, K, N, { blockSize: v.bs });
    const nb = Math.ceil(K / v.bs);
    inits.push(makeTensor('B', 2, [N, nb, v.bs / 2], q.packed), makeTensor('S', 1, [N * nb], q.scales));
    nodes.push({
      opType: 'MatMulNBits',
      domain: MS_DOMAIN,
      input: ['X', 'B', 'S'],
      output: ['Y'],
      name: 'mm',
      attribute: [
        intAttr('K', K),
        intAttr('N', N),
        intAttr('bits', 4),
        intAttr('block_size', v.bs),
        intAttr('accuracy_level', v.acc),
      ],
    });
  } else if (v.kind === 'dql') {
    // int4 [K, N] blocked along K (axis 0), scale [K/bs, N]: DequantizeLinear(opset 21) -> MatMul.
    opset = 21;
    const nb = K / v.bs;
    const scale = new Float32Array(nb * N);
    const q = new Int8Array(K * N);
    for (let b = 0; b < nb; b++) {
      for (let n = 0; n < N; n++) {
        let amax = 0;
        for (let k = b * v.bs; k < (b + 1) * v.bs; k++) amax = Math.max(amax, Math.abs(w[k * N + n]!));
        const s = amax / 7 || 1;
        scale[b * N + n] = s;
        for (let k = b * v.bs; k < (b + 1) * v.bs; k++)
          q[k * N + n] = Math.max(-8, Math.min(7, Math.round(w[k * N + n]! / s)));
      }
    }
    const packed = new Uint8Array(Math.ceil((K * N) / 2));
    for (let i = 0; i < K * N; i++) packed[i >> 1]! |= (q[i]! & 15) << ((i & 1) * 4);
    inits.push(makeTensor('Wq', 22, [K, N], packed), makeTensor('Ws', 1, [nb, N], scale));
    nodes.push({
      opType: 'DequantizeLinear',
      input: ['Wq', 'Ws'],
      output: ['W'],
      name: 'dq',
      attribute: [intAttr('axis', 0), intAttr('block_size', v.bs)],
    });
    nodes.push({ opType: 'MatMul', input: ['X', 'W'], output: ['Y'], name: 'mm' });
  } else if (v.kind === 'int8') {
    // int8 weights, one scale per column (symmetric), activations quantized per run: DynamicQuantizeMatMul.
    const scale = new Float32Array(N);
    const q = new Int8Array(K * N);
    for (let n = 0; n < N; n++) {
      let amax = 0;
      for (let k = 0; k < K; k++) amax = Math.max(amax, Math.abs(w[k * N + n]!));
      scale[n] = amax / 127 || 1;
    }
    for (let k = 0; k < K; k++)
      for (let n = 0; n < N; n++) q[k * N + n] = Math.round(w[k * N + n]! / scale[n]!);
    inits.push(makeTensor('Wq', 3, [K, N], new Uint8Array(q.buffer)), makeTensor('Ws', 1, [N], scale));
    nodes.push({
      opType: 'DynamicQuantizeMatMul',
      domain: MS_DOMAIN,
      input: ['X', 'Wq', 'Ws'],
      output: ['Y'],
      name: 'dqmm',
    });
  } else if (v.kind === 'gather') {
    input = vi('ids', 7, [1, M]);
    inits.push(makeTensor('E', 1, [N, K], w));
    nodes.push({ opType: 'Gather', input: ['E', 'ids'], output: ['Y'], name: 'g' });
  } else {
    input = vi('ids', 7, [1, M]);
    // [N, K] table quantized along K: the MatMulNBits packing of its transpose is exactly [N, K/bs, bs/2].
    const wt = new Float32Array(K * N); // (K, N) view of E (N, K)
    for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) wt[k * N + n] = w[n * K + k]!;
    const q = quantizeBlock4(wt, K, N, { blockSize: v.bs });
    // GatherBlockQuantized (uint8-packed int4 data): data [N, K/2] uint8, scales [N, K/bs], zero points
    // default 8 for uint8 data. Low nibble first, as MatMulNBits.
    inits.push(makeTensor('Eq', 2, [N, K / 2], q.packed), makeTensor('Es', 1, [N, K / v.bs], q.scales));
    nodes.push({
      opType: 'GatherBlockQuantized',
      domain: MS_DOMAIN,
      input: ['Eq', 'ids', 'Es'],
      output: ['Y'],
      name: 'gbq',
      attribute: [intAttr('gather_axis', 0), intAttr('quantize_axis', 1), intAttr('block_size', v.bs)],
    });
  }
  const m = onnx.ModelProto.fromObject({
    irVersion: 10,
    producerName: 'weblora-q4-ops',
    opsetImport: [
      { domain: '', version: opset },
      { domain: MS_DOMAIN, version: 1 },
    ],
    graph: {
      name: 'op',
      node: nodes,
      initializer: inits,
      input: [input],
      output: [vi('Y', 1, ['a', 'b', 'c'])],
    },
  });
  return encodeModel(m);
}

function label(v: Variant): string {
  switch (v.kind) {
    case 'nbits':
      return `MatMulNBits bs${v.bs} acc${v.acc}`;
    case 'dql':
      return `DequantizeLinear int4 bs${v.bs} + MatMul`;
    case 'gbq':
      return `GatherBlockQuantized bs${v.bs}`;
    case 'int8':
      return 'DynamicQuantizeMatMul int8/column';
    default:
      return v.kind === 'fp32' ? 'MatMul fp32' : 'Gather fp32';
  }
}

async function time(
  bytes: Uint8Array,
  feeds: Record<string, ort.Tensor>,
): Promise<{ ms: number; init: number }> {
  const t0 = performance.now();
  const s = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
  const init = performance.now() - t0;
  const ms: number[] = [];
  for (let i = 0; i < REPS + 3; i++) {
    const t = performance.now();
    const out = await s.run(feeds);
    const dt = performance.now() - t;
    for (const o of Object.values(out)) o.dispose();
    if (i >= 3) ms.push(dt);
  }
  await s.release();
  return { ms: median(ms), init };
}

async function main(): Promise<void> {
  console.log(`onnxruntime-web ${ort.env.versions.web} wasm, ${ort.env.wasm.numThreads} thread(s), M = ${M}`);
  for (const shape of args.shapes!.split(',')) {
    const [K, N] = shape.split('x').map(Number) as [number, number];
    const w = rand(K * N, K * 7 + N, 1 / Math.sqrt(K));
    const x = new ort.Tensor('float32', rand(M * K, 3, 1), [1, M, K]);
    const variants: Variant[] = [
      { kind: 'fp32' },
      { kind: 'nbits', bs: 32, acc: 0 },
      { kind: 'nbits', bs: 32, acc: 4 },
      { kind: 'nbits', bs: 64, acc: 4 },
      { kind: 'nbits', bs: 128, acc: 4 },
      { kind: 'nbits', bs: 128, acc: 0 },
      { kind: 'dql', bs: 32 },
      { kind: 'int8' },
    ];
    console.log(`\nK ${K} × N ${N} (fp32 weight ${((K * N * 4) / 1e6).toFixed(1)} MB)`);
    for (const v of variants) {
      try {
        const r = await time(build(v, K, N, w), { X: x });
        console.log(
          `  ${label(v).padEnd(40)} ${r.ms.toFixed(3).padStart(8)} ms/run  (session ${r.init.toFixed(0)} ms)`,
        );
      } catch (e) {
        console.log(`  ${label(v).padEnd(40)} failed: ${(e as Error).message.split('\n')[0]}`);
      }
    }
    if (N > 10000) {
      const ids = new ort.Tensor(
        'int64',
        BigInt64Array.from({ length: M }, (_, i) => BigInt(i * 97)),
        [1, M],
      );
      for (const v of [{ kind: 'gather' }, { kind: 'gbq', bs: 32 }] as Variant[]) {
        try {
          const r = await time(build(v, K, N, w), { ids });
          console.log(
            `  ${label(v).padEnd(40)} ${r.ms.toFixed(3).padStart(8)} ms/run  (session ${r.init.toFixed(0)} ms)`,
          );
        } catch (e) {
          console.log(`  ${label(v).padEnd(40)} failed: ${(e as Error).message.split('\n')[0]}`);
        }
      }
    }
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
