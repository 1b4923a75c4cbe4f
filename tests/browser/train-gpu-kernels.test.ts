// The WebGPU training kernels added for the whole-model backend (shaders/embedding, rope, attention,
// swiglu, residual, crossentropy, matmul_lora, gradnorm, adamw, lora_feeds; forward and backward) against
// their plain-TypeScript references in src/train/ref and src/train/optim.ts, on WebGPU (SwiftShader
// here), tiny random shapes, dispatched through src/train/gpu-kernels.ts (the backend's own pipeline
// cache and layouts). Gradient contracts are checked by pre-filling outputs: `+=` outputs keep what was
// there, `=` outputs overwrite it. (RMSNorm and the 4-bit matmul are in train-kernels.test.ts.)
import { beforeAll, describe, expect, it } from 'vitest';
import { packF16Scaled, packG16, unpackF16Scaled, unpackG16, unpackMoments } from '../../src/train/f16.ts';
import {
  type Binding,
  GpuKernels,
  requestTrainDevice,
  type ShaderName,
  wg64,
} from '../../src/train/gpu-kernels.ts';
import { packLoraForGpu } from '../../src/train/gpu-layout.ts';
import { AdamW, clipGradNorm } from '../../src/train/optim.ts';
import { attentionBackward, attentionForward } from '../../src/train/ref/attention.ts';
import { crossEntropyBackward, crossEntropyForward } from '../../src/train/ref/crossentropy.ts';
import { embeddingForward } from '../../src/train/ref/embedding.ts';
import {
  type FrozenLinear,
  type LoraBranch,
  linearLoraBackward,
  linearLoraForward,
} from '../../src/train/ref/linear.ts';
import { ropeBackward, ropeForward, ropeTables } from '../../src/train/ref/rope.ts';
import { swigluBackward, swigluForward } from '../../src/train/ref/swiglu.ts';
import { expectClose, type Tolerance } from '../helpers/expect-close.ts';

/**
 * GPU f32 (f32 sums; SwiftShader's exp / sqrt / division within WGSL's few-ULP bounds) vs the TS
 * reference (f64 sums rounded once): dot products here have ≤ 40 O(1) terms, so differences are
 * ≤ ~40·6e-8 of the sum of |terms| (≈ 1e-5); 2e-5 + 1e-4·|x| leaves headroom while a wrong index, head
 * mapping, mask, transpose or scale is off by > 1e-2. The same bound as train-kernels.test.ts.
 */
const GPU_VS_REF: Tolerance = { atol: 2e-5, rtol: 1e-4 };
/**
 * Cross-entropy over V = 300 logits of magnitude ≤ 4: the f32 log-sum-exp carries ~V·6e-8 relative
 * rounding, 1e-5 on a loss of ~6; dlogits are probabilities ≤ 1 times weights ≤ 1. 5e-5 absolute keeps
 * headroom; a wrong target or weight is off by ≥ 1e-3.
 */
const CE_TOL: Tolerance = { atol: 5e-5, rtol: 1e-4 };
/**
 * AdamW after 3 steps vs optim.ts (f64 moments), lr 1e-2. The GPU carries the moments in packed f16
 * (adamw.wgsl): each stored m and sqrt(v) is rounded to
 * 2^-11 relative, so each update lr·m̂/(sqrt(v̂) + eps) (|m̂/sqrt(v̂)| ≲ 1) is off by ≲ 2·2^-11·lr = 1e-5
 * per step: 3 steps ≤ 3e-5, 5e-5 absolute. A wrong bias correction, weight decay or clip coefficient
 * still moves a parameter by ≥ 1e-3 (measured max |diff| 1.05e-5, printed). Moments: ≤ 3 roundings of 2^-11 relative to the largest moment of
 * the step, 2e-3 of the largest |m| (sqrt(v)) absolute plus 2e-3 relative.
 */
const ADAM_F16_TOL: Tolerance = { atol: 5e-5, rtol: 1e-5 };
/**
 * LoRA gradients are stored as g16 (src/train/f16.ts: 10 significant bits, round to nearest): the
 * pre-filled dA / dB are g16 values (the reference starts from the same decoded values) and the kernel's
 * sum is rounded once more, so on top of GPU_VS_REF each element is off by ≤ 2^-10 (9.8e-4) of its
 * magnitude; 1.1e-3 relative. A wrong index or scale is still off by > 1e-2.
 */
const G16_VS_REF: Tolerance = { atol: 2e-5, rtol: 1.1e-3 };
const g16 = (x: Float32Array) => unpackG16(packG16(x), x.length);

function rand(n: number, seed: number, scale = 1): Float32Array {
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

let k: GpuKernels;

beforeAll(async () => {
  k = new GpuKernels(await requestTrainDevice());
});

const up = (x: Float32Array | Uint32Array) => k.upload(x, 'test');

async function run(name: ShaderName, entries: [string, number][], bindings: Binding[]): Promise<void> {
  k.device.pushErrorScope('validation');
  const g = k.bindGroup(name, bindings);
  const enc = k.device.createCommandEncoder();
  k.encode(
    enc,
    entries.map(([e, x]) => k.cmd(name, e, g, x)),
  );
  k.device.queue.submit([enc.finish()]);
  const err = await k.device.popErrorScope();
  expect(err?.message ?? null, `${name}: WebGPU validation`).toBeNull();
}

describe('embedding, residual, swiglu', () => {
  it('embedding forward: rows of the table by token id', async () => {
    const [N, C, V] = [7, 12, 9];
    const wte = rand(V * C, 1);
    const tokens = Uint32Array.from([3, 0, 8, 3, 5, 1, 8]);
    const want = new Float32Array(N * C);
    embeddingForward(want, tokens, wte, N, C);
    const out = up(rand(N * C, 2)); // overwritten (=)
    await run('embedding', [['main', wg64(N * C)]], [out, up(tokens), up(wte), k.uniform([N, C], 'uu')]);
    expectClose(await k.read(out, N * C), want, { atol: 0, rtol: 0 }, 'embedding');
  });

  it('embedding forward from an f16 table (wf16): exactly the rows of the decoded table', async () => {
    const [N, C, V] = [7, 12, 9];
    const packed = packF16Scaled(rand(V * C, 1, 0.01)); // small values: the power-of-two scale matters
    expect(Math.log2(packed.inv)).toBe(-21); // absmax ≈ 0.01: 2^(15 − ceil(log2 0.01)) = 2^21
    const tokens = Uint32Array.from([3, 0, 8, 3, 5, 1, 8]);
    const want = new Float32Array(N * C);
    embeddingForward(want, tokens, unpackF16Scaled(packed.words, packed.inv, V * C), N, C);
    const out = up(rand(N * C, 2));
    const p = k.uniform([N, C, 1, packed.inv], 'uuuf');
    await run('embedding', [['main', wg64(N * C)]], [out, up(tokens), up(packed.words), p]);
    expectClose(await k.read(out, N * C), want, { atol: 0, rtol: 0 }, 'embedding f16');
  });

  it('residual: out += inp', async () => {
    const n = 100;
    const a = rand(n, 3);
    const b = rand(n, 4);
    const out = up(a);
    await run('residual', [['main', wg64(n)]], [out, up(b), k.uniform([n], 'u')]);
    expectClose(
      await k.read(out, n),
      a.map((x, i) => x + b[i]!),
      GPU_VS_REF,
      'residual',
    );
  });

  it('swiglu forward (h) and backward (dgate, dup =)', async () => {
    const n = 130;
    const gate = rand(n, 5, 4);
    const upv = rand(n, 6);
    const h = new Float32Array(n);
    swigluForward(h, gate, upv, n);
    const gH = up(rand(n, 7));
    await run('swiglu', [['main', wg64(n)]], [gH, up(gate), up(upv), k.uniform([n], 'u')]);
    expectClose(await k.read(gH, n), h, GPU_VS_REF, 'h');
    const dh = rand(n, 8);
    const dgate = new Float32Array(n);
    const dup = new Float32Array(n);
    swigluBackward(dgate, dup, dh, gate, upv, n);
    const gDg = up(rand(n, 9));
    const gDu = up(rand(n, 10));
    await run(
      'swiglu_backward',
      [['main', wg64(n)]],
      [gDg, gDu, up(dh), up(gate), up(upv), k.uniform([n], 'u')],
    );
    expectClose(await k.read(gDg, n), dgate, GPU_VS_REF, 'dgate');
    expectClose(await k.read(gDu, n), dup, GPU_VS_REF, 'dup');
  });
});

describe('rope / rope_backward vs ref/rope.ts (in place)', () => {
  it('N 6, 3 heads, D 8, positions with an offset row', async () => {
    const [N, nh, D] = [6, 3, 8];
    const cos = new Float32Array(N * D);
    const sin = new Float32Array(N * D);
    ropeTables(cos, sin, [0, 1, 2, 7, 8, 30], N, D, 10000);
    const x = rand(N * nh * D, 11);
    const want = new Float32Array(N * nh * D);
    ropeForward(want, x, cos, sin, N, nh, D);
    const gx = up(x);
    const [gc, gs] = [up(cos), up(sin)];
    await run('rope', [['main', wg64((N * nh * D) / 2)]], [gx, gc, gs, k.uniform([N, nh, D], 'uuu')]);
    expectClose(await k.read(gx, N * nh * D), want, GPU_VS_REF, 'rope');
    const g = rand(N * nh * D, 12);
    const dwant = new Float32Array(N * nh * D);
    ropeBackward(dwant, g, cos, sin, N, nh, D);
    const gg = up(g);
    await run(
      'rope_backward',
      [['main', wg64((N * nh * D) / 2)]],
      [gg, gc, gs, k.uniform([N, nh, D], 'uuu')],
    );
    expectClose(await k.read(gg, N * nh * D), dwant, GPU_VS_REF, 'rope backward');
  });
});

describe('attention / attention_backward vs ref/attention.ts (GQA, causal, key mask)', () => {
  for (const masked of [false, true]) {
    it(`B 2, T 5, H 4, Hkv 2, D 4, key mask ${masked}`, async () => {
      const [B, T, H, Hkv, D] = [2, 5, 4, 2, 4];
      const N = B * T;
      const q = rand(N * H * D, 13);
      const kk = rand(N * Hkv * D, 14);
      const v = rand(N * Hkv * D, 15);
      // Row 1: its first key is padding (query 0 sees nothing: zero output) and so is its last.
      const mask = masked ? Float32Array.from([1, 1, 1, 1, 1, 0, 1, 1, 1, 0]) : new Float32Array(N).fill(1);
      const out = new Float32Array(N * H * D);
      const att = new Float32Array(B * H * T * T);
      attentionForward(out, att, q, kk, v, masked ? mask : null, B, T, H, Hkv, D);
      const gOut = up(rand(N * H * D, 16));
      const gAtt = up(rand(B * H * T * T, 17)); // every element is (over)written
      const [gq, gk, gv] = [up(q), up(kk), up(v)];
      const p = k.uniform([B, T, H, Hkv, D, 1 / Math.sqrt(D)], 'uuuuuf');
      await run('attention', [['main', wg64(B * H * T)]], [gOut, gAtt, gq, gk, gv, up(mask), p]);
      expectClose(await k.read(gAtt, B * H * T * T), att, GPU_VS_REF, 'att');
      expectClose(await k.read(gOut, N * H * D), out, GPU_VS_REF, 'out');

      const dout = rand(N * H * D, 18);
      const dq = new Float32Array(N * H * D);
      const dk = new Float32Array(N * Hkv * D);
      const dv = new Float32Array(N * Hkv * D);
      attentionBackward(dq, dk, dv, dout, att, q, kk, v, B, T, H, Hkv, D);
      const KD = N * Hkv * D;
      const dvOff = Math.ceil(KD / k.alignFloats) * k.alignFloats;
      const gDq = up(rand(N * H * D, 19));
      const gDkv = up(rand(dvOff + KD, 20));
      const bp = k.uniform([B, T, H, Hkv, D, 1 / Math.sqrt(D), dvOff], 'uuuuufu');
      await run(
        'attention_backward',
        [
          ['dscores', wg64(B * H * T)],
          ['dkv_main', wg64(KD)],
        ],
        [gDq, gDkv, k.buffer(B * H * T * T, 'dsc'), up(dout), gAtt, gq, gk, gv, bp],
      );
      expectClose(await k.read(gDq, N * H * D), dq, GPU_VS_REF, 'dq');
      const dkv = await k.read(gDkv, dvOff + KD);
      expectClose(dkv.subarray(0, KD), dk, GPU_VS_REF, 'dk');
      expectClose(dkv.subarray(dvOff), dv, GPU_VS_REF, 'dv');
    });
  }
});

describe('crossentropy (losses, dlogits in place) vs ref/crossentropy.ts', () => {
  it('N 6, V 300, weights with zeros', async () => {
    const [N, V] = [6, 300];
    const logits = rand(N * V, 21, 4);
    const targets = Uint32Array.from([5, 299, 0, 17, 17, 100]);
    const weights = Float32Array.from([0.25, 0, 0.25, 0.5, 0, 0.125]);
    const losses = new Float64Array(N);
    crossEntropyForward(losses, logits, targets, N, V);
    const dlogits = new Float32Array(N * V);
    crossEntropyBackward(dlogits, logits, targets, weights, N, V);
    for (const grad of [0, 1]) {
      const gL = up(logits);
      const gLoss = up(rand(N, 22));
      await run(
        'crossentropy',
        [['main', N]],
        [gL, gLoss, up(targets), up(weights), k.uniform([N, V, grad], 'uuu')],
      );
      expectClose(await k.read(gLoss, N), losses, CE_TOL, `losses (grad ${grad})`);
      expectClose(
        await k.read(gL, N * V),
        grad ? dlogits : logits,
        CE_TOL,
        grad ? 'dlogits' : 'logits untouched',
      );
    }
  });
});

describe('matmul_lora(.wgsl, _backward.wgsl): fp32 base + LoRA vs ref/linear.ts', () => {
  for (const [R, f16] of [
    [3, false],
    [0, false],
    [3, true],
  ] as const) {
    it(`forward (out, xa) and backward (dinp, dA, dB +=), M 5, K 42, O 6 (not multiples of 4), R ${R}${f16 ? ', W as f16 pairs (wf16)' : ''}`, async () => {
      const [M, K, O, scale] = [5, 42, 6, 1.5];
      const w0 = rand(O * K, 23, 0.3);
      // wf16: W stored as f16 pairs at a power-of-two scale; the reference gets the decoded W.
      const pw = packF16Scaled(w0);
      const w: FrozenLinear = { kind: 'f32', K, O, w: f16 ? unpackF16Scaled(pw.words, pw.inv, O * K) : w0 };
      const inp = rand(M * K, 24);
      const lora: LoraBranch | null = R
        ? { R, scale, A: rand(R * K, 25, 0.3), B: rand(O * R, 26, 0.3), dA: null, dB: null }
        : null;
      const out = new Float32Array(M * O);
      const xa = new Float32Array(M * Math.max(R, 1));
      linearLoraForward(out, lora ? xa : null, inp, w, lora, M);
      const p = k.uniform([M, K, O, R, scale, f16 ? 1 : 0, f16 ? pw.inv : 0], 'uuuufuf');
      const gOut = up(rand(M * O, 27));
      const gXa = k.buffer(M * Math.max(R, 1), 'xa');
      const gInp = up(inp);
      const gW = up(f16 ? pw.words : w.w);
      const gLora = lora ? up(packLoraForGpu(lora)) : k.buffer(4, 'none');
      const fwd: [string, number][] = [['main', wg64(Math.ceil(M / 4) * Math.ceil(O / 4))]];
      if (R) fwd.unshift(['lora_xa', wg64(M * R)]);
      await run('matmul_lora', fwd, [gOut, gXa, gInp, gW, gLora, p]);
      expectClose(await k.read(gOut, M * O), out, GPU_VS_REF, 'out');
      if (R) expectClose(await k.read(gXa, M * R), xa.subarray(0, M * R), GPU_VS_REF, 'xa');

      const dout = rand(M * O, 28);
      const dinp = rand(M * K, 29); // pre-filled: += contracts
      const gDinp = up(dinp);
      let gDlora = k.buffer(4, 'none dlora');
      if (lora) {
        lora.dA = g16(rand(R * K, 30));
        lora.dB = g16(rand(O * R, 31));
        gDlora = up(packG16(packLoraForGpu({ ...lora, A: lora.dA, B: lora.dB })));
      }
      linearLoraBackward(dinp, dout, lora ? xa : null, inp, w, lora, M);
      const bwd: [string, number][] = [['dinp_main', wg64(Math.ceil(M / 4) * Math.ceil(K / 4))]];
      if (R)
        bwd.unshift(
          ['lora_dxa', wg64(M * R)],
          ['lora_db', wg64(Math.ceil((O * R) / 2))],
          ['lora_da', wg64((R * K) / 2)],
        );
      await run('matmul_lora_backward', bwd, [
        gDinp,
        k.buffer(M * Math.max(R, 1), 'dxa'),
        gDlora,
        up(dout),
        gInp,
        gXa,
        gW,
        gLora,
        p,
      ]);
      expectClose(await k.read(gDinp, M * K), dinp, GPU_VS_REF, 'dinp');
      if (lora) {
        const w = await k.read(gDlora, Math.ceil((R * K + O * R) / 2));
        const dl = unpackG16(new Uint32Array(w.buffer, w.byteOffset, w.length), R * K + O * R);
        expectClose(dl.subarray(0, R * K), lora.dA!, G16_VS_REF, 'dA (g16)');
        expectClose(dl.subarray(R * K), lora.dB!, G16_VS_REF, 'dB (g16)');
      }
    });
  }
});

describe('gradnorm + adamw vs optim.ts clipGradNorm + AdamW (3 steps, clipping on, off, off)', () => {
  it('n 10000 (several partials), weight decay 0.1', async () => {
    const n = 10000;
    const chunk = 4096;
    const P = Math.ceil(n / chunk);
    const value = rand(n, 32);
    const cpu = Float64Array.from(value);
    const opt = new AdamW({ lr: 1e-2, weightDecay: 0.1 });
    const gP = up(value);
    const gmv = k.buffer(n, 'm|v packed');
    const partials = k.buffer(P, 'partials');
    const stats = k.buffer(8, 'stats');
    let gmax = 0; // largest clipped norm so far
    for (const [t, maxNorm] of [
      [1, 1],
      [2, 1e9],
      [3, Number.POSITIVE_INFINITY],
    ] as const) {
      // The kernels read g16 gradients: the reference gets the same (decoded) values.
      const grad = g16(rand(n, 40 + t, 0.05));
      const g64 = Float64Array.from(grad);
      const norm = clipGradNorm([{ value: cpu, grad: g64 }], maxNorm);
      opt.step([{ value: cpu, grad: g64 }]);
      const gG = up(packG16(grad));
      const clip = Number.isFinite(maxNorm) ? 1 : 0;
      const gn = k.uniform([n, chunk, P, clip, clip ? maxNorm : 0], 'uuuuf');
      await run(
        'gradnorm',
        [
          ['partial', P],
          ['finish', 1],
        ],
        [partials, stats, gG, gn],
      );
      const st = await k.read(stats, 2);
      expectClose([st[0]!], [norm], { atol: 0, rtol: 1e-5 }, `norm step ${t}`);
      expect(st[1]! < 1).toBe(t === 1);
      gmax = Math.max(gmax, st[0]! * st[1]!);
      const ap = k.uniform(
        [
          n,
          0,
          0,
          0,
          1e-2,
          0.9,
          0.999,
          1e-8,
          0.1,
          1e-2 / (1 - 0.9 ** t),
          Math.sqrt(1 - 0.999 ** t),
          1 - 0.9,
          1 - 0.999,
        ],
        'uuuuffffffffff',
      );
      await run('adamw', [['main', wg64(n)]], [gP, gmv, gG, stats, ap]);
      const sc = await k.read(stats, 5);
      // Power-of-two moment scale: 2^(14 − ceil(log2 gmax)), gmax = the largest clipped norm so far.
      expect(Math.log2(sc[2]!)).toBe(14 - Math.ceil(Math.log2(sc[4]!)));
      expect(sc[4]!).toBe(Math.fround(gmax));
    }
    const params = await k.read(gP, n);
    console.log(
      `adamw, f16 moments: params max |diff| ${Math.max(...Array.from(params, (x, i) => Math.abs(x - cpu[i]!))).toExponential(2)} after 3 steps`,
    );
    expectClose(params, cpu, ADAM_F16_TOL, 'params after 3 steps');
    const st = opt.state()!;
    const packed = await k.read(gmv, n);
    const [m, v] = unpackMoments(
      new Uint32Array(packed.buffer, packed.byteOffset, n),
      (await k.read(stats, 3))[2]!,
    );
    const mMax = Math.max(...Array.from(st.m[0]!, Math.abs));
    const sMax = Math.sqrt(Math.max(...st.v[0]!));
    expectClose(m, st.m[0]!, { atol: 2e-3 * mMax, rtol: 2e-3 }, 'm');
    expectClose(
      Array.from(v, Math.sqrt),
      Array.from(st.v[0]!, Math.sqrt),
      { atol: 2e-3 * sMax, rtol: 2e-3 },
      'sqrt(v)',
    );
  });
});

describe('lora_feeds: [A | B] → feed A (K, Rf), scale·B → feed B (Rf, O), zero-padded rank', () => {
  it('R 2 padded to Rf 3, scale 2', async () => {
    const [K, O, R, Rf, scale] = [5, 7, 2, 3, 2];
    const A = rand(R * K, 50);
    const B = rand(O * R, 51);
    const wantA = new Float32Array(K * Rf);
    const wantB = new Float32Array(Rf * O);
    for (let j = 0; j < R; j++) for (let i = 0; i < K; i++) wantA[i * Rf + j] = A[j * K + i]!;
    for (let o = 0; o < O; o++) for (let j = 0; j < R; j++) wantB[j * O + o] = scale * B[o * R + j]!;
    const fa = up(rand(K * Rf, 52));
    const fb = up(rand(Rf * O, 53));
    const lora = up(packLoraForGpu({ R, scale, A, B, dA: null, dB: null }));
    await run(
      'lora_feeds',
      [['main', wg64((K + O) * Rf)]],
      [fa, fb, lora, k.uniform([K, O, R, Rf, scale], 'uuuuf')],
    );
    expectClose(await k.read(fa, K * Rf), wantA, { atol: 0, rtol: 0 }, 'feed A');
    expectClose(await k.read(fb, Rf * O), wantB, { atol: 0, rtol: 1e-7 }, 'feed B');
  });
});
