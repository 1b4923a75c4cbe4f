/**
 * safetensors reader and writer (https://github.com/huggingface/safetensors, format section): an 8-byte
 * little-endian header length N, N bytes of UTF-8 JSON `{name: {dtype, shape, data_offsets: [begin, end)},
 * "__metadata__": {string: string}}`, then the raw little-endian row-major data section.
 * The parser validates the whole header BEFORE touching the data (lengths, dtypes, shapes, offsets: in
 * range, no overlaps, no holes, no trailing bytes) and returns zero-copy views into the input, so a hostile
 * file can cost at most the 100 MB header cap. Every violation is a `SafetensorsError` whose
 * `data.reason` names the rule broken. Not here: PEFT naming (peft.ts), fetching or caching files.
 */
import { SafetensorsError } from '../errors.ts';

export type Dtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

/** Bytes per element of each dtype we accept. */
export const DTYPE_SIZE: Readonly<Record<Dtype, number>> = Object.freeze({
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
});

/** Largest header we accept (the reference Rust implementation uses the same 100 MB cap). */
export const MAX_HEADER_BYTES = 100_000_000;

export interface TensorView {
  dtype: Dtype;
  shape: number[];
  /** Raw little-endian bytes; from `parseSafetensors` a view into the input (no copy). */
  data: Uint8Array;
}

export interface Safetensors {
  metadata: Record<string, string>;
  tensors: Map<string, TensorView>;
}

function fail(reason: string, message: string, data: Record<string, unknown> = {}): never {
  throw new SafetensorsError(`safetensors: ${message}`, { reason, ...data });
}

function isDtype(s: unknown): s is Dtype {
  return typeof s === 'string' && Object.hasOwn(DTYPE_SIZE, s);
}

function isNonNegInt(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

/** Parse and fully validate a safetensors file. Tensor data are views into `bytes`. */
export function parseSafetensors(bytes: Uint8Array): Safetensors {
  if (bytes.length < 8) {
    fail('truncated', `file is ${bytes.length} bytes, shorter than the 8-byte header length`, {
      fileBytes: bytes.length,
    });
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n64 = dv.getBigUint64(0, true);
  if (n64 > BigInt(MAX_HEADER_BYTES)) {
    fail('header-too-large', `header length ${n64} exceeds the ${MAX_HEADER_BYTES}-byte limit`, {
      headerBytes: n64.toString(),
      limit: MAX_HEADER_BYTES,
    });
  }
  const n = Number(n64);
  if (n > bytes.length - 8) {
    fail('header-beyond-file', `header length ${n} runs past the end of the ${bytes.length}-byte file`, {
      headerBytes: n,
      fileBytes: bytes.length,
    });
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + n));
  } catch {
    fail('header-not-utf8', 'header is not valid UTF-8');
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    fail('header-not-json', `header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    fail('header-not-object', 'header JSON is not an object');
  }
  const dataStart = 8 + n;
  const dataBytes = bytes.length - dataStart;
  const h = header as Record<string, unknown>;

  const metadata: Record<string, string> = {};
  const entries: { name: string; dtype: Dtype; shape: number[]; begin: number; end: number }[] = [];
  for (const name of Object.keys(h)) {
    const v = h[name];
    if (name === '__metadata__') {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) {
        fail('bad-metadata', '__metadata__ must be an object of string values');
      }
      for (const [k, s] of Object.entries(v as Record<string, unknown>)) {
        if (typeof s !== 'string') {
          fail('bad-metadata', `__metadata__.${k} is a ${typeof s}, not a string`, { key: k });
        }
        metadata[k] = s;
      }
      continue;
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) {
      fail('bad-entry', `tensor "${name}" entry is not an object`, { tensor: name });
    }
    const e = v as Record<string, unknown>;
    if (!isDtype(e.dtype)) {
      fail('bad-dtype', `tensor "${name}" has unsupported dtype ${JSON.stringify(e.dtype)}`, {
        tensor: name,
        dtype: e.dtype,
        supported: Object.keys(DTYPE_SIZE),
      });
    }
    const shape = e.shape;
    if (!Array.isArray(shape) || !shape.every(isNonNegInt)) {
      fail(
        'bad-shape',
        `tensor "${name}" shape ${JSON.stringify(shape)} is not a list of non-negative integers`,
        {
          tensor: name,
          shape,
        },
      );
    }
    const offs = e.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every(isNonNegInt) || offs[0]! > offs[1]!) {
      fail(
        'bad-offsets',
        `tensor "${name}" data_offsets ${JSON.stringify(offs)} is not [begin, end) with begin <= end`,
        {
          tensor: name,
          dataOffsets: offs,
        },
      );
    }
    const [begin, end] = offs as [number, number];
    let numel = 1;
    for (const d of shape as number[]) {
      numel *= d;
      if (!Number.isSafeInteger(numel))
        fail('bad-shape', `tensor "${name}" shape is too large`, { tensor: name, shape });
    }
    const want = numel * DTYPE_SIZE[e.dtype];
    if (!Number.isSafeInteger(want) || end - begin !== want) {
      fail(
        'size-mismatch',
        `tensor "${name}" is ${e.dtype}${JSON.stringify(shape)} = ${want} bytes but data_offsets span ${end - begin}`,
        { tensor: name, expectedBytes: want, actualBytes: end - begin },
      );
    }
    if (end > dataBytes) {
      fail(
        'offset-out-of-range',
        `tensor "${name}" ends at byte ${end} of a ${dataBytes}-byte data section`,
        {
          tensor: name,
          end,
          dataBytes,
        },
      );
    }
    entries.push({ name, dtype: e.dtype, shape: shape as number[], begin, end });
  }

  // Coverage: sorted by begin, every tensor starts where the previous ended and the last ends at EOF.
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  let prev = '';
  for (const e of sorted) {
    if (e.begin < pos) {
      fail('overlap', `tensor "${e.name}" [${e.begin}, ${e.end}) overlaps "${prev}" (ends at ${pos})`, {
        tensor: e.name,
        other: prev,
        begin: e.begin,
        previousEnd: pos,
      });
    }
    if (e.begin > pos) {
      fail('hole', `bytes [${pos}, ${e.begin}) of the data section belong to no tensor`, {
        tensor: e.name,
        begin: pos,
        end: e.begin,
      });
    }
    pos = e.end;
    prev = e.name;
  }
  if (pos !== dataBytes) {
    fail('hole', `bytes [${pos}, ${dataBytes}) at the end of the data section belong to no tensor`, {
      begin: pos,
      end: dataBytes,
    });
  }

  const tensors = new Map<string, TensorView>();
  for (const e of entries) {
    tensors.set(e.name, {
      dtype: e.dtype,
      shape: e.shape,
      data: bytes.subarray(dataStart + e.begin, dataStart + e.end),
    });
  }
  return { metadata, tensors };
}

/**
 * Canonical order used by the writer (and by scripts/py/fixtures.py): larger element size first (so every
 * tensor is naturally aligned: the data section starts at a multiple of 8), then name by UTF-16 code unit.
 */
function canonicalOrder(a: [string, TensorView], b: [string, TensorView]): number {
  const d = DTYPE_SIZE[b[1].dtype] - DTYPE_SIZE[a[1].dtype];
  if (d !== 0) return d;
  return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
}

/**
 * Serialize tensors. Layout (deterministic, so parse → write reproduces canonical files byte for byte):
 * header JSON without whitespace, `__metadata__` first when non-empty, then tensors in canonical order
 * (element size descending, then name) with data in the same order; header padded with spaces to a
 * multiple of 8 bytes, as the Rust implementation does.
 */
export function writeSafetensors(
  tensors: Map<string, TensorView> | Record<string, TensorView>,
  metadata?: Record<string, string>,
): Uint8Array {
  const list = (tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors)).sort(
    canonicalOrder,
  );
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let off = 0;
  for (const [name, t] of list) {
    if (name === '__metadata__') fail('bad-entry', 'a tensor cannot be named __metadata__');
    if (!isDtype(t.dtype))
      fail('bad-dtype', `tensor "${name}" has unsupported dtype ${JSON.stringify(t.dtype)}`);
    const numel = t.shape.reduce((p, d) => p * d, 1);
    if (!t.shape.every(isNonNegInt) || numel * DTYPE_SIZE[t.dtype] !== t.data.byteLength) {
      fail(
        'size-mismatch',
        `tensor "${name}": ${t.dtype}${JSON.stringify(t.shape)} needs ${numel * DTYPE_SIZE[t.dtype]} bytes, got ${t.data.byteLength}`,
        {
          tensor: name,
        },
      );
    }
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + t.data.byteLength] };
    off += t.data.byteLength;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const pad = (8 - (json.length % 8)) % 8;
  if (pad) {
    const p = new Uint8Array(json.length + pad).fill(0x20);
    p.set(json);
    json = p;
  }
  const out = new Uint8Array(8 + json.length + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let pos = 8 + json.length;
  for (const [, t] of list) {
    out.set(t.data, pos);
    pos += t.data.byteLength;
  }
  return out;
}

function numelOf(t: TensorView): number {
  return t.data.byteLength / DTYPE_SIZE[t.dtype];
}

/** IEEE half → float. */
function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? Number.NaN : s * Number.POSITIVE_INFINITY;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

/** A fresh Float32Array of an F32, F16, BF16 or F64 tensor (F64 is rounded to f32). */
export function readFloat32(t: TensorView): Float32Array {
  const n = numelOf(t);
  const dv = new DataView(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  const out = new Float32Array(n);
  switch (t.dtype) {
    case 'F32':
      for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, true);
      return out;
    case 'F16':
      for (let i = 0; i < n; i++) out[i] = halfToFloat(dv.getUint16(2 * i, true));
      return out;
    case 'BF16': {
      const u = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) u[i] = dv.getUint16(2 * i, true) << 16;
      return out;
    }
    case 'F64':
      for (let i = 0; i < n; i++) out[i] = dv.getFloat64(8 * i, true);
      return out;
    default:
      return fail('bad-dtype', `cannot read a ${t.dtype} tensor as float32`, { dtype: t.dtype });
  }
}

/** A fresh Int32Array of an I32 or I64 tensor (I64 values must fit in int32). */
export function readInt32(t: TensorView): Int32Array {
  const n = numelOf(t);
  const dv = new DataView(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  const out = new Int32Array(n);
  if (t.dtype === 'I32') {
    for (let i = 0; i < n; i++) out[i] = dv.getInt32(4 * i, true);
    return out;
  }
  if (t.dtype === 'I64') {
    for (let i = 0; i < n; i++) {
      const v = dv.getBigInt64(8 * i, true);
      if (v > 2147483647n || v < -2147483648n) fail('out-of-range', `I64 value ${v} does not fit in int32`);
      out[i] = Number(v);
    }
    return out;
  }
  return fail('bad-dtype', `cannot read a ${t.dtype} tensor as int32`, { dtype: t.dtype });
}

/** An F32 TensorView over a copy of `values` (little-endian), for writing. */
export function f32Tensor(values: ArrayLike<number>, shape: number[]): TensorView {
  const data = new Uint8Array(values.length * 4);
  const dv = new DataView(data.buffer);
  for (let i = 0; i < values.length; i++) dv.setFloat32(4 * i, values[i]!, true);
  return { dtype: 'F32', shape, data };
}
