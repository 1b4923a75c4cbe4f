// PEFT adapter import (src/adapters/import.ts): the fixture adapters import unchanged (two-file and
// single-file layouts), F16/BF16 copies give the F32 feeds within the dtype's rounding, fan_in_fan_out and
// layers_to_transform follow PEFT, and every malformed input fails with its own error class, message and
// structured data before anything could be stored.
import { describe, expect, it } from 'vitest';
import {
  baseModelKey,
  checkBaseModel,
  feedsFromFiles,
  type ImportInput,
  importPeftAdapter,
} from '../../../src/adapters/import.ts';
import { inputFromFiles, inputFromUrl } from '../../../src/adapters/import-sources.ts';
import { peftToFeeds } from '../../../src/adapters/peft.ts';
import { buildPeftFiles, peftModulePath } from '../../../src/adapters/peft-writer.ts';
import {
  parseSafetensors,
  readFloat32,
  type TensorView,
  writeSafetensors,
} from '../../../src/adapters/safetensors.ts';
import {
  AdapterBaseModelError,
  AdapterConfigError,
  AdapterFormatError,
  AdapterMismatchError,
  AdapterModuleError,
  AdapterRankError,
  AdapterShapeError,
  AdapterValueError,
  SafetensorsError,
  SafetensorsHeaderBoundsError,
  SafetensorsHeaderJsonError,
  SafetensorsOffsetError,
  SafetensorsTruncatedError,
} from '../../../src/errors.ts';
import { errorOf } from '../../helpers/errors.ts';
import { expectClose, type Tolerance } from '../../helpers/expect-close.ts';
import { loadPeftFixture } from '../../helpers/fixtures.ts';
import { convertTensor, MODEL, rawSafetensors, splitSafetensors } from './model-targets.ts';

const fx = loadPeftFixture('peft-adapter');
const fxRs = loadPeftFixture('peft-adapter-rslora');
const A0 = 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight';
const B0 = 'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight';

/** The fixture's tensors (copies), edited by `edit`, re-written; config edited by `cfg`. */
function variant(
  edit: (t: Map<string, TensorView>) => void = () => {},
  cfg: (c: Record<string, unknown>) => void = () => {},
  metadata?: Record<string, string>,
): ImportInput {
  const tensors = new Map<string, TensorView>();
  for (const [k, t] of fx.st.tensors) tensors.set(k, { ...t, shape: [...t.shape], data: t.data.slice() });
  edit(tensors);
  const c = JSON.parse(fx.configJson) as Record<string, unknown>;
  cfg(c);
  return { config: JSON.stringify(c), weights: writeSafetensors(tensors, metadata) };
}

function f32View(values: Float32Array, shape: number[]): TensorView {
  return { dtype: 'F32', shape, data: new Uint8Array(values.buffer.slice(0)) };
}

describe('importPeftAdapter: valid adapters', () => {
  it('imports both fixture adapters unchanged; feeds equal peft.ts on the same tensors', () => {
    for (const f of [fx, fxRs]) {
      const imp = importPeftAdapter({ config: f.configJson, weights: f.bytes }, MODEL);
      expect(imp.layout).toBe('two-file');
      expect(imp.files['adapter_model.safetensors']).toBe(f.bytes);
      expect(new TextDecoder().decode(imp.files['adapter_config.json'])).toBe(f.configJson);
      const ref = peftToFeeds(f.config, f.st.tensors, MODEL.targets as never);
      expect(imp.feeds.rank).toBe(ref.rank);
      for (const [k, v] of ref.feeds) expect(imp.feeds.feeds.get(k)?.data).toEqual(v.data);
    }
    const a = importPeftAdapter({ config: fx.configJson, weights: fx.bytes }, MODEL).summary;
    expect(a).toMatchObject({ r: 4, rank: 4, moduleCount: 42, layers: [0, 1, 2, 3, 4, 5], dtypes: ['F32'] });
    expect(a.baseModelMatched).toBe(true);
    expect(a.modules).toHaveLength(7);
  });

  it('a single .safetensors with the config in __metadata__ imports; the file is kept byte for byte', () => {
    const single = writeSafetensors(fx.st.tensors, { format: 'pt', adapter_config: fx.configJson });
    const imp = importPeftAdapter({ weights: single }, MODEL);
    const two = importPeftAdapter({ config: fx.configJson, weights: fx.bytes }, MODEL);
    expect(imp.layout).toBe('single-file');
    expect(imp.files['adapter_model.safetensors']).toBe(single);
    expect(new TextDecoder().decode(imp.files['adapter_config.json'])).toBe(fx.configJson);
    for (const [k, v] of two.feeds.feeds) expect(imp.feeds.feeds.get(k)?.data).toEqual(v.data);
  });

  // Rounding of one conversion: half an ulp, relative 2^-11 (F16) / 2^-8 (BF16) for normal values; F16
  // subnormals (|x| < 6.1e-5) round to multiples of 2^-24, error <= 2^-25, times the B scale (<= 16: the
  // rsLoRA fixture's alpha_pattern entry gives 40/sqrt(8) ~ 14.1).
  const DTYPE_TOL: Record<'F16' | 'BF16', Tolerance> = {
    F16: { atol: 16 * 2 ** -25, rtol: 2 ** -11 },
    BF16: { atol: 0, rtol: 2 ** -8 },
  };
  for (const dtype of ['F16', 'BF16'] as const) {
    it(`${dtype} adapters give the F32 feeds within ${dtype} rounding`, () => {
      for (const f of [fx, fxRs]) {
        const conv = new Map<string, TensorView>();
        for (const [k, t] of f.st.tensors) conv.set(k, convertTensor(t, dtype));
        const imp = importPeftAdapter({ config: f.configJson, weights: writeSafetensors(conv) }, MODEL);
        expect(imp.summary.dtypes).toEqual([dtype]);
        const ref = importPeftAdapter({ config: f.configJson, weights: f.bytes }, MODEL);
        let exact = 0;
        for (const [k, v] of ref.feeds.feeds) {
          const got = imp.feeds.feeds.get(k)!.data;
          expectClose(got, v.data, DTYPE_TOL[dtype], `${dtype} ${k}`);
          for (let i = 0; i < got.length; i++) if (got[i] === v.data[i] && v.data[i] !== 0) exact++;
        }
        // The conversion really happened (most values changed).
        expect(exact).toBeLessThan(ref.feeds.feeds.size * 10);
      }
    });
  }

  it('fan_in_fan_out: PEFT keeps lora_A [r, in] / lora_B [out, r] either way, so feeds are unchanged', () => {
    const input = variant(undefined, (c) => {
      c.fan_in_fan_out = true;
    });
    const imp = importPeftAdapter(input, MODEL);
    expect(imp.config.fanInFanOut).toBe(true);
    const ref = importPeftAdapter({ config: fx.configJson, weights: fx.bytes }, MODEL);
    for (const [k, v] of ref.feeds.feeds) expect(imp.feeds.feeds.get(k)?.data).toEqual(v.data);
    // A transposed lora_A ([in, r], what a fan_in_fan_out base weight looks like) is a shape error.
    const bad = variant(
      (t) => {
        const a = t.get(A0)!;
        t.set(A0, { ...a, shape: [256, 4] });
      },
      (c) => {
        c.fan_in_fan_out = true;
      },
    );
    expect(errorOf(() => importPeftAdapter(bad, MODEL))).toBeInstanceOf(AdapterShapeError);
  });

  it('layers_to_transform: only the listed layers are adapted; weights for other layers are refused', () => {
    const imp = importPeftAdapter({ config: fxRs.configJson, weights: fxRs.bytes }, MODEL);
    expect(imp.summary.layers).toEqual([0, 2, 3, 5]);
    for (const layer of [1, 4]) {
      for (const m of ['q_proj', 'v_proj', 'o_proj', 'down_proj']) {
        expect(imp.feeds.feeds.get(`lora.${layer}.${m}.B`)!.data.every((x) => x === 0)).toBe(true);
      }
    }
    // The plain fixture has weights in all 6 layers: restricting layers_to_transform makes it invalid.
    const input = variant(undefined, (c) => {
      c.layers_to_transform = [0, 1];
    });
    const e = errorOf(() => importPeftAdapter(input, MODEL));
    expect(e).toBeInstanceOf(AdapterFormatError);
    expect(e.message).toMatch(/layer 2 is not in layers_to_transform \[0,1\]/);
  });

  it('base model rule: last path segment, case-insensitive; explicit override accepted', () => {
    expect(baseModelKey('org/Weblora-Shakespeare')).toBe('weblora-shakespeare');
    expect(baseModelKey('https://example.org/models/weblora-shakespeare/')).toBe('weblora-shakespeare');
    expect(baseModelKey('C:\\models\\weblora-shakespeare')).toBe('weblora-shakespeare');
    const model = { id: '/models/weblora-shakespeare/' };
    expect(checkBaseModel('someone/weblora-shakespeare', model)).toBe(true);
    expect(checkBaseModel(null, model)).toBe(false);
    expect(checkBaseModel('meta-llama/Llama-3.2-1B', model, { allowBaseModelMismatch: true })).toBe(false);
    const noAlias = { ...MODEL, aliases: [] };
    const otherBase = JSON.stringify({
      ...JSON.parse(fx.configJson),
      base_model_name_or_path: 'org/other-model',
    });
    expect(
      errorOf(() => importPeftAdapter({ config: otherBase, weights: fx.bytes }, noAlias)),
    ).toBeInstanceOf(AdapterBaseModelError);
    const ok = importPeftAdapter({ config: otherBase, weights: fx.bytes }, noAlias, {
      allowBaseModelMismatch: true,
    });
    expect(ok.summary.baseModelMatched).toBe(false);
  });

  it('in-app adapters are written as PEFT files that re-import to the same feeds', () => {
    const ref = importPeftAdapter({ config: fx.configJson, weights: fx.bytes }, MODEL);
    const modules = ref.feeds.modules.map((m) => {
      const A = readFloat32(fx.st.tensors.get(`base_model.model.${m.path}.lora_A.weight`)!);
      const B = readFloat32(fx.st.tensors.get(`base_model.model.${m.path}.lora_B.weight`)!);
      const t = MODEL.targets.find((x) => x.layer === m.layer && x.module === m.module)!;
      return { layer: m.layer, module: m.module, A, B, in: t.in, out: t.out };
    });
    const files = buildPeftFiles({ baseModel: 'weblora-shakespeare', r: 4, loraAlpha: 8, modules });
    const st = parseSafetensors(files['adapter_model.safetensors']);
    expect([...st.tensors.keys()].sort()).toEqual([...fx.st.tensors.keys()].sort());
    expect(st.tensors.get(A0)!.shape).toEqual([4, 256]);
    expect(st.tensors.get(B0)!.shape).toEqual([256, 4]);
    const cfg = JSON.parse(new TextDecoder().decode(files['adapter_config.json']));
    expect(cfg.rank_pattern).toEqual({ 'model.layers.1.mlp.down_proj': 2 });
    expect(peftModulePath(3, 'up_proj')).toBe('model.layers.3.mlp.up_proj');
    const back = feedsFromFiles(files, MODEL.targets);
    for (const [k, v] of ref.feeds.feeds) expect(back.feeds.get(k)?.data).toEqual(v.data);
  });

  it('reads files (input/drop) and URLs', async () => {
    const file = (name: string, b: Uint8Array | string) => ({
      name,
      arrayBuffer: async () => (typeof b === 'string' ? new TextEncoder().encode(b) : b.slice()).buffer,
    });
    const inp = await inputFromFiles([
      file('adapter_model.safetensors', fx.bytes),
      file('adapter_config.json', fx.configJson),
    ]);
    expect(importPeftAdapter(inp, MODEL).summary.rank).toBe(4);
    const single = await inputFromFiles([file('my.safetensors', fx.bytes)]);
    expect(single.config).toBeUndefined();
    await expect(inputFromFiles([file('a.json', '{}')])).rejects.toBeInstanceOf(AdapterFormatError);

    const served: Record<string, Uint8Array | string> = {
      'https://h/x/adapter_model.safetensors': fx.bytes,
      'https://h/x/adapter_config.json': fx.configJson,
    };
    const fakeFetch = (async (u: string) =>
      served[u] === undefined
        ? new Response('nope', { status: 404 })
        : new Response(served[u] as BodyInit)) as unknown as typeof fetch;
    const fromDir = await inputFromUrl('https://h/x', fakeFetch);
    expect(fromDir.weights).toEqual(fx.bytes);
    expect(new TextDecoder().decode(fromDir.config as Uint8Array)).toBe(fx.configJson);
    const fromFile = await inputFromUrl('https://h/x/adapter_model.safetensors', fakeFetch);
    expect(fromFile.config).toBeDefined();
  });
});

describe('importPeftAdapter: each malformed input has its own typed error', () => {
  const good = (): ImportInput => ({ config: fx.configJson, weights: fx.bytes });
  const cases: {
    what: string;
    input: () => ImportInput;
    cls: new (...a: never[]) => Error;
    base: new (...a: never[]) => Error;
    msg: RegExp;
    data: Record<string, unknown>;
  }[] = [
    {
      what: 'truncated safetensors (cut in the data section)',
      input: () => ({ ...good(), weights: fx.bytes.slice(0, fx.bytes.length - 100) }),
      cls: SafetensorsTruncatedError,
      base: SafetensorsError,
      msg: /truncated: its header describes 100 more data bytes/,
      data: { reason: 'truncated', missingBytes: 100 },
    },
    {
      what: 'truncated safetensors (shorter than the length prefix)',
      input: () => ({ ...good(), weights: fx.bytes.slice(0, 5) }),
      cls: SafetensorsTruncatedError,
      base: SafetensorsError,
      msg: /file is 5 bytes, shorter than the 8-byte header length/,
      data: { reason: 'truncated', fileBytes: 5 },
    },
    {
      what: 'header length beyond the file',
      input: () => {
        const w = fx.bytes.slice();
        new DataView(w.buffer).setBigUint64(0, BigInt(w.length), true);
        return { ...good(), weights: w };
      },
      cls: SafetensorsHeaderBoundsError,
      base: SafetensorsError,
      msg: /header length \d+ runs past the end/,
      data: { reason: 'header-beyond-file' },
    },
    {
      what: 'header length above the 100 MB cap',
      input: () => {
        const w = fx.bytes.slice();
        new DataView(w.buffer).setBigUint64(0, 2n ** 40n, true);
        return { ...good(), weights: w };
      },
      cls: SafetensorsHeaderBoundsError,
      base: SafetensorsError,
      msg: /exceeds the 100000000-byte limit/,
      data: { reason: 'header-too-large' },
    },
    {
      what: 'invalid header JSON',
      input: () => {
        const w = fx.bytes.slice();
        w[8] = 'x'.charCodeAt(0);
        return { ...good(), weights: w };
      },
      cls: SafetensorsHeaderJsonError,
      base: SafetensorsError,
      msg: /header is not valid JSON/,
      data: { reason: 'header-not-json' },
    },
    {
      what: 'overlapping offsets',
      input: () => ({
        ...good(),
        weights: rawSafetensors(
          {
            [A0]: { dtype: 'F32', shape: [1, 4], data_offsets: [0, 16] },
            [B0]: { dtype: 'F32', shape: [1, 4], data_offsets: [8, 24] },
          },
          new Uint8Array(24),
        ),
      }),
      cls: SafetensorsOffsetError,
      base: SafetensorsError,
      msg: /overlaps/,
      data: { reason: 'overlap' },
    },
    {
      what: 'out-of-range offsets (not a truncation: the tensors do not tile the data)',
      input: () => ({
        ...good(),
        weights: rawSafetensors(
          {
            [A0]: { dtype: 'F32', shape: [1, 4], data_offsets: [0, 16] },
            [B0]: { dtype: 'F32', shape: [1, 4], data_offsets: [100, 116] },
          },
          new Uint8Array(32),
        ),
      }),
      cls: SafetensorsOffsetError,
      base: SafetensorsError,
      msg: /ends at byte 116 of a 32-byte data section/,
      data: { reason: 'offset-out-of-range' },
    },
    {
      what: 'wrong shape (lora_A in-dim of another model)',
      input: () =>
        variant((t) => {
          t.set(A0, f32View(new Float32Array(4 * 128), [4, 128]));
        }),
      cls: AdapterShapeError,
      base: AdapterMismatchError,
      msg: /has shape \[4,128\] but the model's q_proj in layer 0 maps 256 → 256, so lora_A must be \[r, 256\]/,
      data: { tensor: A0, shape: [4, 128], expected: [null, 256] },
    },
    {
      what: 'wrong shape (3-D lora_B)',
      input: () =>
        variant((t) => {
          t.set(B0, f32View(new Float32Array(256 * 4), [256, 4, 1]));
        }),
      cls: AdapterShapeError,
      base: AdapterMismatchError,
      msg: /has shape \[256,4,1\]/,
      data: { tensor: B0 },
    },
    {
      what: 'NaN value',
      input: () =>
        variant((t) => {
          const a = readFloat32(t.get(A0)!);
          a[7] = Number.NaN;
          t.set(A0, f32View(a, [4, 256]));
        }),
      cls: AdapterValueError,
      base: AdapterFormatError,
      msg: /lora_A\.weight holds a non-finite value \(NaN\) at flat index 7/,
      data: { tensor: A0, index: 7, value: 'NaN' },
    },
    {
      what: 'infinite value',
      input: () =>
        variant((t) => {
          const b = readFloat32(t.get(B0)!);
          b[3] = Number.NEGATIVE_INFINITY;
          t.set(B0, f32View(b, [256, 4]));
        }),
      cls: AdapterValueError,
      base: AdapterFormatError,
      msg: /non-finite value \(-Infinity\) at flat index 3/,
      data: { tensor: B0, index: 3 },
    },
    {
      what: 'rank 0 in the config',
      input: () =>
        variant(undefined, (c) => {
          c.r = 0;
        }),
      cls: AdapterRankError,
      base: AdapterFormatError,
      msg: /r must be a positive integer \(got 0\).*ranks must be 1\.\.64/,
      data: { field: 'r', max: 64 },
    },
    {
      what: 'rank 0 tensors',
      input: () =>
        variant(
          (t) => {
            t.set(A0, f32View(new Float32Array(0), [0, 256]));
            t.set(B0, f32View(new Float32Array(0), [256, 0]));
          },
          (c) => {
            c.rank_pattern = { 'layers.0.self_attn.q_proj': 1, ...(c.rank_pattern as object) };
          },
        ),
      cls: AdapterRankError,
      base: AdapterFormatError,
      msg: /has rank 0; LoRA ranks must be 1\.\.64/,
      data: { rank: 0, max: 64 },
    },
    {
      what: 'rank above 64 in the config',
      input: () =>
        variant(undefined, (c) => {
          c.r = 65;
        }),
      cls: AdapterRankError,
      base: AdapterFormatError,
      msg: /rank 65 is above the engine limit of 64/,
      data: { rank: 65, max: 64 },
    },
    {
      what: 'rank above 64 in the tensors',
      input: () =>
        variant(
          (t) => {
            t.set(A0, f32View(new Float32Array(65 * 256), [65, 256]));
            t.set(B0, f32View(new Float32Array(256 * 65), [256, 65]));
          },
          (c) => {
            c.rank_pattern = { 'layers.0.self_attn.q_proj': 64, ...(c.rank_pattern as object) };
          },
        ),
      cls: AdapterRankError,
      base: AdapterFormatError,
      msg: /has rank 65; LoRA ranks must be 1\.\.64/,
      data: { rank: 65, max: 64 },
    },
    {
      what: 'tensor rank disagrees with the config',
      input: () =>
        variant(undefined, (c) => {
          c.r = 8;
        }),
      cls: AdapterRankError,
      base: AdapterFormatError,
      msg: /has rank 4 but adapter_config\.json gives module .* rank 8/,
      data: { rank: 4, configRank: 8 },
    },
    {
      what: 'unknown target module', // (qkv_proj is Phi-3's packed module: it maps, see replicas.test.ts)
      input: () =>
        variant((t) => {
          const a = t.get(A0)!;
          const b = t.get(B0)!;
          t.delete(A0);
          t.delete(B0);
          t.set(A0.replace('q_proj', 'c_attn'), a);
          t.set(B0.replace('q_proj', 'c_attn'), b);
        }),
      cls: AdapterModuleError,
      base: AdapterMismatchError,
      msg: /adapter module model\.layers\.0\.self_attn\.c_attn is not a LoRA target of this model/,
      data: { module: 'model.layers.0.self_attn.c_attn', name: 'c_attn', layer: 0 },
    },
    {
      what: 'layer the model does not have',
      input: () =>
        variant((t) => {
          t.set(A0.replace('layers.0', 'layers.9'), t.get(A0)!);
          t.set(B0.replace('layers.0', 'layers.9'), t.get(B0)!);
        }),
      cls: AdapterModuleError,
      base: AdapterMismatchError,
      msg: /model\.layers\.9\.self_attn\.q_proj is not a LoRA target .*layers 0\.\.5/,
      data: { layer: 9 },
    },
    {
      what: 'invalid config JSON',
      input: () => ({ ...good(), config: '{"peft_type": "LORA", "r": ' }),
      cls: AdapterConfigError,
      base: AdapterFormatError,
      msg: /adapter_config\.json: not valid JSON/,
      data: { file: 'adapter_config.json' },
    },
    {
      what: 'config field of the wrong type',
      input: () => variant(undefined, (c) => (c.use_rslora = 'yes')),
      cls: AdapterConfigError,
      base: AdapterFormatError,
      msg: /use_rslora must be true or false/,
      data: { field: 'use_rslora' },
    },
    {
      what: 'single file without a config in __metadata__',
      input: () => ({ weights: fx.bytes }),
      cls: AdapterConfigError,
      base: AdapterFormatError,
      msg: /no adapter_config\.json given and the \.safetensors __metadata__ has no adapter config/,
      data: { reason: 'missing' },
    },
    {
      what: 'different base model',
      input: () => variant(undefined, (c) => (c.base_model_name_or_path = 'meta-llama/Llama-3.2-1B')),
      cls: AdapterBaseModelError,
      base: AdapterMismatchError,
      msg: /trained for base model "meta-llama\/Llama-3\.2-1B" but the loaded model is "weblora-shakespeare"/,
      data: { declared: 'meta-llama/Llama-3.2-1B', model: 'weblora-shakespeare' },
    },
  ];

  for (const c of cases) {
    it(c.what, () => {
      const input = c.input();
      const e = errorOf(() => importPeftAdapter(input, MODEL));
      expect(e, `${c.what}: got ${e.name}: ${e.message}`).toBeInstanceOf(c.cls);
      expect(e).toBeInstanceOf(c.base);
      expect(e.name).toBe(c.cls.name);
      expect(e.message).toMatch(c.msg);
      expect((e as SafetensorsError).data).toMatchObject(c.data);
    });
  }

  it('the error classes are all distinct', () => {
    expect(new Set(cases.map((c) => c.cls)).size).toBe(10);
  });

  it('a tensor dropped from the header leaves a hole in the data: offset error', () => {
    const { header, data } = splitSafetensors(fx.bytes);
    delete header[A0];
    expect(
      errorOf(() => importPeftAdapter({ ...good(), weights: rawSafetensors(header, data) }, MODEL)),
    ).toBeInstanceOf(SafetensorsOffsetError);
  });
});
