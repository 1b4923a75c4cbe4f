/**
 * The one tolerance helper every numerical test uses: |actual - expected| <= atol + rtol * |expected|,
 * element-wise, like numpy.allclose. On failure it reports the worst element, its index, and how many
 * elements broke the bound, so a failing golden test says where and by how much.
 *
 * Tolerances used across the suite are the constants below, each justified where it is defined; q4
 * logits, which element-wise bounds do not fit, are checked by two aggregate bounds (expectQ4Logits).
 */
import { expect } from 'vitest';

export interface Tolerance {
  /** One absolute bound, or one per element (e.g. half a quantizer's per-block step). */
  atol: number | ArrayLike<number>;
  rtol: number;
}

/**
 * fp32 ONNX (onnxruntime-web, wasm or WebGPU) vs PyTorch fp32 golden logits: both compute in fp32 with
 * different summation orders over at most ~1k-term dot products; observed differences are ~1e-5 on
 * logits of magnitude ~10, so 1e-4 absolute plus 1e-4 relative leaves 10x headroom while still catching
 * any real error (a wrong transpose or scale moves logits by >1e-1).
 */
export const FP32_LOGITS: Tolerance = { atol: 1e-4, rtol: 1e-4 };
/**
 * The same fp32 graph on onnxruntime-web's WebGPU EP (SwiftShader here) vs its wasm EP. Beyond different
 * summation orders, WGSL leaves the accuracy of exp / inverseSqrt / division to the implementation (the
 * spec allows several ULP, more for exp of large arguments) and SwiftShader uses fast approximations; the
 * differences compound through 6 layers of softmax and RMSNorm. Observed on the trained default model:
 * max |diff| 7e-4 on logits of magnitude up to ~15. 2e-3 + 1e-3·|x| keeps ~3x headroom, while a wrong
 * kernel (transpose, scale, mask, missing LoRA branch) moves logits by > 1e-1.
 */
export const WEBGPU_VS_WASM: Tolerance = { atol: 2e-3, rtol: 1e-3 };
/**
 * float16 graphs (model_fp16 / q4f16 / builder fp16 and q4f16: fp16 weights, activations and KV on
 * onnxruntime-web's wasm EP) vs the fp32 PyTorch oracle. fp16 keeps 11 significant bits (unit roundoff
 * 4.9e-4): on the replicas' residual stream (|x| ~10) every op rounds by ~5e-3 absolute, and logits reach
 * |19| (fp16 step 1.6e-2 there). Observed (tests/unit/model/replicas.test.ts prints it): max |diff|
 * 1.3e-2–1.9e-2 for the base model, 2.0e-2–4.5e-2 with a PEFT adapter (fp32 branch between Casts, see
 * inject-lora.ts). 0.1 + 1e-2·|x| keeps >2x headroom; a wrong packed-qkv split, scale or a missing adapter
 * branch moves these logits by up to 17.6 (the adapter's effect, RMS 4.9), so it still fails loudly.
 */
export const FP16_LOGITS: Tolerance = { atol: 1e-1, rtol: 1e-2 };
/**
 * fp32 layout replicas (tests/fixtures/replicas) on onnxruntime-web's WebGPU EP (SwiftShader) vs the PyTorch
 * oracle. Same causes as WEBGPU_VS_WASM (WGSL transcendental approximations), amplified: the
 * replicas' weights are ~30x the default model's (std 1/sqrt(in), so that logits are peaked and greedy is far
 * from ties) and the Optimum export computes rotary cos/sin and a -1e9 softmax mask in-graph. Observed: Optimum
 * fp32/q4 max |diff| 1.7e-3 (base) and 4.4e-3 (with an adapter) on logits |x| <= 19 (2.9e-3 / 6.1e-3 on an
 * earlier draw of the replicas); the builder graphs (precomputed cos/sin cache, fused GroupQueryAttention)
 * 2.6e-5. Consistent with the one difference measured in isolation: SwiftShader's WGSL sin/cos err by up
 * to 1.9e-4 absolute (wasm: 3e-8; its exp is fine, 8e-7 relative), the Optimum graph evaluates rotary cos/sin
 * in-graph while the builder graphs read a precomputed cache. 1e-2 + 1e-3·|x| keeps >2x headroom; the
 * adapter's effect on these logits is up to 17.6 (RMS 4.9), a wrong packed-qkv split or scale moves them by > 1.
 */
export const WEBGPU_REPLICA: Tolerance = { atol: 1e-2, rtol: 1e-3 };
/**
 * The decoder-fused graph (src/model/fuse-decoder.ts) vs the unfused one on onnxruntime-web's WebGPU EP
 * (SwiftShader), default model. Same math in another order (one-pass RMSNorm reductions, Einsum over the
 * kv-head cache), and above all RotaryEmbedding reads cos/sin caches computed exactly at load where the
 * unfused graph evaluates Cos/Sin in WGSL, which SwiftShader approximates to ~1.9e-4 (see WEBGPU_REPLICA;
 * consistently, the fused Optimum replicas come within 7.6e-6 of the PyTorch oracle, the unfused 1.7e-3 from it).
 * Observed (tests/browser/fuse-webgpu.test.ts, engine-fuse.test.ts print it): max |diff| 3.6e-4–3.7e-4 on
 * logits |x| <= ~15, einsum and matmul forms, with and without a random adapter. WEBGPU_VS_WASM's bound
 * (same transcendental causes), 2e-3 + 1e-3·|x|, keeps >5x headroom; the random rank-8 adapter those tests
 * apply moves the same logits by 0.87, so a fused graph that dropped or misplaced it would fail.
 */
export const FUSED_WEBGPU: Tolerance = { atol: 2e-3, rtol: 1e-3 };
/** Two runs of the same fp32 graph on different paths (KV cache vs full forward; injected rank 0 vs base). */
export const SAME_GRAPH: Tolerance = { atol: 1e-5, rtol: 1e-5 };

/**
 * Hand-made tiny LoRA math (dot products of <= 3 terms of O(1) values, float32 feeds vs a float64
 * reference): each result carries a few float32 roundings (~6e-8 relative each), so 1e-5 relative is
 * >100x headroom, and a wrong scale, transpose or padding is off by O(1).
 */
export const FP32_TINY_DOT: Tolerance = { atol: 1e-6, rtol: 1e-5 };

/**
 * onnx/model_q4.onnx (4-bit block-32 weights, fp32 activations) vs fp32 golden logits, over all positions
 * of the golden sequences. Element-wise bounds do not fit quantization error (it is a per-model, not
 * per-op, perturbation), so two aggregate bounds: RMS(q4 - fp32) / RMS(fp32 - row mean) and the top-1
 * agreement rate. Measured on a mid-training checkpoint of the default model (symmetric block-32
 * quantizer, src/model/quantize.ts): relative RMS 0.029, top-1 agreement 0.93 over 56 positions (the
 * misses are near-ties); golden.test.ts prints the measurement. The bounds leave >3x / 2x-the-misses
 * headroom while still catching broken dequantization (relative error ~1, agreement ~chance).
 */
export const Q4_LOGITS_RMS = 0.1;
export const Q4_TOP1_AGREEMENT = 0.8;

export interface LogitAgreement {
  /** RMS(actual - expected) / RMS(expected - its row mean) over all rows. */
  relRms: number;
  /** Fraction of rows whose argmax (lowest index on ties) is the same. */
  top1: number;
  rows: number;
}

/** The two aggregate q4 measures (see Q4_LOGITS_RMS) over rows of `vocab` logits. */
export function logitAgreement(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  vocab: number,
): LogitAgreement {
  const rows = Math.floor(expected.length / vocab);
  let se = 0;
  let sv = 0;
  let agree = 0;
  for (let r = 0; r < rows; r++) {
    const o = r * vocab;
    let mean = 0;
    let ia = 0;
    let ie = 0;
    for (let v = 0; v < vocab; v++) {
      mean += expected[o + v]!;
      if (actual[o + v]! > actual[o + ia]!) ia = v;
      if (expected[o + v]! > expected[o + ie]!) ie = v;
    }
    mean /= vocab;
    for (let v = 0; v < vocab; v++) {
      se += (actual[o + v]! - expected[o + v]!) ** 2;
      sv += (expected[o + v]! - mean) ** 2;
    }
    if (ia === ie) agree++;
  }
  return { relRms: Math.sqrt(se / sv), top1: agree / rows, rows };
}

/**
 * q4 logits against fp32 logits (rows of `vocab`), within Q4_LOGITS_RMS and Q4_TOP1_AGREEMENT.
 * Returns the measurement so the caller can print it.
 */
export function expectQ4Logits(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  vocab: number,
  what = 'q4 logits',
): LogitAgreement {
  expect(actual.length, `${what}: length`).toBe(expected.length);
  expect(expected.length % vocab, `${what}: whole rows of ${vocab}`).toBe(0);
  expect(expected.length, `${what}: rows`).toBeGreaterThan(0);
  const m = logitAgreement(actual, expected, vocab);
  expect(m.relRms, `${what}: RMS(q4 - fp32) / RMS(fp32 - row mean)`).toBeLessThanOrEqual(Q4_LOGITS_RMS);
  expect(m.top1, `${what}: top-1 agreement rate over ${m.rows} rows`).toBeGreaterThanOrEqual(
    Q4_TOP1_AGREEMENT,
  );
  return m;
}

export function maxAbsDiff(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < expected.length; i++) m = Math.max(m, Math.abs(actual[i]! - expected[i]!));
  return m;
}

export function expectClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  { atol, rtol }: Tolerance,
  what = 'values',
): void {
  expect(actual.length, `${what}: length`).toBe(expected.length);
  const atolAt = typeof atol === 'number' ? () => atol : (i: number) => atol[i]!;
  if (typeof atol !== 'number') expect(atol.length, `${what}: per-element atol length`).toBe(expected.length);
  let bad = 0;
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    const bound = atolAt(i) + rtol * Math.abs(e);
    const d = Math.abs(a - e);
    if (!(d <= bound)) {
      bad++;
      const excess = Number.isNaN(d) ? Number.POSITIVE_INFINITY : d - bound;
      if (excess > worstExcess || worst < 0) {
        worst = i;
        worstExcess = excess;
      }
    }
  }
  if (bad > 0) {
    const a = actual[worst]!;
    const e = expected[worst]!;
    expect.fail(
      `${what}: ${bad}/${expected.length} elements outside atol=${atolAt(worst)} rtol=${rtol}; worst at [${worst}]: ` +
        `actual ${a}, expected ${e}, |diff| ${Math.abs(a - e)}`,
    );
  }
}
