/**
 * Graph pass: turns each target projection Y = X·W into Y = X·W + (X·A)·B with A [in, lora_rank] and
 * B [lora_rank, out] as float32 graph inputs, so adapters are swapped by feeding tensors, never by
 * rebuilding the session. In a float16 graph (model_fp16, q4f16) the branch still runs in float32 between
 * Casts — X·A·B computed from fp16 X, rounded once to fp16 before the Add — so adapter feeds are float32
 * for every dtype and the whole adapter pipeline (store, mix, GPU cache) stays float32. That is a measured
 * choice against the all-fp16 branch (`branchDtype: 'float16'`: fp16 A/B, no Casts; see
 * LORA_BRANCH_DTYPE_DEFAULT). A packed projection (builder `qkv_proj`, Phi-3 `gate_up_proj`) gets
 * by default one target per part, each with its own narrow branch, concatenated before the Add; with
 * `packed: 'block-diagonal'` it is one target whose `parts` say which output columns belong to which module
 * (src/adapters/peft.ts maps q/k/v adapters onto it block-diagonally). See PACKED_LORA_DEFAULT. Rank 0 (empty A/B) reproduces
 * the base model exactly. The graph has no scale: whoever feeds B folds alpha/r into it. The base
 * projection's output is renamed `<Y>_base` and the Add takes over the name Y, so consumers and value_info
 * need no rewiring. Returns a new ModelProto
 * sharing all tensors with the input (no weight copies); the input model is not modified. LoRA on the
 * embedding or lm_head, dropout and merged (If) graphs are out of scope. Idea: Hu et al. 2021, arXiv:2106.09685.
 *
 * The two small products can be written as MatMul (default) or as Einsum (`branchOp: 'einsum'`). Same
 * maths, different kernels: onnxruntime-web's WebGPU MatMul is a tiled shader with workgroup barriers,
 * one workgroup per 32 output columns, which for these skinny shapes (K = in, N = rank) costs far more
 * than the work; its Einsum is one thread per output element with a plain loop. On SwiftShader the
 * rank-8 branch on all 42 projections of the default model cost +29% per decode step as MatMul and +6% as
 * Einsum; on the wasm EP MatMul (MLAS) is the faster one (npm run bench has the figures). The engine
 * picks per backend (`loraBranchOpFor`).
 */
import { AmbiguousTargetError, ModelFormatError, NoTargetsError, UnknownTargetError } from '../errors.ts';
import { GateEmitter, type GateSite, gateSources } from './inject-gates.ts';
import { checkSharedOptions, emitSharedBranch, foldResidualAdds, sharedGroups } from './inject-shared.ts';
import { branch, cast, knownRanks, LORA_ROW_MASK, rowMaskMul, tiles } from './lora-nodes.ts';
import {
  cloneGraph,
  DataType,
  type GraphProto,
  graphOf,
  inputsOf,
  intAttr,
  type ModelProto,
  type NodeProto,
  nodesOf,
  onnx,
  outputsOf,
  tensorValueInfo,
  toNum,
  withGraph,
} from './onnx-io.ts';
import {
  type ActivationDtype,
  constantWeightMatmuls,
  findProjections,
  GRAPH_MODULE_ORDER,
  type GraphModuleName,
  MODULE_ORDER,
  type PackedPart,
  type Projection,
} from './targets.ts';

export const LORA_MODULES = MODULE_ORDER;
export type LoraModule = (typeof LORA_MODULES)[number];
/** A target's module: one of LORA_MODULES or a packed projection (`qkv_proj`, `gate_up_proj`). */
export type LoraTargetModule = GraphModuleName;
export const LORA_RANK_DIM = 'lora_rank';

/** Graph input name of a LoRA factor, e.g. `lora.0.q_proj.A`. */
export function loraInputName(layer: number, module: string, which: 'A' | 'B'): string {
  return `lora.${layer}.${module}.${which}`;
}

export interface LoraTarget {
  layer: number;
  module: LoraTargetModule;
  in: number;
  out: number;
  /** Packed projections: each module's output columns (absent for plain ones, or when unknown). */
  parts?: PackedPart[];
  /** The projection's activation dtype. */
  dtype?: ActivationDtype;
  /** The A/B inputs' dtype: float32 unless `branchDtype: 'float16'` put them on a float16 projection. */
  inputDtype?: ActivationDtype;
  /** `packed: 'per-part'`: the packed projection this part's branch writes into (e.g. `qkv_proj`). */
  packedIn?: LoraTargetModule;
  node: string;
  inputA: string;
  inputB: string;
}

export type LoraBranchOp = 'matmul' | 'einsum';
/** The LoRA inputs' and branch's dtype on a float16 projection (float32 projections are always float32). */
export type LoraBranchDtype = 'float32' | 'float16';
/** How a q/k/v (gate/up) adapter sits on a packed projection: one wide branch, or one branch per part. */
export type PackedLoraMode = 'block-diagonal' | 'per-part';

export interface InjectOptions {
  /** Module names to adapt (a packed projection is chosen by its name or any part's); default all. */
  targets?: readonly string[];
  /** Decoder layers to adapt; default all found. */
  layers?: readonly number[];
  /** Operator for X·A and (X·A)·B; default 'matmul'. See the file comment. */
  branchOp?: LoraBranchOp;
  /**
   * float16 projections only: 'float32' (default) runs the branch in float32 between Casts with float32
   * A/B inputs; 'float16' declares A/B float16 and runs the branch in float16 without Casts (the feeds
   * must then be float16). The default is measured: see LORA_BRANCH_DTYPE_DEFAULT.
   */
  branchDtype?: LoraBranchDtype;
  /**
   * Packed projections (builder `qkv_proj`, Phi-3 `gate_up_proj`) with known parts: 'per-part' (default)
   * is one narrow branch per part (inputs `lora.L.q_proj.A` …, targets named by the part), the outputs
   * concatenated before the Add; 'block-diagonal' is one branch X·A·B with A = [A_q|A_k|A_v] and a
   * block-diagonal B. The default is measured: see PACKED_LORA_DEFAULT.
   */
  packed?: PackedLoraMode;
  /**
   * Per-token routing gates over the experts of a concatenated mix (inject-gates.ts): one softmax gate
   * per adapted layer between X·A and ·B. Default false: the ordinary graph, which pays nothing for it.
   */
  gates?: boolean;
  /**
   * Adds the input LORA_ROW_MASK: X·A is multiplied by it before ·B, so a batch
   * fed concatenated adapters gives each row only its own rank columns (src/engine/batch-feeds.ts).
   * Default false. Only 3-D (batch, seq, in) activations get it; 2-D Gemm branches stay unmasked.
   */
  rowMask?: boolean;
  /**
   * One branch per group of separate projections that read the same X (q/k/v, gate/up: all parts chosen),
   * as a packed `qkv_proj` / `gate_up_proj` target (A concatenated, B block-diagonal): fewer nodes per
   * step, other feeds (inject-shared.ts). Default false.
   */
  packShared?: boolean;
  /** A branch Add feeding only the residual Add merges into it as one Sum (inject-shared.ts). Default false. */
  foldResidual?: boolean;
}

/**
 * Measured defaults (bench/README.md "Branch variants": `npm run bench -- --suite variants`, 2026-11-29,
 * on the layout replicas; errors from tests/unit/model/replicas.test.ts).
 *
 * float32 branch: on the wasm EP the float16 branch ran at 0.87–0.96× its speed (fastest repetition per
 * 16-step block, 4 fp16/q4f16 replicas; ORT's CPU EP has no fp16 MatMul and casts internally), and its
 * max |logit − PyTorch oracle| with an adapter was larger: 3.3e-2–5.7e-2 against 2.6e-2–4.5e-2. WebGPU
 * could not be compared: SwiftShader has no shader-f16.
 */
export const LORA_BRANCH_DTYPE_DEFAULT: LoraBranchDtype = 'float32';
/**
 * per-part: same logits as block-diagonal (max difference 0 on every builder replica), and the adapter's
 * feeds hold exactly its factors. The graph shares one rank R across all LoRA inputs (the batch row mask's
 * `lora_mask_rank`), so block-diagonal's rank-3r qkv branch pads EVERY target to 3r: on the 135M builder
 * replica (wasm, q4, rank 8) 25.4 MiB held per adapter against 9.5 MiB, cold swap from packed feeds
 * 17–22 ms against 10–13, decode (c)/(a) 0.80–0.81 against 0.85–0.88, engine rank-8/none 0.88–0.90
 * against 0.95–0.96 (bench/README.md "Packed qkv: per-part by default"). The earlier tiny-replica result
 * (per-part 0.90–0.92× on wasm) had only 2 layers of padding to pay for.
 */
export const PACKED_LORA_DEFAULT: PackedLoraMode = 'per-part';

export { LORA_ROW_MASK };

/** The faster branch operator per onnxruntime-web execution provider (measured, see the file comment). */
export function loraBranchOpFor(backend: 'webgpu' | 'wasm'): LoraBranchOp {
  return backend === 'webgpu' ? 'einsum' : 'matmul';
}

/**
 * The options the engine injects with on each execution provider (load.ts; the bench's (b)-(d) rows use
 * them too, so they time the engine's graph): the faster operator and the batch row mask. foldResidual and
 * packShared stay off: neither gave a measurable gain in the browser bench (bench/README.md "LoRA branch
 * cost on wasm"). Add `gates` as needed.
 */
export function loraInjectOptionsFor(backend: 'webgpu' | 'wasm'): InjectOptions {
  return { branchOp: loraBranchOpFor(backend), rowMask: true };
}

/** Einsum exists from opset 12 on; the graph's default-domain opset must allow it. */
const EINSUM_MIN_OPSET = 12;

const LORA_INPUT_RE = /^lora\.\d+\.[a-z_]+\.[AB]$/;

export function injectLora(
  model: ModelProto,
  opts: InjectOptions = {},
): { model: ModelProto; targets: LoraTarget[]; gates?: GateSite[] } {
  const g = graphOf(model);
  const already = inputsOf(g)
    .map((i) => i.name)
    .filter((n) => LORA_INPUT_RE.test(n));
  if (already.length > 0) {
    throw new ModelFormatError(
      `model already has LoRA inputs (${already.slice(0, 3).join(', ')}${already.length > 3 ? ', ...' : ''}); ` +
        'inject into the base model once and swap adapters by feeding different A/B tensors',
      { existing: already },
    );
  }
  const chosen = selectTargets(g, opts);
  const branchOp = opts.branchOp ?? 'matmul';
  if (branchOp !== 'matmul' && branchOp !== 'einsum') {
    throw new ModelFormatError(`unknown LoRA branchOp '${String(branchOp)}'; expected 'matmul' or 'einsum'`, {
      branchOp,
    });
  }
  if (branchOp === 'einsum') {
    const opset = defaultOpset(model);
    if (opset < EINSUM_MIN_OPSET) {
      throw new ModelFormatError(
        `branchOp 'einsum' needs ONNX opset >= ${EINSUM_MIN_OPSET}, but this model imports opset ${opset}; use 'matmul'`,
        { opset },
      );
    }
  }
  const branchDtype = opts.branchDtype ?? LORA_BRANCH_DTYPE_DEFAULT;
  const packedMode = opts.packed ?? PACKED_LORA_DEFAULT;
  if (branchDtype !== 'float32' && branchDtype !== 'float16') {
    throw new ModelFormatError(
      `unknown LoRA branchDtype '${String(branchDtype)}'; expected 'float32' or 'float16'`,
      {
        branchDtype,
      },
    );
  }
  if (packedMode !== 'block-diagonal' && packedMode !== 'per-part') {
    throw new ModelFormatError(
      `unknown packed LoRA mode '${String(packedMode)}'; expected 'block-diagonal' or 'per-part'`,
      { packed: packedMode },
    );
  }
  const ranks = knownRanks(g);
  checkSharedOptions(opts);
  const activationRank = (p: Projection) => ranks.get(p.node.input[0] ?? '') ?? (p.kind === 'Gemm' ? 2 : 3);
  const groups = sharedGroups(opts.packShared ? chosen : [], activationRank);
  const deltas = new Map<number, string>(); // grouped node index -> its part of the shared delta

  const names = new Set<string>();
  for (const n of nodesOf(g)) for (const o of n.output) names.add(o);
  const fresh = (base: string): string => {
    let s = base;
    for (let i = 1; names.has(s); i++) s = `${base}_${i}`;
    names.add(s);
    return s;
  };

  const byIndex = new Map<number, Projection>(chosen.map((p) => [p.nodeIndex, p]));
  const casts = new Map<string, string>(); // fp16 activation -> its float32 Cast
  const nodes: NodeProto[] = [];
  const inputs = [...inputsOf(g)];
  const made = new Map<number, LoraTarget[]>(); // node index -> its target(s)
  const float32 = (p: Projection, scope: string): string => {
    // fp16 graph: one Cast of X to float32 per distinct activation (q/k/v share theirs).
    const x = p.node.input[0] ?? '';
    if (p.dtype !== 'float16') return x;
    let c = casts.get(x);
    if (!c) {
      c = fresh(`${scope}/x_fp32`);
      casts.set(x, c);
      nodes.push(cast(`${scope}/Cast_x`, x, c, DataType.FLOAT));
    }
    return c;
  };
  if ((opts.gates || opts.rowMask) && branchDtype === 'float16') {
    throw new ModelFormatError("gates and rowMask need the float32 LoRA branch; got branchDtype 'float16'", {
      branchDtype,
    });
  }
  const gates = opts.gates
    ? new GateEmitter(gateSources(findProjections(g), [...new Set(chosen.map((p) => p.layer))]), {
        push: (n) => nodes.push(n),
        fresh,
        float32,
        einsum: branchOp === 'einsum',
        rankOf: (name, p) => ranks.get(name) ?? (p.kind === 'Gemm' ? 2 : 3),
      })
    : null;
  nodesOf(g).forEach((node, i) => {
    const p = byIndex.get(i);
    if (!p) {
      nodes.push(node);
      return;
    }
    const x = node.input[0] ?? '';
    const y = node.output[0] ?? '';
    const half = p.dtype === 'float16';
    const castBranch = half && branchDtype === 'float32'; // fp32 branch between Casts
    const inputDtype: ActivationDtype = half && branchDtype === 'float16' ? 'float16' : 'float32';
    const scope = `/lora.${p.layer}.${p.module}`;
    const yBase = fresh(`${y}_base`);
    nodes.push(onnx.NodeProto.create({ ...node, output: [yBase, ...node.output.slice(1)] }));
    const grp = groups.get(i);
    if (grp) {
      // packShared: the group's one branch at its first member, then each member's own Add.
      if (i === grp.first) {
        const cx = { push: (n: NodeProto) => nodes.push(n), fresh, branchOp, castBranch };
        const branchInput = (q: Projection, s: string) =>
          castBranch ? float32(q, s) : (q.node.input[0] ?? '');
        const opset = defaultOpset(model);
        for (const [k, d] of emitSharedBranch(grp, { ...cx, branchInput, rowMask: !!opts.rowMask, opset }))
          deltas.set(k, d);
        const [a, b] = (['A', 'B'] as const).map((w) => loraInputName(grp.layer, grp.module, w));
        const out = grp.parts.reduce((n, q) => n + q.size, 0);
        const t = { layer: grp.layer, module: grp.module, in: p.in, out, parts: grp.parts, dtype: p.dtype };
        made.set(i, [{ ...t, inputDtype, node: p.label, inputA: a!, inputB: b! }]);
      }
      const add = `/lora.${grp.layer}.${grp.module}/${p.module}/Add`;
      nodes.push(
        onnx.NodeProto.create({ name: add, opType: 'Add', input: [yBase, deltas.get(i)!], output: [y] }),
      );
      return;
    }
    const xIn = castBranch ? float32(p, scope) : x;
    // Gemm activations are 2-D by definition; MatMul/MatMulNBits ones are (batch, seq, in) in decoder
    // exports unless the graph says otherwise.
    const rank = ranks.get(x) ?? (p.kind === 'Gemm' ? 2 : 3);
    const branches = packedMode === 'per-part' && tiles(p) ? p.parts! : [null];
    const outs: string[] = [];
    const targets: LoraTarget[] = [];
    made.set(i, targets);
    for (const part of branches) {
      const module = part ? part.module : p.module;
      const s = part ? `${scope}/${part.module}` : scope;
      const a = loraInputName(p.layer, module, 'A');
      const b = loraInputName(p.layer, module, 'B');
      const xa = fresh(`${s}/xA`); // (..., R)
      const xab = fresh(castBranch ? `${s}/xAB_fp32` : `${s}/xAB`); // (..., out)
      // gated: xA ⊙ S_l feeds ·B
      // Between X·A and ·B: the batch's per-row rank mask (rowMask, 3-D activations only), then the
      // gate (gated: xA ⊙ S_l feeds ·B).
      const masked = !!opts.rowMask && rank === 3;
      const between =
        masked || gates
          ? (v: string) => {
              let cur = v;
              if (masked) {
                const o = fresh(`${s}/xA_masked`);
                nodes.push(rowMaskMul(s, cur, o));
                cur = o;
              }
              if (gates) {
                const o = fresh(`${s}/xA_in`);
                gates.apply(p.layer, cur, s, o);
                cur = o;
              }
              return cur;
            }
          : undefined;
      branch(nodes, branchOp, s, rank, xIn, a, b, xa, xab, between);
      outs.push(xab);
      targets.push({
        layer: p.layer,
        module,
        in: p.in,
        out: part ? part.size : p.out,
        ...(p.parts && !part ? { parts: p.parts } : {}),
        ...(part ? { packedIn: p.module } : {}),
        dtype: p.dtype,
        inputDtype,
        node: p.label,
        inputA: a,
        inputB: b,
      });
    }
    let delta = outs[0]!;
    if (outs.length > 1) {
      delta = fresh(castBranch ? `${scope}/xAB_fp32` : `${scope}/xAB`);
      nodes.push(
        onnx.NodeProto.create({
          name: `${scope}/Concat`,
          opType: 'Concat',
          input: outs,
          output: [delta],
          attribute: [intAttr('axis', rank - 1)],
        }),
      );
    }
    if (castBranch) {
      const d16 = fresh(`${scope}/xAB`);
      nodes.push(cast(`${scope}/Cast_xAB`, delta, d16, DataType.FLOAT16));
      delta = d16;
    }
    nodes.push(
      onnx.NodeProto.create({ name: `${scope}/Add`, opType: 'Add', input: [yBase, delta], output: [y] }),
    );
  });

  // In the selection's order (layer, then module order), not the graph's node order.
  const targets = chosen.flatMap((p) => made.get(p.nodeIndex) ?? []);
  for (const t of targets) {
    const dt = t.inputDtype === 'float16' ? DataType.FLOAT16 : DataType.FLOAT;
    inputs.push(tensorValueInfo(t.inputA, dt, [t.in, LORA_RANK_DIM])); // (in, R)
    inputs.push(tensorValueInfo(t.inputB, dt, [LORA_RANK_DIM, t.out])); // (R, out)
  }
  if (gates) inputs.push(...gates.inputs(LORA_RANK_DIM));
  if (opts.rowMask && nodes.some((n) => n.input.includes(LORA_ROW_MASK))) {
    inputs.push(tensorValueInfo(LORA_ROW_MASK, DataType.FLOAT, ['lora_rows', 1, 'lora_mask_rank']));
  }
  const node = opts.foldResidual ? foldResidualAdds(nodes, new Set(outputsOf(g).map((o) => o.name))) : nodes;
  const out = withGraph(model, cloneGraph(g, { node, input: inputs }));
  return gates ? { model: out, targets, gates: gates.sites } : { model: out, targets };
}

function defaultOpset(m: ModelProto): number {
  const entry = m.opsetImport.find((o) => !o.domain || o.domain === 'ai.onnx');
  return entry ? toNum(entry.version) : 0;
}

/** Found projections filtered by opts, validated, sorted by (layer, module order). */
function selectTargets(g: GraphProto, opts: InjectOptions): Projection[] {
  const all = findProjections(g);
  if (all.length === 0) {
    const mm = constantWeightMatmuls(g).map((c) => c.node.name || c.node.output[0] || '?');
    throw new NoTargetsError(
      'no LoRA-able projections found: expected MatMul/Gemm/MatMulNBits nodes named like ' +
        "'/model/layers.N/self_attn/q_proj/MatMul' or with weights named like 'model.layers.N.self_attn.q_proj.weight' " +
        `(modules ${GRAPH_MODULE_ORDER.join(', ')}); found ${mm.length} MatMul/Gemm with constant weights` +
        (mm.length ? `: ${mm.slice(0, 5).join(', ')}${mm.length > 5 ? ', ...' : ''}` : ''),
      { constantMatmuls: mm },
    );
  }
  const seen = new Map<string, Projection>();
  for (const p of all) {
    const key = `${p.layer}/${p.module}`;
    const prev = seen.get(key);
    if (prev) {
      throw new AmbiguousTargetError(
        `two nodes match layer ${p.layer} ${p.module}: '${prev.label}' and '${p.label}'; expected exactly one ` +
          'projection per (layer, module)',
        { layer: p.layer, module: p.module, nodes: [prev.label, p.label] },
      );
    }
    seen.set(key, p);
  }
  const modulesFound = GRAPH_MODULE_ORDER.filter((m) => all.some((p) => p.module === m));
  const layersFound = [...new Set(all.map((p) => p.layer))].sort((a, b) => a - b);
  const names = (p: Projection): string[] => [p.module, ...(p.parts ?? []).map((x) => x.module)];
  const selectable = new Set(all.flatMap(names));

  const wantModules = opts.targets ?? modulesFound;
  const badModules = wantModules.filter((m) => !selectable.has(m));
  if (badModules.length > 0) {
    throw new UnknownTargetError(
      `unknown LoRA target module(s) ${badModules.join(', ')}; this graph has ${[...selectable].join(', ')}`,
      { unknown: badModules, available: [...selectable] },
    );
  }
  const wantLayers = opts.layers ?? layersFound;
  const badLayers = wantLayers.filter((l) => !layersFound.includes(l));
  if (badLayers.length > 0) {
    throw new UnknownTargetError(
      `unknown layer(s) ${badLayers.join(', ')}; this graph has layers ${layersFound.join(', ')}`,
      { unknown: badLayers, available: layersFound },
    );
  }
  const chosen = all
    .filter((p) => names(p).some((m) => wantModules.includes(m)) && wantLayers.includes(p.layer))
    .sort(
      (a, b) =>
        a.layer - b.layer || GRAPH_MODULE_ORDER.indexOf(a.module) - GRAPH_MODULE_ORDER.indexOf(b.module),
    );
  if (chosen.length === 0) {
    throw new NoTargetsError(
      `no projection matches modules [${wantModules.join(', ')}] in layers [${wantLayers.join(', ')}]`,
      { modules: [...wantModules], layers: [...wantLayers] },
    );
  }
  return chosen;
}
