/**
 * Two opt-in node-count cuts for injectLora's branches (inject-lora.ts `packShared`, `foldResidual`). On the
 * wasm EP a decode step's LoRA branch is almost all per-node cost: rank-8 products are a few thousand
 * multiply-adds, and each onnxruntime-web node costs a few µs whatever its size (bench/branch-profile.ts).
 *  - packShared: q/k/v (gate/up) projections that read the same activation X get ONE branch, as a packed
 *    `qkv_proj` (`gate_up_proj`) target: A = [A_q | A_k | A_v] along the rank, B block-diagonal, X·A, the
 *    row mask and ·B once, then a Split hands each part its columns for its own Add. Per layer 28 → 21
 *    branch nodes (19 with foldResidual). The feeds change layout (src/adapters/peft.ts maps q/k/v adapters
 *    onto packed targets block-diagonally, all ranks padded to the packed one's), so it is off by default.
 *  - foldResidual: a branch Add whose only consumer is another Add (the residual stream after o_proj and
 *    down_proj) merges into it as one `Sum(residual, Y_base, delta)`. Feeds unchanged.
 * Neither applies to 2-D (Gemm) branches or projections already packed; packShared refuses gates. Both are
 * off in the engine: in the browser bench neither beat the plain graph measurably (bench/README.md "LoRA
 * branch cost on wasm": the Sum costs most of the Add it saves; packShared pads every target to the
 * packed rank, and that arithmetic eats the saved nodes).
 */
import { ModelFormatError } from '../errors.ts';
import type { LoraBranchOp } from './inject-lora.ts';
import { branch, cast, rowMaskMul } from './lora-nodes.ts';
import { DataType, intAttr, makeTensor, type NodeProto, onnx } from './onnx-io.ts';
import { PACKED_MODULES, type PackedModuleName, type PackedPart, type Projection } from './targets.ts';

/** A group of projections that read one X, emitted as one packed branch. */
export interface SharedGroup {
  layer: number;
  module: PackedModuleName;
  /** In part (column) order: q, k, v or gate, up. */
  members: Projection[];
  parts: PackedPart[];
  /** Graph node index of the first member: where the shared branch is emitted. */
  first: number;
}

/**
 * Groups among the chosen projections: per layer, ALL parts of a packed module chosen, as separate 3-D
 * (MatMul / MatMulNBits) projections with the same input and dtype. Keyed by every member's node index.
 */
export function sharedGroups(
  chosen: readonly Projection[],
  rankOf: (p: Projection) => number,
): Map<number, SharedGroup> {
  const out = new Map<number, SharedGroup>();
  for (const layer of new Set(chosen.map((p) => p.layer))) {
    for (const [module, names] of Object.entries(PACKED_MODULES) as [PackedModuleName, readonly string[]][]) {
      const members = names.map((m) => chosen.find((p) => p.layer === layer && p.module === m));
      if (members.some((p) => !p)) continue;
      const ps = members as Projection[];
      const x = ps[0]!.node.input[0];
      const fits = (p: Projection) =>
        p.kind !== 'Gemm' && !p.parts && p.node.input[0] === x && p.dtype === ps[0]!.dtype && rankOf(p) === 3;
      if (!ps.every(fits)) continue;
      let offset = 0;
      const parts = ps.map((p) => {
        const part = { module: p.module as PackedPart['module'], offset, size: p.out };
        offset += p.out;
        return part;
      });
      const group = { layer, module, members: ps, parts, first: Math.min(...ps.map((p) => p.nodeIndex)) };
      for (const p of ps) out.set(p.nodeIndex, group);
    }
  }
  return out;
}

export interface SharedEmitContext {
  push(n: NodeProto): void;
  fresh(base: string): string;
  /** X as the branch reads it (float32 Cast of a float16 activation, shared per X). */
  branchInput(p: Projection, scope: string): string;
  branchOp: LoraBranchOp;
  rowMask: boolean;
  /** float16 projection with a float32 branch: the delta is cast back before the Split. */
  castBranch: boolean;
  opset: number;
}

/**
 * The shared branch of `g`, emitted at its first member: X·A (…, R), the row mask, ·B (…, Σ out), then a
 * Split into one delta per member. Returns each member's delta, by node index.
 */
export function emitSharedBranch(g: SharedGroup, cx: SharedEmitContext): Map<number, string> {
  const scope = `/lora.${g.layer}.${g.module}`;
  const x = cx.branchInput(g.members[0]!, scope);
  const xa = cx.fresh(`${scope}/xA`); // (..., R)
  const xab = cx.fresh(cx.castBranch ? `${scope}/xAB_fp32` : `${scope}/xAB`); // (..., Σ out)
  const between = cx.rowMask
    ? (v: string) => {
        const o = cx.fresh(`${scope}/xA_masked`);
        cx.push(rowMaskMul(scope, v, o));
        return o;
      }
    : undefined;
  const a = `lora.${g.layer}.${g.module}.A`; // loraInputName's form
  const b = `lora.${g.layer}.${g.module}.B`;
  branch(cx, cx.branchOp, scope, 3, x, a, b, xa, xab, between);
  let delta = xab;
  if (cx.castBranch) {
    delta = cx.fresh(`${scope}/xAB`);
    cx.push(cast(`${scope}/Cast_xAB`, xab, delta, DataType.FLOAT16));
  }
  const outs = g.members.map((p) => cx.fresh(`${scope}/${p.module}/xAB`));
  const sizes = g.parts.map((p) => p.size);
  const split = onnx.NodeProto.create({
    name: `${scope}/Split`,
    opType: 'Split',
    input: [delta],
    output: outs,
    attribute: [intAttr('axis', -1)],
  });
  if (cx.opset >= 13) {
    // Split sizes are an input from opset 13 on: a Constant node (folded into an initializer at load).
    const s = cx.fresh(`${scope}/split_sizes`);
    const i64 = BigInt64Array.from(sizes, (v) => BigInt(v));
    const t = makeTensor(s, DataType.INT64, [sizes.length], new Uint8Array(i64.buffer));
    cx.push(
      onnx.NodeProto.create({
        name: `${scope}/split_sizes`,
        opType: 'Constant',
        output: [s],
        attribute: [
          onnx.AttributeProto.create({ name: 'value', type: onnx.AttributeProto.AttributeType.TENSOR, t }),
        ],
      }),
    );
    split.input.push(s);
  } else {
    split.attribute.push(
      onnx.AttributeProto.create({
        name: 'split',
        type: onnx.AttributeProto.AttributeType.INTS,
        ints: sizes,
      }),
    );
  }
  cx.push(split);
  return new Map(g.members.map((p, i) => [p.nodeIndex, outs[i]!]));
}

/**
 * foldResidual: each branch Add (`/lora.*​/Add`, `/lora.*​/<part>/Add`) whose output is not a graph output
 * and feeds exactly one Add becomes part of that Add, now a 3-input Sum. Order stays topological: the
 * consumer comes after the branch Add, so after both of its inputs.
 */
export function foldResidualAdds(
  nodes: readonly NodeProto[],
  graphOutputs: ReadonlySet<string>,
): NodeProto[] {
  const consumers = new Map<string, number[]>();
  nodes.forEach((n, i) => {
    for (const x of n.input) consumers.set(x, [...(consumers.get(x) ?? []), i]);
  });
  const drop = new Set<number>();
  const patched = new Map<number, NodeProto>();
  nodes.forEach((n, i) => {
    if (n.opType !== 'Add' || !/^\/lora\.\d+\.[a-z_]+(\/[a-z_]+)?\/Add$/.test(n.name ?? '')) return;
    const y = n.output[0] ?? '';
    const c = consumers.get(y) ?? [];
    if (graphOutputs.has(y) || c.length !== 1) return;
    const at = c[0]!;
    const next = nodes[at]!;
    if (next.opType !== 'Add' || (next.domain ?? '') !== '' || patched.has(at) || next.input.length !== 2)
      return;
    if (next.input[0] === next.input[1]) return;
    const other = next.input[0] === y ? next.input[1]! : next.input[0]!;
    patched.set(at, onnx.NodeProto.create({ ...next, opType: 'Sum', input: [other, ...n.input] }));
    drop.add(i);
  });
  return nodes.flatMap((n, i) => (drop.has(i) ? [] : [patched.get(i) ?? n]));
}

/** packShared / foldResidual option checks (ModelFormatError naming the conflict). */
export function checkSharedOptions(opts: { packShared?: boolean; gates?: boolean; packed?: string }): void {
  if (opts.packShared && opts.gates) {
    throw new ModelFormatError(
      'packShared cannot be combined with gates: a gate needs one branch per module',
      {
        packShared: true,
        gates: true,
      },
    );
  }
}
