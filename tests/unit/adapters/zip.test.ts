// The stored-ZIP writer used for adapter export (src/adapters/zip.ts): CRC-32 check value, and an
// archive read back field by field (as any unzip does: end record → central directory → local headers).
// (Also checked once by hand with Python's zipfile.testzip().)
import { describe, expect, it } from 'vitest';
import { crc32, zipStore } from '../../../src/adapters/zip.ts';

const enc = new TextEncoder();

function readZip(z: Uint8Array): { name: string; bytes: Uint8Array; crc: number }[] {
  const dv = new DataView(z.buffer, z.byteOffset, z.byteLength);
  const end = z.length - 22;
  expect(dv.getUint32(end, true)).toBe(0x06054b50);
  const count = dv.getUint16(end + 10, true);
  const cdSize = dv.getUint32(end + 12, true);
  let p = dv.getUint32(end + 16, true);
  expect(p + cdSize).toBe(end);
  const out: { name: string; bytes: Uint8Array; crc: number }[] = [];
  for (let i = 0; i < count; i++) {
    expect(dv.getUint32(p, true)).toBe(0x02014b50);
    const crc = dv.getUint32(p + 16, true);
    const size = dv.getUint32(p + 24, true);
    const nameLen = dv.getUint16(p + 28, true);
    const local = dv.getUint32(p + 42, true);
    const name = new TextDecoder().decode(z.subarray(p + 46, p + 46 + nameLen));
    expect(dv.getUint32(local, true)).toBe(0x04034b50);
    expect(dv.getUint16(local + 8, true)).toBe(0); // stored
    const dataAt = local + 30 + dv.getUint16(local + 26, true) + dv.getUint16(local + 28, true);
    out.push({ name, bytes: z.subarray(dataAt, dataAt + size), crc });
    p += 46 + nameLen;
  }
  return out;
}

describe('zipStore', () => {
  it('crc32 matches the standard check value', () => {
    expect(crc32(enc.encode('123456789'))).toBe(0xcbf43926);
    expect(crc32(new Uint8Array(0))).toBe(0);
  });

  it('writes entries that read back byte-identical, with their CRCs and UTF-8 names', () => {
    const weights = new Uint8Array(1000).map((_, i) => (i * 31) & 0xff);
    const entries = [
      { name: 'weblora-shout/adapter_config.json', bytes: enc.encode('{"r": 4}') },
      { name: 'weblora-shout/adapter_model.safetensors', bytes: weights },
      { name: 'ünïcode/ä.txt', bytes: new Uint8Array(0) },
    ];
    const back = readZip(zipStore(entries, new Date(2026, 10, 29, 12, 0, 0)));
    expect(back.map((e) => e.name)).toEqual(entries.map((e) => e.name));
    back.forEach((e, i) => {
      expect(e.bytes).toEqual(entries[i]!.bytes);
      expect(e.crc).toBe(crc32(entries[i]!.bytes));
    });
  });
});
