/**
 * Rotary fusion for fuse-decoder.ts: the Optimum / torch.onnx export writes HF's `apply_rotary_pos_emb` as
 * graph ops on every layer's Q and K,
 *
 *   x = Transpose(Reshape(proj, [B, S, n, h]), perm 0 2 1 3)            (B, n, S, h)
 *   y = x * cos + Concat(-x[..., h/2:], x[..., :h/2]) * sin               Mul, Slice ×2, Neg, Concat, Mul, Add
 *
 * with cos / sin = Unsqueeze(Cos|Sin(Concat(F, F))), F = positions × inv_freq computed once from
 * `position_ids`. Each match becomes one onnxruntime `RotaryEmbedding` (com.microsoft, interleaved = 0)
 * on the projection's (B, S, n·h) output, before the Reshape, fed `position_ids` and cos / sin caches
 * (max_position_embeddings, h/2) computed here from the graph's own inv_freq constant (float32 products
 * then cos / sin, as the graph computes them; a scalar `attention_scaling` Mul after Cos and Sin, as newer
 * HF exports have, scales both caches). A layer whose ops differ in any way (partial rotary, cos and sin
 * scaled differently, positions not from `position_ids`, caches over 16 MiB) is left as it is.
 */

import {
  constValues,
  intsAttr,
  makeNode,
  type Net,
  producedBy,
  reindex,
  replaceNode,
  rewire,
  scalarOf,
} from './fuse-graph.ts';
import { floatToHalfBits } from './half.ts';
import { DataType, getIntAttr, MS_DOMAIN, makeTensor, type NodeProto } from './onnx-io.ts';

/** Caches above this are not built (a 128k-context model would need 64 MiB for h = 128). */
export const ROTARY_CACHE_MAX_BYTES = 16 * 2 ** 20;

const SCOPE = '/weblora/fuse';

interface Trig {
  invFreq: number[];
  /** Element type of cos / sin as the layers read them (a Cast after Cos sets it). */
  elemType: number;
  /** HF's `attention_scaling` (`cos = emb.cos() * s`; 1 when the export has no such Mul). */
  scale: number;
}

/** F = positions × inv_freq from position_ids (Mul with an inv_freq constant): its values and type, or null. */
function invFreqOf(net: Net, f: string): { values: number[]; elemType: number } | null {
  const mul = producedBy(net, f, 'Mul');
  if (!mul) return null;
  for (const [c, other] of [
    [mul.input[1], mul.input[0]],
    [mul.input[0], mul.input[1]],
  ] as const) {
    const inv = constValues(net, c);
    if (!inv || inv.length < 1) continue;
    // other = Unsqueeze(Cast(position_ids), -1): positions as (B, S, 1).
    const un = producedBy(net, other, 'Unsqueeze');
    const axes = un ? (constValues(net, un.input[1]) ?? intsAttr(un, 'axes')) : null;
    const cast = un ? producedBy(net, un.input[0], 'Cast') : null;
    if (!un || !axes || axes.length !== 1 || (axes[0] !== -1 && axes[0] !== 2)) continue;
    if (cast?.input[0] !== 'position_ids') continue;
    return { values: inv, elemType: net.consts.get(c!)!.dataType };
  }
  return null;
}

/** cos or sin as read by the layers: Unsqueeze(Cast?(Cos|Sin(Concat(F, F))), 1). */
function trigOf(net: Net, name: string | undefined, op: 'Cos' | 'Sin'): Trig | null {
  const un = producedBy(net, name, 'Unsqueeze');
  if (!un) return null;
  const axes = constValues(net, un.input[1]) ?? intsAttr(un, 'axes');
  if (axes?.length !== 1 || axes[0] !== 1) return null;
  let castTo: number | null = null;
  let src = un.input[0];
  const cast = producedBy(net, src, 'Cast');
  if (cast) {
    castTo = getIntAttr(cast, 'to', 0);
    src = cast.input[0];
  }
  // Newer HF rotary classes multiply by `attention_scaling` (1 for plain RoPE, another scalar for YaRN /
  // LongRoPE): a scalar-constant Mul here scales the caches.
  let scale = 1;
  const scaled = producedBy(net, src, 'Mul');
  if (scaled) {
    const [a, b] = [scalarOf(net, scaled.input[0]), scalarOf(net, scaled.input[1])];
    if ((a === null) === (b === null)) return null;
    scale = (a ?? b)!;
    src = a === null ? scaled.input[0] : scaled.input[1];
  }
  const trig = producedBy(net, src, op);
  const cat = trig ? producedBy(net, trig.input[0], 'Concat') : null;
  if (cat?.input.length !== 2 || cat.input[0] !== cat.input[1]) return null;
  const inv = invFreqOf(net, cat.input[0]!);
  const elemType = castTo ?? inv?.elemType;
  if (!inv || (elemType !== DataType.FLOAT && elemType !== DataType.FLOAT16)) return null;
  return { invFreq: inv.values, elemType, scale };
}

/**
 * A Slice bound: a constant, or the export's `shape(x)[-1] / 2` (Unsqueeze(Cast*(Div(Gather(Shape(x), -1),
 * 2)))), named by the Div's output so the two Slices of one rotate_half compare equal.
 */
type Bound = { value: number } | { halfOf: string };

function boundOf(net: Net, name: string | undefined): Bound | null {
  const v = scalarOf(net, name);
  if (v !== null) return { value: v };
  let cur = name;
  const un = producedBy(net, cur, 'Unsqueeze');
  if (un) cur = un.input[0];
  for (let cast = producedBy(net, cur, 'Cast'); cast; cast = producedBy(net, cur, 'Cast'))
    cur = cast.input[0];
  const div = producedBy(net, cur, 'Div');
  const gather = div && scalarOf(net, div.input[1]) === 2 ? producedBy(net, div.input[0], 'Gather') : null;
  const shape = gather ? producedBy(net, gather.input[0], 'Shape') : null;
  const at = gather ? scalarOf(net, gather.input[1]) : null;
  return shape && (at === -1 || at === 3) ? { halfOf: `${div!.output[0]}|${shape.input[0]}` } : null;
}

const sameBound = (a: Bound, b: Bound) =>
  'value' in a ? 'value' in b && a.value === b.value : 'halfOf' in b && a.halfOf === b.halfOf;

/** Slice(x, start, end, axes -1, steps 1), or null. */
function sliceOf(net: Net, name: string | undefined): { x: string; start: Bound; end: Bound } | null {
  const s = producedBy(net, name, 'Slice');
  if (!s) return null;
  const start = boundOf(net, s.input[1]);
  const end = boundOf(net, s.input[2]);
  const axes = s.input[3] ? scalarOf(net, s.input[3]) : null;
  const steps = s.input[4] ? scalarOf(net, s.input[4]) : 1;
  if (!start || !end || (axes !== -1 && axes !== 3) || steps !== 1) return null;
  return { x: s.input[0]!, start, end };
}

/**
 * rotate_half(x) = Concat(-x[..., m:], x[..., :m], axis -1) with m = h/2: returns x and m when m is a
 * constant, or half = 0 when it is the shape expression (the caller checks it against the Reshape's h).
 */
function rotateHalfOf(net: Net, name: string | undefined): { x: string; half: number } | null {
  const cat = producedBy(net, name, 'Concat');
  if (cat?.input.length !== 2) return null;
  const axis = getIntAttr(cat, 'axis', 0);
  if (axis !== -1 && axis !== 3) return null;
  const neg = producedBy(net, cat.input[0], 'Neg');
  const hi = neg ? sliceOf(net, neg.input[0]) : null;
  const lo = sliceOf(net, cat.input[1]);
  if (!hi || !lo || hi.x !== lo.x || !sameBound(hi.start, lo.end)) return null;
  if (!('value' in lo.start) || lo.start.value !== 0) return null;
  if (!('value' in hi.end) || hi.end.value < 2 ** 31 - 1) return null; // to the end
  if ('halfOf' in lo.end) return lo.end.halfOf.endsWith(`|${lo.x}`) ? { x: lo.x, half: 0 } : null;
  return { x: lo.x, half: lo.end.value };
}

interface RotarySite {
  add: NodeProto;
  /** The rotated tensor's Transpose (B, n, S, h) and the Reshape before it. */
  transpose: NodeProto;
  reshape: NodeProto;
  heads: number;
  half: number;
  trig: Trig;
}

function siteOf(net: Net, add: NodeProto): RotarySite | null {
  for (const [m0, m1] of [
    [add.input[0], add.input[1]],
    [add.input[1], add.input[0]],
  ] as const) {
    const cosMul = producedBy(net, m0, 'Mul');
    const sinMul = producedBy(net, m1, 'Mul');
    if (!cosMul || !sinMul) continue;
    for (const [x, c] of [
      [cosMul.input[0], cosMul.input[1]],
      [cosMul.input[1], cosMul.input[0]],
    ] as const) {
      for (const [r, s] of [
        [sinMul.input[0], sinMul.input[1]],
        [sinMul.input[1], sinMul.input[0]],
      ] as const) {
        const rot = rotateHalfOf(net, r);
        if (!rot || rot.x !== x) continue;
        const cos = trigOf(net, c, 'Cos');
        const sin = trigOf(net, s, 'Sin');
        if (!cos || !sin || cos.elemType !== sin.elemType || cos.scale !== sin.scale) continue;
        const half = cos.invFreq.length;
        if ((rot.half !== 0 && rot.half !== half) || sin.invFreq.join() !== cos.invFreq.join()) continue;
        const transpose = producedBy(net, x, 'Transpose');
        if (!transpose || (intsAttr(transpose, 'perm') ?? []).join() !== '0,2,1,3') continue;
        const reshape = producedBy(net, transpose.input[0], 'Reshape');
        if (!reshape) continue;
        const heads = headsOf(net, reshape.input[1], half);
        if (heads === null) continue;
        return { add, transpose, reshape, heads, half, trig: cos };
      }
    }
  }
  return null;
}

/** n of a Reshape to (B, S, n, h) with h = 2·half: a constant shape or a Concat of four parts. */
function headsOf(net: Net, shape: string | undefined, half: number): number | null {
  let n: number | null = null;
  let h: number | null = null;
  const c = constValues(net, shape);
  if (c && c.length === 4) [n, h] = [c[2]!, c[3]!];
  else {
    const cat = producedBy(net, shape, 'Concat');
    if (cat?.input.length !== 4) return null;
    [n, h] = [scalarOf(net, cat.input[2]), scalarOf(net, cat.input[3])];
  }
  return n !== null && n > 0 && h === 2 * half ? n : null;
}

function cacheTensor(name: string, values: Float64Array, rows: number, half: number, elemType: number) {
  if (elemType === DataType.FLOAT16) {
    const bits = new Uint16Array(values.length);
    for (let i = 0; i < values.length; i++) bits[i] = floatToHalfBits(values[i]!);
    return makeTensor(name, DataType.FLOAT16, [rows, half], new Uint8Array(bits.buffer));
  }
  return makeTensor(name, DataType.FLOAT, [rows, half], Float32Array.from(values));
}

/**
 * Fuses every matching rotary site (see the file header); returns how many. `maxPositions` sizes the
 * caches (config.json's max_position_embeddings).
 */
export function fuseRotary(net: Net, maxPositions: number): number {
  const sites = net.nodes
    .filter((n) => n.opType === 'Add' && (!n.domain || n.domain === 'ai.onnx'))
    .map((n) => siteOf(net, n))
    .filter((s): s is RotarySite => s !== null);
  if (sites.length === 0) return 0;
  const first = sites[0]!;
  const same = sites.filter(
    (s) =>
      s.half === first.half &&
      s.trig.elemType === first.trig.elemType &&
      s.trig.scale === first.trig.scale &&
      s.trig.invFreq.join() === first.trig.invFreq.join(),
  );
  const bytes = maxPositions * first.half * (first.trig.elemType === DataType.FLOAT16 ? 2 : 4) * 2;
  if (maxPositions < 1 || bytes > ROTARY_CACHE_MAX_BYTES) return 0;
  const cos = new Float64Array(maxPositions * first.half);
  const sin = new Float64Array(maxPositions * first.half);
  for (let p = 0; p < maxPositions; p++) {
    for (let j = 0; j < first.half; j++) {
      const angle = Math.fround(p * Math.fround(first.trig.invFreq[j]!)); // the graph's float32 product
      cos[p * first.half + j] = Math.fround(Math.cos(angle)) * first.trig.scale;
      sin[p * first.half + j] = Math.fround(Math.sin(angle)) * first.trig.scale;
    }
  }
  const cosName = `${SCOPE}/rotary_cos_cache`;
  const sinName = `${SCOPE}/rotary_sin_cache`;
  for (const [name, v] of [
    [cosName, cos],
    [sinName, sin],
  ] as const) {
    const t = cacheTensor(name, v, maxPositions, first.half, first.trig.elemType);
    net.consts.set(name, t);
    net.added.push(t);
  }
  for (const s of same) {
    const src = s.reshape.input[0]!;
    const out = `${s.add.name || s.add.output[0]}/weblora_rotary`;
    const rot = makeNode(
      'RotaryEmbedding',
      [src, 'position_ids', cosName, sinName],
      [out],
      out,
      { ints: { interleaved: 0, num_heads: s.heads } },
      MS_DOMAIN,
    );
    replaceNode(net, s.reshape, [rot, s.reshape]);
    s.reshape.input = s.reshape.input.map((x, i) => (i === 0 ? out : x));
    rewire(net, s.add.output[0]!, s.transpose.output[0]!);
  }
  reindex(net);
  return same.length;
}
