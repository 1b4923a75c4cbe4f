/**
 * Node-only generator of the PWA icons in public/icons/ (run `npx tsx src/pwa/make-icons.ts`; the PNGs
 * are committed, so builds do not run it). Draws a white "W" of thick strokes on the accent colour,
 * anti-aliased by 4×4 supersampling, and encodes RGBA PNGs with node:zlib — no image library needed.
 * The maskable variant keeps the glyph inside the 80% safe zone. Nothing in the app imports this file.
 */
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { deflateSync } from 'node:zlib';

const BG = [0x5b, 0x3c, 0xc4];
const FG = [0xff, 0xff, 0xff];

function crc32(buf: Uint8Array): number {
  let c = ~0;
  for (const b of buf) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
  }
  return ~c >>> 0;
}

function chunk(type: string, data: Uint8Array): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'ascii');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

function png(size: number, rgba: Uint8Array): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 6; // RGBA
  const raw = Buffer.alloc(size * (size * 4 + 1));
  for (let y = 0; y < size; y++) {
    raw[y * (size * 4 + 1)] = 0; // filter: none
    raw.set(rgba.subarray(y * size * 4, (y + 1) * size * 4), y * (size * 4 + 1) + 1);
  }
  const sig = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([
    sig,
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw, { level: 9 })),
    chunk('IEND', new Uint8Array(0)),
  ]);
}

function distToSegment(px: number, py: number, ax: number, ay: number, bx: number, by: number): number {
  const dx = bx - ax;
  const dy = by - ay;
  const t = Math.max(0, Math.min(1, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)));
  return Math.hypot(px - (ax + t * dx), py - (ay + t * dy));
}

/** Unit-square "W" polyline, scaled by `scale` around the centre. */
function draw(size: number, scale: number, rounded: boolean): Uint8Array {
  const pts = [
    [0.18, 0.28],
    [0.34, 0.74],
    [0.5, 0.4],
    [0.66, 0.74],
    [0.82, 0.28],
  ].map(([x, y]) => [0.5 + (x! - 0.5) * scale, 0.5 + (y! - 0.5) * scale] as const);
  const half = 0.055 * scale;
  const out = new Uint8Array(size * size * 4);
  const S = 4;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      let ink = 0;
      let inside = 0;
      for (let sy = 0; sy < S; sy++) {
        for (let sx = 0; sx < S; sx++) {
          const u = (x + (sx + 0.5) / S) / size;
          const v = (y + (sy + 0.5) / S) / size;
          const r = 0.18;
          const cx = Math.min(Math.max(u, r), 1 - r);
          const cy = Math.min(Math.max(v, r), 1 - r);
          const inBg = !rounded || Math.hypot(u - cx, v - cy) <= r;
          if (!inBg) continue;
          inside++;
          let d = Infinity;
          for (let i = 0; i + 1 < pts.length; i++) {
            d = Math.min(d, distToSegment(u, v, pts[i]![0], pts[i]![1], pts[i + 1]![0], pts[i + 1]![1]));
          }
          if (d <= half) ink++;
        }
      }
      const o = (y * size + x) * 4;
      const a = inside / (S * S);
      const f = inside ? ink / inside : 0;
      for (let c = 0; c < 3; c++) out[o + c] = Math.round(BG[c]! * (1 - f) + FG[c]! * f);
      out[o + 3] = Math.round(a * 255);
    }
  }
  return out;
}

const dir = resolve(import.meta.dirname, '../../public/icons');
writeFileSync(resolve(dir, 'icon-192.png'), png(192, draw(192, 1, true)));
writeFileSync(resolve(dir, 'icon-512.png'), png(512, draw(512, 1, true)));
writeFileSync(resolve(dir, 'maskable-512.png'), png(512, draw(512, 0.7, false)));
writeFileSync(resolve(dir, 'apple-touch-icon-180.png'), png(180, draw(180, 0.85, false)));
console.log(`icons written to ${dir}`);
