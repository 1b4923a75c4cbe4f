// Property-based fuzzing (fast-check) of what a user can drop into the app: the safetensors parser and
// the adapter_config.json parser, alone and through the whole import. Random bytes, mutations of a valid
// adapter and random JSON must either parse or fail with one of our typed errors — never a TypeError,
// RangeError or hang. Each property is bounded (numRuns) and the file has a time limit. fast-check prints
// the seed of a failing run; rerun with `{ seed, path }` to reproduce.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type AdapterModelInfo,
  importPeftAdapter,
  parseAdapterConfig,
  parseAdapterSafetensors,
} from '../../../src/adapters/import.ts';
import { buildPeftFiles } from '../../../src/adapters/peft-writer.ts';
import { writeSafetensors } from '../../../src/adapters/safetensors.ts';
import {
  AdapterFormatError,
  AdapterMismatchError,
  SafetensorsError,
  WebLoraError,
} from '../../../src/errors.ts';
import { modelTargets } from './model-targets.ts';

const RUNS = { numRuns: 500 };

/** A tiny model (2 layers, hidden 256) keeps each run cheap. */
const MODEL: AdapterModelInfo = { id: 'weblora-shakespeare', targets: modelTargets(2) };

function tinyAdapter(): { config: Uint8Array; weights: Uint8Array } {
  const modules = MODEL.targets
    .filter((t) => t.module === 'q_proj' || t.module === 'v_proj')
    .map((t) => ({
      layer: t.layer,
      module: t.module,
      in: t.in,
      out: t.out,
      A: Float32Array.from({ length: 2 * t.in }, (_, i) => Math.sin(i)),
      B: Float32Array.from({ length: t.out * 2 }, (_, i) => Math.cos(i)),
    }));
  const f = buildPeftFiles({ baseModel: 'weblora-shakespeare', r: 2, loraAlpha: 4, modules });
  return { config: f['adapter_config.json'], weights: f['adapter_model.safetensors'] };
}
const VALID = tinyAdapter();

/** Runs f; a thrown error must be one of `allowed` (all WebLoraError subclasses). */
function onlyTyped(f: () => unknown, allowed: (new (...a: never[]) => Error)[]): void {
  try {
    f();
  } catch (e) {
    const ok = e instanceof WebLoraError && allowed.some((c) => e instanceof c);
    if (!ok) {
      throw new Error(`untyped failure: ${(e as Error)?.name}: ${(e as Error)?.message}`, { cause: e });
    }
  }
}

const IMPORT_ERRORS = [SafetensorsError, AdapterFormatError, AdapterMismatchError];

/** A valid header length prefix followed by `body` (so the JSON layer is reached). */
function framed(header: string, data: Uint8Array): Uint8Array {
  const h = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

describe('fuzz: safetensors parser', () => {
  it('random bytes: parse or SafetensorsError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (b) =>
        onlyTyped(() => parseAdapterSafetensors(b), [SafetensorsError]),
      ),
      RUNS,
    );
  });

  it('random JSON headers (and tensor-entry-shaped headers) over random data: parse or SafetensorsError', () => {
    const entry = fc.record(
      {
        dtype: fc.oneof(fc.constantFrom('F32', 'F16', 'BF16', 'I8', 'U8', 'F64', 'X'), fc.anything()),
        shape: fc.oneof(fc.array(fc.integer({ min: -2, max: 6 }), { maxLength: 3 }), fc.anything()),
        data_offsets: fc.oneof(
          fc.tuple(fc.integer({ min: -4, max: 80 }), fc.integer({ min: -4, max: 80 })),
          fc.anything(),
        ),
      },
      { requiredKeys: [] },
    );
    const header = fc.oneof(
      fc.json(),
      fc
        .dictionary(fc.oneof(fc.string({ maxLength: 6 }), fc.constant('__metadata__')), entry, { maxKeys: 4 })
        .map((o) => JSON.stringify(o)),
    );
    fc.assert(
      fc.property(header, fc.uint8Array({ maxLength: 96 }), (h, d) =>
        onlyTyped(() => parseAdapterSafetensors(framed(h, d)), [SafetensorsError]),
      ),
      RUNS,
    );
  });

  it('huge or lying length prefixes never allocate or hang', () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
        fc.uint8Array({ maxLength: 64 }),
        (n, rest) => {
          const b = new Uint8Array(8 + rest.length);
          new DataView(b.buffer).setBigUint64(0, n, true);
          b.set(rest, 8);
          onlyTyped(() => parseAdapterSafetensors(b), [SafetensorsError]);
        },
      ),
      RUNS,
    );
  });
});

describe('fuzz: adapter_config.json parser', () => {
  it('random JSON text: parse or AdapterFormatError', () => {
    fc.assert(
      fc.property(fc.oneof(fc.json(), fc.string({ maxLength: 40 })), (s) =>
        onlyTyped(() => parseAdapterConfig(s), [AdapterFormatError]),
      ),
      RUNS,
    );
  });

  it('LoRA configs with random values in every known field: parse or AdapterFormatError', () => {
    const value = fc.oneof(
      fc.anything({ maxDepth: 2 }),
      fc.integer({ min: -2, max: 100 }),
      fc.array(fc.constantFrom('q_proj', 'v_proj', 'x', '.*', '('), { maxLength: 3 }),
      fc.dictionary(
        fc.constantFrom('q_proj', 'layers.0.self_attn.v_proj', '[', 'v'),
        fc.integer({ min: -1, max: 70 }),
      ),
    );
    const fields = [
      'r',
      'lora_alpha',
      'target_modules',
      'use_rslora',
      'rank_pattern',
      'alpha_pattern',
      'fan_in_fan_out',
      'layers_to_transform',
      'layers_pattern',
      'bias',
      'use_dora',
      'modules_to_save',
      'lora_dropout',
      'base_model_name_or_path',
      'task_type',
    ];
    const cfg = fc.dictionary(fc.constantFrom(...fields), value, { maxKeys: 6 });
    fc.assert(
      fc.property(cfg, (c) =>
        onlyTyped(() => parseAdapterConfig({ ...c, peft_type: 'LORA' }), [AdapterFormatError]),
      ),
      RUNS,
    );
  });
});

describe('fuzz: whole import', () => {
  it('the unmutated tiny adapter imports', () => {
    expect(importPeftAdapter(VALID, MODEL).summary.rank).toBe(2);
  });

  it('mutated valid files (byte flips, truncation, splices): import or a typed error', () => {
    const mutation = fc.oneof(
      fc.record({
        kind: fc.constant('flip' as const),
        at: fc.array(fc.nat(), { minLength: 1, maxLength: 4 }),
        to: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 4, maxLength: 4 }),
      }),
      fc.record({
        kind: fc.constant('cut' as const),
        at: fc.array(fc.nat(), { minLength: 1, maxLength: 1 }),
      }),
      fc.record({
        kind: fc.constant('header' as const),
        at: fc.array(fc.nat({ max: 300 }), { minLength: 1, maxLength: 3 }),
      }),
    );
    fc.assert(
      fc.property(mutation, fc.boolean(), (m, mutateConfig) => {
        let w = VALID.weights.slice();
        let c = VALID.config.slice();
        const target = mutateConfig ? c : w;
        if (m.kind === 'flip') {
          m.at.forEach((p, i) => {
            target[p % target.length] = m.to[i]!;
          });
        } else if (m.kind === 'header') {
          // Mutations concentrated in the length prefix and header JSON.
          for (const p of m.at) {
            const i = p % Math.min(w.length, 400);
            w[i] = w[i]! ^ 0x5a;
          }
        } else {
          const cut = m.at[0]! % target.length;
          if (mutateConfig) c = c.slice(0, cut);
          else w = w.slice(0, cut);
        }
        onlyTyped(() => importPeftAdapter({ config: c, weights: w }, MODEL), IMPORT_ERRORS);
      }),
      RUNS,
    );
  });

  it('random configs over valid weights, and valid configs in single-file metadata: import or a typed error', () => {
    const valid = JSON.parse(new TextDecoder().decode(VALID.config)) as Record<string, unknown>;
    const field = fc.constantFrom(...Object.keys(valid));
    fc.assert(
      fc.property(field, fc.anything({ maxDepth: 2 }), fc.boolean(), (k, v, single) => {
        const cfg = JSON.stringify({ ...valid, [k]: v });
        if (single) {
          const st = new Map([['x', { dtype: 'F32' as const, shape: [0], data: new Uint8Array(0) }]]);
          const w = writeSafetensors(st, { adapter_config: cfg });
          onlyTyped(() => importPeftAdapter({ weights: w }, MODEL), IMPORT_ERRORS);
        } else {
          onlyTyped(() => importPeftAdapter({ config: cfg, weights: VALID.weights }, MODEL), IMPORT_ERRORS);
        }
      }),
      RUNS,
    );
  });
});
