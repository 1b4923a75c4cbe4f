/**
 * The one tolerance helper every numerical test uses: |actual - expected| <= atol + rtol * |expected|,
 * element-wise, like numpy.allclose. On failure it reports the worst element, its index, and how many
 * elements broke the bound, so a failing golden test says where and by how much.
 *
 * Tolerances used across the suite (justified where each constant is defined):
 */
import { expect } from 'vitest';

export interface Tolerance {
  atol: number;
  rtol: number;
}

/**
 * fp32 ONNX (onnxruntime-web, wasm or WebGPU) vs PyTorch fp32 golden logits: both compute in fp32 with
 * different summation orders over at most ~1k-term dot products; observed differences are ~1e-5 on
 * logits of magnitude ~10, so 1e-4 absolute plus 1e-4 relative leaves 10x headroom while still catching
 * any real error (a wrong transpose or scale moves logits by >1e-1).
 */
export const FP32_LOGITS: Tolerance = { atol: 1e-4, rtol: 1e-4 };
/** Two runs of the same fp32 graph on different paths (KV cache vs full forward; injected rank 0 vs base). */
export const SAME_GRAPH: Tolerance = { atol: 1e-5, rtol: 1e-5 };

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
  let bad = 0;
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    const bound = atol + rtol * Math.abs(e);
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
      `${what}: ${bad}/${expected.length} elements outside atol=${atol} rtol=${rtol}; worst at [${worst}]: ` +
        `actual ${a}, expected ${e}, |diff| ${Math.abs(a - e)}`,
    );
  }
}
