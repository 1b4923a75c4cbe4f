/**
 * A minimal ZIP writer (stored entries, no compression) for exporting an adapter as one download: the
 * PEFT folder `<name>/adapter_config.json` + `<name>/adapter_model.safetensors` in `<name>.zip`, which
 * unzips to a folder `PeftModel.from_pretrained` loads and this app re-imports (folder picker or drop).
 * Safetensors weights barely compress, so STORE keeps this small and dependency-free. Format: PKWARE
 * APPNOTE.TXT 6.3.10 (local headers, central directory, end record; UTF-8 names, flag bit 11; CRC-32 of
 * ISO 3309). It deliberately has no ZIP64 (entries and archive below 4 GiB) and no reader.
 */

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (ISO 3309 / ITU-T V.42, as in ZIP and PNG). */
export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

export interface ZipEntry {
  /** Path inside the archive, '/'-separated (e.g. 'weblora-shout/adapter_config.json'). */
  name: string;
  bytes: Uint8Array;
}

/** DOS date/time fields of `d` (local time, 2-second resolution, years 1980–2107). */
function dosTime(d: Date): { time: number; date: number } {
  const year = Math.min(Math.max(d.getFullYear(), 1980), 2107);
  return {
    time: (d.getHours() << 11) | (d.getMinutes() << 5) | (d.getSeconds() >> 1),
    date: ((year - 1980) << 9) | ((d.getMonth() + 1) << 5) | d.getDate(),
  };
}

/** One ZIP archive holding `entries` uncompressed, in order. */
export function zipStore(entries: readonly ZipEntry[], modified: Date = new Date()): Uint8Array {
  const enc = new TextEncoder();
  const { time, date } = dosTime(modified);
  const names = entries.map((e) => enc.encode(e.name));
  const crcs = entries.map((e) => crc32(e.bytes));
  const localSize = entries.reduce((n, e, i) => n + 30 + names[i]!.length + e.bytes.length, 0);
  const centralSize = names.reduce((n, nm) => n + 46 + nm.length, 0);
  const out = new Uint8Array(localSize + centralSize + 22);
  const dv = new DataView(out.buffer);
  let p = 0;
  const u16 = (v: number): void => {
    dv.setUint16(p, v, true);
    p += 2;
  };
  const u32 = (v: number): void => {
    dv.setUint32(p, v, true);
    p += 4;
  };
  const offsets: number[] = [];
  entries.forEach((e, i) => {
    offsets.push(p);
    u32(0x04034b50); // local file header
    u16(20); // version needed: 2.0
    u16(0x0800); // flags: UTF-8 names
    u16(0); // method: stored
    u16(time);
    u16(date);
    u32(crcs[i]!);
    u32(e.bytes.length); // compressed size
    u32(e.bytes.length); // uncompressed size
    u16(names[i]!.length);
    u16(0); // extra length
    out.set(names[i]!, p);
    p += names[i]!.length;
    out.set(e.bytes, p);
    p += e.bytes.length;
  });
  const centralStart = p;
  entries.forEach((e, i) => {
    u32(0x02014b50); // central directory header
    u16(20); // version made by
    u16(20); // version needed
    u16(0x0800);
    u16(0);
    u16(time);
    u16(date);
    u32(crcs[i]!);
    u32(e.bytes.length);
    u32(e.bytes.length);
    u16(names[i]!.length);
    u16(0); // extra
    u16(0); // comment
    u16(0); // disk number
    u16(0); // internal attributes
    u32(0); // external attributes
    u32(offsets[i]!);
    out.set(names[i]!, p);
    p += names[i]!.length;
  });
  const centralEnd = p;
  u32(0x06054b50); // end of central directory
  u16(0);
  u16(0);
  u16(entries.length);
  u16(entries.length);
  u32(centralEnd - centralStart); // central directory size
  u32(centralStart);
  u16(0); // comment length
  return out;
}
