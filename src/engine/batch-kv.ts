/**
 * The KV cache of a batch of sequences that decode together, one token per row per step, over an
 * HF-layout decoder (session.ts's DecoderGraph). Rows are left-padded to one width P: row b's cache holds
 * `P - len[b]` pad columns then its `len[b]` real positions; the step feeds `attention_mask` (B, P + 1)
 * with zeros on the pads and `position_ids` (B, 1) = len[b] (graphs without position_ids take positions
 * from the mask), so each row sees exactly what it would see alone — the pad keys get an additive -inf /
 * dtype-min bias and a softmax weight of exactly 0.
 * Rows join with the KV of their own batch-1 prefill (`join`) and leave when done (`drop`); both rebuild
 * the cache on the CPU (a download on webgpu), once per change, never per step. A batch of one row with
 * no pads adopts the row's tensors as they are (no copy), so a lone request decodes exactly as KvStepper.
 * It deliberately does not sample or know about adapters beyond the per-step extra feeds it is given.
 * Continuous batching as in vLLM (Kwon et al. 2023, arXiv:2309.06180); left padding as in HF generate.
 */
import type * as OrtModule from 'onnxruntime-web';
import { InvalidOptionError } from '../errors.ts';
import { ARGMAX_OUTPUT } from '../model/greedy-head.ts';
import { LORA_ROW_MASK } from '../model/inject-lora.ts';
import { type DecoderGraph, logitsToFloat32, type Ort, type OrtTensor, rowMaskOne } from './session.ts';

/** One row's KV from a batch-1 prefill: tensors in `layout.pastNames` order, each (1, H, len, D). */
export interface RowKv {
  tensors: OrtTensor[];
  length: number;
}

type KvData = Float32Array | Uint16Array;

export class BatchKv {
  /** Real positions per row. */
  private lens: number[] = [];
  /** Cache width (max of lens once trimmed). */
  private width = 0;
  private past: OrtTensor[] = [];

  constructor(
    private readonly ort: Ort,
    private readonly graph: DecoderGraph,
  ) {}

  get rows(): number {
    return this.lens.length;
  }

  /** Real positions of each row. */
  get lengths(): readonly number[] {
    return this.lens;
  }

  /** Cache columns (pads included). */
  get paddedLength(): number {
    return this.width;
  }

  /** `tensor.location` of every KV tensor held. */
  get locations(): string[] {
    return this.past.map((t) => t.location);
  }

  /** Adds a row at the end (index `rows - 1` afterwards); takes ownership of `kv.tensors`. */
  async join(kv: RowKv): Promise<void> {
    const n = this.graph.layout.pastNames.length;
    if (kv.tensors.length !== n) {
      throw new InvalidOptionError(`a joining row needs ${n} KV tensors, got ${kv.tensors.length}`, {
        option: 'kv',
      });
    }
    if (this.lens.length === 0) {
      this.past = kv.tensors;
      this.lens = [kv.length];
      this.width = kv.length;
      return;
    }
    const old = await this.download(this.past);
    const add = await this.download(kv.tensors);
    for (const t of kv.tensors) t.dispose();
    const rows = [
      ...this.lens.map((len, b) => ({ src: old, b, len, from: this.width })),
      { src: add, b: 0, len: kv.length, from: kv.length },
    ];
    this.rebuild(rows);
  }

  /** Removes the rows at `indices`; the remaining rows keep their order. */
  async drop(indices: readonly number[]): Promise<void> {
    const gone = new Set(indices);
    const keep = this.lens.map((len, b) => ({ b, len })).filter((r) => !gone.has(r.b));
    if (keep.length === this.lens.length) return;
    if (keep.length === 0) {
      this.dispose();
      return;
    }
    const old = await this.download(this.past);
    this.rebuild(keep.map((r) => ({ src: old, b: r.b, len: r.len, from: this.width })));
  }

  /**
   * One decode step: `ids[b]` is row b's next input token. Returns each row's logits (V floats).
   * The new KV replaces the old.
   */
  async step(
    ids: readonly number[],
    extraFeeds: Record<string, OrtTensor>,
    graph = this.graph,
  ): Promise<Float32Array[]> {
    const out = await this.run(ids, extraFeeds, graph, 'logits');
    const logitsT = out.logits!;
    const V = logitsT.dims[logitsT.dims.length - 1]!;
    const T = logitsT.dims[logitsT.dims.length - 2] ?? 1;
    const data = await logitsT.getData();
    const rows: Float32Array[] = [];
    for (let b = 0; b < ids.length; b++) {
      rows.push(logitsToFloat32(data, (b * T + T - 1) * V, (b * T + T) * V));
    }
    logitsT.dispose();
    return rows;
  }

  /**
   * As `step` on a graph with the greedy head (`graph.argmax`, model/greedy-head.ts): returns each row's
   * greedy next id (argmax, lowest id on ties), reading back B int64 instead of B logits rows.
   */
  async stepGreedy(
    ids: readonly number[],
    extraFeeds: Record<string, OrtTensor>,
    graph = this.graph,
  ): Promise<number[]> {
    const out = await this.run(ids, extraFeeds, graph, ARGMAX_OUTPUT);
    const t = out[ARGMAX_OUTPUT]!;
    const data = (await t.getData()) as BigInt64Array;
    const k = t.dims[t.dims.length - 1] ?? 1; // rows kept per sequence (1)
    t.dispose();
    return ids.map((_, b) => Number(data[b * k + k - 1]));
  }

  private async run(
    ids: readonly number[],
    extraFeeds: Record<string, OrtTensor>,
    graph: DecoderGraph,
    what: 'logits' | typeof ARGMAX_OUTPUT,
  ): Promise<OrtModule.InferenceSession.ReturnType> {
    const B = this.lens.length;
    if (ids.length !== B) {
      throw new InvalidOptionError(`a batch step needs one id per row (${B}), got ${ids.length}`, {
        option: 'ids',
      });
    }
    const P = this.width;
    const mask = new BigInt64Array(B * (P + 1));
    for (let b = 0; b < B; b++) mask.fill(1n, b * (P + 1) + (P - this.lens[b]!), (b + 1) * (P + 1));
    const tokenFeeds: Record<string, OrtTensor> = {
      input_ids: new this.ort.Tensor(
        'int64',
        BigInt64Array.from(ids, (x) => BigInt(x)),
        [B, 1],
      ),
      attention_mask: new this.ort.Tensor('int64', mask, [B, P + 1]),
    };
    if (graph.hasPositionIds) {
      tokenFeeds.position_ids = new this.ort.Tensor(
        'int64',
        BigInt64Array.from(this.lens, (x) => BigInt(x)),
        [B, 1],
      );
    }
    if (graph.numLogitsToKeep) {
      tokenFeeds.num_logits_to_keep = new this.ort.Tensor('int64', BigInt64Array.of(1n), [
        ...graph.numLogitsToKeep,
      ]);
    }
    const { layout } = graph;
    const feeds: Record<string, OrtTensor> = { ...extraFeeds, ...tokenFeeds };
    if (!(LORA_ROW_MASK in feeds) && graph.session.inputNames.includes(LORA_ROW_MASK)) {
      feeds[LORA_ROW_MASK] = tokenFeeds[LORA_ROW_MASK] = rowMaskOne(this.ort);
    }
    layout.pastNames.forEach((n, i) => {
      feeds[n] = this.past[i]!;
    });
    const out = await graph.session.run(feeds, [what, ...layout.presentNames]);
    for (const t of Object.values(tokenFeeds)) t.dispose();
    for (const t of this.past) t.dispose();
    this.past = layout.presentNames.map((o) => out[o]!);
    this.width += 1;
    this.lens = this.lens.map((l) => l + 1);
    return out;
  }

  dispose(): void {
    for (const t of this.past) t.dispose();
    this.past = [];
    this.lens = [];
    this.width = 0;
  }

  private async download(
    tensors: readonly OrtTensor[],
  ): Promise<{ data: KvData; dims: readonly number[] }[]> {
    const half = this.graph.kvDtype === 'float16';
    return Promise.all(
      tensors.map(async (t) => {
        const d = (await t.getData()) as ArrayBufferView & { length: number };
        // fp16 may come back as a Float16Array where the JS engine has one: take its bits.
        const data: KvData =
          half && !(d instanceof Uint16Array)
            ? new Uint16Array(d.buffer, d.byteOffset, d.length)
            : (d as unknown as KvData);
        return { data, dims: t.dims };
      }),
    );
  }

  /**
   * New cache from rows of downloaded tensors: row `b` of `src` has its `len` real positions at the end of
   * `from` columns; the new width is the longest row, shorter rows left-padded with zeros.
   */
  private rebuild(
    rows: { src: { data: KvData; dims: readonly number[] }[]; b: number; len: number; from: number }[],
  ): void {
    const { numKvHeads: H, headDim: D } = this.graph.layout;
    const B = rows.length;
    const W = Math.max(...rows.map((r) => r.len));
    const half = this.graph.kvDtype === 'float16';
    const next: OrtTensor[] = [];
    const layers = this.graph.layout.pastNames.length;
    for (let i = 0; i < layers; i++) {
      const out = half ? new Uint16Array(B * H * W * D) : new Float32Array(B * H * W * D);
      rows.forEach((r, nb) => {
        const src = r.src[i]!.data;
        for (let h = 0; h < H; h++) {
          const s = ((r.b * H + h) * r.from + (r.from - r.len)) * D;
          const d = ((nb * H + h) * W + (W - r.len)) * D;
          out.set(src.subarray(s, s + r.len * D), d);
        }
      });
      next.push(
        out instanceof Uint16Array
          ? new this.ort.Tensor('float16', out, [B, H, W, D])
          : new this.ort.Tensor('float32', out, [B, H, W, D]),
      );
    }
    for (const t of this.past) t.dispose();
    this.past = next;
    this.lens = rows.map((r) => r.len);
    this.width = W;
  }
}
