/**
 * Test helpers for the graph-pass tests: build tiny ONNX models with onnx-proto (round-tripped through
 * encode/decode so they look exactly like loaded files), run them on onnxruntime-web's Node/wasm build,
 * and load the default model package. Deliberately no graph-pass logic here: only construction and running.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-web';
import { decodeModel, encodeModel, type ModelProto, onnx } from '../../../src/model/onnx-io.ts';

ort.env.wasm.numThreads = 1;

export const DEFAULT_MODEL = fileURLToPath(
  new URL('../../../public/models/weblora-shakespeare/onnx/model.onnx', import.meta.url),
);
export const F32 = 1;

export function loadDefaultBytes(): Uint8Array {
  return new Uint8Array(readFileSync(DEFAULT_MODEL));
}

export interface TinyNode {
  op: string;
  inputs: string[];
  outputs: string[];
  name?: string;
  domain?: string;
  attrs?: Record<string, number>;
}

export interface TinyGraph {
  nodes: TinyNode[];
  inputs: { name: string; dims: (number | string)[] }[]; // float32 graph inputs
  outputs: { name: string; dims: (number | string)[] }[];
  inits?: { name: string; dims: number[]; data: Float32Array }[];
  raw?: object[]; // extra initializers given as plain TensorProto objects
}

const vi = (name: string, dims: (number | string)[]) => ({
  name,
  type: {
    tensorType: {
      elemType: F32,
      shape: { dim: dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) },
    },
  },
});

/** A float32 model from a compact description, encoded and decoded again. */
export function tinyModel(t: TinyGraph): ModelProto {
  const m = onnx.ModelProto.fromObject({
    irVersion: 8,
    producerName: 'weblora-test',
    opsetImport: [{ domain: '', version: 17 }],
    graph: {
      name: 'tiny',
      node: t.nodes.map((n, i) => ({
        name: n.name ?? `${n.op}_${i}`,
        opType: n.op,
        domain: n.domain ?? '',
        input: n.inputs,
        output: n.outputs,
        attribute: Object.entries(n.attrs ?? {}).map(([name, i]) => ({ name, type: 2, i })),
      })),
      input: t.inputs.map((x) => vi(x.name, x.dims)),
      output: t.outputs.map((x) => vi(x.name, x.dims)),
      initializer: [
        ...(t.inits ?? []).map((x) => ({
          name: x.name,
          dataType: F32,
          dims: x.dims,
          rawData: new Uint8Array(x.data.buffer, x.data.byteOffset, x.data.byteLength),
        })),
        ...(t.raw ?? []),
      ],
    },
  });
  return decodeModel(encodeModel(m));
}

/** Deterministic pseudo-random floats in [-scale, scale). */
export function randn(n: number, seed: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 2 ** 32 - 0.5) * 2 * scale;
  }
  return out;
}

export type Feeds = Record<string, ort.Tensor>;

export function f32(data: Float32Array, dims: number[]): ort.Tensor {
  return new ort.Tensor('float32', data, dims);
}

/** Run a model on onnxruntime-web (Node → wasm) and return every output's data. */
export async function runModel(
  model: ModelProto | Uint8Array,
  feeds: Feeds,
): Promise<Record<string, Float32Array>> {
  const bytes = model instanceof Uint8Array ? model : encodeModel(model);
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
  try {
    const res = await session.run(feeds);
    const out: Record<string, Float32Array> = {};
    for (const [k, v] of Object.entries(res)) out[k] = v.data as Float32Array;
    return out;
  } finally {
    await session.release();
  }
}

/** Feeds for one prefill of the default model: T tokens, empty KV cache (6 layers, 4 KV heads, head_dim 32). */
export function defaultModelFeeds(tokens: number[]): Feeds {
  const T = tokens.length;
  const feeds: Feeds = {
    input_ids: new ort.Tensor('int64', BigInt64Array.from(tokens.map(BigInt)), [1, T]),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(T).fill(1n), [1, T]),
    position_ids: new ort.Tensor('int64', BigInt64Array.from(tokens.map((_, i) => BigInt(i))), [1, T]),
  };
  for (let i = 0; i < 6; i++) {
    feeds[`past_key_values.${i}.key`] = f32(new Float32Array(0), [1, 4, 0, 32]);
    feeds[`past_key_values.${i}.value`] = f32(new Float32Array(0), [1, 4, 0, 32]);
  }
  return feeds;
}

/** Plain row-major matmul: (M, K) x (K, N) -> (M, N), in float64 then rounded. */
export function matmulRef(a: Float32Array, b: Float32Array, M: number, K: number, N: number): Float32Array {
  const out = new Float32Array(M * N);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += a[m * K + k]! * b[k * N + n]!;
      out[m * N + n] = s;
    }
  return out;
}
