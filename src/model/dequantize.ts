/**
 * Graph pass: 4-bit MatMulNBits -> fp32 MatMul with the dequantized weight, for the wasm backend.
 * Why: onnxruntime-web 1.30's wasm build has no 4-bit GEMM kernel (MLAS's SQNBitGemm kernels are x64/ARM
 * only), so MatMulNBits dequantizes its whole weight to fp32 on EVERY run before an fp32 GEMM. Measured in
 * Node on the same wasm (bench/q4-ops.ts, one decode row, SmolLM2-135M shapes): 576×1536 1.3–3.7 ms vs
 * 0.09 ms for the fp32 MatMul, the 576×49152 lm_head 87–210 ms vs 8–19 ms, whatever the block size or
 * accuracy_level. Dequantizing once at load keeps the 4-bit download and gives fp32 decode speed; the
 * weights then take fp32 memory in the wasm heap. The values are exactly what the kernel computes with:
 * (q - zero point) * scale, in f32. Not converted: fp16 scales (q4f16), bits != 4, g_idx or bias inputs,
 * weights that are not initializers; those nodes stay MatMulNBits.
 */
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

/**
 * W [K, N] (MatMul layout) from MatMulNBits blocks: B (N, nb, bs/2) low nibble first, scales (N * nb),
 * optional packed zero points (N, ceil(nb/2)), default zero point 8.
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
  const half = blockSize / 2;
  const zpBytes = Math.ceil(nb / 2);
  const w = new Float32Array(K * N); // (K, N)
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < nb; b++) {
      const s = scales[n * nb + b]!;
      const z = zeroPoints ? (zeroPoints[n * zpBytes + (b >> 1)]! >> ((b & 1) * 4)) & 15 : 8;
      const base = (n * nb + b) * half;
      const k0 = b * blockSize;
      const kEnd = Math.min(K, k0 + blockSize);
      for (let k = k0; k < kEnd; k += 2) {
        const byte = packed[base + ((k - k0) >> 1)]!;
        w[k * N + n] = ((byte & 15) - z) * s;
        if (k + 1 < kEnd) w[(k + 1) * N + n] = ((byte >> 4) - z) * s;
      }
    }
  }
  return w;
}

/** Replaces every convertible MatMulNBits of `model` by a MatMul on an fp32 initializer. */
export function dequantizeNBits(model: ModelProto): { model: ModelProto; report: DequantizeReport } {
  const g: GraphProto = graphOf(model);
  const inits = new Map<string, TensorProto>(initializersOf(g).map((t) => [t.name, t]));
  const report: DequantizeReport = { nodes: 0, fp32Bytes: 0 };
  const added = new Map<string, TensorProto>(); // B name -> fp32 weight
  const nodes = nodesOf(g).map((node): NodeProto => {
    if (node.opType !== 'MatMulNBits' || node.domain !== MS_DOMAIN) return node;
    const [x = '', bName = '', sName = '', zName = '', ...rest] = node.input;
    if (rest.some((r) => r !== '') || getIntAttr(node, 'bits', 4) !== 4) return node;
    const bT = inits.get(bName);
    const sT = inits.get(sName);
    const zT = zName ? inits.get(zName) : undefined;
    if (!bT || !sT || sT.dataType !== DataType.FLOAT || (zName && zT?.dataType !== DataType.UINT8))
      return node;
    const K = getIntAttr(node, 'K', 0);
    const N = getIntAttr(node, 'N', 0);
    const bs = getIntAttr(node, 'block_size', 32);
    const wName = `${bName}_dequantized`;
    if (!added.has(bName)) {
      const packed = bytesOf(bT);
      const scales = bytesOf(sT);
      const zps = zT ? bytesOf(zT) : null;
      const nb = Math.ceil(K / bs);
      if (!packed || !scales || packed.byteLength !== N * nb * (bs / 2) || scales.byteLength !== N * nb * 4)
        return node;
      if (zT && (!zps || dimsOf(zT).reduce((a, d) => a * d, 1) !== N * Math.ceil(nb / 2))) return node;
      const w = unpackNBits(packed, f32(scales), zps, K, N, bs);
      added.set(bName, makeTensor(wName, DataType.FLOAT, [K, N], w));
      report.fp32Bytes += w.byteLength;
    }
    report.nodes++;
    return onnx.NodeProto.create({
      name: node.name,
      opType: 'MatMul',
      domain: '',
      input: [x, wName],
      output: [...node.output],
    });
  });
  if (report.nodes === 0) return { model, report };
  const used = new Set<string>();
  for (const n of nodes) for (const i of n.input) used.add(i);
  for (const o of outputsOf(g)) used.add(o.name);
  const initializer = [...initializersOf(g).filter((t) => used.has(t.name)), ...added.values()];
  const input = inputsOf(g).filter((v) => used.has(v.name) || !inits.has(v.name));
  return { model: withGraph(model, cloneGraph(g, { node: nodes, initializer, input })), report };
}

/** What LoadReport.dequantizedAtLoad says. */
export interface DequantizedAtLoad extends DequantizeReport {
  reason: string;
}

export const WASM_DEQUANTIZE_REASON =
  'onnxruntime-web has no 4-bit kernel on wasm (MatMulNBits dequantizes its weight on every step), so the ' +
  '4-bit weights were dequantized once at load: fp32 decode speed, fp32 memory (bench/README.md)';

/** The graph the wasm backend runs: 4-bit projections as fp32 MatMuls (null report when there were none). */
export function wasmGraphOf(model: ModelProto): { model: ModelProto; dequantized: DequantizedAtLoad | null } {
  const { model: out, report } = dequantizeNBits(model);
  return { model: out, dequantized: report.nodes > 0 ? { ...report, reason: WASM_DEQUANTIZE_REASON } : null };
}
