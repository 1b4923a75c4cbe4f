/**
 * LoRA feeds for a batch whose rows use different adapters (or none), on the graph injected with
 * `rowMask` (model/inject-lora.ts). The distinct adapters are concatenated along the rank, as a mix is
 * (adapters/mix.ts) but with weight 1 — A (in, ΣRᵢ) = [A₁ … Aₙ], B (ΣRᵢ, out) = [B₁; …; Bₙ] — and the row
 * mask (B, 1, ΣRᵢ) keeps row b's rank columns only: ((X_b·A)∘m_b)·B = X_b·A_{i(b)}·B_{i(b)} exactly (the
 * other columns are multiplied by 0 and add +0). A row with no adapter has an all-zero mask row. So every
 * row reads the base weights and one shared A/B once per step; ranks may differ across adapters (no
 * padding needed) and rows of one adapter share its columns.
 * Kept over per-row A (B, in, R) / B (B, R, out) feeds because it needs no change to the A/B input layout
 * (one graph, the adapter cache's feeds as they are), needs no rank padding or zero rows for "no adapter",
 * and costs ΣRᵢ instead of B·R columns when rows share adapters. Measured (bench/batch-forms.ts,
 * bench/README.md "Batch feed form"; wasm, default model, every row a different rank-8 adapter): same
 * logits (≤ 1.4e-5), but per-row factors step 0.97× / 0.95× / 0.87× the time of this form at 2 / 4 / 8
 * rows (this form's X·A computes all ΣRᵢ columns for every row, plus the mask Mul), 1.10× / 0.99× at 8
 * rows sharing 2 / 4 adapters (the common case this form favours), and stack in ~0.1–0.2×
 * the build time (ms, once per composition). On webgpu (SwiftShader, 4 rows, Einsum branch) per-row was
 * 0.94–0.99× (within the runs' spread) and 2.2× with a MatMul branch. The concatenation reads each
 * adapter's tensors back to the CPU (a download on webgpu) and, with a device, uploads A/B once per batch
 * composition, never per step.
 * It deliberately does not resolve adapter names (the engine's AdapterFeedProvider does).
 */
import { AdapterMismatchError } from '../errors.ts';
import { LORA_ROW_MASK, type LoraTarget } from '../model/inject-lora.ts';
import type { Ort, OrtTensor } from './session.ts';
import type { AdapterFeeds } from './types.ts';

/** One row's adapter: its feeds from the provider (null: no adapter) and a key equal for equal selections. */
export interface BatchRowAdapter {
  key: string;
  feeds: AdapterFeeds | null;
}

export interface BatchLoraFeeds {
  feeds: Record<string, OrtTensor>;
  /** Total rank of the concatenation (0 when no row has an adapter or every row shares one). */
  rank: number;
  dispose(): void;
}

const GPU_ALIGN = 16;

/**
 * The batch feeds of `rows` (row order = batch order). When every row has the same adapter its feeds are
 * used as they are (no mask, no copy); when no row has one, `noAdapter` (null → caller uses the base graph).
 */
export async function batchLoraFeeds(
  ort: Ort,
  rows: readonly BatchRowAdapter[],
  targets: readonly LoraTarget[],
  opts: { device?: GPUDevice | null; noAdapter: Record<string, OrtTensor> },
): Promise<BatchLoraFeeds> {
  const distinct = new Map<string, AdapterFeeds>();
  for (const r of rows) if (r.feeds && !distinct.has(r.key)) distinct.set(r.key, r.feeds);
  if (distinct.size === 0) return { feeds: opts.noAdapter, rank: 0, dispose: () => {} };
  if (distinct.size === 1 && rows.every((r) => r.feeds)) {
    return { feeds: [...distinct.values()][0]!.feeds, rank: 0, dispose: () => {} };
  }
  // Each adapter's rank and CPU data.
  const parts: { key: string; rank: number; data: Map<string, Float32Array> }[] = [];
  for (const [key, f] of distinct) {
    const first = targets[0];
    const rank = first ? (f.feeds[first.inputA]?.dims[1] ?? 0) : 0;
    const data = new Map<string, Float32Array>();
    for (const t of targets) {
      for (const [name, want] of [
        [t.inputA, [t.in, rank]],
        [t.inputB, [rank, t.out]],
      ] as const) {
        const tensor = f.feeds[name];
        if (!tensor || tensor.dims[0] !== want[0] || tensor.dims[1] !== want[1]) {
          throw new AdapterMismatchError(
            `adapter feeds for ${name} have dims [${tensor?.dims ?? 'missing'}], expected [${want}]`,
            { input: name, dims: tensor ? [...tensor.dims] : null, expected: [...want] },
          );
        }
        data.set(name, (await tensor.getData()) as Float32Array);
      }
    }
    parts.push({ key, rank, data });
  }
  const R = parts.reduce((s, p) => s + p.rank, 0);
  const offsets = new Map<string, { off: number; rank: number }>();
  let off = 0;
  for (const p of parts) {
    offsets.set(p.key, { off, rank: p.rank });
    off += p.rank;
  }
  const cpu = new Map<string, { data: Float32Array; dims: [number, number] }>();
  for (const t of targets) {
    const A = new Float32Array(t.in * R); // (in, R)
    const B = new Float32Array(R * t.out); // (R, out)
    let o = 0;
    for (const p of parts) {
      const a = p.data.get(t.inputA)!;
      const r = p.rank;
      for (let i = 0; i < t.in; i++) A.set(a.subarray(i * r, (i + 1) * r), i * R + o);
      B.set(p.data.get(t.inputB)!.subarray(0, r * t.out), o * t.out);
      o += r;
    }
    cpu.set(t.inputA, { data: A, dims: [t.in, R] });
    cpu.set(t.inputB, { data: B, dims: [R, t.out] });
  }
  const mask = new Float32Array(rows.length * R); // (B, 1, R)
  rows.forEach((r, b) => {
    const at = r.feeds ? offsets.get(r.key) : undefined;
    if (at) mask.fill(1, b * R + at.off, b * R + at.off + at.rank);
  });
  const feeds: Record<string, OrtTensor> = {
    [LORA_ROW_MASK]: new ort.Tensor('float32', mask, [rows.length, 1, R]),
  };
  const buffers: GPUBuffer[] = [];
  const device = opts.device ?? null;
  for (const [name, f] of cpu) {
    if (!device) {
      feeds[name] = new ort.Tensor('float32', f.data, f.dims);
      continue;
    }
    const buf = device.createBuffer({
      label: `lora batch ${name}`,
      size: Math.max(GPU_ALIGN, Math.ceil(f.data.byteLength / GPU_ALIGN) * GPU_ALIGN),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    buffers.push(buf);
    device.queue.writeBuffer(buf, 0, f.data.buffer, f.data.byteOffset, f.data.byteLength);
    feeds[name] = ort.Tensor.fromGpuBuffer(buf, { dataType: 'float32', dims: f.dims }) as OrtTensor;
  }
  return {
    feeds,
    rank: R,
    dispose: () => {
      for (const b of buffers) b.destroy();
    },
  };
}
