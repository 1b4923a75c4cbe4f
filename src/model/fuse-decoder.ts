/**
 * Decoder fusion, a graph pass applied at load (engine/load.ts) to every session's graph before the LoRA
 * injection. Optimum / torch.onnx exports spell out what onnxruntime has single kernels for, and
 * onnxruntime-web's own optimizer fuses none of it on the WebGPU EP (its profile of the default model:
 * 404 GPU dispatches per decode step). Four rewrites, each applied only where the ops match exactly:
 *
 * 1. RMSNorm: `Mul(Mul(x, Div(1, Sqrt(Add(ReduceMean(Pow(x, 2), -1), eps)))), w)` (7 nodes) becomes one
 *    `SimplifiedLayerNormalization(x, w)`.
 * 2. Residual + RMSNorm: a norm whose input is `Add(a, b)` of two activations becomes one com.microsoft
 *    `SkipSimplifiedLayerNormalization(a, b, w)`, whose 4th output is the sum the next residual reads.
 * 3. Rotary: fuse-rotary.ts (Slice, Neg, Concat, Mul ×2, Add per Q and K → one `RotaryEmbedding`).
 * 4. Grouped-query attention without the repeat_kv copy: HF's `repeat_kv` expands each layer's whole K
 *    and V cache to every query head (Unsqueeze, Expand, Reshape) and transposes K, three full copies of
 *    the cache per layer and step. Instead Q (B, n, S, h) is viewed as (B, kv, r·S, h) (heads grouped by
 *    their KV head, r = n / kv) and multiplied with the cache as it is, the scores viewed back as
 *    (B, n, S, T) for the unchanged mask and Softmax, then the same for probabilities × V. The scores are
 *    `Einsum(bkqh,bkth->bkqt)` or a Transpose of the kv-head cache and a MatMul; the mix an Einsum or a
 *    MatMul (`attention`). The score scale then moves into Q's rotary caches (foldQueryScale).
 *
 * Measured (bench/README.md "Decoder fusion", loop (f); tests/browser/fuse-webgpu.test.ts): on WebGPU
 * (SwiftShader) the default model's decode step runs 1.3× faster, logits within 3.7e-4 of the unfused
 * graph, whose GPU Cos / Sin are less exact than the caches built here. WebGPU takes Einsum scores (no
 * copy of K per step: decode 1.28× vs 1.21× with the Transpose) and a MatMul mix (ORT's tiled MatMul
 * beats its one-thread-per-output Einsum at prefill sizes: prefill 0.97× vs 0.94× with an Einsum mix),
 * per a scratch lockstep run. On wasm onnxruntime's CPU optimizer already makes some of these rewrites
 * (logits bit-identical); removing repeat_kv's copies still made the step 1.22× faster. Builder graphs
 * (GroupQueryAttention) already have these kernels: nothing matches.
 * The input model is not modified; weights are shared, not copied.
 */

import {
  constValues,
  int64Const,
  intsAttr,
  makeNode,
  type Net,
  netOf,
  producedBy,
  pruneDead,
  reindex,
  replaceNode,
  rewire,
  scalarOf,
} from './fuse-graph.ts';
import { fuseRotary } from './fuse-rotary.ts';
import { floatToHalfBits } from './half.ts';
import {
  cloneGraph,
  DataType,
  dimsOf,
  float32Reader,
  getIntAttr,
  graphOf,
  initializersOf,
  isExternal,
  isOnnxDomain,
  type ModelProto,
  MS_DOMAIN,
  makeTensor,
  type NodeProto,
  onnx,
  withGraph,
} from './onnx-io.ts';

export interface FuseOptions {
  norms?: boolean;
  rotary?: boolean;
  /**
   * How Q·Kᵀ and probabilities·V read the kv-head cache: 'einsum' (both Einsum), 'matmul' (a Transpose
   * of K and MatMuls; wasm's choice), 'einsum-matmul' (Einsum scores, MatMul mix; WebGPU's choice), or
   * false to keep repeat_kv.
   */
  attention?: AttentionForm | false;
}

export type AttentionForm = 'einsum' | 'matmul' | 'einsum-matmul';

export interface FuseReport {
  norms: number;
  skipNorms: number;
  rotary: number;
  attention: number;
  /** Attentions whose score scale moved into Q's rotary caches (foldQueryScale). */
  scaleFolds: number;
}

export interface FuseShape {
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  maxPositionEmbeddings: number;
}

const SCOPE = '/weblora/fuse';

/** The options the engine uses per backend (measured: bench/README.md "Decoder fusion"). */
export function fuseOptionsFor(backend: 'webgpu' | 'wasm'): FuseOptions {
  return { norms: true, rotary: true, attention: backend === 'webgpu' ? 'einsum-matmul' : 'matmul' };
}

const isScalar = (net: Net, name: string | undefined, v: number) => scalarOf(net, name) === v;

/** `Mul(a, b)` in either order where one side is produced by `op`: [that node, the other input]. */
function mulWith(net: Net, name: string | undefined, op: string): [NodeProto, string] | null {
  const mul = producedBy(net, name, 'Mul');
  if (!mul) return null;
  for (const [p, q] of [
    [mul.input[0], mul.input[1]],
    [mul.input[1], mul.input[0]],
  ] as const) {
    const n = producedBy(net, p, op);
    if (n) return [n, q!];
  }
  return null;
}

function fuseNorms(net: Net): NodeProto[] {
  const fused: NodeProto[] = [];
  for (const n of [...net.nodes]) {
    if (n.opType !== 'Mul' || (n.domain && n.domain !== 'ai.onnx')) continue;
    for (const [inner, w] of [
      [n.input[0], n.input[1]],
      [n.input[1], n.input[0]],
    ] as const) {
      const weight = net.consts.get(w ?? '');
      if (weight?.dims.length !== 1) continue;
      const m = mulWith(net, inner, 'Div');
      if (!m) continue;
      const [div, x] = m;
      if (!isScalar(net, div.input[0], 1)) continue;
      const sqrt = producedBy(net, div.input[1], 'Sqrt');
      const add = sqrt ? producedBy(net, sqrt.input[0], 'Add') : null;
      if (!add) continue;
      const [rmName, epsName] =
        net.producer.get(add.input[0]!)?.opType === 'ReduceMean'
          ? [add.input[0], add.input[1]]
          : [add.input[1], add.input[0]];
      const eps = scalarOf(net, epsName);
      const rm = producedBy(net, rmName, 'ReduceMean');
      if (!rm || eps === null || getIntAttr(rm, 'keepdims', 1) !== 1) continue;
      const axes = rm.input[1] ? constValues(net, rm.input[1]) : intsAttr(rm, 'axes');
      if (axes?.length !== 1 || axes[0] !== -1) continue;
      const pow = producedBy(net, rm.input[0], 'Pow');
      if (!pow || pow.input[0] !== x || !isScalar(net, pow.input[1], 2)) continue;
      const out = makeNode('SimplifiedLayerNormalization', [x, w!], [n.output[0]!], `${n.name}/weblora_rms`, {
        ints: { axis: -1, stash_type: 1 },
        floats: { epsilon: eps },
      });
      replaceNode(net, n, [out]);
      fused.push(out);
      break;
    }
  }
  reindex(net);
  return fused;
}

/** Folds the residual Add feeding a fused norm into SkipSimplifiedLayerNormalization. */
function fuseSkips(net: Net, norms: NodeProto[]): number {
  let count = 0;
  for (const norm of norms) {
    const add = producedBy(net, norm.input[0], 'Add');
    if (!add || add.input.some((i) => !i || net.consts.has(i))) continue;
    const sum = add.output[0]!;
    const others = (net.consumers.get(sum) ?? []).filter((c) => c !== norm);
    const keepSum = others.length > 0 || net.graphOutputs.has(sum);
    const eps = norm.attribute.find((a) => a.name === 'epsilon')?.f ?? 1e-5;
    const skip = makeNode(
      'SkipSimplifiedLayerNormalization',
      [add.input[0]!, add.input[1]!, norm.input[1]!],
      keepSum ? [norm.output[0]!, '', '', sum] : [norm.output[0]!],
      `${norm.name}/skip`,
      { floats: { epsilon: eps } },
      MS_DOMAIN,
    );
    // In the Add's place: every reader of the sum and of the norm comes after it.
    replaceNode(net, add, [skip]);
    net.nodes.splice(net.nodes.indexOf(norm), 1);
    count++;
  }
  // One reindex at the end: each site reads only its own Add, norm and sum, which earlier sites left alone.
  reindex(net);
  return count;
}

/** present.{i}.key|value walked back through repeat_kv (Unsqueeze axis 2, Expand, Reshape) and a Transpose. */
function cacheBehind(net: Net, name: string | undefined, transposed: boolean): string | null {
  let cur = name;
  if (transposed) {
    const t = producedBy(net, cur, 'Transpose');
    if (!t || (intsAttr(t, 'perm') ?? []).join() !== '0,1,3,2') return null;
    cur = t.input[0];
  }
  const reshape = producedBy(net, cur, 'Reshape');
  if (reshape) {
    const expand = producedBy(net, reshape.input[0], 'Expand');
    const un = expand ? producedBy(net, expand.input[0], 'Unsqueeze') : null;
    const axes = un ? (un.input[1] ? constValues(net, un.input[1]) : intsAttr(un, 'axes')) : null;
    if (!un || !axes || axes.join() !== '2') return null;
    cur = un.input[0];
  }
  return cur && /^present\.\d+\.(key|value)$/.test(cur) ? cur : null;
}

interface AttentionSite {
  /** Q (B, n, S, h) as the scores read it, and the scores (B, n, S, T) before scale and mask. */
  q: string;
  scores: string;
}

function fuseAttention(net: Net, shape: FuseShape, form: AttentionForm): AttentionSite[] {
  const { numHeads: n, numKvHeads: kv, headDim: h } = shape;
  if (kv < 1 || n % kv !== 0) return [];
  const grouped = n !== kv;
  const sites: AttentionSite[] = [];
  const c = (name: string, v: number[]) => int64Const(net, `${SCOPE}/${name}`, v);
  const count = 0;
  for (const qk of net.nodes.filter((x) => x.opType === 'MatMul' && (!x.domain || x.domain === 'ai.onnx'))) {
    const key = cacheBehind(net, qk.input[1], true);
    if (!key?.endsWith('.key')) continue;
    const value = key.replace(/key$/, 'value');
    // probabilities × V: the MatMul reading the value cache (through repeat_kv).
    const av = net.nodes.find(
      (x) => x.opType === 'MatMul' && x !== qk && cacheBehind(net, x.input[1], false) === value,
    );
    if (!av) continue;
    const p = `${qk.name || qk.output[0]}/weblora`;
    const view = (input: string, to: string, dims: number[], tag: string) =>
      grouped ? [makeNode('Reshape', [input, c(tag, dims)], [to], `${p}/${tag}`)] : [];
    const q4 = grouped ? `${p}/q_grouped` : qk.input[0]!;
    const s4 = grouped ? `${p}/scores_grouped` : qk.output[0]!;
    const scores: NodeProto[] =
      form !== 'matmul'
        ? [makeNode('Einsum', [q4, key], [s4], `${p}/qk`, { strings: { equation: 'bkqh,bkth->bkqt' } })]
        : [
            makeNode('Transpose', [key], [`${p}/kt`], `${p}/kt`, { intLists: { perm: [0, 1, 3, 2] } }),
            makeNode('MatMul', [q4, `${p}/kt`], [s4], `${p}/qk`),
          ];
    replaceNode(net, qk, [
      ...view(qk.input[0]!, q4, [0, kv, -1, h], 'q_view'),
      ...scores,
      ...view(s4, qk.output[0]!, [0, n, -1, 0], 'scores_view'),
    ]);
    const pa = grouped ? `${p}/probs_grouped` : av.input[0]!;
    const o4 = grouped ? `${p}/out_grouped` : av.output[0]!;
    const mix =
      form === 'einsum'
        ? makeNode('Einsum', [pa, value], [o4], `${p}/av`, { strings: { equation: 'bkqt,bkth->bkqh' } })
        : makeNode('MatMul', [pa, value], [o4], `${p}/av`);
    replaceNode(net, av, [
      ...view(av.input[0]!, pa, [0, kv, -1, 0], 'probs_view'),
      mix,
      ...view(o4, av.output[0]!, [0, n, -1, h], 'out_view'),
    ]);
    sites.push({ q: qk.input[0]!, scores: qk.output[0]! });
  }
  reindex(net); // once: each layer's site reads only its own nodes
  return sites;
}

/**
 * The attention scale `scores · s` (or `scores / d`) moved into Q's rotary caches: RotaryEmbedding is
 * linear in its cos / sin, so Q rotated with s·cos, s·sin is s·rot(Q), and the Mul after every layer's
 * scores goes. Only where Q comes straight from a fused RotaryEmbedding read by nothing else but shape ops.
 */
function foldQueryScale(net: Net, sites: readonly AttentionSite[]): number {
  let count = 0;
  for (const site of sites) {
    const readers = net.consumers.get(site.scores) ?? [];
    const op = readers[0];
    if (readers.length !== 1 || !op || (op.opType !== 'Mul' && op.opType !== 'Div') || !isOnnxDomain(op))
      continue;
    const other = op.input[0] === site.scores ? op.input[1] : op.input[0];
    const c = scalarOf(net, other);
    if (c === null || c === 0 || (op.opType === 'Div' && op.input[1] !== other)) continue;
    const scale = op.opType === 'Mul' ? c : 1 / c;
    const tr = producedBy(net, site.q, 'Transpose');
    const rs = tr ? producedBy(net, tr.input[0], 'Reshape') : null;
    const rot = rs ? producedBy(net, rs.input[0], 'RotaryEmbedding', MS_DOMAIN) : null;
    if (!tr || !rs || !rot) continue;
    const only = (name: string, reader: NodeProto) =>
      (net.consumers.get(name) ?? []).every((x) => x === reader || x.opType === 'Shape');
    if (!only(rot.output[0]!, rs) || !only(rs.output[0]!, tr)) continue;
    const scaled = [2, 3].map((i) => scaledCache(net, rot.input[i]!, scale));
    if (scaled.some((x) => x === null)) continue;
    rot.input = rot.input.map((x, i) => (i === 2 || i === 3 ? scaled[i - 2]! : x));
    rewire(net, op.output[0]!, site.scores);
    count++;
  }
  reindex(net);
  return count;
}

/** `scale` × a float32 / float16 constant, as a new initializer (one per source and scale). */
function scaledCache(net: Net, name: string, scale: number): string | null {
  const out = `${name}_times_${scale}`;
  if (net.consts.has(out)) return out;
  const src = net.consts.get(name);
  if (!src || isExternal(src)) return null;
  let data: Uint8Array;
  if (src.dataType === DataType.FLOAT) {
    const v = float32Reader(src);
    const f = new Float32Array(v.byteLength / 4);
    for (let i = 0; i < f.length; i++) f[i] = v.getFloat32(i * 4, true) * scale;
    data = new Uint8Array(f.buffer);
  } else if (src.dataType === DataType.FLOAT16) {
    const values = constValues(net, name) ?? [];
    data = new Uint8Array(Uint16Array.from(values, (x) => floatToHalfBits(x * scale)).buffer);
  } else return null;
  const t = makeTensor(out, src.dataType, dimsOf(src), data);
  net.consts.set(out, t);
  net.added.push(t);
  return out;
}

/** `model` with the fusions of the file header applied where they match. */
export function fuseDecoder(
  model: ModelProto,
  shape: FuseShape,
  opts: FuseOptions = { norms: true, rotary: true, attention: 'einsum' },
): { model: ModelProto; report: FuseReport } {
  const g = graphOf(model);
  const net = netOf(g);
  const report: FuseReport = { norms: 0, skipNorms: 0, rotary: 0, attention: 0, scaleFolds: 0 };
  if (opts.norms) {
    const norms = fuseNorms(net);
    report.norms = norms.length;
    report.skipNorms = fuseSkips(net, norms);
  }
  if (opts.rotary) report.rotary = fuseRotary(net, shape.maxPositionEmbeddings);
  if (opts.attention) {
    const sites = fuseAttention(net, shape, opts.attention);
    report.attention = sites.length;
    report.scaleFolds = foldQueryScale(net, sites);
  }
  if (report.norms + report.rotary + report.attention === 0) return { model, report };
  pruneDead(net);
  const opsetImport = [...model.opsetImport];
  if (!opsetImport.some((o) => o.domain === MS_DOMAIN)) {
    opsetImport.push(onnx.OperatorSetIdProto.create({ domain: MS_DOMAIN, version: 1 }));
  }
  // Initializers only the removed nodes read (repeat_kv's shape constants, …) go too.
  const read = new Set(net.nodes.flatMap((n) => n.input));
  for (const o of net.graphOutputs) read.add(o);
  const initializer = [...initializersOf(g), ...net.added].filter((t) => read.has(t.name));
  const graph = cloneGraph(g, { node: net.nodes, initializer });
  const out = withGraph(model, graph);
  out.opsetImport = opsetImport;
  return { model: out, report };
}
