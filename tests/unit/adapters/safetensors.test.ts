// safetensors reader/writer: byte-exact round trips (including the Python-written fixtures), one test per
// format rule with the specific SafetensorsError reason, and fuzzing: random and mutated bytes may only
// ever produce a SafetensorsError (never another exception, never a hang).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  f32Tensor,
  parseSafetensors,
  readFloat32,
  readInt32,
  type TensorView,
  writeSafetensors,
} from '../../../src/adapters/safetensors.ts';
import { SafetensorsError } from '../../../src/errors.ts';
import { FIXTURES_DIR } from '../../helpers/fixtures.ts';

/** A file from a raw header object and a data section (no validation: for building malformed files). */
function raw(
  header: unknown,
  data: Uint8Array | number = 0,
  opts: { headerLen?: bigint; headerText?: string } = {},
) {
  const json = new TextEncoder().encode(opts.headerText ?? JSON.stringify(header));
  const body = typeof data === 'number' ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + json.length + body.length);
  new DataView(out.buffer).setBigUint64(0, opts.headerLen ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(body, 8 + json.length);
  return out;
}

function reasonOf(bytes: Uint8Array): string {
  try {
    parseSafetensors(bytes);
  } catch (e) {
    expect(e).toBeInstanceOf(SafetensorsError);
    return (e as SafetensorsError).data.reason as string;
  }
  return 'ok';
}

/** Byte equality without vitest's slow element-wise deep diff; reports the first differing offset. */
function expectSameBytes(a: Uint8Array, b: Uint8Array, what: string) {
  expect(a.length, `${what}: length`).toBe(b.length);
  if (!Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length))) {
    const i = a.findIndex((x, k) => x !== b[k]);
    expect.fail(`${what}: bytes differ first at offset ${i}`);
  }
}

const t = (dtype: string, shape: number[], begin: number, end: number) => ({
  dtype,
  shape,
  data_offsets: [begin, end],
});

describe('safetensors round trip', () => {
  it('write → parse → write is byte-exact and preserves values, dtypes, metadata', () => {
    const i64 = new Uint8Array(16);
    new DataView(i64.buffer).setBigInt64(8, -5n, true);
    const tensors = new Map<string, TensorView>([
      ['w', f32Tensor([1, -2.5, 3e-8, 4], [2, 2])],
      ['scalar', f32Tensor([7], [])],
      ['empty', { dtype: 'F16', shape: [0, 3], data: new Uint8Array(0) }],
      ['ids', { dtype: 'I64', shape: [2], data: i64 }],
      ['h', { dtype: 'F16', shape: [3], data: new Uint8Array([0x00, 0x3c, 0x00, 0xc0, 0x01, 0x00]) }],
      ['bf', { dtype: 'BF16', shape: [1], data: new Uint8Array([0xc0, 0x3f]) }],
      ['b', { dtype: 'BOOL', shape: [3], data: new Uint8Array([1, 0, 1]) }],
    ]);
    const bytes = writeSafetensors(tensors, { format: 'pt', note: 'ünïcode ok' });
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect(n % 8).toBe(0);
    const st = parseSafetensors(bytes);
    expect(st.metadata).toEqual({ format: 'pt', note: 'ünïcode ok' });
    expect([...st.tensors.keys()].sort()).toEqual([...tensors.keys()].sort());
    expect(Array.from(readFloat32(st.tensors.get('w')!))).toEqual([1, -2.5, Math.fround(3e-8), 4]);
    expect(st.tensors.get('scalar')!.shape).toEqual([]);
    expect(Array.from(readFloat32(st.tensors.get('h')!))).toEqual([1, -2, 2 ** -24]);
    expect(Array.from(readFloat32(st.tensors.get('bf')!))).toEqual([1.5]);
    expect(Array.from(readInt32(st.tensors.get('ids')!))).toEqual([0, -5]);
    // Views, not copies.
    expect(st.tensors.get('w')!.data.buffer).toBe(bytes.buffer);
    expectSameBytes(writeSafetensors(st.tensors, st.metadata), bytes, 'round trip');
    // Canonical data order: 8-byte dtypes first, so every tensor is naturally aligned.
    for (const v of st.tensors.values()) {
      const size = v.dtype === 'I64' ? 8 : v.dtype === 'F32' ? 4 : 1;
      expect(v.data.byteOffset % size).toBe(0);
    }
  });

  it('re-writing every Python-written fixture file reproduces it byte for byte', () => {
    const files = [
      ...readdirSync(FIXTURES_DIR).filter((f) => f.endsWith('.safetensors')),
      ...['peft-adapter', 'peft-adapter-rslora'].map((d) => `${d}/adapter_model.safetensors`),
    ];
    expect(files.length).toBeGreaterThanOrEqual(5);
    for (const f of files) {
      const bytes = new Uint8Array(readFileSync(join(FIXTURES_DIR, f)));
      const st = parseSafetensors(bytes);
      expectSameBytes(writeSafetensors(st.tensors, st.metadata), bytes, f);
    }
  });

  it('writer rejects data that does not match dtype × shape', () => {
    expect(() => writeSafetensors({ x: { dtype: 'F32', shape: [3], data: new Uint8Array(8) } })).toThrow(
      SafetensorsError,
    );
  });
});

describe('safetensors validation: each rule has its own error', () => {
  const good = raw({ a: t('F32', [2], 0, 8), b: t('U8', [4], 8, 12) }, 12);

  it('accepts a well-formed file with holes-free, in-order or out-of-order entries', () => {
    expect(reasonOf(good)).toBe('ok');
    expect(reasonOf(raw({ b: t('U8', [4], 8, 12), a: t('F32', [2], 0, 8) }, 12))).toBe('ok');
  });
  it('truncated: shorter than 8 bytes', () => {
    expect(reasonOf(new Uint8Array(5))).toBe('truncated');
    expect(reasonOf(new Uint8Array(0))).toBe('truncated');
  });
  it('header length beyond the file / above the 100 MB cap', () => {
    expect(reasonOf(raw({}, 0, { headerLen: 1000n }))).toBe('header-beyond-file');
    expect(reasonOf(good.subarray(0, 20))).toBe('header-beyond-file');
    expect(reasonOf(raw({}, 0, { headerLen: 2n ** 63n }))).toBe('header-too-large');
  });
  it('invalid JSON, non-UTF-8, non-object header', () => {
    expect(reasonOf(raw(null, 0, { headerText: '{"a": ' }))).toBe('header-not-json');
    expect(reasonOf(raw(null, 0, { headerText: '[1,2]' }))).toBe('header-not-object');
    const bad = raw(null, 0, { headerText: '{"ab":1}' });
    bad[10] = 0xff;
    expect(reasonOf(bad)).toBe('header-not-utf8');
  });
  it('bad dtype, bad shape, bad offsets, bad entry, bad metadata', () => {
    expect(reasonOf(raw({ a: t('F8', [2], 0, 2) }, 2))).toBe('bad-dtype');
    expect(reasonOf(raw({ a: t('F32', [-1], 0, 0) }))).toBe('bad-shape');
    expect(reasonOf(raw({ a: t('F32', [1.5], 0, 6) }, 6))).toBe('bad-shape');
    expect(reasonOf(raw({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 0] } }, 4))).toBe('bad-offsets');
    expect(reasonOf(raw({ a: { dtype: 'F32', shape: [1] } }, 4))).toBe('bad-offsets');
    expect(reasonOf(raw({ a: 5 }))).toBe('bad-entry');
    expect(reasonOf(raw({ __metadata__: { k: 1 } }))).toBe('bad-metadata');
    expect(reasonOf(raw({ __metadata__: ['x'] }))).toBe('bad-metadata');
  });
  it('shape/size mismatch', () => {
    const e = (() => {
      try {
        parseSafetensors(raw({ a: t('F32', [3], 0, 8) }, 8));
      } catch (err) {
        return err as SafetensorsError;
      }
    })();
    expect(e?.data).toMatchObject({
      reason: 'size-mismatch',
      tensor: 'a',
      expectedBytes: 12,
      actualBytes: 8,
    });
    expect(e?.message).toMatch(/tensor "a" is F32\[3\] = 12 bytes but data_offsets span 8/);
    expect(reasonOf(raw({ a: t('F32', [2 ** 40, 2 ** 40], 0, 8) }, 8))).toBe('bad-shape');
  });
  it('out-of-range offsets', () => {
    expect(reasonOf(raw({ a: t('F32', [2], 0, 8) }, 4))).toBe('offset-out-of-range');
  });
  it('overlapping offsets', () => {
    expect(reasonOf(raw({ a: t('F32', [2], 0, 8), b: t('F32', [1], 4, 8) }, 8))).toBe('overlap');
    expect(reasonOf(raw({ a: t('F32', [1], 0, 4), b: t('F32', [1], 0, 4) }, 4))).toBe('overlap');
  });
  it('holes: gap between tensors, unused bytes at the end', () => {
    expect(reasonOf(raw({ a: t('F32', [1], 0, 4), b: t('F32', [1], 8, 12) }, 12))).toBe('hole');
    expect(reasonOf(raw({ a: t('F32', [1], 0, 4) }, 8))).toBe('hole');
    expect(reasonOf(raw({ a: t('F32', [1], 4, 8) }, 8))).toBe('hole');
  });
});

describe('safetensors fuzzing', () => {
  const base = writeSafetensors(
    {
      w: f32Tensor([1, 2, 3, 4, 5, 6], [2, 3]),
      b: { dtype: 'U8', shape: [5], data: new Uint8Array([1, 2, 3, 4, 5]) },
    },
    { format: 'pt' },
  );
  const onlySafetensorsErrors = (bytes: Uint8Array) => {
    try {
      const st = parseSafetensors(bytes);
      for (const v of st.tensors.values()) if (v.dtype === 'F32') readFloat32(v);
    } catch (e) {
      if (!(e instanceof SafetensorsError)) throw e;
    }
  };

  it('random bytes (with a plausible header length) only ever throw SafetensorsError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(400), (body, n) => {
        const b = new Uint8Array(8 + body.length);
        new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
        b.set(body, 8);
        onlySafetensorsErrors(b);
        onlySafetensorsErrors(body);
      }),
      { numRuns: 2000 },
    );
  });

  it('mutated valid files (byte flips, truncation, random JSON headers) only ever throw SafetensorsError', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(base.length - 1), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }),
        fc.nat(base.length),
        (flips, cut) => {
          const b = base.slice();
          for (const [i, v] of flips) b[i] = v;
          onlySafetensorsErrors(b);
          onlySafetensorsErrors(b.subarray(0, cut));
        },
      ),
      { numRuns: 2000 },
    );
    fc.assert(
      fc.property(fc.jsonValue(), fc.uint8Array({ maxLength: 64 }), (header, data) => {
        onlySafetensorsErrors(raw(header, data));
        onlySafetensorsErrors(raw({ x: header }, data));
      }),
      { numRuns: 1000 },
    );
  });

  it('a header length near 2^64 or the cap is rejected without allocating it', () => {
    // Not timed (tests assert no timings): a 100 MB allocation shows in Node's count of ArrayBuffer
    // bytes right after this synchronous block, even when dropped (checked: +100000000).
    const bytesBefore = process.memoryUsage().arrayBuffers;
    expect(reasonOf(raw({}, 0, { headerLen: 2n ** 64n - 1n }))).toBe('header-too-large');
    expect(reasonOf(raw({}, 0, { headerLen: 100_000_000n }))).toBe('header-beyond-file');
    expect(process.memoryUsage().arrayBuffers - bytesBefore).toBeLessThan(1 << 20);
  });
});
