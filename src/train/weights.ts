/**
 * Frozen base weights for training, read from the same ONNX ModelProto the inference session loads
 * (onnx/model.onnx or onnx/model_q4.onnx): the 7 projections per layer located like injectLora does
 * (parseProjectionName on node / weight / output names), RMSNorm weights, the embedding Gather and the
 * MatMul that writes `logits`. fp32 and fp16 tensors become Float32Array (fp16 scales included); 4-bit
 * MatMulNBits weights stay packed (blocks + scales + optional zero points), dequantized per row by
 * ref/linear.ts. Everything else (Gemm projections, 2/3/8-bit blocks, g_idx, biases, float zero points,
 * a quantized embedding, external data, If/Loop subgraphs) is a ModelFormatError naming what and where,
 * except quantize()'s tied lookup (Gather of the lm_head's own 4-bit blocks): its table is the lm_head
 * dequantized into an f32 copy (V·C·4 bytes).
 */
import { readFloat32 } from '../adapters/safetensors.ts';
import { AmbiguousTargetError, ModelFormatError } from '../errors.ts';
import {
  attrsOf,
  constantTensors,
  DataType,
  dimsOf,
  type GraphProto,
  getIntAttr,
  graphOf,
  isExternal,
  isOnnxDomain,
  type ModelProto,
  MS_DOMAIN,
  type NodeProto,
  nodesOf,
  type TensorProto,
  toNum,
} from '../model/onnx-io.ts';
import type { ModelConfig } from '../model/package.ts';
import { MODULE_ORDER, type ModuleName, parseProjectionName } from '../model/targets.ts';
import type { DecoderConfig, FrozenLayer, FrozenWeights } from './cpu-model.ts';
import type { FrozenLinear } from './ref/linear.ts';
import { weightRow } from './ref/linear.ts';

/** The decoder dims the trainer needs, from a validated config.json (rms_norm_eps, rope_theta from raw). */
export function decoderConfig(cfg: ModelConfig): DecoderConfig {
  const raw = cfg.raw;
  const num = (key: string, dflt: number): number => {
    const v = raw[key] ?? dflt;
    if (typeof v !== 'number' || !(v > 0))
      throw new ModelFormatError(`config.json: ${key} must be a positive number (got ${JSON.stringify(v)})`, {
        field: key,
      });
    return v;
  };
  if (raw.rope_scaling != null) {
    throw new ModelFormatError(
      `config.json: rope_scaling ${JSON.stringify(raw.rope_scaling)} is not supported by the trainer yet`,
      { field: 'rope_scaling' },
    );
  }
  return {
    V: cfg.vocabSize,
    C: cfg.hiddenSize,
    I: cfg.intermediateSize,
    L: cfg.numLayers,
    H: cfg.numHeads,
    Hkv: cfg.numKvHeads,
    D: cfg.headDim,
    eps: num('rms_norm_eps', 1e-6),
    ropeTheta: num('rope_theta', 10000),
  };
}

function unsupported(message: string, data: Record<string, unknown>): never {
  throw new ModelFormatError(`training: ${message}`, data);
}

/** fp32 or fp16 tensor → a fresh Float32Array. */
function readFloats(t: TensorProto, what: string): Float32Array {
  if (isExternal(t)) unsupported(`${what} (${t.name}) uses external data`, { tensor: t.name });
  const n = dimsOf(t).reduce((a, b) => a * b, 1);
  const raw = t.rawData && t.rawData.byteLength > 0 ? t.rawData : null;
  if (t.dataType === DataType.FLOAT) {
    const out = raw ? readFloat32({ dtype: 'F32', shape: [n], data: raw }) : Float32Array.from(t.floatData);
    if (out.length !== n) unsupported(`${what} (${t.name}) holds ${out.length} values for ${n}`, {});
    return out;
  }
  if (t.dataType === DataType.FLOAT16) {
    // raw_data: little-endian halves; otherwise int32_data holds one half per element (ONNX spec).
    const bytes = raw ?? new Uint8Array(Uint16Array.from(t.int32Data).buffer);
    return readFloat32({ dtype: 'F16', shape: [n], data: bytes });
  }
  return unsupported(`${what} (${t.name}) has ONNX data_type ${t.dataType}; float32 or float16 expected`, {
    tensor: t.name,
    dataType: t.dataType,
  });
}

function readBytes(t: TensorProto, what: string): Uint8Array {
  if (isExternal(t)) unsupported(`${what} (${t.name}) uses external data`, { tensor: t.name });
  if (t.dataType !== DataType.UINT8)
    unsupported(`${what} (${t.name}) has ONNX data_type ${t.dataType}; uint8 expected`, {
      tensor: t.name,
      dataType: t.dataType,
    });
  return t.rawData && t.rawData.byteLength > 0 ? t.rawData : Uint8Array.from(t.int32Data);
}

/** (K, O) row-major → (O, K). */
function transpose(w: Float32Array, K: number, O: number): Float32Array {
  const out = new Float32Array(K * O); // (O, K)
  for (let k = 0; k < K; k++) for (let o = 0; o < O; o++) out[o * K + k] = w[k * O + o]!;
  return out;
}

interface Ctx {
  consts: Map<string, TensorProto>;
  producers: Map<string, NodeProto>;
}

/** A MatMul's constant right operand as a frozen (O, K) weight; Transpose(perm 1,0) of a constant too. */
function matmulWeight(node: NodeProto, ctx: Ctx, where: string): FrozenLinear & { source: string } {
  const name = node.input[1] ?? '';
  const t = ctx.consts.get(name);
  if (t) {
    const d = dimsOf(t);
    if (d.length !== 2) unsupported(`${where}: weight ${name} has shape [${d}], expected [in, out]`, {});
    const [K = 0, O = 0] = d;
    return { kind: 'f32', K, O, w: transpose(readFloats(t, `${where} weight`), K, O), source: name };
  }
  const p = ctx.producers.get(name);
  const src = p?.opType === 'Transpose' && isOnnxDomain(p) ? ctx.consts.get(p.input[0] ?? '') : undefined;
  const perm = p
    ? attrsOf(p)
        .find((a) => a.name === 'perm')
        ?.ints?.map((x) => toNum(x))
    : undefined;
  if (src && dimsOf(src).length === 2 && (!perm || (perm[0] === 1 && perm[1] === 0))) {
    const [O = 0, K = 0] = dimsOf(src);
    return { kind: 'f32', K, O, w: readFloats(src, `${where} weight`), source: src.name };
  }
  return unsupported(`${where}: the weight ${name} is not a constant (or a transposed constant)`, {
    node: node.name,
  });
}

function nbitsWeight(node: NodeProto, ctx: Ctx, where: string): FrozenLinear & { source: string } {
  const K = getIntAttr(node, 'K', 0);
  const O = getIntAttr(node, 'N', 0);
  const bits = getIntAttr(node, 'bits', 4);
  const bs = getIntAttr(node, 'block_size', 0);
  if (bits !== 4) unsupported(`${where}: MatMulNBits with bits=${bits} (only 4-bit blocks)`, { bits });
  if (!(bs >= 16 && (bs & (bs - 1)) === 0))
    unsupported(`${where}: MatMulNBits block_size ${bs} (a power of two >= 16 expected)`, { bs });
  for (const [i, what] of [
    [4, 'g_idx (act-order)'],
    [5, 'a bias'],
  ] as const) {
    if (node.input[i]) unsupported(`${where}: MatMulNBits with ${what} input`, { node: node.name });
  }
  const nb = Math.ceil(K / bs);
  const get = (i: number, what: string): TensorProto => {
    const t = ctx.consts.get(node.input[i] ?? '');
    if (!t) unsupported(`${where}: MatMulNBits ${what} is not a constant`, { node: node.name });
    return t;
  };
  const packed = readBytes(get(1, 'B'), `${where} packed weight`);
  if (packed.length !== O * nb * (bs / 2))
    unsupported(
      `${where}: packed weight has ${packed.length} bytes, expected N*nb*bs/2 = ${O * nb * (bs / 2)}`,
      {},
    );
  const scales = readFloats(get(2, 'scales'), `${where} scales`);
  if (scales.length !== O * nb)
    unsupported(`${where}: ${scales.length} scales, expected N*nb = ${O * nb}`, { node: node.name });
  let zeroPoints: Uint8Array | null = null;
  if (node.input[3]) {
    const zt = get(3, 'zero_points');
    if (zt.dataType !== DataType.UINT8)
      unsupported(`${where}: zero points of ONNX data_type ${zt.dataType} (only packed uint8)`, {
        dataType: zt.dataType,
      });
    zeroPoints = readBytes(zt, `${where} zero points`);
    if (zeroPoints.length !== O * Math.ceil(nb / 2))
      unsupported(`${where}: ${zeroPoints.length} zero-point bytes, expected ${O * Math.ceil(nb / 2)}`, {});
  }
  return { kind: 'q4', K, O, blockSize: bs, packed, scales, zeroPoints, source: node.input[1] ?? '' };
}

function weightOf(node: NodeProto, ctx: Ctx, where: string): (FrozenLinear & { source: string }) | null {
  if (node.domain === MS_DOMAIN && node.opType === 'MatMulNBits') return nbitsWeight(node, ctx, where);
  if (!isOnnxDomain(node)) return null;
  if (node.opType === 'MatMul') return matmulWeight(node, ctx, where);
  if (node.opType === 'Gemm') unsupported(`${where} is a Gemm; the trainer reads MatMul / MatMulNBits`, {});
  return null;
}

const NORM_NAME_RE = /layers[._/](\d+)[._/](input_layernorm|post_attention_layernorm)[._/]/;
const FINAL_NORM_RE = /(?:^|[/.])model[/.]norm[/.]/;

function findNorms(g: GraphProto, ctx: Ctx, C: number, L: number) {
  const input: (Float32Array | undefined)[] = new Array(L);
  const post: (Float32Array | undefined)[] = new Array(L);
  let final: Float32Array | undefined;
  const take = (name: string, t: TensorProto) => {
    const d = dimsOf(t);
    if (d.length !== 1 || d[0] !== C) return;
    const m = NORM_NAME_RE.exec(name);
    if (m) {
      const l = Number(m[1]);
      const slot = m[2] === 'input_layernorm' ? input : post;
      if (l < L && !slot[l]) slot[l] = readFloats(t, `${m[2]} of layer ${l}`);
    } else if (FINAL_NORM_RE.test(name) && !final) final = readFloats(t, 'final norm');
  };
  // By initializer name (model.layers.0.input_layernorm.weight), then by the Mul's torch scope.
  for (const [name, t] of ctx.consts) take(`${name}.`, t);
  for (const n of nodesOf(g)) {
    if (n.opType !== 'Mul' || !isOnnxDomain(n)) continue;
    for (const x of n.input) {
      const t = ctx.consts.get(x);
      if (t) take(n.name, t);
    }
  }
  const missing: string[] = [];
  for (let l = 0; l < L; l++) {
    if (!input[l]) missing.push(`layers.${l}.input_layernorm`);
    if (!post[l]) missing.push(`layers.${l}.post_attention_layernorm`);
  }
  if (!final) missing.push('model.norm');
  if (missing.length)
    unsupported(`RMSNorm weights not found (by name or scope): ${missing.join(', ')}`, { missing });
  return { input: input as Float32Array[], post: post as Float32Array[], final: final! };
}

/**
 * Read every frozen weight the trainer needs. `config` gives the dims; they are checked against the graph.
 */
export function loadFrozenWeights(model: ModelProto, config: DecoderConfig): FrozenWeights {
  const g = graphOf(model);
  const ctx: Ctx = { consts: constantTensors(g), producers: new Map() };
  for (const n of nodesOf(g)) for (const o of n.output) if (o) ctx.producers.set(o, n);
  for (const n of nodesOf(g)) {
    if (n.opType === 'If' || n.opType === 'Loop' || n.opType === 'Scan')
      unsupported(`control flow (${n.opType} node ${n.name}): merged exports are not supported`, {});
  }
  const { V, C, I, L, H, Hkv, D } = config;

  // Embedding: the Gather of a constant [V, C] table by input_ids.
  const gather = nodesOf(g).find(
    (n) =>
      n.opType === 'Gather' &&
      isOnnxDomain(n) &&
      n.input[1] === 'input_ids' &&
      ctx.consts.has(n.input[0] ?? ''),
  );
  // Or quantize()'s tied lookup: a Gather by input_ids of a Reshape of the lm_head's 4-bit blocks (the
  // embedding is then the dequantized lm_head, read below).
  const fromBlocks = gather ? undefined : tiedBlocksSource(g, ctx);
  const gq = nodesOf(g).find((n) => n.opType === 'GatherBlockQuantized' && n.input[1] === 'input_ids');
  if (!gather && !fromBlocks) {
    unsupported(
      gq
        ? `the embedding is a ${gq.opType} (quantized embedding); only an fp32/fp16 Gather is supported`
        : 'no embedding Gather of a constant table by input_ids',
      {},
    );
  }
  const embT = gather ? ctx.consts.get(gather.input[0]!)! : null;
  const ed = embT ? dimsOf(embT) : [V, C];
  if (embT && (ed[0] !== V || ed[1] !== C))
    unsupported(`embedding ${embT.name} is [${ed}], config says [${V}, ${C}]`, { tensor: embT.name });
  let embed = embT ? readFloats(embT, 'embedding') : new Float32Array(0);

  // Projections.
  const proj: Partial<Record<ModuleName, FrozenLinear>>[] = Array.from({ length: L }, () => ({}));
  const want: Record<ModuleName, [number, number]> = {
    q_proj: [C, H * D],
    k_proj: [C, Hkv * D],
    v_proj: [C, Hkv * D],
    o_proj: [H * D, C],
    gate_proj: [C, I],
    up_proj: [C, I],
    down_proj: [I, C],
  };
  for (const n of nodesOf(g)) {
    const isMm =
      (isOnnxDomain(n) && (n.opType === 'MatMul' || n.opType === 'Gemm')) || n.opType === 'MatMulNBits';
    if (!isMm) continue;
    const id =
      parseProjectionName(n.name) ??
      parseProjectionName(n.input[1] ?? '') ??
      parseProjectionName(n.output[0] ?? '');
    if (!id) continue;
    const where = `${n.name || n.opType} (${id.module}, layer ${id.layer})`;
    // Activation × activation MatMuls inside a projection scope would not be projections; weights are constants.
    if (n.opType === 'MatMul' && !ctx.consts.has(n.input[1] ?? '') && !ctx.producers.get(n.input[1] ?? ''))
      continue;
    if (id.layer >= L) unsupported(`${where}: layer ${id.layer} beyond config num_hidden_layers ${L}`, {});
    const w = weightOf(n, ctx, where);
    if (!w) continue;
    if (proj[id.layer]![id.module]) {
      throw new AmbiguousTargetError(
        `training: two nodes for layer ${id.layer} ${id.module} (second: ${where})`,
        {
          layer: id.layer,
          module: id.module,
        },
      );
    }
    const [K, O] = want[id.module];
    if (w.K !== K || w.O !== O) unsupported(`${where}: maps ${w.K} → ${w.O}, config implies ${K} → ${O}`, {});
    const { source: _s, ...lin } = w;
    proj[id.layer]![id.module] = lin as FrozenLinear;
  }
  const norms = findNorms(g, ctx, C, L);
  const layers: FrozenLayer[] = proj.map((p, l) => {
    const miss = MODULE_ORDER.filter((m) => !p[m]);
    if (miss.length)
      unsupported(`layer ${l} has no ${miss.join(', ')} projection in the graph`, { layer: l });
    return {
      inputNorm: norms.input[l]!,
      postNorm: norms.post[l]!,
      proj: p as Record<ModuleName, FrozenLinear>,
    };
  });

  // lm_head: the node writing `logits`.
  const head = nodesOf(g).find((n) => n.output.includes('logits'));
  if (!head) unsupported('no node writes a `logits` output', {});
  const hw = weightOf(head, ctx, `lm_head ${head.name || head.opType}`);
  if (!hw) unsupported(`lm_head: \`logits\` is written by ${head.opType}, not a MatMul / MatMulNBits`, {});
  if (hw.K !== C || hw.O !== V) unsupported(`lm_head maps ${hw.K} → ${hw.O}, expected ${C} → ${V}`, {});
  let lmHead: FrozenLinear;
  let tied = false;
  if (fromBlocks) {
    if (hw.kind !== 'q4' || head.input[1] !== fromBlocks)
      unsupported('the embedding lookup reads 4-bit blocks that are not the lm_head weight', {});
    const { source: _s, ...lin } = hw;
    lmHead = lin as FrozenLinear;
    embed = new Float32Array(V * C); // (V, C): row v = lm_head output v, dequantized (an f32 copy)
    for (let v = 0; v < V; v++) embed.set(weightRow(new Float32Array(C), lmHead, v).subarray(0, C), v * C);
  } else if (hw.kind === 'f32' && (hw.source === embT!.name || hw.w.every((x, i) => x === embed[i]))) {
    // Tied (a Transpose of the embedding, or an exported copy equal to it): share the embedding table.
    lmHead = { kind: 'f32', K: C, O: V, w: embed };
    tied = true;
  } else {
    const { source: _s, ...lin } = hw;
    lmHead = lin as FrozenLinear;
  }
  return { config, embed, layers, finalNorm: norms.final, lmHead, tied };
}

/** The 4-bit blocks quantize()'s tied embedding lookup gathers from (Gather ← Reshape ← constant), if any. */
function tiedBlocksSource(g: GraphProto, ctx: Ctx): string | undefined {
  for (const n of nodesOf(g)) {
    if (n.opType !== 'Gather' || !isOnnxDomain(n) || n.input[1] !== 'input_ids') continue;
    const r = ctx.producers.get(n.input[0] ?? '');
    const src = r?.opType === 'Reshape' ? r.input[0] : undefined;
    if (src && ctx.consts.get(src)?.dataType === DataType.UINT8) return src;
  }
  return undefined;
}
