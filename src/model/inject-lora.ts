/**
 * Graph pass: turns each target projection Y = X·W into Y = X·W + (X·A)·B with A [in, lora_rank] and
 * B [lora_rank, out] as float32 graph inputs, so adapters are swapped by feeding tensors, never by
 * rebuilding the session. In a float16 graph (model_fp16, q4f16) the branch still runs in float32 between
 * Casts — X·A·B computed from fp16 X, rounded once to fp16 before the Add — so adapter feeds are float32
 * for every dtype and the whole adapter pipeline (store, mix, GPU cache) stays float32. Measured on the fp16
 * replicas (tests/unit/model/replicas.test.ts) with an adapter: 2.6e-2–4.5e-2 max |logit - PyTorch oracle| on
 * the wasm EP, bit-identical to an all-fp16 branch (fp16 A/B, no Casts): ORT's CPU EP runs those fp16 MatMuls
 * in float32 between its own Casts anyway. WebGPU fp16 needs shader-f16, absent here (SwiftShader), so the
 * branch dtype could not be compared for speed there. A packed projection (builder `qkv_proj`, Phi-3 `gate_up_proj`)
 * is one target whose `parts` say which output columns belong to which module (src/adapters/peft.ts maps
 * q/k/v adapters onto it block-diagonally). Rank 0 (empty A/B) reproduces the base model exactly. The graph has no
 * scale: whoever feeds B folds alpha/r into it. The base projection's output is renamed `<Y>_base` and
 * the Add takes over the name Y, so consumers and value_info need no rewiring. Returns a new ModelProto
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
  tensorValueInfo,
  toNum,
  type ValueInfoProto,
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
  /** The projection's activation dtype; the LoRA inputs are float32 either way. */
  dtype?: ActivationDtype;
  node: string;
  inputA: string;
  inputB: string;
}

export type LoraBranchOp = 'matmul' | 'einsum';

export interface InjectOptions {
  /** Module names to adapt (a packed projection is chosen by its name or any part's); default all. */
  targets?: readonly string[];
  /** Decoder layers to adapt; default all found. */
  layers?: readonly number[];
  /** Operator for X·A and (X·A)·B; default 'matmul'. See the file comment. */
  branchOp?: LoraBranchOp;
  /**
   * Adds the input LORA_ROW_MASK: X·A is multiplied by it before ·B, so a batch
   * fed concatenated adapters gives each row only its own rank columns (src/engine/batch-feeds.ts).
   * Default false. Only 3-D (batch, seq, in) activations get it; 2-D Gemm branches stay unmasked.
   */
  rowMask?: boolean;
}

/**
 * The per-row rank mask input (rowMask): float32 (rows | 1, 1, lora_rank | 1). Fed [[[1]]] (`rowMaskOne`,
 * what KvStepper does when it is not given) a run is exactly the run without it. Not an overridable
 * initializer: onnxruntime-web only accepts feeds named in `session.inputNames`, which lists none. Not
 * named `lora.*`: it is not part of an adapter's feeds.
 */
export const LORA_ROW_MASK = 'lora_row_mask';

/** The faster branch operator per onnxruntime-web execution provider (measured, see the file comment). */
export function loraBranchOpFor(backend: 'webgpu' | 'wasm'): LoraBranchOp {
  return backend === 'webgpu' ? 'einsum' : 'matmul';
}

/** Einsum exists from opset 12 on; the graph's default-domain opset must allow it. */
const EINSUM_MIN_OPSET = 12;

const LORA_INPUT_RE = /^lora\.\d+\.[a-z_]+\.[AB]$/;

export function injectLora(
  model: ModelProto,
  opts: InjectOptions = {},
): { model: ModelProto; targets: LoraTarget[] } {
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
  const ranks = branchOp === 'einsum' ? knownRanks(g) : new Map<string, number>();

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
  nodesOf(g).forEach((node, i) => {
    const p = byIndex.get(i);
    if (!p) {
      nodes.push(node);
      return;
    }
    const x = node.input[0] ?? '';
    const y = node.output[0] ?? '';
    const a = loraInputName(p.layer, p.module, 'A');
    const b = loraInputName(p.layer, p.module, 'B');
    const scope = `/lora.${p.layer}.${p.module}`;
    const yBase = fresh(`${y}_base`);
    const xa = fresh(`${scope}/xA`); // (..., R)
    const half = p.dtype === 'float16';
    const xab = fresh(half ? `${scope}/xAB_fp32` : `${scope}/xAB`); // (..., out)
    nodes.push(onnx.NodeProto.create({ ...node, output: [yBase, ...node.output.slice(1)] }));
    let xIn = x;
    if (half) {
      // fp16 graph: one Cast of X to float32 per distinct activation (q/k/v share theirs).
      let c = casts.get(x);
      if (!c) {
        c = fresh(`${scope}/x_fp32`);
        casts.set(x, c);
        nodes.push(cast(`${scope}/Cast_x`, x, c, DataType.FLOAT));
      }
      xIn = c;
    }
    let rank3 = p.kind !== 'Gemm';
    if (branchOp === 'einsum') {
      // Gemm activations are 2-D by definition; MatMul/MatMulNBits ones are (batch, seq, in) in decoder
      // exports unless the graph says otherwise.
      const rank = ranks.get(x) ?? (p.kind === 'Gemm' ? 2 : 3);
      rank3 = rank === 3;
      const lead = 'abcdefgh'.slice(0, Math.max(0, rank - 1));
      const masked = opts.rowMask && rank3 ? fresh(`${scope}/xA_masked`) : xa;
      nodes.push(einsum(`${scope}/Einsum_A`, `${lead}i,ir->${lead}r`, [xIn, a], xa));
      if (masked !== xa) nodes.push(rowMaskMul(scope, xa, masked));
      nodes.push(einsum(`${scope}/Einsum_B`, `${lead}r,ro->${lead}o`, [masked, b], xab));
    } else {
      const masked = opts.rowMask && rank3 ? fresh(`${scope}/xA_masked`) : xa;
      nodes.push(
        onnx.NodeProto.create({ name: `${scope}/MatMul_A`, opType: 'MatMul', input: [xIn, a], output: [xa] }),
      );
      if (masked !== xa) nodes.push(rowMaskMul(scope, xa, masked));
      nodes.push(
        onnx.NodeProto.create({
          name: `${scope}/MatMul_B`,
          opType: 'MatMul',
          input: [masked, b],
          output: [xab],
        }),
      );
    }
    let delta = xab;
    if (half) {
      delta = fresh(`${scope}/xAB`);
      nodes.push(cast(`${scope}/Cast_xAB`, xab, delta, DataType.FLOAT16));
    }
    nodes.push(
      onnx.NodeProto.create({ name: `${scope}/Add`, opType: 'Add', input: [yBase, delta], output: [y] }),
    );
  });

  const targets: LoraTarget[] = chosen.map((p) => ({
    layer: p.layer,
    module: p.module,
    in: p.in,
    out: p.out,
    ...(p.parts ? { parts: p.parts } : {}),
    dtype: p.dtype,
    node: p.label,
    inputA: loraInputName(p.layer, p.module, 'A'),
    inputB: loraInputName(p.layer, p.module, 'B'),
  }));
  for (const t of targets) {
    inputs.push(tensorValueInfo(t.inputA, DataType.FLOAT, [t.in, LORA_RANK_DIM])); // (in, R)
    inputs.push(tensorValueInfo(t.inputB, DataType.FLOAT, [LORA_RANK_DIM, t.out])); // (R, out)
  }
  if (opts.rowMask && nodes.some((n) => n.input.includes(LORA_ROW_MASK))) {
    inputs.push(tensorValueInfo(LORA_ROW_MASK, DataType.FLOAT, ['lora_rows', 1, 'lora_mask_rank']));
  }
  return { model: withGraph(model, cloneGraph(g, { node: nodes, input: inputs })), targets };
}

function rowMaskMul(scope: string, xa: string, out: string): NodeProto {
  return onnx.NodeProto.create({
    name: `${scope}/Mul_row_mask`,
    opType: 'Mul',
    input: [xa, LORA_ROW_MASK],
    output: [out],
  });
}

function cast(name: string, input: string, output: string, to: number): NodeProto {
  return onnx.NodeProto.create({
    name,
    opType: 'Cast',
    input: [input],
    output: [output],
    attribute: [intAttr('to', to)],
  });
}

function einsum(name: string, equation: string, input: string[], output: string): NodeProto {
  return onnx.NodeProto.create({
    name,
    opType: 'Einsum',
    input,
    output: [output],
    attribute: [
      onnx.AttributeProto.create({
        name: 'equation',
        type: onnx.AttributeProto.AttributeType.STRING,
        s: new TextEncoder().encode(equation),
      }),
    ],
  });
}

function defaultOpset(m: ModelProto): number {
  const entry = m.opsetImport.find((o) => !o.domain || o.domain === 'ai.onnx');
  return entry ? toNum(entry.version) : 0;
}

/**
 * Tensor ranks the graph declares (inputs, outputs, value_info). An Einsum equation fixes its operands'
 * ranks (onnxruntime-web 1.30's WebGPU Einsum fails to compile '...' equations), so a declared rank wins
 * over the default guess.
 */
function knownRanks(g: GraphProto): Map<string, number> {
  const out = new Map<string, number>();
  for (const v of [
    ...inputsOf(g),
    ...((g.valueInfo ?? []) as ValueInfoProto[]),
    ...((g.output ?? []) as ValueInfoProto[]),
  ]) {
    const dims = v.type?.tensorType?.shape?.dim;
    if (v.name && dims) out.set(v.name, dims.length);
  }
  return out;
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
