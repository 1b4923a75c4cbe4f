// PEFT adapter_config.json validation and the PEFT → injected-graph feed mapping, on hand-made tiny
// tensors: transposes, scale (alpha/r, rsLoRA alpha/√r), rank_pattern / alpha_pattern with PEFT's
// key-matching rule, zero padding to the shared rank, zeros for uncovered targets, and every error.
import { describe, expect, it } from 'vitest';
import {
  type LoraTarget,
  MAX_LORA_RANK,
  type PeftLoraConfig,
  parsePeftConfig,
  patternValue,
  peftToFeeds,
} from '../../../src/adapters/peft.ts';
import {
  f32Tensor,
  parseSafetensors,
  type TensorView,
  writeSafetensors,
} from '../../../src/adapters/safetensors.ts';
import { AdapterFormatError, AdapterMismatchError } from '../../../src/errors.ts';
import { errorOf } from '../../helpers/errors.ts';
import { expectClose, FP32_TINY_DOT } from '../../helpers/expect-close.ts';
import { ADAPTER_FIXTURES, loadPeftFixture } from '../../helpers/fixtures.ts';
import { modelTargets } from './model-targets.ts';

const CFG = {
  peft_type: 'LORA',
  task_type: 'CAUSAL_LM',
  r: 2,
  lora_alpha: 4,
  target_modules: ['q_proj', 'v_proj'],
};
const cfg = (over: Record<string, unknown> = {}): PeftLoraConfig => parsePeftConfig({ ...CFG, ...over });

describe('parsePeftConfig', () => {
  it('reads the fixture configs and PEFT defaults', () => {
    for (const name of ADAPTER_FIXTURES) {
      const { config } = loadPeftFixture(name);
      expect(config.peftType).toBe('LORA');
      expect(config.taskType).toBe('CAUSAL_LM');
    }
    const c = parsePeftConfig('{"peft_type": "LORA"}');
    expect(c).toMatchObject({
      r: 8,
      loraAlpha: 8,
      useRslora: false,
      targetModules: null,
      rankPattern: {},
      layersToTransform: null,
    });
    expect(parsePeftConfig({ ...CFG, layers_to_transform: 3 }).layersToTransform).toEqual([3]);
  });

  const cases: [string, unknown, RegExp][] = [
    ['invalid JSON', '{"peft_type": ', /not valid JSON/],
    ['not an object', '[1]', /JSON object/],
    ['peft_type missing', { r: 4 }, /peft_type must be "LORA"/],
    ['peft_type other', { ...CFG, peft_type: 'IA3' }, /peft_type must be "LORA" \(got "IA3"\)/],
    ['r = 0', { ...CFG, r: 0 }, /r must be a positive integer/],
    ['r fractional', { ...CFG, r: 2.5 }, /r must be a positive integer/],
    ['lora_alpha not a number', { ...CFG, lora_alpha: '16' }, /lora_alpha must be a finite number/],
    ['bias', { ...CFG, bias: 'lora_only' }, /bias "lora_only" is not supported/],
    ['DoRA', { ...CFG, use_dora: true }, /DoRA/],
    ['modules_to_save', { ...CFG, modules_to_save: ['lm_head'] }, /modules_to_save/],
    ['use_rslora not boolean', { ...CFG, use_rslora: 'yes' }, /use_rslora must be true or false/],
    [
      'rank_pattern value',
      { ...CFG, rank_pattern: { q_proj: 0 } },
      /rank_pattern\["q_proj"\] must be a positive integer/,
    ],
    [
      'alpha_pattern value',
      { ...CFG, alpha_pattern: { q_proj: null } },
      /alpha_pattern\["q_proj"\] must be a finite number/,
    ],
    [
      'pattern key regex',
      { ...CFG, rank_pattern: { 'q_proj(': 2 } },
      /rank_pattern key "q_proj\(" is not a valid regular expression/,
    ],
    ['target_modules type', { ...CFG, target_modules: 5 }, /target_modules must be/],
    [
      'layers_to_transform',
      { ...CFG, layers_to_transform: [-1] },
      /layers_to_transform must hold non-negative integers/,
    ],
    ['lora_dropout', { ...CFG, lora_dropout: 1.5 }, /lora_dropout/],
  ];
  for (const [what, json, msg] of cases) {
    it(`rejects ${what}`, () => {
      const e = errorOf(() => parsePeftConfig(json));
      expect(e).toBeInstanceOf(AdapterFormatError);
      expect(e.message).toMatch(msg);
    });
  }
});

describe('patternValue (PEFT get_pattern_key: re.match(rf"(.*\\.)?({key})$", path), first key wins)', () => {
  const path = 'model.layers.1.mlp.down_proj';
  it('matches dot-delimited suffixes and the full path', () => {
    expect(patternValue({ down_proj: 2 }, path)).toBe(2);
    expect(patternValue({ 'mlp.down_proj': 2 }, path)).toBe(2);
    expect(patternValue({ 'layers.1.mlp.down_proj': 2 }, path)).toBe(2);
    expect(patternValue({ 'model.layers.1.mlp.down_proj': 2 }, path)).toBe(2);
    expect(patternValue({ '^model.layers.1.mlp.down_proj': 2 }, path)).toBe(2);
    expect(patternValue({ 'layers\\.\\d\\.mlp\\.down_proj': 2 }, path)).toBe(2);
  });
  it('does not match partial segments, other layers or prefixes', () => {
    expect(patternValue({ proj: 2 }, path)).toBeUndefined();
    expect(patternValue({ own_proj: 2 }, path)).toBeUndefined();
    expect(patternValue({ 'layers.1.mlp.down_proj': 2 }, 'model.layers.11.mlp.down_proj')).toBeUndefined();
    expect(patternValue({ 'model.layers.1.mlp': 2 }, path)).toBeUndefined();
  });
  it('first matching key in insertion order wins', () => {
    expect(patternValue({ down_proj: 2, 'layers.1.mlp.down_proj': 3 }, path)).toBe(2);
    expect(patternValue({ 'layers.1.mlp.down_proj': 3, down_proj: 2 }, path)).toBe(3);
  });
});

// Tiny model: 2 layers, q_proj 3→2, v_proj 3→4.
const TARGETS: LoraTarget[] = [
  { layer: 0, module: 'q_proj', in: 3, out: 2 },
  { layer: 0, module: 'v_proj', in: 3, out: 4 },
  { layer: 1, module: 'q_proj', in: 3, out: 2 },
  { layer: 1, module: 'v_proj', in: 3, out: 4 },
];
const key = (layer: number, m: string, ab: 'A' | 'B') =>
  `base_model.model.model.layers.${layer}.self_attn.${m}.lora_${ab}.weight`;
const seq = (n: number, start: number) => Array.from({ length: n }, (_, i) => start + 0.25 * i);

/** A [r, in] and B [out, r] with distinct values, for a module. */
function module(layer: number, m: string, r: number, inDim: number, out: number, start: number) {
  return [
    [key(layer, m, 'A'), f32Tensor(seq(r * inDim, start), [r, inDim])],
    [key(layer, m, 'B'), f32Tensor(seq(out * r, -start), [out, r])],
  ] as [string, TensorView][];
}

/** Reference: y = scale · B (A x), straight from PEFT's layout. */
function peftDelta(
  t: Map<string, TensorView>,
  layer: number,
  m: string,
  x: number[],
  scale: number,
): number[] {
  const A = t.get(key(layer, m, 'A'))!;
  const B = t.get(key(layer, m, 'B'))!;
  const dv = (v: TensorView) => new Float32Array(v.data.slice().buffer);
  const [r = 0, inDim = 0] = A.shape;
  const [out = 0] = B.shape;
  const a = dv(A);
  const b = dv(B);
  const ax = Array.from({ length: r }, (_, j) => x.reduce((s, xi, i) => s + a[j * inDim + i]! * xi, 0));
  return Array.from({ length: out }, (_, o) => scale * ax.reduce((s, v, j) => s + b[o * r + j]! * v, 0));
}

/** Graph math: y = (x · A_feed) · B_feed with A_feed [in, R], B_feed [R, out]. */
function graphDelta(feeds: ReturnType<typeof peftToFeeds>, layer: number, m: string, x: number[]): number[] {
  const A = feeds.feeds.get(`lora.${layer}.${m}.A`)!;
  const B = feeds.feeds.get(`lora.${layer}.${m}.B`)!;
  const [inDim, R] = A.dims;
  const out = B.dims[1];
  const xa = Array.from({ length: R }, (_, j) => x.reduce((s, xi, i) => s + xi * A.data[i * R + j]!, 0));
  expect(inDim).toBe(x.length);
  return Array.from({ length: out }, (_, o) => xa.reduce((s, v, j) => s + v * B.data[j * out + o]!, 0));
}

const X = [0.5, -1, 2];
const close = (a: number[], b: number[]) => expectClose(a, b, FP32_TINY_DOT, 'LoRA delta');

describe('peftToFeeds math', () => {
  // layer 0: q r=2, v r=1 (rank_pattern); layer 1: q only (v uncovered).
  const tensors = new Map<string, TensorView>([
    ...module(0, 'q_proj', 2, 3, 2, 0.1),
    ...module(0, 'v_proj', 1, 3, 4, 1),
    ...module(1, 'q_proj', 2, 3, 2, -0.7),
  ]);
  const rp = { rank_pattern: { 'model.layers.0.self_attn.v_proj': 1 } };

  it('A_feed = Aᵀ, B_feed = (alpha/r)·Bᵀ, padded to the max rank, zeros where uncovered', () => {
    const f = peftToFeeds(cfg(rp), tensors, TARGETS);
    expect(f.rank).toBe(2);
    expect(f.feeds.size).toBe(8);
    expect(f.feeds.get('lora.0.q_proj.A')!.dims).toEqual([3, 2]);
    expect(f.feeds.get('lora.0.v_proj.B')!.dims).toEqual([2, 4]);
    // Transpose exactly: A_feed[i, j] = A[j, i].
    expect(f.feeds.get('lora.0.q_proj.A')!.data).toEqual(
      Float32Array.from([0.1, 0.85, 0.35, 1.1, 0.6, 1.35]),
    );
    close(graphDelta(f, 0, 'q_proj', X), peftDelta(tensors, 0, 'q_proj', X, 4 / 2));
    close(graphDelta(f, 1, 'q_proj', X), peftDelta(tensors, 1, 'q_proj', X, 4 / 2));
    // v_proj has rank 1 (rank_pattern): scale alpha/1, padded column/row are exactly zero.
    close(graphDelta(f, 0, 'v_proj', X), peftDelta(tensors, 0, 'v_proj', X, 4));
    const av = f.feeds.get('lora.0.v_proj.A')!.data;
    expect([av[1], av[3], av[5]]).toEqual([0, 0, 0]);
    expect(Array.from(f.feeds.get('lora.0.v_proj.B')!.data.subarray(4))).toEqual([0, 0, 0, 0]);
    // Uncovered target: zeros with the shared rank.
    expect(f.feeds.get('lora.1.v_proj.A')!.dims).toEqual([3, 2]);
    expect(f.feeds.get('lora.1.v_proj.A')!.data.every((v) => v === 0)).toBe(true);
    expect(f.feeds.get('lora.1.v_proj.B')!.data.every((v) => v === 0)).toBe(true);
    expect(f.modules.map((m) => [m.path, m.rank, m.scale])).toEqual([
      ['model.layers.0.self_attn.q_proj', 2, 2],
      ['model.layers.0.self_attn.v_proj', 1, 4],
      ['model.layers.1.self_attn.q_proj', 2, 2],
    ]);
  });

  it('rsLoRA: scale = alpha/√r; alpha_pattern overrides alpha per module (suffix key)', () => {
    const f = peftToFeeds(
      cfg({ ...rp, use_rslora: true, alpha_pattern: { 'layers.1.self_attn.q_proj': 9 } }),
      tensors,
      TARGETS,
    );
    close(graphDelta(f, 0, 'q_proj', X), peftDelta(tensors, 0, 'q_proj', X, 4 / Math.SQRT2));
    close(graphDelta(f, 0, 'v_proj', X), peftDelta(tensors, 0, 'v_proj', X, 4 / 1));
    close(graphDelta(f, 1, 'q_proj', X), peftDelta(tensors, 1, 'q_proj', X, 9 / Math.SQRT2));
  });

  it('fan_in_fan_out changes nothing (PEFT keeps lora_A [r, in], lora_B [out, r] for Conv1D bases too)', () => {
    const a = peftToFeeds(cfg(rp), tensors, TARGETS);
    const b = peftToFeeds(cfg({ ...rp, fan_in_fan_out: true }), tensors, TARGETS);
    for (const [k, v] of a.feeds) expect(b.feeds.get(k)!.data).toEqual(v.data);
  });

  it('F16 and BF16 weights are read exactly; F16 file round trip through safetensors', () => {
    const half = new Map<string, TensorView>([
      // 1.0, 2.0 in F16 / BF16.
      [
        key(0, 'q_proj', 'A'),
        { dtype: 'F16', shape: [1, 3], data: new Uint8Array([0, 0x3c, 0, 0x40, 0, 0x3c]) },
      ],
      [key(0, 'q_proj', 'B'), { dtype: 'BF16', shape: [2, 1], data: new Uint8Array([0x80, 0x3f, 0, 0x40]) }],
    ]);
    const st = parseSafetensors(writeSafetensors(half));
    const f = peftToFeeds(cfg({ r: 1, lora_alpha: 1 }), st.tensors, TARGETS);
    expect(Array.from(f.feeds.get('lora.0.q_proj.A')!.data)).toEqual([1, 2, 1]);
    expect(Array.from(f.feeds.get('lora.0.q_proj.B')!.data)).toEqual([1, 2]);
  });

  it('layers_to_transform: listed layers load; weights for other layers are an error', () => {
    const only0 = new Map([...module(0, 'q_proj', 2, 3, 2, 0.1)]);
    expect(peftToFeeds(cfg({ layers_to_transform: [0] }), only0, TARGETS).rank).toBe(2);
    const e = errorOf(() => peftToFeeds(cfg({ ...rp, layers_to_transform: [0] }), tensors, TARGETS));
    expect(e).toBeInstanceOf(AdapterFormatError);
    expect(e.message).toMatch(/layer 1 is not in layers_to_transform \[0\]/);
  });

  it('the fixture adapters map onto the real model dims (rank_pattern module padded)', () => {
    const targets = modelTargets();
    const a = loadPeftFixture('peft-adapter');
    const fa = peftToFeeds(a.config, a.st.tensors, targets);
    expect(fa.rank).toBe(4);
    expect(fa.modules).toHaveLength(42);
    expect(fa.modules.find((m) => m.path === 'model.layers.1.mlp.down_proj')).toMatchObject({
      rank: 2,
      scale: 4,
    });
    const b = loadPeftFixture('peft-adapter-rslora');
    const fb = peftToFeeds(b.config, b.st.tensors, targets);
    expect(fb.rank).toBe(8);
    expect(fb.modules.find((m) => m.path === 'model.layers.3.self_attn.o_proj')).toMatchObject({
      rank: 3,
      scale: 16 / Math.sqrt(3),
    });
    expect(fb.modules.find((m) => m.path === 'model.layers.0.self_attn.v_proj')).toMatchObject({
      rank: 8,
      scale: 4 / Math.sqrt(8),
    });
    expect(fb.feeds.get('lora.1.q_proj.A')!.data.every((v) => v === 0)).toBe(true);
  });
});

describe('peftToFeeds errors', () => {
  const ok = () => new Map([...module(0, 'q_proj', 2, 3, 2, 0.1)]);
  const cases: [
    string,
    () => Map<string, TensorView>,
    Record<string, unknown>,
    typeof AdapterFormatError,
    RegExp,
  ][] = [
    ['no tensors', () => new Map(), {}, AdapterFormatError, /no LoRA tensors/],
    [
      'unsupported key',
      () =>
        new Map([
          ['base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector', f32Tensor([1], [1])],
        ]),
      {},
      AdapterFormatError,
      /unsupported tensor/,
    ],
    [
      'missing lora_B',
      () => new Map([module(0, 'q_proj', 2, 3, 2, 0.1)[0]!]),
      {},
      AdapterFormatError,
      /has lora_A but no lora_B/,
    ],
    [
      'unknown module',
      () =>
        new Map([...module(0, 'q_proj', 2, 3, 2, 0.1)].map(([k, v]) => [k.replace('q_proj', 'qkv_proj'), v])),
      {},
      AdapterMismatchError,
      /model.layers.0.self_attn.qkv_proj is not a LoRA target of this model/,
    ],
    [
      'layer beyond the model',
      () =>
        new Map(
          [...module(0, 'q_proj', 2, 3, 2, 0.1)].map(([k, v]) => [k.replace('layers.0', 'layers.7'), v]),
        ),
      {},
      AdapterMismatchError,
      /layers 0..1/,
    ],
    [
      'wrong in/out',
      () => new Map(module(0, 'q_proj', 2, 5, 2, 0.1)),
      {},
      AdapterMismatchError,
      /adapter maps 5 → 2 but the model's q_proj in layer 0 maps 3 → 2/,
    ],
    [
      'A/B rank disagreement',
      () => new Map([module(0, 'q_proj', 2, 3, 2, 0.1)[0]!, module(0, 'q_proj', 1, 3, 2, 0.1)[1]!]),
      {},
      AdapterFormatError,
      /disagree on the rank \(2 vs 1\)/,
    ],
    [
      'rank differs from config',
      ok,
      { r: 4 },
      AdapterFormatError,
      /tensors have rank 2 but the config gives rank 4/,
    ],
    [
      'rank above the limit',
      () => new Map(module(0, 'q_proj', MAX_LORA_RANK + 1, 3, 2, 0.1)),
      { r: 65 },
      AdapterMismatchError,
      /rank 65; the engine supports ranks up to 64/,
    ],
    [
      'non-finite value',
      () =>
        new Map([
          module(0, 'q_proj', 2, 3, 2, 0.1)[0]!,
          [key(0, 'q_proj', 'B'), f32Tensor([1, 2, Number.NaN, 4], [2, 2])],
        ]),
      {},
      AdapterFormatError,
      /lora_B.weight has a non-finite value \(NaN\) at flat index 2/,
    ],
    [
      'not in target_modules',
      ok,
      { target_modules: ['v_proj'] },
      AdapterFormatError,
      /not in target_modules/,
    ],
    [
      'integer dtype',
      () =>
        new Map([
          module(0, 'q_proj', 2, 3, 2, 0.1)[0]!,
          [key(0, 'q_proj', 'B'), { dtype: 'I32', shape: [2, 2], data: new Uint8Array(16) }],
        ]),
      {},
      AdapterFormatError,
      /dtype I32/,
    ],
  ];
  for (const [what, tensors, over, Err, msg] of cases) {
    it(`rejects ${what}`, () => {
      const e = errorOf(() => peftToFeeds(cfg(over), tensors(), TARGETS));
      expect(e).toBeInstanceOf(Err);
      expect(e.message).toMatch(msg);
    });
  }
  it('a target_modules regex string uses fullmatch', () => {
    expect(peftToFeeds(cfg({ target_modules: '.*\\.(q|v)_proj' }), ok(), TARGETS).rank).toBe(2);
    expect(() => peftToFeeds(cfg({ target_modules: 'q_proj' }), ok(), TARGETS)).toThrow(
      /not in target_modules/,
    );
  });
});
