/**
 * The oracle for adapter outputs: the fp32 base ONNX with the LoRA deltas MERGED OFFLINE into its
 * weights, run un-injected (no `lora.*` inputs) on onnxruntime-web, greedy by full recompute (no KV
 * cache). It shares none of the engine's adapter path: PEFT tensors are read straight from the
 * safetensors and scaled here by PEFT's own rule, not through peft.ts / mix.ts / the feed cache / the
 * injected graph / the engine's decode loop. Only the target lookup reuses injectLora (its `node` field
 * names the projection; the weight is that node's constant input).
 *
 * Math (PEFT LoraLayer, Hu et al. 2021 arXiv:2106.09685): y = W x + scale·B(A x), lora_A.weight A
 * [r, in], lora_B.weight B [out, r], so ΔW = scale·B·A [out, in] with scale = alpha / r (alpha / √r with
 * use_rslora, arXiv:2312.03732); alpha from the first `alpha_pattern` key k with
 * re.match(rf"(.*\.)?({k})$", module_path), else lora_alpha; r is the tensor's rank (PEFT refuses
 * files whose rank disagrees with rank_pattern, checked here too). Our export stores projection weights
 * as the transposed `onnx::MatMul_N` initializers Wᵀ [in, out] (Y = X·Wᵀ), so the merge is
 * Wᵀ'[i, o] = Wᵀ[i, o] + Σ_adapters w·scale·Σ_k A[k, i]·B[o, k], summed in float64, rounded once to fp32.
 * (A `Transpose(W [out, in])` weight gets ΔW itself.) A weighted mix is Σ w_i·ΔW_i.
 */
import type * as OrtModule from 'onnxruntime-web';
import { parseSafetensors, readFloat32 } from '../../src/adapters/safetensors.ts';
import { injectLora } from '../../src/model/inject-lora.ts';
import {
  constantTensors,
  DataType,
  decodeModel,
  dimsOf,
  encodeModel,
  float32Reader,
  graphOf,
  type NodeProto,
  nodesOf,
  type TensorProto,
} from '../../src/model/onnx-io.ts';

type Ort = typeof OrtModule;

export interface OracleAdapter {
  /** adapter_config.json (bytes, text or parsed). */
  config: Uint8Array | string | Record<string, unknown>;
  /** adapter_model.safetensors bytes. */
  weights: Uint8Array;
  /** Mix weight (1 for a single adapter). */
  weight: number;
}

export interface OracleGreedy {
  tokens: number[];
  /** Logits row after the prompt (the one the first token is chosen from). */
  firstLogits: Float32Array;
  /** top1 − top2 logit at every step: how far each greedy choice is from a tie. */
  margins: number[];
}

export interface MergedOracle {
  /** Greedy tokens by full recompute (stops after an eos id when given). */
  greedy(promptIds: readonly number[], maxNew: number, eosIds?: ReadonlySet<number>): Promise<OracleGreedy>;
  /** Logits of every position [T·V], row-major (one forward pass). */
  logits(ids: readonly number[]): Promise<Float32Array>;
  /** Number of projection weights that were changed. */
  mergedWeights: number;
  release(): Promise<void>;
}

const KEY_RE = /^base_model\.model\.(.+)\.lora_([AB])\.weight$/;
const PATH_RE = /(?:^|\.)layers\.(\d+)\.(?:self_attn|mlp)\.([a-z_]+_proj)$/;

function pyPatternKey(keys: readonly string[], path: string): string | undefined {
  return keys.find((k) => new RegExp(`^(?:.*\\.)?(?:${k})$`).test(path));
}

function configObject(c: OracleAdapter['config']): Record<string, unknown> {
  if (typeof c === 'string') return JSON.parse(c);
  if (c instanceof Uint8Array) return JSON.parse(new TextDecoder().decode(c));
  return c;
}

/**
 * ΔWᵀ [in, out] (float64) per `${layer}.${module}` of one adapter, times `weight`, added into `into`.
 * `dims` gives each key's [in, out].
 */
export function addPeftDeltas(
  a: OracleAdapter,
  dims: ReadonlyMap<string, [number, number]>,
  into: Map<string, Float64Array>,
): void {
  const cfg = configObject(a.config);
  const loraAlpha = Number(cfg.lora_alpha);
  const r0 = Number(cfg.r);
  const rslora = cfg.use_rslora === true;
  const alphaPattern = (cfg.alpha_pattern ?? {}) as Record<string, number>;
  const rankPattern = (cfg.rank_pattern ?? {}) as Record<string, number>;
  const st = parseSafetensors(a.weights);
  const pairs = new Map<
    string,
    { A?: Float32Array; B?: Float32Array; shapeA?: number[]; shapeB?: number[] }
  >();
  for (const [key, t] of st.tensors) {
    const m = KEY_RE.exec(key);
    if (!m) throw new Error(`oracle: unexpected tensor ${key}`);
    const p = pairs.get(m[1]!) ?? {};
    if (m[2] === 'A') {
      p.A = readFloat32(t);
      p.shapeA = t.shape;
    } else {
      p.B = readFloat32(t);
      p.shapeB = t.shape;
    }
    pairs.set(m[1]!, p);
  }
  for (const [path, p] of pairs) {
    const m = PATH_RE.exec(path);
    if (!m || !p.A || !p.B || !p.shapeA || !p.shapeB) throw new Error(`oracle: incomplete module ${path}`);
    const key = `${m[1]}.${m[2]}`;
    const d = dims.get(key);
    if (!d) throw new Error(`oracle: ${path} is not a projection of this model`);
    const [nIn, nOut] = d;
    const r = p.shapeA[0]!;
    if (p.shapeA[1] !== nIn || p.shapeB[0] !== nOut || p.shapeB[1] !== r) {
      throw new Error(`oracle: ${path} shapes A ${p.shapeA} B ${p.shapeB} vs [in ${nIn}, out ${nOut}]`);
    }
    const rk = pyPatternKey(Object.keys(rankPattern), path);
    const rCfg = rk !== undefined ? rankPattern[rk]! : r0;
    if (rCfg !== r) throw new Error(`oracle: ${path} has rank ${r}, the config says ${rCfg}`);
    const ak = pyPatternKey(Object.keys(alphaPattern), path);
    const alpha = ak !== undefined ? alphaPattern[ak]! : loraAlpha;
    const scale = rslora ? alpha / Math.sqrt(r) : alpha / r;
    const f = a.weight * scale;
    let acc = into.get(key);
    if (!acc) {
      acc = new Float64Array(nIn * nOut);
      into.set(key, acc);
    }
    // ΔWᵀ[i, o] = f · Σ_k A[k, i] · B[o, k]
    for (let i = 0; i < nIn; i++) {
      for (let o = 0; o < nOut; o++) {
        let s = 0;
        for (let k = 0; k < r; k++) s += p.A[k * nIn + i]! * p.B[o * r + k]!;
        acc[i * nOut + o]! += f * s;
      }
    }
  }
}

/** The base model bytes with every adapter's weighted ΔW merged into its projection weights. */
export function mergeAdapters(
  modelBytes: Uint8Array,
  adapters: readonly OracleAdapter[],
): { bytes: Uint8Array; merged: number } {
  const { targets } = injectLora(decodeModel(modelBytes));
  const dims = new Map<string, [number, number]>(
    targets.map((t) => [`${t.layer}.${t.module}`, [t.in, t.out]]),
  );
  const deltas = new Map<string, Float64Array>();
  for (const a of adapters) if (a.weight !== 0) addPeftDeltas(a, dims, deltas);

  const model = decodeModel(modelBytes); // a fresh tree: its tensors are replaced, not the bytes mutated
  const g = graphOf(model);
  const consts = constantTensors(g);
  const byName = new Map<string, NodeProto>(nodesOf(g).map((n) => [n.name, n]));
  const producers = new Map<string, NodeProto>();
  for (const n of nodesOf(g)) for (const o of n.output) producers.set(o, n);
  let merged = 0;
  for (const t of targets) {
    const delta = deltas.get(`${t.layer}.${t.module}`);
    if (!delta) continue;
    const node = byName.get(t.node);
    if (node?.opType !== 'MatMul') throw new Error(`oracle: projection ${t.node} is not a MatMul`);
    let w: TensorProto | undefined = consts.get(node.input[1]!);
    let transposed = false; // weight stored as W [out, in] behind a Transpose
    if (!w) {
      const p = producers.get(node.input[1]!);
      if (p?.opType === 'Transpose') {
        w = consts.get(p.input[0]!);
        transposed = true;
      }
    }
    if (!w || w.dataType !== DataType.FLOAT) throw new Error(`oracle: no fp32 constant weight for ${t.node}`);
    const d = dimsOf(w);
    const want = transposed ? [t.out, t.in] : [t.in, t.out];
    if (d[0] !== want[0] || d[1] !== want[1]) throw new Error(`oracle: ${w.name} dims ${d} != ${want}`);
    const src = float32Reader(w);
    const out = new Float32Array(t.in * t.out);
    for (let i = 0; i < t.in; i++) {
      for (let o = 0; o < t.out; o++) {
        const at = transposed ? o * t.in + i : i * t.out + o;
        out[at] = src.getFloat32(at * 4, true) + delta[i * t.out + o]!;
      }
    }
    w.rawData = new Uint8Array(out.buffer);
    w.floatData = [];
    merged++;
  }
  return { bytes: encodeModel(model), merged };
}

/** Index of the largest logit (lowest id on ties, as the engine's sampler) and its margin to the runner-up. */
export function top2(x: ArrayLike<number>): { id: number; margin: number } {
  let best = 0;
  let second = Number.NEGATIVE_INFINITY;
  for (let i = 1; i < x.length; i++) {
    const v = x[i]!;
    if (v > x[best]!) {
      second = x[best]!;
      best = i;
    } else if (v > second) second = v;
  }
  return { id: best, margin: x[best]! - second };
}

/**
 * Builds the merged model and a wasm session for it. `kv` gives the empty past shapes
 * ([1, numKvHeads, 0, headDim]) the export's `past_key_values.*` inputs need.
 */
export async function createMergedOracle(
  ort: Ort,
  modelBytes: Uint8Array,
  adapters: readonly OracleAdapter[],
  kv: { numKvHeads: number; headDim: number },
): Promise<MergedOracle> {
  const { bytes, merged } = mergeAdapters(modelBytes, adapters);
  const session = await ort.InferenceSession.create(bytes, {
    executionProviders: ['wasm'],
    logSeverityLevel: 3,
  });
  const { Tensor } = ort;

  async function logits(ids: readonly number[]): Promise<Float32Array> {
    const T = ids.length;
    const feeds: Record<string, OrtModule.Tensor> = {
      input_ids: new Tensor(
        'int64',
        BigInt64Array.from(ids, (x) => BigInt(x)),
        [1, T],
      ),
      attention_mask: new Tensor('int64', new BigInt64Array(T).fill(1n), [1, T]),
    };
    if (session.inputNames.includes('position_ids')) {
      feeds.position_ids = new Tensor(
        'int64',
        BigInt64Array.from({ length: T }, (_, i) => BigInt(i)),
        [1, T],
      );
    }
    for (const n of session.inputNames) {
      if (n.startsWith('past_key_values.')) {
        feeds[n] = new Tensor('float32', new Float32Array(0), [1, kv.numKvHeads, 0, kv.headDim]);
      }
    }
    const out = await session.run(feeds);
    const l = out.logits!;
    const data = (await l.getData()) as Float32Array;
    const copy = data.slice();
    for (const t of Object.values(out)) t.dispose();
    return copy;
  }

  return {
    mergedWeights: merged,
    logits,
    async greedy(promptIds, maxNew, eosIds) {
      const ids = [...promptIds];
      const tokens: number[] = [];
      const margins: number[] = [];
      let firstLogits = new Float32Array(0);
      for (let step = 0; step < maxNew; step++) {
        const all = await logits(ids);
        const V = all.length / ids.length;
        const row = all.slice((ids.length - 1) * V);
        if (step === 0) firstLogits = row;
        const { id, margin } = top2(row);
        tokens.push(id);
        margins.push(margin);
        ids.push(id);
        if (eosIds?.has(id)) break;
      }
      return { tokens, firstLogits, margins };
    },
    release: () => session.release(),
  };
}
