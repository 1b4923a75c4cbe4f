/**
 * The layout replicas of tests/fixtures/replicas (scripts/py/replicas.py) as one table, shared by the
 * Node (wasm) and browser (WebGPU) tests: which file, which external data, which oracle and tolerance, and
 * the helpers that run one through the product path (injectLora → createDecoderSession → KvStepper).
 * Files are read through a `read(path)` callback (fs in Node, fetch in the browser), so nothing here
 * touches Node APIs. It decides nothing about which backend runs what; the tests do.
 */
import type * as OrtModule from 'onnxruntime-web';
import { type PeftFeeds, parsePeftConfig, peftToFeeds } from '../../src/adapters/peft.ts';
import {
  parseSafetensors,
  readFloat32,
  readInt32,
  type Safetensors,
} from '../../src/adapters/safetensors.ts';
import { noAdapterFeeds } from '../../src/engine/load.ts';
import { createDecoderSession, type DecoderGraph, KvStepper } from '../../src/engine/session.ts';
import type { Backend } from '../../src/engine/types.ts';
import { toHalfBits } from '../../src/model/half.ts';
import type { GateSite } from '../../src/model/inject-gates.ts';
import {
  type InjectOptions,
  injectLora,
  type LoraBranchOp,
  type LoraTarget,
} from '../../src/model/inject-lora.ts';
import { decodeModel, encodeModel } from '../../src/model/onnx-io.ts';
import { type ModelConfig, parseModelConfig } from '../../src/model/package.ts';
import { FP16_LOGITS, FP32_LOGITS, type Tolerance } from './expect-close.ts';

type Ort = typeof OrtModule;
export type Read = (path: string) => Promise<Uint8Array>;

export interface Replica {
  name: string;
  layout: 'optimum' | 'builder';
  dtype: 'fp32' | 'fp16' | 'q4' | 'q4f16';
  /** Path under tests/fixtures/replicas/. */
  file: string;
  /** External-data file, by the name the graph references. */
  externalData?: string;
  /** Where that file is under tests/fixtures/replicas/ (default: next to `file`). */
  externalDataFile?: string;
  /** Rotary by RotaryEmbedding nodes with a position_ids input (builder-rope), not inside GQA. */
  rotaryNodes?: boolean;
  /** Oracle variant in oracle.safetensors: base logits, and with `adapter` merged. */
  oracle: string;
  loraOracle: string;
  /** Oracle with the Phi-3-style packed adapter (adapter-phi3) merged. */
  phi3Oracle: string;
  tol: Tolerance;
  /** Graph computes in float16 (needs shader-f16 on WebGPU). */
  f16: boolean;
}

export const REPLICAS: readonly Replica[] = [
  r('optimum', 'fp32', 'optimum/model.onnx'),
  r('optimum', 'fp16', 'optimum/model_fp16.onnx'),
  r('optimum', 'q4', 'optimum/model_q4.onnx'),
  r('optimum', 'q4f16', 'optimum/model_q4f16.onnx'),
  r('builder', 'fp32', 'builder/model.onnx', 'model.onnx_data'),
  r('builder', 'fp16', 'builder-fp16/model.onnx', 'model.onnx_data'),
  r('builder', 'q4', 'builder-q4/model.onnx', 'model.onnx_data'),
  r('builder', 'q4f16', 'builder-q4f16/model.onnx', 'model.onnx_data'),
  {
    ...r('builder', 'fp32', 'builder-rope/model.onnx', 'model.onnx_data'),
    name: 'builder-rope fp32',
    externalDataFile: 'builder/model.onnx_data', // same weights: the variant's tensors point into it
    rotaryNodes: true,
  },
  {
    ...r('builder', 'q4', 'builder-q4-acc4/model.onnx', 'model.onnx_data'),
    name: 'builder-q4 acc4', // accuracy_level 4: int8 activations inside MatMulNBits
    externalDataFile: 'builder-q4/model.onnx_data',
  },
  {
    ...r('builder', 'fp32', 'builder-qwen/model.onnx', 'model.onnx_data'),
    name: 'builder-qwen fp32', // Qwen2-style q/k/v bias: /attn/qkv_proj/Add after the packed MatMul
    externalDataFile: 'builder/model.onnx_data',
    oracle: 'qwen',
    loraOracle: 'qwen_lora',
    phi3Oracle: 'qwen_phi3',
  },
];

function r(layout: Replica['layout'], dtype: Replica['dtype'], file: string, externalData?: string): Replica {
  const q4 = dtype === 'q4' || dtype === 'q4f16';
  const f16 = dtype === 'fp16' || dtype === 'q4f16';
  return {
    name: `${layout} ${dtype}`,
    layout,
    dtype,
    file,
    ...(externalData ? { externalData } : {}),
    oracle: q4 ? 'q4' : 'base',
    loraOracle: q4 ? 'q4_lora' : 'lora',
    phi3Oracle: q4 ? 'q4_phi3' : 'phi3',
    tol: f16 ? FP16_LOGITS : FP32_LOGITS,
    f16,
  };
}

export interface ReplicaSet {
  config: ModelConfig;
  oracle: Safetensors;
  prompt: number[];
  adapter: { config: ReturnType<typeof parsePeftConfig>; tensors: Safetensors['tensors'] };
  phi3: { config: ReturnType<typeof parsePeftConfig>; tensors: Safetensors['tensors'] };
}

export async function loadReplicaSet(read: Read): Promise<ReplicaSet> {
  const json = async (p: string) => JSON.parse(new TextDecoder().decode(await read(p)));
  const oracle = parseSafetensors(await read('oracle.safetensors'));
  const adapter = async (dir: string) => ({
    config: parsePeftConfig(await json(`${dir}/adapter_config.json`)),
    tensors: parseSafetensors(await read(`${dir}/adapter_model.safetensors`)).tensors,
  });
  return {
    config: parseModelConfig(await json('config.json')),
    oracle,
    prompt: [...readInt32(oracle.tensors.get('input_ids')!)],
    adapter: await adapter('adapter'),
    phi3: await adapter('adapter-phi3'),
  };
}

export function oracleLogits(set: ReplicaSet, variant: string): Float32Array {
  return readFloat32(set.oracle.tensors.get(`logits_${variant}`)!);
}
export function oracleGreedy(set: ReplicaSet, variant: string): number[] {
  return [...readInt32(set.oracle.tensors.get(`greedy_${variant}`)!)];
}

export interface LoadedReplica {
  graph: DecoderGraph;
  targets: LoraTarget[];
  /** Gate inputs when loaded with `gates` (src/model/inject-gates.ts). */
  gates?: GateSite[];
  noAdapter: Record<string, OrtModule.Tensor>;
  /** A PEFT adapter's feeds as CPU tensors. */
  feedsOf(a: ReplicaSet['adapter']): Record<string, OrtModule.Tensor>;
  peft(a: ReplicaSet['adapter']): PeftFeeds;
  release(): Promise<void>;
}

/** The product path: decode → injectLora → createDecoderSession (external data passed through). */
export async function loadReplica(
  ort: Ort,
  read: Read,
  rep: Replica,
  config: ModelConfig,
  backend: Backend,
  inject: LoraBranchOp | InjectOptions = 'matmul',
): Promise<LoadedReplica> {
  const bytes = await read(rep.file);
  const dir = rep.file.slice(0, rep.file.lastIndexOf('/') + 1);
  const externalData = rep.externalData
    ? [{ path: rep.externalData, data: await read(rep.externalDataFile ?? dir + rep.externalData) }]
    : undefined;
  const opts: InjectOptions = typeof inject === 'string' ? { branchOp: inject } : inject;
  const { model, targets, gates: sites } = injectLora(decodeModel(bytes), opts);
  const graph = await createDecoderSession(ort, encodeModel(model), config, {
    backend,
    ...(externalData ? { externalData } : {}),
  });
  const device = backend === 'webgpu' ? ((await ort.env.webgpu.device) as GPUDevice) : null;
  const none = noAdapterFeeds(ort, targets, device);
  const peft = (a: ReplicaSet['adapter']) => peftToFeeds(a.config, a.tensors, targets);
  return {
    graph,
    targets,
    ...(sites ? { gates: sites } : {}),
    noAdapter: none.feeds,
    peft,
    feedsOf(a) {
      const out: Record<string, OrtModule.Tensor> = {};
      const half = new Set(
        targets.filter((t) => t.inputDtype === 'float16').flatMap((t) => [t.inputA, t.inputB]),
      );
      for (const [k, f] of peft(a).feeds) {
        out[k] = half.has(k)
          ? new ort.Tensor('float16', toHalfBits(f.data), f.dims)
          : new ort.Tensor('float32', f.data, f.dims);
      }
      return out;
    },
    async release() {
      none.dispose();
      await graph.session.release();
    },
  };
}

/** Logits of every prompt position, fed in chunks (one chunk = full forward; more = the KV path). */
export async function promptLogits(
  ort: Ort,
  graph: DecoderGraph,
  prompt: readonly number[],
  feeds: Record<string, OrtModule.Tensor>,
  chunks: readonly number[] = [prompt.length],
): Promise<Float32Array> {
  const stepper = new KvStepper(ort, graph, feeds);
  const parts: Float32Array[] = [];
  try {
    let at = 0;
    for (const n of chunks) {
      parts.push(await stepper.step(prompt.slice(at, at + n), { allLogits: true }));
      at += n;
    }
  } finally {
    stepper.dispose();
  }
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
