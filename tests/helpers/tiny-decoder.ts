/**
 * Test material shared by the Node and the browser training tests (no Node-only imports here): a
 * deterministic random source, the relative error ‖a − e‖/‖e‖ the gradient checks use, and a tiny random
 * decoder — 2 layers, C 16, GQA 4/2 heads, vocab 32, an untied lm_head and a 4-bit gate_proj with zero
 * points in layer 1 (the dequant-on-the-fly path) — built the same way for the CPU finite-difference check
 * and the GPU-vs-CPU checks.
 */
import { quantizeBlock4 } from '../../src/model/quantize.ts';
import { MODULE_ORDER, type ModuleName } from '../../src/model/targets.ts';
import type { DecoderConfig, FrozenWeights } from '../../src/train/cpu-model.ts';
import type { FrozenLinear } from '../../src/train/ref/linear.ts';

/** Deterministic uniform values in [-scale, scale) as float64 (xorshift32). */
export function rand(n: number, seed: number, scale = 1): Float64Array {
  const out = new Float64Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 2 ** 32 - 0.5) * 2 * scale;
  }
  return out;
}

/** ‖a − e‖₂ / ‖e‖₂. */
export function relErr(a: ArrayLike<number>, e: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < e.length; i++) {
    num += (a[i]! - e[i]!) ** 2;
    den += e[i]! ** 2;
  }
  return Math.sqrt(num / den);
}

export const TINY: DecoderConfig = {
  V: 32,
  C: 16,
  I: 24,
  L: 2,
  H: 4,
  Hkv: 2,
  D: 4,
  eps: 1e-5,
  ropeTheta: 10000,
};

/** The tiny decoder's frozen weights (float32, seeded: the same every call). */
export function tinyWeights(): FrozenWeights {
  const { V, C, I, H, Hkv, D } = TINY;
  let seed = 100;
  const f = (n: number, scale: number) => Float32Array.from(rand(n, seed++, scale));
  const lin = (K: number, O: number): FrozenLinear => ({ kind: 'f32', K, O, w: f(O * K, 1 / Math.sqrt(K)) });
  const shapes: Record<ModuleName, [number, number]> = {
    q_proj: [C, H * D],
    k_proj: [C, Hkv * D],
    v_proj: [C, Hkv * D],
    o_proj: [H * D, C],
    gate_proj: [C, I],
    up_proj: [C, I],
    down_proj: [I, C],
  };
  const layers = [0, 1].map((l) => {
    const proj = Object.fromEntries(MODULE_ORDER.map((m) => [m, lin(...shapes[m])])) as Record<
      ModuleName,
      FrozenLinear
    >;
    if (l === 1) {
      const q = quantizeBlock4(f(C * I, 0.3), C, I, { blockSize: 16, zeroPoints: true });
      proj.gate_proj = {
        kind: 'q4',
        K: C,
        O: I,
        blockSize: 16,
        packed: q.packed,
        scales: q.scales,
        zeroPoints: q.zeroPoints!,
      };
    }
    return { inputNorm: f(C, 0.5).map((x) => 1 + x), postNorm: f(C, 0.5).map((x) => 1 + x), proj };
  });
  return {
    config: TINY,
    embed: f(V * C, 1),
    layers,
    finalNorm: f(C, 0.5).map((x) => 1 + x),
    lmHead: lin(C, V),
    tied: false,
  };
}
