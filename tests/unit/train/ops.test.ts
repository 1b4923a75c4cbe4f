/**
 * Every src/train/ref op's backward against central finite differences of its forward, in float64 on
 * small random inputs, with the scalar L = Σ out·G for a fixed random G (so dL/dout = G). Also the
 * gradient contracts (+= vs =) and the q4 row dequantization against src/model/quantize.ts.
 */
import { describe, expect, test } from 'vitest';
import { dequantizeMatMulNBits, quantizeBlock4 } from '../../../src/model/quantize.ts';
import { attentionBackward, attentionForward } from '../../../src/train/ref/attention.ts';
import { crossEntropyBackward, crossEntropyForward } from '../../../src/train/ref/crossentropy.ts';
import { embeddingBackward, embeddingForward } from '../../../src/train/ref/embedding.ts';
import {
  type FrozenLinear,
  type LoraBranch,
  linearLoraBackward,
  linearLoraForward,
  weightRow,
} from '../../../src/train/ref/linear.ts';
import { rmsnormBackward, rmsnormForward } from '../../../src/train/ref/rmsnorm.ts';
import { ropeBackward, ropeForward, ropeTables } from '../../../src/train/ref/rope.ts';
import { swigluBackward, swigluForward } from '../../../src/train/ref/swiglu.ts';
import { expectClose, type Tolerance } from '../../helpers/expect-close.ts';
import { dot, finiteDiff, rand } from './helpers.ts';

/**
 * Central differences in f64 with h = 1e-5 on O(1) smooth functions: truncation error ~h²·f''' ≈ 1e-10,
 * rounding ~1e-16/h ≈ 1e-11, both far below 1e-7 absolute + 1e-6 relative; a wrong sign, factor or
 * index gives O(1e-2..1) errors.
 */
const FD: Tolerance = { atol: 1e-7, rtol: 1e-6 };

describe('embedding', () => {
  test('backward = FD of Σ out·G w.r.t. the table; += contract', () => {
    const [N, C, V] = [5, 3, 4];
    const tokens = [1, 3, 1, 0, 2];
    const wte = rand(V * C, 1);
    const G = rand(N * C, 2);
    const out = new Float64Array(N * C);
    const loss = () => {
      embeddingForward(out, tokens, wte, N, C);
      return dot(out, G);
    };
    const dwte = new Float64Array(V * C).fill(0.5);
    embeddingBackward(dwte, G, tokens, N, C);
    expectClose(
      dwte.map((x) => x - 0.5),
      finiteDiff(wte, loss),
      FD,
      'dwte',
    );
  });
});

describe('rmsnorm', () => {
  test('dinp and dweight = FD; both accumulate (+=)', () => {
    const [N, C, eps] = [3, 8, 1e-5];
    const inp = rand(N * C, 3, 2);
    const weight = rand(C, 4);
    const G = rand(N * C, 5);
    const out = new Float64Array(N * C);
    const rstd = new Float64Array(N);
    const loss = () => {
      rmsnormForward(out, rstd, inp, weight, N, C, eps);
      return dot(out, G);
    };
    loss();
    const dinp = new Float64Array(N * C).fill(1);
    const dw = new Float64Array(C).fill(-1);
    rmsnormBackward(dinp, dw, G, inp, weight, rstd, N, C);
    expectClose(
      dinp.map((x) => x - 1),
      finiteDiff(inp, loss),
      FD,
      'dinp',
    );
    expectClose(
      dw.map((x) => x + 1),
      finiteDiff(weight, loss),
      FD,
      'dweight',
    );
  });
});

describe('rope', () => {
  test('tables match the rotate-half definition; backward = FD; in-place works', () => {
    const [N, nh, D, theta] = [4, 2, 8, 10000];
    const cos = new Float64Array(N * D);
    const sin = new Float64Array(N * D);
    ropeTables(cos, sin, [0, 1, 2, 7], N, D, theta);
    // position 7, pair i = 1: angle 7·θ^(−2/8)
    expect(cos[3 * D + 1]).toBeCloseTo(Math.cos(7 * Math.fround(10000 ** -0.25)), 12);
    expect(sin[3 * D + 1 + D / 2]).toBe(sin[3 * D + 1]);
    const inp = rand(N * nh * D, 6);
    const G = rand(N * nh * D, 7);
    const out = new Float64Array(N * nh * D);
    const loss = () => {
      ropeForward(out, inp, cos, sin, N, nh, D);
      return dot(out, G);
    };
    const dinp = new Float64Array(N * nh * D);
    ropeBackward(dinp, G, cos, sin, N, nh, D);
    expectClose(dinp, finiteDiff(inp, loss), FD, 'dinp');
    const inPlace = Float64Array.from(G);
    ropeBackward(inPlace, inPlace, cos, sin, N, nh, D);
    expectClose(inPlace, dinp, { atol: 0, rtol: 0 }, 'in-place backward');
  });
});

describe('attention (causal, grouped-query)', () => {
  for (const masked of [false, true]) {
    test(`dq, dk, dv = FD (H 4, Hkv 2${masked ? ', padded keys' : ''})`, () => {
      const [B, T, H, Hkv, D] = [2, 5, 4, 2, 3];
      const N = B * T;
      const q = rand(N * H * D, 8);
      const k = rand(N * Hkv * D, 9);
      const v = rand(N * Hkv * D, 10);
      const G = rand(N * H * D, 11);
      const keyMask = masked ? [1, 1, 1, 0, 0, 1, 1, 1, 1, 1] : null;
      const out = new Float64Array(N * H * D);
      const att = new Float64Array(B * H * T * T);
      const loss = () => {
        attentionForward(out, att, q, k, v, keyMask, B, T, H, Hkv, D);
        return dot(out, G);
      };
      loss();
      // Causality: the first query of each row attends only to itself.
      expect(att[0]).toBeCloseTo(1, 14);
      const dq = new Float64Array(N * H * D).fill(9);
      const dk = new Float64Array(N * Hkv * D).fill(9);
      const dv = new Float64Array(N * Hkv * D).fill(9);
      attentionBackward(dq, dk, dv, G, att, q, k, v, B, T, H, Hkv, D);
      expectClose(dq, finiteDiff(q, loss), FD, 'dq');
      expectClose(dk, finiteDiff(k, loss), FD, 'dk');
      expectClose(dv, finiteDiff(v, loss), FD, 'dv');
    });
  }
});

describe('swiglu', () => {
  test('dgate, dup = FD (assigned)', () => {
    const n = 12;
    const gate = rand(n, 12, 3);
    const up = rand(n, 13);
    const G = rand(n, 14);
    const out = new Float64Array(n);
    const loss = () => {
      swigluForward(out, gate, up, n);
      return dot(out, G);
    };
    const dg = new Float64Array(n).fill(5);
    const du = new Float64Array(n).fill(5);
    swigluBackward(dg, du, G, gate, up, n);
    expectClose(dg, finiteDiff(gate, loss), FD, 'dgate');
    expectClose(du, finiteDiff(up, loss), FD, 'dup');
  });
});

describe('cross-entropy', () => {
  test('losses are −log softmax; dlogits = FD of the weighted sum', () => {
    const [N, V] = [4, 6];
    const logits = rand(N * V, 15, 4);
    const targets = [0, 5, 2, 2];
    const weights = [0.5, 0, 0.25, 0.25];
    const losses = new Float64Array(N);
    const loss = () => {
      crossEntropyForward(losses, logits, targets, N, V);
      return dot(losses, weights);
    };
    loss();
    let z = 0;
    for (let j = 0; j < V; j++) z += Math.exp(logits[V + j]!);
    expect(losses[1]).toBeCloseTo(Math.log(z) - logits[V + 5]!, 12);
    const dl = new Float64Array(N * V).fill(3);
    crossEntropyBackward(dl, logits, targets, weights, N, V);
    expectClose(dl, finiteDiff(logits, loss), FD, 'dlogits');
  });
});

function q4Linear(K: number, O: number, seed: number, zeroPoints: boolean): FrozenLinear {
  const wKO = Float32Array.from(rand(K * O, seed, 0.5)); // (K, O) MatMul layout
  const q = quantizeBlock4(wKO, K, O, { blockSize: 16, zeroPoints });
  return {
    kind: 'q4',
    K,
    O,
    blockSize: 16,
    packed: q.packed,
    scales: q.scales,
    zeroPoints: q.zeroPoints ?? null,
  };
}

describe('linear with a LoRA branch', () => {
  const [M, K, O, R] = [3, 40, 5, 2]; // K = 40: the last 16-block is padded
  const cases: [string, FrozenLinear][] = [
    ['fp32 W', { kind: 'f32', K, O, w: Float32Array.from(rand(O * K, 16, 0.5)) }],
    ['q4 W (symmetric, padded block)', q4Linear(K, O, 17, false)],
    ['q4 W (zero points)', q4Linear(K, O, 18, true)],
  ];
  for (const [name, w] of cases) {
    test(`${name}: dinp, dA, dB = FD; all accumulate (+=)`, () => {
      const inp = rand(M * K, 19);
      const lora: LoraBranch = { R, scale: 1.5, A: rand(R * K, 20), B: rand(O * R, 21), dA: null, dB: null };
      const G = rand(M * O, 22);
      const out = new Float64Array(M * O);
      const xa = new Float64Array(M * R);
      const loss = () => {
        linearLoraForward(out, xa, inp, w, lora, M);
        return dot(out, G);
      };
      loss();
      lora.dA = new Float64Array(R * K).fill(2);
      lora.dB = new Float64Array(O * R).fill(2);
      const dinp = new Float64Array(M * K).fill(2);
      linearLoraBackward(dinp, G, xa, inp, w, lora, M);
      expectClose(
        dinp.map((x) => x - 2),
        finiteDiff(inp, loss),
        FD,
        'dinp',
      );
      expectClose(
        lora.dA.map((x) => x - 2),
        finiteDiff(lora.A, loss),
        FD,
        'dA',
      );
      expectClose(
        lora.dB.map((x) => x - 2),
        finiteDiff(lora.B, loss),
        FD,
        'dB',
      );
    });
  }

  test('q4 weightRow equals dequantizeMatMulNBits exactly (both layouts)', () => {
    for (const zp of [false, true]) {
      const w = q4Linear(K, O, 23, zp);
      if (w.kind !== 'q4') throw new Error('q4 expected');
      const full = dequantizeMatMulNBits(w.packed, w.scales, w.zeroPoints ?? undefined, K, O, 16); // (K, O)
      const scratch = new Float32Array(K);
      for (let o = 0; o < O; o++) {
        const row = weightRow(scratch, w, o);
        const want = Float32Array.from({ length: K }, (_, k) => full[k * O + o]!);
        expectClose(row, want, { atol: 0, rtol: 0 }, `row ${o}, zero points ${zp}`);
      }
    }
  });
});
