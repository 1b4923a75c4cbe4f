/**
 * The greedy head, a graph pass applied at load (engine/load.ts) to every decoder session's graph. Two
 * changes at the output projection (lm_head), so a decode step computes and reads back only what it uses:
 * 1. Last rows only. Unless the file already declares it (newer Optimum exports do), a scalar int64 input
 *    `num_logits_to_keep` = k is added and the lm_head reads `Slice(h, -k, ∞, axis 1)`: logits become
 *    (B, k, V) instead of (B, T, V). The engine feeds k = 1 for generation and k = T where every
 *    position's logits are needed (scoring, routing: KvStepper's allLogits, batch-score.ts), the
 *    convention transformers.js already follows for graphs that declare the input.
 * 2. An extra output `logits_argmax` (B, k) int64 = ArgMax(logits, axis −1, keepdims 0), the default
 *    select_last_index = 0 (the first maximal index, as sampling.ts's argmax). Greedy decoding fetches it
 *    instead of `logits`, so one id per row comes back instead of a vocab-sized row; `logits` stays an
 *    output for sampling and scoring. fp16 logits are Cast to float32 first (onnxruntime's CPU ArgMax has
 *    no fp16 kernel).
 * h is found by walking back from the node that writes `logits` through a Cast or a bias Add to the
 * MatMul / MatMulNBits whose weight is a 2-D constant (possibly Transposed); any other shape of head
 * keeps every row (only the ArgMax output is added). The pass does not change any other node, copies no
 * weight, and is idempotent. It deliberately does not sample (temperature, top-k/p need the logits row),
 * and unlike sampling.ts it cannot report a row whose logits are all NaN / −Infinity (ArgMax returns an
 * index there; only the logits path throws).
 */
import {
  cloneGraph,
  constantTensors,
  DataType,
  graphOf,
  initializersOf,
  inputsOf,
  intAttr,
  isOnnxDomain,
  type ModelProto,
  MS_DOMAIN,
  makeTensor,
  type NodeProto,
  nodesOf,
  onnx,
  outputsOf,
  type TensorProto,
  tensorValueInfo,
  toNum,
  type ValueInfoProto,
  withGraph,
} from './onnx-io.ts';

/** The scalar int64 input that cuts the lm_head's input to its last k positions. */
export const NUM_LOGITS_TO_KEEP = 'num_logits_to_keep';
/** The added output: ArgMax of `logits` over the vocab, (B, k) int64. */
export const ARGMAX_OUTPUT = 'logits_argmax';

export interface GreedyHeadReport {
  /** 'added': the pass sliced h; 'present': the file already had num_logits_to_keep; 'unsupported': kept every row. */
  lastRows: 'added' | 'present' | 'unsupported';
  /** Whether `logits_argmax` is an output (false only for a graph without a `logits` output). */
  argmax: boolean;
}

const SCOPE = '/weblora/greedy_head';
const INT64_MAX = 9223372036854775807n;

function int64Tensor(name: string, values: bigint[]): TensorProto {
  const data = BigInt64Array.from(values);
  return makeTensor(name, DataType.INT64, [values.length], new Uint8Array(data.buffer));
}

/** The hidden state the lm_head reads (the input to slice) and the node reading it, or null. */
function lmHeadInput(
  nodes: readonly NodeProto[],
  consts: Map<string, TensorProto>,
): { node: NodeProto; input: string } | null {
  const producer = new Map<string, NodeProto>();
  for (const n of nodes) for (const o of n.output) producer.set(o, n);
  const is2dConst = (name: string | undefined): boolean => {
    if (!name) return false;
    const t = consts.get(name);
    if (t) return t.dims.length === 2;
    const p = producer.get(name);
    return !!p && p.opType === 'Transpose' && isOnnxDomain(p) && is2dConst(p.input[0]);
  };
  let n = producer.get('logits');
  for (let hops = 0; n && hops < 4; hops++) {
    if (n.opType === 'MatMul' && isOnnxDomain(n) && is2dConst(n.input[1]))
      return { node: n, input: n.input[0]! };
    if (n.opType === 'MatMulNBits' && n.domain === MS_DOMAIN) return { node: n, input: n.input[0]! };
    if (n.opType === 'Cast' && isOnnxDomain(n)) n = producer.get(n.input[0] ?? '');
    else if (n.opType === 'Add' && isOnnxDomain(n)) {
      // A bias over the vocab: the activation is the operand that is not a constant.
      const act = n.input.find((i) => !consts.has(i));
      n = act ? producer.get(act) : undefined;
    } else return null;
  }
  return null;
}

/** `model` with the greedy head (see the file header). The input model is not modified. */
export function withGreedyHead(model: ModelProto): { model: ModelProto; report: GreedyHeadReport } {
  const g = graphOf(model);
  const outputs = outputsOf(g);
  const logitsOut = outputs.find((o) => o.name === 'logits');
  if (!logitsOut) return { model, report: { lastRows: 'unsupported', argmax: false } };
  const hasKeep = inputsOf(g).some((i) => i.name === NUM_LOGITS_TO_KEEP);
  if (outputs.some((o) => o.name === ARGMAX_OUTPUT)) {
    return { model, report: { lastRows: hasKeep ? 'present' : 'unsupported', argmax: true } };
  }
  const nodes = [...nodesOf(g)];
  const inits: TensorProto[] = [];
  const inputs = [...inputsOf(g)];
  let lastRows: GreedyHeadReport['lastRows'] = hasKeep ? 'present' : 'unsupported';
  let newOutputs: ValueInfoProto[] = [...outputs];

  if (!hasKeep) {
    const head = lmHeadInput(nodes, constantTensors(g));
    if (head) {
      const at = nodes.indexOf(head.node);
      const neg = `${SCOPE}/neg_keep`;
      const starts = `${SCOPE}/starts`;
      const sliced = `${SCOPE}/last_rows`; // (B, k, C)
      inits.push(
        int64Tensor(`${SCOPE}/shape_1`, [1n]),
        int64Tensor(`${SCOPE}/ends`, [INT64_MAX]),
        int64Tensor(`${SCOPE}/axes`, [1n]),
      );
      const node = (opType: string, input: string[], output: string, name: string) =>
        onnx.NodeProto.create({ name: `${SCOPE}/${name}`, opType, input, output: [output] });
      const reader = onnx.NodeProto.create({
        ...head.node,
        input: head.node.input.map((x, i) => (i === 0 ? sliced : x)),
      });
      nodes.splice(
        at,
        1,
        node('Neg', [NUM_LOGITS_TO_KEEP], neg, 'Neg'),
        node('Reshape', [neg, `${SCOPE}/shape_1`], starts, 'Reshape'),
        node('Slice', [head.input, starts, `${SCOPE}/ends`, `${SCOPE}/axes`], sliced, 'Slice'),
        reader,
      );
      inputs.push(tensorValueInfo(NUM_LOGITS_TO_KEEP, DataType.INT64, []));
      // logits is now (B, k, V): its sequence dimension gets a name of its own.
      const dims = logitsOut.type?.tensorType?.shape?.dim ?? [];
      if (dims.length === 3) {
        const elem = logitsOut.type?.tensorType?.elemType ?? DataType.FLOAT;
        const d0 = dims[0]!.dimParam || toNum(dims[0]!.dimValue) || 'batch_size';
        const d2 = dims[2]!.dimParam || toNum(dims[2]!.dimValue) || 'vocab_size';
        const relabeled = tensorValueInfo('logits', elem, [d0, 'num_logits', d2]);
        newOutputs = newOutputs.map((o) => (o === logitsOut ? relabeled : o));
      }
      lastRows = 'added';
    }
  }

  let argmaxIn = 'logits';
  if (logitsOut.type?.tensorType?.elemType === DataType.FLOAT16) {
    argmaxIn = `${SCOPE}/logits_f32`;
    nodes.push(
      onnx.NodeProto.create({
        name: `${SCOPE}/Cast`,
        opType: 'Cast',
        input: ['logits'],
        output: [argmaxIn],
        attribute: [intAttr('to', DataType.FLOAT)],
      }),
    );
  }
  nodes.push(
    onnx.NodeProto.create({
      name: `${SCOPE}/ArgMax`,
      opType: 'ArgMax',
      input: [argmaxIn],
      output: [ARGMAX_OUTPUT],
      attribute: [intAttr('axis', -1), intAttr('keepdims', 0)],
    }),
  );
  newOutputs.push(tensorValueInfo(ARGMAX_OUTPUT, DataType.INT64, ['batch_size', 'num_logits']));
  const graph = cloneGraph(g, {
    node: nodes,
    input: inputs,
    output: newOutputs,
    initializer: [...initializersOf(g), ...inits],
  });
  return { model: withGraph(model, graph), report: { lastRows, argmax: true } };
}
