/**
 * A tiny WebAssembly binary emitter: just the opcodes the CPU trainer's kernels (gemm.ts) use, so the
 * module bytes are produced by plain TypeScript at run time (no .wasm asset, no toolchain, no npm
 * dependency). Binary format: https://webassembly.github.io/spec/core/binary/ ; SIMD opcodes from the
 * fixed-width SIMD proposal (0xfd prefix), `f32x4.relaxed_madd` from relaxed SIMD (0xfd 0x105).
 * Not here: validation (WebAssembly.validate / new WebAssembly.Module do that), any opcode not listed.
 */

export const I32 = 0x7f;
export const V128 = 0x7b;

/** Unsigned LEB128. */
export function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return out;
}

/** Signed LEB128 (i32). */
export function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && !(b & 0x40)) || (n === -1 && b & 0x40)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}

const simd = (op: number) => [0xfd, ...uleb(op)];
/** memarg: alignment hint (log2 bytes) and constant byte offset. */
const mem = (align: number, offset: number) => [...uleb(align), ...uleb(offset)];

/** Instruction builders; each returns its bytes. */
export const op = {
  block: () => [0x02, 0x40],
  loop: () => [0x03, 0x40],
  if: () => [0x04, 0x40],
  else: () => [0x05],
  end: () => [0x0b],
  br: (depth: number) => [0x0c, ...uleb(depth)],
  brIf: (depth: number) => [0x0d, ...uleb(depth)],
  get: (i: number) => [0x20, ...uleb(i)],
  set: (i: number) => [0x21, ...uleb(i)],
  tee: (i: number) => [0x22, ...uleb(i)],
  i32: (v: number) => [0x41, ...sleb(v)],
  i32Eqz: () => [0x45],
  i32GeS: () => [0x4e],
  i32Add: () => [0x6a],
  i32Sub: () => [0x6b],
  i32Mul: () => [0x6c],
  v128Load: (offset = 0) => [...simd(0x00), ...mem(2, offset)],
  v128Load32Splat: (offset = 0) => [...simd(0x09), ...mem(2, offset)],
  v128Store: (offset = 0) => [...simd(0x0b), ...mem(2, offset)],
  v128Zero: () => [...simd(0x0c), ...new Array<number>(16).fill(0)],
  f32x4Add: () => simd(0xe4),
  f32x4Mul: () => simd(0xe6),
  /** a·b + c, fused or not as the platform chooses (deterministic on one machine). */
  f32x4RelaxedMadd: () => simd(0x105),
};

export interface FuncDef {
  name: string;
  params: number[]; // value types
  locals: number[]; // value types, one entry per local (after the params)
  body: number[]; // instructions, without the final `end`
}

function section(id: number, bytes: number[]): number[] {
  return [id, ...uleb(bytes.length), ...bytes];
}

const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
const name = (s: string): number[] => {
  const b = [...new TextEncoder().encode(s)];
  return [...uleb(b.length), ...b];
};

/**
 * A module importing one memory as env.mem (so JS owns and grows it) and exporting `funcs` by name; every
 * function returns nothing.
 */
export function emitModule(funcs: FuncDef[]): Uint8Array<ArrayBuffer> {
  const types = vec(funcs.map((f) => [0x60, ...vec(f.params.map((t) => [t])), 0]));
  const imports = vec([[...name('env'), ...name('mem'), 0x02, 0x00, 0x01]]); // memory, min 1 page
  const fnSec = vec(funcs.map((_, i) => uleb(i)));
  const exports = vec(funcs.map((f, i) => [...name(f.name), 0x00, ...uleb(i)]));
  const bodies = funcs.map((f) => {
    // Locals run-length encoded by type.
    const groups: number[][] = [];
    for (const t of f.locals) {
      const last = groups.at(-1);
      if (last && last[1] === t) last[0]!++;
      else groups.push([1, t]);
    }
    const code = [...uleb(groups.length), ...groups.flatMap(([n, t]) => [...uleb(n!), t!]), ...f.body, 0x0b];
    return [...uleb(code.length), ...code];
  });
  return new Uint8Array([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...section(1, types),
    ...section(2, imports),
    ...section(3, fnSec),
    ...section(7, exports),
    ...section(10, vec(bodies)),
  ]);
}
