/**
 * Prototype graph forms for bench/branch-profile.ts (bench only, not used by src/): ways to spend fewer
 * onnxruntime-web nodes per decode step on the LoRA branch, measured before anything moves into
 * src/model/. On the wasm EP a node costs a few µs whatever its size and the branch's arithmetic is tiny
 * (rank 8), so node count is what a form changes.
 *  - packSharedInputs: q/k/v (gate/up) MatMuls that read the same X become one MatMul over the
 *    concatenated fp32 weights (named `…/attn/qkv_proj/MatMul`, `…/mlp/gate_up_proj/MatMul`) and a Split, so
 *    injectLora sees packed projections and puts ONE branch on each (block-diagonal B, as for the
 *    onnxruntime-genai builder's qkv_proj): 28 → 16 LoRA nodes per layer, and 2 fewer base MatMuls.
 *  - packedFeeds: the feeds that give a packed graph (this pass's, or injectLora's packShared targets) the
 *    same adapter as the plain one.
 */
import type { OrtTensor } from '../src/engine/session.ts';
import type { LoraTarget } from '../src/model/inject-lora.ts';
import {
  cloneGraph,
  DataType,
  float32Reader,
  graphOf,
  initializersOf,
  intAttr,
  type ModelProto,
  makeTensor,
  type NodeProto,
  nodesOf,
  onnx,
  toNum,
  withGraph,
} from '../src/model/onnx-io.ts';
import { findProjections, type ModuleName } from '../src/model/targets.ts';

/** Per packed projection (`layer/qkv_proj`), its parts' modules and widths, in column order. */
export type PackedLayout = Map<string, { module: ModuleName; out: number }[]>;

const GROUPS: { name: 'qkv_proj' | 'gate_up_proj'; scope: string; parts: ModuleName[] }[] = [
  { name: 'qkv_proj', scope: 'attn', parts: ['q_proj', 'k_proj', 'v_proj'] },
  { name: 'gate_up_proj', scope: 'mlp', parts: ['gate_proj', 'up_proj'] },
];

/** The model with q/k/v and gate/up fused per layer (fp32 MatMuls with initializer weights only). */
export function packSharedInputs(model: ModelProto): { model: ModelProto; layout: PackedLayout } {
  const g = graphOf(model);
  const opset = toNum(model.opsetImport.find((o) => !o.domain || o.domain === 'ai.onnx')?.version);
  const inits = new Map(initializersOf(g).map((t) => [t.name, t]));
  const projections = findProjections(g);
  const replace = new Map<number, NodeProto[]>(); // node index → what takes its place ([] = removed)
  const newInits = [...initializersOf(g)];
  const layout: PackedLayout = new Map();
  for (const layer of new Set(projections.map((p) => p.layer))) {
    for (const grp of GROUPS) {
      const ps = grp.parts.map((m) => projections.find((p) => p.layer === layer && p.module === m));
      if (ps.some((p) => p?.kind !== 'MatMul' || !inits.has(p.weight))) continue;
      const parts = ps as NonNullable<(typeof ps)[number]>[];
      const x = parts[0]!.node.input[0]!;
      if (parts.some((p) => p.node.input[0] !== x || p.in !== parts[0]!.in)) continue;
      const K = parts[0]!.in;
      const N = parts.reduce((s, p) => s + p.out, 0);
      const w = new Float32Array(K * N); // (K, N): each part's columns side by side
      let col = 0;
      for (const p of parts) {
        const src = float32Reader(inits.get(p.weight)!);
        for (let k = 0; k < K; k++) {
          for (let j = 0; j < p.out; j++) w[k * N + col + j] = src.getFloat32((k * p.out + j) * 4, true);
        }
        col += p.out;
      }
      const scope = `/model/layers.${layer}/${grp.scope}/${grp.name}`;
      const wName = `model.layers.${layer}.${grp.scope}.${grp.name}.weight`;
      newInits.push(makeTensor(wName, DataType.FLOAT, [K, N], w));
      const y = `${scope}/MatMul/output_0`;
      const sizes = parts.map((p) => p.out);
      const split = onnx.NodeProto.create({
        name: `${scope}/Split`,
        opType: 'Split',
        input: opset >= 13 ? [y, `${wName}.split`] : [y],
        output: parts.map((p) => p.node.output[0]!),
        attribute: opset >= 13 ? [intAttr('axis', -1)] : [intAttr('axis', -1), intsAttr('split', sizes)],
      });
      if (opset >= 13) newInits.push(int64Tensor(`${wName}.split`, sizes));
      const first = Math.min(...parts.map((p) => p.nodeIndex));
      for (const p of parts) replace.set(p.nodeIndex, []);
      replace.set(first, [
        onnx.NodeProto.create({ name: `${scope}/MatMul`, opType: 'MatMul', input: [x, wName], output: [y] }),
        split,
      ]);
      layout.set(
        `${layer}/${grp.name}`,
        parts.map((p) => ({ module: p.module as ModuleName, out: p.out })),
      );
    }
  }
  const node = nodesOf(g).flatMap((n, i) => replace.get(i) ?? [n]);
  const used = new Set(node.flatMap((n) => n.input));
  const initializer = newInits.filter((t) => used.has(t.name));
  return { model: withGraph(model, cloneGraph(g, { node, initializer })), layout };
}

function intsAttr(name: string, ints: number[]) {
  return onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INTS, ints });
}

function int64Tensor(name: string, values: number[]) {
  const data = BigInt64Array.from(values, (v) => BigInt(v));
  return makeTensor(name, DataType.INT64, [values.length], new Uint8Array(data.buffer));
}

/**
 * Feeds for the packed graph's targets holding the plain graph's adapter (`plain`: per-module A (in, r),
 * B (r, out) by `lora.L.module.A|B`): a packed target gets A = [A_q | A_k | A_v] and a block-diagonal B;
 * every target is zero-padded to the largest rank, as src/adapters/peft.ts does.
 */
export function packedFeeds(
  ort: typeof import('onnxruntime-web'),
  targets: readonly LoraTarget[],
  layout: PackedLayout,
  plain: (name: string) => { data: Float32Array; dims: readonly number[] },
  pad = true,
): Record<string, OrtTensor> {
  const partsOf = (t: LoraTarget) =>
    layout.get(`${t.layer}/${t.module}`) ??
    t.parts?.map((p) => ({ module: p.module as ModuleName, out: p.size })) ?? [
      { module: t.module as ModuleName, out: t.out },
    ];
  const rankOf = (m: string, layer: number) => plain(`lora.${layer}.${m}.A`).dims[1]!;
  const Rmax = Math.max(...targets.map((t) => partsOf(t).reduce((s, p) => s + rankOf(p.module, t.layer), 0)));
  const feeds: Record<string, OrtTensor> = {};
  for (const t of targets) {
    const own = partsOf(t).reduce((s, p) => s + rankOf(p.module, t.layer), 0);
    const R = pad ? Rmax : own; // unpadded: each target its own rank (a rank-1 mask feed only)
    const A = new Float32Array(t.in * R); // (in, R)
    const B = new Float32Array(R * t.out); // (R, out)
    let r0 = 0;
    let c0 = 0;
    for (const p of partsOf(t)) {
      const a = plain(`lora.${t.layer}.${p.module}.A`).data; // (in, r)
      const b = plain(`lora.${t.layer}.${p.module}.B`).data; // (r, p.out)
      const r = rankOf(p.module, t.layer);
      for (let i = 0; i < t.in; i++) A.set(a.subarray(i * r, (i + 1) * r), i * R + r0);
      for (let k = 0; k < r; k++) B.set(b.subarray(k * p.out, (k + 1) * p.out), (r0 + k) * t.out + c0);
      r0 += r;
      c0 += p.out;
    }
    feeds[t.inputA] = new ort.Tensor('float32', A, [t.in, R]);
    feeds[t.inputB] = new ort.Tensor('float32', B, [R, t.out]);
  }
  return feeds;
}
