/**
 * The CPU trainer's fast path (src/train/wasm/: emitted WebAssembly SIMD GEMM, WasmLinear) against its
 * oracle, the plain-TS reference (ref/linear.ts, f64 sums): the LEB128 encoder, the GEMM against f64 sums,
 * every product of a LoRA linear's forward and backward on odd shapes (fp32 and 4-bit with zero points,
 * rank 1/3/16, with and without an input gradient), the wasm attention against ref/attention.ts, and
 * the whole default model (q4, peft-adapter) 'wasm' vs 'ref'. The PyTorch-fixture and trajectory tests
 * (model.test.ts, cpu-backend.test.ts) run on the default ('wasm') path as well; the finite-difference
 * check needs f64 and so the reference, and tiny-model.test.ts compares the f32 ('wasm') model to it.
 */
import { describe, expect, test } from 'vitest';
import { CpuLoraModel, type FrozenWeights } from '../../../src/train/cpu-model.ts';
import { attentionBackward, attentionForward } from '../../../src/train/ref/attention.ts';
import {
  type FrozenLinear,
  type LoraBranch,
  linearLoraBackward,
  linearLoraForward,
} from '../../../src/train/ref/linear.ts';
import { attentionBackwardWasm, attentionForwardWasm } from '../../../src/train/wasm/attention.ts';
import { sleb, uleb } from '../../../src/train/wasm/emit.ts';
import { gemmModule, gemmModuleBytes, WasmGemm } from '../../../src/train/wasm/gemm.ts';
import { WASM_WEIGHT_BUDGET, WasmLinear, wasmWeightBytes } from '../../../src/train/wasm/linear.ts';
import { expectClose, type Tolerance } from '../../helpers/expect-close.ts';
import { defaultWeights, peftAdapterModules, rand, relErr } from './helpers.ts';

/**
 * f32 sums (the GEMM) vs f64 sums (the reference) of ≤ 100-term dot products of O(1) values: each
 * rounding is ≤ 6e-8 relative to the running sum, so |diff| ≲ 1e-5 on sums of magnitude ~10. Measured
 * max |diff| ≤ 3.6e-7 (printed), so 2e-5 has >50x headroom. A wrong stride, transpose or padding is O(1).
 */
const F32_SUMS: Tolerance = { atol: 2e-5, rtol: 1e-5 };
/**
 * Whole model, wasm vs ref: f32 sums through 6 layers. Measured: loss |diff| 1.6e-7, worst per-tensor
 * gradient relative error 1.7e-6 (printed). Bounds 1e-5 and 1e-4: the same 1000x
 * headroom kept against the float64 PyTorch fixture (model.test.ts: 1e-3).
 */
const MODEL_LOSS_ABS = 1e-5;
const MODEL_GRAD_REL = 1e-4;

const f32 = (n: number, seed: number, s = 1) => Float32Array.from(rand(n, seed, s));

describe('emitter', () => {
  test('LEB128 encodings (the spec examples) and a module that validates', () => {
    expect(uleb(624485)).toEqual([0xe5, 0x8e, 0x26]);
    expect(uleb(0)).toEqual([0]);
    expect(sleb(-123456)).toEqual([0xc0, 0xbb, 0x78]);
    expect(sleb(-1)).toEqual([0x7f]);
    expect(sleb(64)).toEqual([0xc0, 0x00]);
    expect(WebAssembly.validate(gemmModuleBytes(false))).toBe(true);
    expect(gemmModule()).not.toBeNull();
  });
});

describe('gemm', () => {
  for (const acc of [false, true]) {
    test(`C (12, 24) ${acc ? '+=' : '='} A (12, 37) · B (37, 24), strided, vs f64 sums`, () => {
      const g = new WasmGemm();
      const [M, N, K, lda, ldb, ldc] = [12, 24, 37, 41, 32, 40];
      const pa = g.alloc(M * lda);
      const pb = g.alloc(K * ldb);
      const pc = g.alloc(M * ldc);
      g.f32(pa, M * lda).set(f32(M * lda, 1));
      g.f32(pb, K * ldb).set(f32(K * ldb, 2));
      g.f32(pc, M * ldc).set(f32(M * ldc, 3));
      const a = g.f32(pa, M * lda).slice();
      const b = g.f32(pb, K * ldb).slice();
      const c0 = g.f32(pc, M * ldc).slice();
      g.gemm(pa, pb, pc, M, N, K, lda, ldb, ldc, acc);
      const got = g.f32(pc, M * ldc);
      const want = Float64Array.from(c0);
      for (let i = 0; i < M; i++)
        for (let j = 0; j < N; j++) {
          let s = acc ? c0[i * ldc + j]! : 0;
          for (let k = 0; k < K; k++) s += a[i * lda + k]! * b[k * ldb + j]!;
          want[i * ldc + j] = s;
        }
      expectClose(got, want, F32_SUMS, 'C'); // columns N..ldc keep their old values
    });
  }
});

function q4Linear(K: number, O: number, seed: number): FrozenLinear {
  const bs = 16;
  const nb = Math.ceil(K / bs);
  const bytes = f32(O * nb * (bs / 2) + O * Math.ceil(nb / 2), seed);
  const b = (x: number) => Math.floor((x + 1) * 127.99);
  return {
    kind: 'q4',
    K,
    O,
    blockSize: bs,
    packed: Uint8Array.from(bytes.subarray(0, O * nb * (bs / 2)), b),
    scales: f32(O * nb, seed + 1, 0.05),
    zeroPoints: Uint8Array.from(bytes.subarray(O * nb * (bs / 2)), b),
  };
}

describe('WasmLinear vs ref/linear.ts', () => {
  const cases = [
    { kind: 'f32', K: 37, O: 13, M: 7, R: 3, dinp: true },
    { kind: 'f32', K: 64, O: 24, M: 64, R: 16, dinp: true },
    { kind: 'q4', K: 40, O: 9, M: 5, R: 1, dinp: true },
    { kind: 'q4', K: 48, O: 20, M: 11, R: 0, dinp: true },
    { kind: 'f32', K: 30, O: 17, M: 9, R: 2, dinp: false },
  ] as const;
  for (const c of cases) {
    test(`${c.kind} K ${c.K} O ${c.O} M ${c.M} rank ${c.R}${c.dinp ? '' : ', no dinp'}: forward, xa, dinp, dA, dB`, () => {
      const { K, O, M, R } = c;
      const w: FrozenLinear =
        c.kind === 'f32' ? { kind: 'f32', K, O, w: f32(O * K, 10, 1 / Math.sqrt(K)) } : q4Linear(K, O, 10);
      const branch = (): LoraBranch | null =>
        R
          ? {
              R,
              scale: 2 / R,
              A: f32(R * K, 11, 0.3),
              B: f32(O * R, 12, 0.3),
              dA: f32(R * K, 13),
              dB: f32(O * R, 14),
            }
          : null;
      const [lw, lr] = [branch(), branch()];
      const inp = f32(M * K, 15);
      const dout = f32(M * O, 16);
      const wl = new WasmLinear();
      const out = [new Float32Array(M * O), new Float32Array(M * O)];
      const xa = [R ? new Float32Array(M * R) : null, R ? new Float32Array(M * R) : null];
      wl.forward(out[0]!, xa[0]!, inp, w, lw, M);
      linearLoraForward(out[1]!, xa[1]!, inp, w, lr, M);
      expectClose(out[0]!, out[1]!, F32_SUMS, 'out');
      if (R) expectClose(xa[0]!, xa[1]!, F32_SUMS, 'xa');
      const dinp = c.dinp ? [f32(M * K, 17), f32(M * K, 17)] : [null, null];
      wl.backward(dinp[0]!, dout, xa[1]!, inp, w, lw, M);
      linearLoraBackward(dinp[1]!, dout, xa[1]!, inp, w, lr, M);
      if (c.dinp) expectClose(dinp[0]!, dinp[1]!, F32_SUMS, 'dinp');
      const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) =>
        Array.from(a).reduce((m, x, i) => Math.max(m, Math.abs(x - b[i]!)), 0);
      console.log(
        `max |diff| out ${maxDiff(out[0]!, out[1]!).toExponential(1)}, dinp ${c.dinp ? maxDiff(dinp[0]!, dinp[1]!).toExponential(1) : '-'}, dA ${lw && lr ? maxDiff(lw.dA!, lr.dA!).toExponential(1) : '-'}`,
      );
      if (lw && lr) {
        expectClose(lw.dA!, lr.dA!, F32_SUMS, 'dA');
        expectClose(lw.dB!, lr.dB!, F32_SUMS, 'dB');
      }
      // Scratch is released: only the resident (padded) weight stays.
      expect(wl.bytes).toBe(16 + ((O + 3) & ~3) * ((K + 7) & ~7) * 4);
    });
  }
});

describe('wasm attention vs ref/attention.ts', () => {
  for (const c of [
    { B: 2, T: 5, H: 4, Hkv: 2, D: 8, mask: true }, // T not a multiple of the tiles; a fully masked query
    { B: 1, T: 32, H: 8, Hkv: 4, D: 32, mask: false },
  ]) {
    test(`B ${c.B} T ${c.T} H ${c.H}/${c.Hkv} D ${c.D}${c.mask ? ', key mask' : ''}: out, probabilities, dq, dk, dv`, () => {
      const { B, T, H, Hkv, D } = c;
      const N = B * T;
      const q = f32(N * H * D, 20);
      const k = f32(N * Hkv * D, 21);
      const v = f32(N * Hkv * D, 22);
      const dout = f32(N * H * D, 23);
      // Row 0 of batch 0 sees only key 0, which is masked: that query has no visible key.
      const mask = c.mask ? Array.from({ length: N }, (_, i) => (i === 0 || i === 3 ? 0 : 1)) : null;
      const g = new WasmGemm();
      const got = { out: new Float32Array(N * H * D), att: new Float32Array(B * H * T * T) };
      const want = { out: new Float32Array(N * H * D), att: new Float32Array(B * H * T * T) };
      attentionForwardWasm(g, got.out, got.att, q, k, v, mask, B, T, H, Hkv, D);
      attentionForward(want.out, want.att, q, k, v, mask, B, T, H, Hkv, D);
      expectClose(got.att, want.att, F32_SUMS, 'probabilities');
      expectClose(got.out, want.out, F32_SUMS, 'out');
      const gd = [N * H * D, N * Hkv * D, N * Hkv * D].map((n) => new Float32Array(n).fill(7));
      const wd = [N * H * D, N * Hkv * D, N * Hkv * D].map((n) => new Float32Array(n));
      attentionBackwardWasm(g, gd[0]!, gd[1]!, gd[2]!, dout, want.att, q, k, v, B, T, H, Hkv, D);
      attentionBackward(wd[0]!, wd[1]!, wd[2]!, dout, want.att, q, k, v, B, T, H, Hkv, D);
      for (const [i, name] of ['dq', 'dk', 'dv'].entries()) expectClose(gd[i]!, wd[i]!, F32_SUMS, name);
      expect(g.mark()).toBe(16); // scratch released
    });
  }
});

describe('CpuLoraModel: wasm kernels vs the reference', () => {
  test("default model q4 + peft-adapter: loss and every LoRA gradient, 'wasm' vs 'ref'", () => {
    const w = defaultWeights('q4');
    const tokens = Array.from({ length: 64 }, (_, i) => (i * 37 + 11) % w.config.V);
    const run = (kernels: 'wasm' | 'ref') => {
      const mods = peftAdapterModules(w);
      const model = new CpuLoraModel(w, mods, { kernels });
      expect(model.kernels).toBe(kernels);
      const t0 = performance.now();
      const loss = model.forward({ B: 2, T: 32, tokens });
      model.zeroGrad();
      model.backward();
      return { loss, mods, ms: performance.now() - t0 };
    };
    const ref = run('ref');
    const fast = run('wasm');
    let worst = 0;
    fast.mods.forEach((m, i) => {
      const r = ref.mods[i]!.branch;
      worst = Math.max(worst, relErr(m.branch.dA!, r.dA!), relErr(m.branch.dB!, r.dB!));
    });
    console.log(
      `forward+backward ref ${ref.ms.toFixed(0)} ms, wasm ${fast.ms.toFixed(0)} ms (first call: dequantizes); loss |diff| ${Math.abs(fast.loss - ref.loss).toExponential(2)}; worst gradient rel err ${worst.toExponential(2)}`,
    );
    expectClose([fast.loss], [ref.loss], { atol: MODEL_LOSS_ABS, rtol: 0 }, 'loss');
    expect(worst).toBeLessThanOrEqual(MODEL_GRAD_REL);
  });

  test("f64 activations always use the reference; kernels: 'ref' is honoured", () => {
    const w = defaultWeights('q4');
    expect(new CpuLoraModel(w, [], { f64: true }).kernels).toBe('ref');
    expect(new CpuLoraModel(w, [], { kernels: 'ref' }).kernels).toBe('ref');
    expect(new CpuLoraModel(w, []).kernels).toBe('wasm');
  });

  test('the f32 weight copy is counted; a model whose copy would exceed WASM_WEIGHT_BUDGET uses the reference', () => {
    const w = defaultWeights('q4');
    // 42 projections (all dims multiples of 8) + the tied lm_head (V 1024 × C 256), 4 bytes each.
    expect(wasmWeightBytes(w)).toBe((6 * (2 * 256 * 256 + 2 * 128 * 256 + 3 * 704 * 256) + 1024 * 256) * 4);
    const lmHead: FrozenLinear = { kind: 'f32', K: 1024, O: 2 ** 18 + 1, w: new Float32Array(0) };
    const huge: FrozenWeights = { ...w, layers: [], lmHead };
    expect(wasmWeightBytes(huge)).toBeGreaterThan(WASM_WEIGHT_BUDGET);
    expect(new CpuLoraModel(huge, []).kernels).toBe('ref');
  });
});
