/**
 * Graph pass for a cheaper onnxruntime session create: declares the LoRA row-mask input (or, in a graph
 * without one, every LoRA A input) with its element type but no shape. Why: onnxruntime's allocation
 * planner (allocation_planner.cc, FindReusableTensor) looks for a dead buffer to reuse for every node
 * output whose static shape it knows by walking its whole free list and comparing shapes and element
 * sizes. On the LoRA-injected 135M replica graph (3072 nodes after optimization) that walk took ~1.1 s
 * of a ~2.2 s create in Node (logSeverityLevel 0 timestamps between "Use DeviceBasedPartition" and
 * "Saving initialized tensors"), against ~0.4 s for the file's own graph. Without a shape on the mask,
 * X·A ⊙ mask, ·B, the Add and what follows have no static shape, so the planner skips the walk for them
 * and those values are allocated at run time instead of sharing a planned buffer
 * (bench/session-create.ts and bench/README.md "Session creation" have the figures, decode and prefill
 * included). Values, types and the graph's nodes are unchanged; onnxruntime just no longer checks those
 * feeds' dims against the graph (the engine builds them itself: batch-feeds.ts, the adapter provider),
 * and `session.inputMetadata` shows no shape for them. Returns a new ModelProto sharing everything else.
 */
import { LORA_ROW_MASK, type LoraTarget } from './inject-lora.ts';
import { cloneGraph, graphOf, inputsOf, type ModelProto, onnx, withGraph } from './onnx-io.ts';

/** The inputs `withoutPlannerShapes` undeclares: the row mask if the graph has one, else every A. */
export function plannerShapeInputs(model: ModelProto, targets: readonly LoraTarget[]): string[] {
  const names = new Set(inputsOf(graphOf(model)).map((i) => i.name));
  return names.has(LORA_ROW_MASK)
    ? [LORA_ROW_MASK]
    : targets.map((t) => t.inputA).filter((n) => names.has(n));
}

/** `model` with the named graph inputs declared by element type only (no shape). */
export function withoutInputShapes(model: ModelProto, names: readonly string[]): ModelProto {
  const drop = new Set(names);
  if (drop.size === 0) return model;
  const g = graphOf(model);
  const input = inputsOf(g).map((v) => {
    if (!drop.has(v.name ?? '')) return v;
    const elemType = v.type?.tensorType?.elemType;
    return onnx.ValueInfoProto.create({ name: v.name, type: { tensorType: { elemType } } });
  });
  return withGraph(model, cloneGraph(g, { input }));
}

/** The injected graph as the engine hands it to onnxruntime (plannerShapeInputs undeclared). */
export function withoutPlannerShapes(model: ModelProto, targets: readonly LoraTarget[]): ModelProto {
  return withoutInputShapes(model, plannerShapeInputs(model, targets));
}
