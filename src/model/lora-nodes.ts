/**
 * Node builders for injectLora's LoRA branches (X·A, the optional per-row mask / gate, ·B, Casts) and the
 * graph facts they need (declared tensor ranks, packed parts that tile an output).
 */
import type { GraphProto, NodeProto, ValueInfoProto } from './onnx-io.ts';
import { inputsOf, intAttr, onnx } from './onnx-io.ts';
import type { Projection } from './targets.ts';

/**
 * The per-row rank mask input (rowMask): float32 (rows | 1, 1, lora_rank | 1). Fed [[[1]]] (`rowMaskOne`,
 * what KvStepper does when it is not given) a run is exactly the run without it. Not an overridable
 * initializer: onnxruntime-web only accepts feeds named in `session.inputNames`, which lists none. Not
 * named `lora.*`: it is not part of an adapter's feeds.
 */
export const LORA_ROW_MASK = 'lora_row_mask';

/** A packed projection whose parts tile its output columns in order (each part can get its own branch). */
export function tiles(p: Projection): boolean {
  if (!p.parts || p.parts.length < 2) return false;
  let at = 0;
  for (const part of p.parts) {
    if (part.offset !== at || part.size <= 0) return false;
    at += part.size;
  }
  return at === p.out;
}

/** Where node builders append (an array, or an emitter's push). */
export interface NodeSink {
  push(n: NodeProto): unknown;
}

/** X·A → xa (..., R), xa·B → xab (..., out), as MatMul or Einsum. */
export function branch(
  nodes: NodeSink,
  op: 'matmul' | 'einsum',
  scope: string,
  rank: number,
  x: string,
  a: string,
  b: string,
  xa: string,
  xab: string,
  between?: (xa: string) => string,
): void {
  if (op === 'einsum') {
    const lead = 'abcdefgh'.slice(0, Math.max(0, rank - 1));
    nodes.push(einsum(`${scope}/Einsum_A`, `${lead}i,ir->${lead}r`, [x, a], xa));
    const xaB = between ? between(xa) : xa;
    nodes.push(einsum(`${scope}/Einsum_B`, `${lead}r,ro->${lead}o`, [xaB, b], xab));
    return;
  }
  nodes.push(
    onnx.NodeProto.create({ name: `${scope}/MatMul_A`, opType: 'MatMul', input: [x, a], output: [xa] }),
  );
  const xaB = between ? between(xa) : xa;
  nodes.push(
    onnx.NodeProto.create({ name: `${scope}/MatMul_B`, opType: 'MatMul', input: [xaB, b], output: [xab] }),
  );
}

export function rowMaskMul(scope: string, xa: string, out: string): NodeProto {
  return onnx.NodeProto.create({
    name: `${scope}/Mul_row_mask`,
    opType: 'Mul',
    input: [xa, LORA_ROW_MASK],
    output: [out],
  });
}

export function cast(name: string, input: string, output: string, to: number): NodeProto {
  return onnx.NodeProto.create({
    name,
    opType: 'Cast',
    input: [input],
    output: [output],
    attribute: [intAttr('to', to)],
  });
}

export function einsum(name: string, equation: string, input: string[], output: string): NodeProto {
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

/**
 * Tensor ranks the graph declares (inputs, outputs, value_info). An Einsum equation fixes its operands'
 * ranks (onnxruntime-web 1.30's WebGPU Einsum fails to compile '...' equations), so a declared rank wins
 * over the default guess.
 */
export function knownRanks(g: GraphProto): Map<string, number> {
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
