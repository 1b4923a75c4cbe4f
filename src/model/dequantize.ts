/**
 * Graph pass: 4-bit MatMulNBits -> fp32 MatMul with the dequantized weight, for the wasm backend.
 * Why: onnxruntime-web 1.30's wasm build has no 4-bit GEMM kernel (MLAS's SQNBitGemm kernels are x64/ARM
 * only), so MatMulNBits dequantizes its whole weight to fp32 on EVERY run before an fp32 GEMM. Measured in
 * Node on the same wasm (bench/q4-ops.ts, one decode row, SmolLM2-135M shapes): 576×1536 1.3–3.7 ms vs
 * 0.09 ms for the fp32 MatMul, the 576×49152 lm_head 87–210 ms vs 8–19 ms, whatever the block size or
 * accuracy_level. Dequantizing once at load keeps the 4-bit download and gives fp32 decode speed; the
 * weights then take fp32 memory in the wasm heap. The values are exactly what the kernel computes with:
 * (q - zero point) * scale, in f32. Not converted: fp16 scales (q4f16), bits != 4, g_idx or bias inputs,
 * weights that are not initializers; those nodes stay MatMulNBits. The fp32 weights can be capped
 * (LoadOptions.wasmDequantize, default 1 GiB: WASM_DEQUANTIZE_MAX_BYTES): past the cap, nodes stay 4-bit.
 */
import { InvalidOptionError } from '../errors.ts';
import {
  cloneGraph,
  DataType,
  dimsOf,
  type GraphProto,
  getIntAttr,
  graphOf,
  initializersOf,
  inputsOf,
  isExternal,
  type ModelProto,
  MS_DOMAIN,
  makeTensor,
  type NodeProto,
  nodesOf,
  onnx,
  outputsOf,
  type TensorProto,
  withGraph,
} from './onnx-io.ts';

export interface DequantizeReport {
  /** MatMulNBits nodes turned into fp32 MatMuls. */
  nodes: number;
  /** Bytes of the fp32 weights written (what the wasm heap now holds instead of the 4-bit blocks). */
  fp32Bytes: number;
  /** Convertible MatMulNBits nodes left 4-bit because their fp32 weight did not fit in `maxBytes`. */
  kept: number;
  /** The fp32 bytes those kept nodes would have taken. */
  keptFp32Bytes: number;
}

export interface DequantizeOptions {
  /**
   * Most fp32 bytes to write (default: no limit). Weights are taken largest first while they fit
   * (a weight that does not fit is skipped and smaller ones are still tried); the rest stay MatMulNBits.
   * Why largest first: on wasm a MatMulNBits step costs its dequantization (∝ K·N) and the fp32 GEMV
   * saved is ∝ K·N too, so time saved per byte is about flat across the projections (0.38–0.44 ms/MiB,
   * bench/README.md q4-ops table) and highest for the lm_head (0.73 ms/MiB), the largest weight; taking
   * the largest first puts the lm_head first and fills the budget tightly.
   */
  maxBytes?: number;
}
function bytesOf(t: TensorProto): Uint8Array | null {
  if (isExternal(t)) return null;
  const raw = t.rawData;
  if (raw && raw.byteLength > 0) return raw;
  if (t.dataType === DataType.FLOAT && t.floatData.length > 0) {
    return new Uint8Array(Float32Array.from(t.floatData).buffer);
  }
  if (t.dataType === DataType.UINT8 && t.int32Data.length > 0) return Uint8Array.from(t.int32Data);
  return null;
}

function f32(bytes: Uint8Array): Float32Array {
  if (bytes.byteOffset % 4 === 0)
    return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  return new Float32Array(bytes.slice().buffer);
}

/** Columns of W written per pass of unpackNBits (bench/dequantize-profile.ts: 64–1024 all within noise). */
const UNPACK_TILE = 256;

/**
 * W [K, N] (MatMul layout) from MatMulNBits blocks: B (N, nb, bs/2) low nibble first, scales (N * nb),
 * optional packed zero points (N, ceil(nb/2)), default zero point 8. Each value is (q - zero point) *
 * scale rounded once to f32 (the product of a 4-bit integer and an f32 is exact in f64), as the kernel has.
 * The source is column-major for W (one block = 32 consecutive k of one n), so a naive loop writes W with
 * a stride of N floats; instead, per block and per tile of UNPACK_TILE columns, each packed byte (rows k,
 * k+1) is written into two contiguous row segments of W, the tile's scales and zero points held in small
 * typed arrays: ~3× faster than the per-column loop on the 135M replica (bench/README.md, load section).
 */
export function unpackNBits(
  packed: Uint8Array,
  scales: Float32Array,
  zeroPoints: Uint8Array | null,
  K: number,
  N: number,
  blockSize: number,
): Float32Array {
  const nb = Math.ceil(K / blockSize);
  const half = blockSize >> 1;
  const zpBytes = (nb + 1) >> 1;
  const stride = nb * half; // packed bytes from one column to the next
  const w = new Float32Array(K * N); // (K, N)
  const tileScale = new Float32Array(UNPACK_TILE);
  const tileZero = new Float32Array(UNPACK_TILE);
  for (let n0 = 0; n0 < N; n0 += UNPACK_TILE) {
    const len = Math.min(N - n0, UNPACK_TILE);
    for (let b = 0; b < nb; b++) {
      const k0 = b * blockSize;
      const rows = Math.min(K - k0, blockSize);
      const shift = (b & 1) << 2;
      for (let i = 0; i < len; i++) {
        const n = n0 + i;
        tileScale[i] = scales[n * nb + b]!;
        tileZero[i] = zeroPoints ? (zeroPoints[n * zpBytes + (b >> 1)]! >> shift) & 15 : 8;
      }
      const p0 = (n0 * nb + b) * half;
      for (let j = 0; 2 * j < rows; j++) {
        const lo = (k0 + 2 * j) * N + n0;
        let p = p0 + j;
        if (2 * j + 1 < rows) {
          const hi = lo + N;
          for (let i = 0; i < len; i++) {
            const byte = packed[p]!;
            const s = tileScale[i]!;
            const z = tileZero[i]!;
            w[lo + i] = ((byte & 15) - z) * s;
            w[hi + i] = ((byte >> 4) - z) * s;
            p += stride;
          }
        } else {
          for (let i = 0; i < len; i++) {
            w[lo + i] = ((packed[p]! & 15) - tileZero[i]!) * tileScale[i]!;
            p += stride;
          }
        }
      }
    }
  }
  return w;
}

/** One 4-bit weight that can be dequantized, and the nodes that read it. */
interface Candidate {
  bName: string;
  K: number;
  N: number;
  bs: number;
  /** Indices (graph order) of the nodes reading it. */
  nodes: number[];
  fp32Bytes: number;
}

/** The node's weight as a Candidate key, or null when this node cannot be converted. */
function convertible(node: NodeProto, inits: Map<string, TensorProto>): Omit<Candidate, 'nodes'> | null {
  if (node.opType !== 'MatMulNBits' || node.domain !== MS_DOMAIN) return null;
  const [, bName = '', sName = '', zName = '', ...rest] = node.input;
  if (rest.some((r) => r !== '') || getIntAttr(node, 'bits', 4) !== 4) return null;
  const bT = inits.get(bName);
  const sT = inits.get(sName);
  const zT = zName ? inits.get(zName) : undefined;
  if (!bT || !sT || sT.dataType !== DataType.FLOAT || (zName && zT?.dataType !== DataType.UINT8)) return null;
  const K = getIntAttr(node, 'K', 0);
  const N = getIntAttr(node, 'N', 0);
  const bs = getIntAttr(node, 'block_size', 32);
  const nb = Math.ceil(K / bs);
  const packed = bytesOf(bT);
  const scales = bytesOf(sT);
  if (!packed || !scales || packed.byteLength !== N * nb * (bs / 2) || scales.byteLength !== N * nb * 4)
    return null;
  if (zT && (!bytesOf(zT) || dimsOf(zT).reduce((a, d) => a * d, 1) !== N * Math.ceil(nb / 2))) return null;
  return { bName, K, N, bs, fp32Bytes: K * N * 4 };
}

/**
 * Replaces convertible MatMulNBits of `model` by MatMuls on fp32 initializers: all of them, or as many as
 * fit in `opts.maxBytes` (DequantizeOptions says which).
 */
export function dequantizeNBits(
  model: ModelProto,
  opts: DequantizeOptions = {},
): { model: ModelProto; report: DequantizeReport } {
  const g: GraphProto = graphOf(model);
  const inits = new Map<string, TensorProto>(initializersOf(g).map((t) => [t.name, t]));
  const report: DequantizeReport = { nodes: 0, fp32Bytes: 0, kept: 0, keptFp32Bytes: 0 };
  const original = nodesOf(g);
  // 1. The weights that can be converted (a weight read by several nodes is converted once, for all).
  const byWeight = new Map<string, Candidate>();
  original.forEach((node, i) => {
    const c = convertible(node, inits);
    if (!c) return;
    const seen = byWeight.get(c.bName);
    if (!seen) byWeight.set(c.bName, { ...c, nodes: [i] });
    else if (seen.K === c.K && seen.N === c.N && seen.bs === c.bs) seen.nodes.push(i);
  });
  // 2. Which fit the budget: largest first (stable: graph order among equal sizes), first fit.
  const maxBytes = opts.maxBytes ?? Number.POSITIVE_INFINITY;
  const chosen = new Set<string>();
  for (const c of [...byWeight.values()].sort((a, b) => b.fp32Bytes - a.fp32Bytes)) {
    if (report.fp32Bytes + c.fp32Bytes <= maxBytes) {
      chosen.add(c.bName);
      report.fp32Bytes += c.fp32Bytes;
      report.nodes += c.nodes.length;
    } else {
      report.kept += c.nodes.length;
      report.keptFp32Bytes += c.fp32Bytes;
    }
  }
  if (report.nodes === 0) return { model, report };
  // 3. The fp32 weights and the MatMuls that read them.
  const added = new Map<string, TensorProto>(); // B name -> fp32 weight
  const replace = new Map<number, Candidate>();
  for (const c of byWeight.values()) if (chosen.has(c.bName)) for (const i of c.nodes) replace.set(i, c);
  const nodes = original.map((node, i): NodeProto => {
    const c = replace.get(i);
    if (!c) return node;
    const [x = '', bName = '', sName = '', zName = ''] = node.input;
    const wName = `${bName}_dequantized`;
    if (!added.has(bName)) {
      const zT = zName ? inits.get(zName) : undefined;
      const w = unpackNBits(
        bytesOf(inits.get(bName)!)!,
        f32(bytesOf(inits.get(sName)!)!),
        zT ? bytesOf(zT) : null,
        c.K,
        c.N,
        c.bs,
      );
      added.set(bName, makeTensor(wName, DataType.FLOAT, [c.K, c.N], w));
    }
    return onnx.NodeProto.create({
      name: node.name,
      opType: 'MatMul',
      domain: '',
      input: [x, wName],
      output: [...node.output],
    });
  });
  const used = new Set<string>();
  for (const n of nodes) for (const i of n.input) used.add(i);
  for (const o of outputsOf(g)) used.add(o.name);
  const initializer = [...initializersOf(g).filter((t) => used.has(t.name)), ...added.values()];
  const input = inputsOf(g).filter((v) => used.has(v.name) || !inits.has(v.name));
  return { model: withGraph(model, cloneGraph(g, { node: nodes, initializer, input })), report };
}

/**
 * LoadOptions.wasmDequantize: how much of a 4-bit model the wasm backend dequantizes at load. 'auto'
 * (default): fp32 weights up to WASM_DEQUANTIZE_MAX_BYTES, the rest stays 4-bit; 'always': all of them,
 * whatever the memory; 'never': none (4-bit memory, MatMulNBits decode speed); a number: that budget in
 * bytes.
 */
export type WasmDequantize = 'auto' | 'always' | 'never' | number;

/**
 * The 'auto' budget for fp32 weights written at load: 1 GiB. onnxruntime-web's wasm heap is wasm32, at
 * most 4 GiB (its build's maximum: 65536 pages), and it also holds everything else: the other weights
 * (4-bit blocks kept, embedding), the KV cache, activations (a prefill's logits alone are T × V × 4 bytes:
 * 300 MB for 512 tokens at a 150k vocabulary), ORT's arena and load-time copies. Measured on the 135M
 * replica (bench/wasm-heap.ts, bench/README.md): the heap ends a load at ~1.5× the bytes handed to the
 * session (805 MiB for 531 MiB), so 1 GiB of fp32 costs ~1.5 GiB of heap and leaves ≥ 2.5 GiB for the
 * rest. 1 GiB (about 0.27 B parameters) covers every projection of a 135M model (513 MiB). A 0.5B model
 * (Qwen2.5-0.5B shapes: ≈ 1.9 GiB of fp32, ~2.8 GiB of heap at 1.5×) gets its lm_head and about a third
 * of its projections (half of its bytes); a 1B model (≈ 4.6 GiB, more than the whole heap) about a
 * fifth of its bytes.
 */
export const WASM_DEQUANTIZE_MAX_BYTES = 1024 * 1024 * 1024;

/** The fp32 byte budget of a wasmDequantize setting; InvalidOptionError for anything else. */
export function wasmDequantizeBudget(mode: WasmDequantize = 'auto'): number {
  if (mode === 'auto') return WASM_DEQUANTIZE_MAX_BYTES;
  if (mode === 'always') return Number.POSITIVE_INFINITY;
  if (mode === 'never') return 0;
  if (typeof mode === 'number' && Number.isFinite(mode) && mode >= 0) return mode;
  throw new InvalidOptionError(
    `wasmDequantize must be 'auto', 'always', 'never' or a byte budget >= 0, got ${JSON.stringify(mode)}`,
    { option: 'wasmDequantize', value: String(mode) },
  );
}

/** What LoadReport.dequantizedAtLoad says. */
export interface DequantizedAtLoad extends DequantizeReport {
  /** The fp32 byte budget applied (null: 'always', no budget). */
  maxBytes: number | null;
  reason: string;
}

export const WASM_DEQUANTIZE_REASON =
  'onnxruntime-web has no 4-bit kernel on wasm (MatMulNBits dequantizes its weight on every step), so the ' +
  '4-bit weights were dequantized once at load: fp32 decode speed, fp32 memory (bench/README.md)';

const mib = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`;

function reasonOf(r: DequantizeReport, mode: WasmDequantize, maxBytes: number): string {
  if (r.kept === 0) return WASM_DEQUANTIZE_REASON;
  const slow = 'MatMulNBits, which dequantizes its weight on every step on wasm (slower decode)';
  if (r.nodes === 0 && mode === 'never')
    return `wasmDequantize 'never': all ${r.kept} 4-bit MatMulNBits kept (4-bit memory) as ${slow}`;
  const budget = mode === 'auto' ? `the 'auto' budget of ${mib(maxBytes)}` : `the budget of ${mib(maxBytes)}`;
  return (
    `${r.nodes} 4-bit MatMulNBits dequantized at load (${mib(r.fp32Bytes)} of fp32, largest weights first); ` +
    `${r.kept} kept 4-bit because their ${mib(r.keptFp32Bytes)} of fp32 would exceed ${budget} ` +
    `(LoadOptions.wasmDequantize): they run as ${slow}`
  );
}

/**
 * The graph the wasm backend runs: 4-bit projections as fp32 MatMuls within the `mode` budget. The report
 * is null when the graph has no convertible MatMulNBits; otherwise it says what was converted and kept.
 */
export function wasmGraphOf(
  model: ModelProto,
  mode: WasmDequantize = 'auto',
): { model: ModelProto; dequantized: DequantizedAtLoad | null } {
  const maxBytes = wasmDequantizeBudget(mode);
  const { model: out, report } = dequantizeNBits(model, { maxBytes });
  if (report.nodes + report.kept === 0) return { model: out, dequantized: null };
  const budget = Number.isFinite(maxBytes) ? maxBytes : null;
  return {
    model: out,
    dequantized: { ...report, maxBytes: budget, reason: reasonOf(report, mode, maxBytes) },
  };
}
