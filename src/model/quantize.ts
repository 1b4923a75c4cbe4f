/**
 * Graph pass: weight-only 4-bit block quantization. Each fp32 MatMul whose weight is a [K, N] constant
 * initializer becomes com.microsoft.MatMulNBits (bits 4, block 32 by default): B uint8 [N, ceil(K/bs), bs/2]
 * (column n, block b holds W[b*bs .. b*bs+bs-1, n], two per byte, low nibble first; K is zero-padded to a
 * whole block), scales f32 [N * ceil(K/bs)], optional packed uint8 zero points. Symmetric (default):
 * scale = absmax/7, q = round(w/scale) + 8 in [1, 15], zero point 8 implied. Asymmetric: range
 * [min(0,min), max(0,max)] over 15 steps, zero point rounded. Both bound |w - dequant(w)| <= scale/2.
 * The lm_head is quantized too (default; `includeLmHead: false` keeps it fp32). A tied embedding, which
 * exports store twice (the Gather table [V, C] and the lm_head's transposed copy [C, V]), is then stored
 * ONCE: the lookup reads the lm_head's own 4-bit blocks (row v of the embedding is column v of the lm_head
 * weight, blocked along C: the same bytes) through a few standard ops (gatherFromBlocks);
 * `embedding: 'fp32'` keeps the fp32 table. Measured on the default model and the 135M replica: bench/README.md "Quantizer".
 * Not done here: MatMuls whose weight is not a direct initializer (e.g. behind a Transpose; left fp32, not
 * reported), external-data weights (skipped, listed in the report), activations, fp16 weights.
 */
import { ModelFormatError } from '../errors.ts';
import {
  type AttributeProto,
  cloneGraph,
  DataType,
  dimsOf,
  float32Reader,
  type GraphProto,
  graphOf,
  initializersOf,
  inputsOf,
  intAttr,
  isExternal,
  isOnnxDomain,
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

export interface QuantizeOptions {
  /** Power of two >= 16 (ORT requirement). Default 32. */
  blockSize?: number;
  /** Asymmetric min/max quantization with uint8 zero points. Default false (symmetric, no zero points). */
  zeroPoints?: boolean;
  /** Also quantize the output projection into `logits`. Default true. */
  includeLmHead?: boolean;
  /**
   * A tied embedding (Gather table equal to the quantized lm_head's transposed weight): 'q4' looks it up
   * from the lm_head's 4-bit blocks (gatherFromBlocks; needs C % blockSize = 0 and no zero points),
   * 'fp32' keeps the fp32 table. Default 'q4'.
   */
  embedding?: 'q4' | 'fp32';
}

export interface QuantizedEntry {
  node: string;
  weight: string;
  K: number;
  N: number;
  /** max |W - dequant(quant(W))| over the weight. */
  maxAbsError: number;
  /** K was not a multiple of the block size and was zero-padded. */
  padded: boolean;
}

export interface QuantizeReport {
  quantized: QuantizedEntry[];
  skipped: { node: string; reason: string }[];
  /** Bytes of fp32 weights replaced, and of their packed + scales + zero-point replacements. */
  bytesBefore: number;
  bytesAfter: number;
  /** The embedding Gather now reading the lm_head's 4-bit blocks (and the fp32 table dropped), or null. */
  tiedEmbedding: { gather: string; table: string } | null;
}

export interface Block4 {
  packed: Uint8Array; // (N, nBlocks, bs/2)
  scales: Float32Array; // (N * nBlocks)
  zeroPoints?: Uint8Array; // (N * ceil(nBlocks/2)), two 4-bit zero points per byte, low nibble first
  maxAbsError: number;
}

/**
 * Quantize W [K, N] (row-major, as a MatMul weight) to MatMulNBits layout. Works block-row by
 * block-row so W is read sequentially; `w` may be a DataView over raw_data (no copy).
 */
export function quantizeBlock4(
  w: Float32Array | DataView,
  K: number,
  N: number,
  { blockSize = 32, zeroPoints = false }: { blockSize?: number; zeroPoints?: boolean } = {},
): Block4 {
  checkBlockSize(blockSize);
  const len = w instanceof DataView ? w.byteLength / 4 : w.length;
  if (len !== K * N)
    throw new ModelFormatError(`weight has ${len} elements, expected K*N = ${K}*${N}`, { K, N });
  const get =
    w instanceof DataView ? (i: number) => w.getFloat32(i * 4, true) : (i: number) => w[i] as number;
  const nb = Math.ceil(K / blockSize);
  const half = blockSize / 2;
  const zpBytes = Math.ceil(nb / 2);
  const packed = new Uint8Array(N * nb * half); // nibbles are OR-ed in below
  const scales = new Float32Array(N * nb);
  const zps = zeroPoints ? new Uint8Array(N * zpBytes) : undefined;
  const lo = new Float32Array(N); // (N) per-column block min (or -absmax)
  const hi = new Float32Array(N); // (N) per-column block max
  const zp = new Uint8Array(N); // (N) per-column block zero point
  let maxErr = 0;
  for (let b = 0; b < nb; b++) {
    const k0 = b * blockSize;
    const k1 = Math.min(K, k0 + blockSize);
    lo.fill(0);
    hi.fill(0);
    for (let k = k0; k < k1; k++) {
      const row = k * N;
      for (let n = 0; n < N; n++) {
        const v = get(row + n);
        if (v < lo[n]!) lo[n] = v;
        if (v > hi[n]!) hi[n] = v;
      }
    }
    for (let n = 0; n < N; n++) {
      let s: number;
      let z: number;
      if (zps) {
        s = (hi[n]! - lo[n]!) / 15;
        z = s > 0 ? Math.min(15, Math.max(0, Math.round(-lo[n]! / s))) : 8;
        zps[n * zpBytes + (b >> 1)]! |= z << ((b & 1) * 4);
      } else {
        s = Math.max(-lo[n]!, hi[n]!) / 7;
        z = 8;
      }
      scales[n * nb + b] = s;
      zp[n] = z;
    }
    // Rows k >= K (padding of the last block) get the zero point, which dequantizes to exactly 0.
    for (let k = k0; k < k0 + blockSize; k++) {
      const row = k * N;
      const byteInBlock = (k - k0) >> 1;
      const shift = ((k - k0) & 1) * 4;
      for (let n = 0; n < N; n++) {
        const z = zp[n]!;
        const s = scales[n * nb + b]!;
        let q = z;
        if (k < k1 && s > 0) {
          const v = get(row + n);
          q = Math.min(15, Math.max(0, Math.round(v / s) + z));
          const err = Math.abs(v - (q - z) * Math.fround(s));
          if (err > maxErr) maxErr = err;
        } else if (k < k1) {
          const err = Math.abs(get(row + n));
          if (err > maxErr) maxErr = err;
        }
        packed[(n * nb + b) * half + byteInBlock]! |= q << shift;
      }
    }
  }
  return zps
    ? { packed, scales, zeroPoints: zps, maxAbsError: maxErr }
    : { packed, scales, maxAbsError: maxErr };
}

/** Inverse of quantizeBlock4: W [K, N] row-major fp32 (reference for tests and error reports). */
export function dequantizeMatMulNBits(
  packed: Uint8Array,
  scales: Float32Array,
  zeroPoints: Uint8Array | undefined,
  K: number,
  N: number,
  blockSize = 32,
): Float32Array {
  checkBlockSize(blockSize);
  const nb = Math.ceil(K / blockSize);
  const half = blockSize / 2;
  const zpBytes = Math.ceil(nb / 2);
  const w = new Float32Array(K * N); // (K, N)
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) {
      const b = Math.floor(k / blockSize);
      const byte = packed[(n * nb + b) * half + ((k % blockSize) >> 1)]!;
      const q = (byte >> ((k & 1) * 4)) & 15;
      const z = zeroPoints ? (zeroPoints[n * zpBytes + (b >> 1)]! >> ((b & 1) * 4)) & 15 : 8;
      w[k * N + n] = (q - z) * scales[n * nb + b]!;
    }
  }
  return w;
}

function checkBlockSize(bs: number): void {
  if (!(Number.isInteger(bs) && bs >= 16 && (bs & (bs - 1)) === 0)) {
    throw new ModelFormatError(`block size must be a power of two >= 16 (MatMulNBits), got ${bs}`, {
      blockSize: bs,
    });
  }
}

/**
 * The output projection: the MatMul writing the `logits` output, else (when the graph has a `logits`
 * output) the last MatMul with an initializer weight. -1 when there is none.
 */
function lmHeadIndex(g: GraphProto, inits: Map<string, TensorProto>): number {
  if (!outputsOf(g).some((o) => o.name === 'logits')) return -1;
  const direct = nodesOf(g).findIndex(
    (n) => n.opType === 'MatMul' && isOnnxDomain(n) && n.output.includes('logits'),
  );
  if (direct >= 0) return direct;
  let last = -1;
  nodesOf(g).forEach((n, i) => {
    if (n.opType === 'MatMul' && isOnnxDomain(n) && inits.has(n.input[1] ?? '')) last = i;
  });
  return last;
}

export function quantize(
  model: ModelProto,
  opts: QuantizeOptions = {},
): { model: ModelProto; report: QuantizeReport } {
  const blockSize = opts.blockSize ?? 32;
  checkBlockSize(blockSize);
  const g = graphOf(model);
  const inits = new Map<string, TensorProto>(initializersOf(g).map((t) => [t.name, t]));
  const lmHead = lmHeadIndex(g, inits);
  const includeLmHead = opts.includeLmHead ?? true;
  const report: QuantizeReport = {
    quantized: [],
    skipped: [],
    bytesBefore: 0,
    bytesAfter: 0,
    tiedEmbedding: null,
  };
  const done = new Map<string, { names: string[]; K: number; N: number }>(); // weight -> new initializers
  const added: TensorProto[] = [];

  const nodes = nodesOf(g).map((node, i): NodeProto => {
    if (node.opType !== 'MatMul' || !isOnnxDomain(node)) return node;
    const label = node.name || `MatMul -> ${node.output[0] ?? '?'}`;
    const wName = node.input[1] ?? '';
    const t = inits.get(wName);
    if (!t) return node; // activation x activation (attention) or non-initializer weight: not ours
    const dims = dimsOf(t);
    const skip = (reason: string): NodeProto => {
      report.skipped.push({ node: label, reason });
      return node;
    };
    if (i === lmHead && !includeLmHead) return skip('lm_head (output projection): includeLmHead is false');
    if (t.dataType !== DataType.FLOAT) return skip(`weight ${wName} is data_type ${t.dataType}, not float32`);
    if (dims.length !== 2) return skip(`weight ${wName} has shape [${dims}], expected [K, N]`);
    if (isExternal(t)) return skip(`weight ${wName} uses external data`);
    const [K = 0, N = 0] = dims;
    let q = done.get(wName);
    if (!q) {
      const r = quantizeBlock4(float32Reader(t), K, N, { blockSize, zeroPoints: opts.zeroPoints ?? false });
      const nb = Math.ceil(K / blockSize);
      const names = [`${wName}_Q4`, `${wName}_scales`];
      added.push(makeTensor(names[0]!, DataType.UINT8, [N, nb, blockSize / 2], r.packed));
      added.push(makeTensor(names[1]!, DataType.FLOAT, [N * nb], r.scales));
      if (r.zeroPoints) {
        names.push(`${wName}_zp`);
        added.push(makeTensor(names[2]!, DataType.UINT8, [r.zeroPoints.length], r.zeroPoints));
      }
      report.bytesBefore += K * N * 4;
      report.bytesAfter += r.packed.byteLength + r.scales.byteLength + (r.zeroPoints?.byteLength ?? 0);
      report.quantized.push({
        node: label,
        weight: wName,
        K,
        N,
        maxAbsError: r.maxAbsError,
        padded: K % blockSize !== 0,
      });
      q = { names, K, N };
      done.set(wName, q);
    } else {
      report.quantized.push({ ...report.quantized.find((e) => e.weight === wName)!, node: label });
    }
    return onnx.NodeProto.create({
      name: node.name,
      opType: 'MatMulNBits',
      domain: MS_DOMAIN,
      input: [node.input[0] ?? '', ...q.names],
      output: [...node.output],
      attribute: [intAttr('K', K), intAttr('N', N), intAttr('bits', 4), intAttr('block_size', blockSize)],
    });
  });

  const head = lmHead >= 0 ? done.get(nodesOf(g)[lmHead]!.input[1] ?? '') : undefined;
  if (head && (opts.embedding ?? 'q4') === 'q4' && !opts.zeroPoints && head.K % blockSize === 0) {
    const w = inits.get(nodesOf(g)[lmHead]!.input[1]!)!;
    const tie = tiedGather(nodes, inits, w, head.K, head.N);
    if (tie) {
      nodes.splice(tie.index, 1, ...gatherFromBlocks(tie.node, head, blockSize, added));
      report.tiedEmbedding = { gather: tie.node.name || tie.node.output[0]!, table: tie.node.input[0]! };
      report.bytesBefore += head.K * head.N * 4;
    }
  }

  // Drop fp32 weights nothing reads any more (tied weights still read by another node stay).
  const used = new Set<string>();
  for (const n of nodes) for (const x of n.input) used.add(x);
  for (const o of outputsOf(g)) used.add(o.name);
  const tiedTable = report.tiedEmbedding ? [report.tiedEmbedding.table] : [];
  const dropped = new Set([...done.keys(), ...tiedTable].filter((w) => !used.has(w)));
  const initializer = [...initializersOf(g).filter((t) => !dropped.has(t.name)), ...added];
  const input = inputsOf(g).filter((v) => !dropped.has(v.name));
  const opsetImport = [...model.opsetImport];
  if (done.size > 0 && !opsetImport.some((o) => o.domain === MS_DOMAIN)) {
    opsetImport.push(onnx.OperatorSetIdProto.create({ domain: MS_DOMAIN, version: 1 }));
  }
  const out = withGraph(model, cloneGraph(g, { node: nodes, initializer, input }));
  out.opsetImport = opsetImport;
  return { model: out, report };
}

/** The Gather of a constant fp32 [N, K] table equal to Wᵀ (W: the lm_head's [K, N] weight), if any. */
function tiedGather(
  nodes: NodeProto[],
  inits: Map<string, TensorProto>,
  w: TensorProto,
  K: number,
  N: number,
): { index: number; node: NodeProto } | null {
  const index = nodes.findIndex((n) => {
    if (n.opType !== 'Gather' || !isOnnxDomain(n) || intAttrOf(n, 'axis', 0) !== 0) return false;
    const t = inits.get(n.input[0] ?? '');
    if (!t || t.dataType !== DataType.FLOAT || isExternal(t)) return false;
    const d = dimsOf(t);
    return d.length === 2 && d[0] === N && d[1] === K;
  });
  if (index < 0) return null;
  const node = nodes[index]!;
  const e = float32Reader(inits.get(node.input[0]!)!); // (N, K)
  const wt = float32Reader(w); // (K, N)
  for (let k = 0; k < K; k++) {
    for (let n = 0; n < N; n++) {
      if (wt.getFloat32((k * N + n) * 4, true) !== e.getFloat32((n * K + k) * 4, true)) return null;
    }
  }
  // Nothing else may read the table (it is dropped).
  if (nodes.some((n, i) => i !== index && n.input.includes(node.input[0]!))) return null;
  return { index, node };
}

function intAttrOf(n: NodeProto, name: string, dflt: number): number {
  const a = n.attribute.find((x) => x.name === name);
  return a ? Number(a.i) : dflt;
}

/**
 * Gather(table, ids) -> the same rows read from the lm_head's MatMulNBits blocks with standard ops: B
 * (N, K/bs, bs/2) IS the table, row v = column v of the lm_head weight, 4-bit, blocked along K, low nibble
 * first, zero point 8. Gather the packed row and its scales, split the bytes into nibbles in f32
 * (hi = floor(x / 16), lo = x - 16·hi: exact), then (q - 8) · scale, the value MatMulNBits uses.
 * Not com.microsoft.GatherBlockQuantized: onnxruntime-web 1.30's WebGPU build (the app's, both EPs) has no
 * kernel for it ("Could not find an implementation"), only the plain wasm build does. ids: [B, T].
 */
function gatherFromBlocks(
  gather: NodeProto,
  head: { names: string[]; K: number; N: number },
  bs: number,
  added: TensorProto[],
): NodeProto[] {
  const [bName, sName] = head.names as [string, string];
  const { K, N } = head;
  const nb = K / bs;
  const p = `${gather.name || '/model/embed_tokens/Gather'}_Q4`;
  const ids = gather.input[1]!;
  const out: NodeProto[] = [];
  const i64 = (name: string, dims: number[]) => {
    added.push(
      onnx.TensorProto.create({
        name: `${p}/${name}`,
        dataType: DataType.INT64,
        dims: [dims.length],
        rawData: new Uint8Array(BigInt64Array.from(dims, BigInt).buffer),
      }),
    );
    return `${p}/${name}`;
  };
  const f32c = (name: string, v: number) => {
    added.push(makeTensor(`${p}/${name}`, DataType.FLOAT, [], Float32Array.of(v)));
    return `${p}/${name}`;
  };
  const node = (op: string, inputs: string[], name: string, attribute: AttributeProto[] = []): string => {
    const o = `${p}/${name}_output_0`;
    out.push(
      onnx.NodeProto.create({ name: `${p}/${name}`, opType: op, input: inputs, output: [o], attribute }),
    );
    return o;
  };
  const rows = node('Reshape', [bName, i64('rows_shape', [N, K / 2])], 'Rows'); // (N, K/2) uint8
  const rowScales = node('Reshape', [sName, i64('scales_shape', [N, nb])], 'RowScales'); // (N, nb)
  const bytes = node('Gather', [rows, ids], 'GatherRows'); // (B, T, K/2)
  const scales = node('Gather', [rowScales, ids], 'GatherScales'); // (B, T, nb)
  const x = node('Cast', [bytes], 'Cast', [intAttr('to', DataType.FLOAT)]);
  const sixteen = f32c('sixteen', 16);
  const hi = node('Floor', [node('Div', [x, sixteen], 'Div')], 'Hi');
  const lo = node('Sub', [x, node('Mul', [hi, sixteen], 'HiTimes16')], 'Lo');
  const pair = i64('pair_shape', [0, 0, K / 2, 1]);
  const nibbles = node(
    'Concat',
    [node('Reshape', [lo, pair], 'Lo4'), node('Reshape', [hi, pair], 'Hi4')],
    'Nibbles',
    [intAttr('axis', 3)],
  ); // (B, T, K/2, 2): low nibble first
  const q = node('Reshape', [nibbles, i64('block_shape', [0, 0, nb, bs])], 'Blocks'); // (B, T, nb, bs)
  const s4 = node('Reshape', [scales, i64('scale_shape', [0, 0, nb, 1])], 'Scales4'); // (B, T, nb, 1)
  const w = node('Mul', [node('Sub', [q, f32c('eight', 8)], 'Centered'), s4], 'Dequantized');
  out.push(
    onnx.NodeProto.create({
      name: `${p}/Rows3`,
      opType: 'Reshape',
      input: [w, i64('out_shape', [0, 0, K])],
      output: [...gather.output],
    }),
  );
  return out;
}
