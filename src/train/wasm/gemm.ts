/**
 * The CPU trainer's one compute kernel: a WebAssembly SIMD f32 GEMM, C (M, N) = [C +] A (M, K) · B (K, N),
 * all row-major in one wasm memory, emitted at run time by emit.ts (about 400 bytes, so even a page's
 * main thread may compile it synchronously). Register tile 4 rows × 8 columns (8 f32x4 accumulators), the
 * k loop innermost: per k, 2 vector loads of B, 4 broadcast loads of A, 8 multiply-adds. Column tiles
 * outer, row tiles inner, so one B panel (K × 8) is reused by every row tile while it is in cache.
 * Where relaxed SIMD validates (Chromium ≥ 114), the multiply-adds are `f32x4.relaxed_madd` (one FMA on
 * x86 with FMA3 / arm64); otherwise mul + add (Node 20). Either way a call is deterministic on a machine.
 * Contract: M % 4 == 0, N % 8 == 0 (callers pad with zeros), K ≥ 0; strides in bytes; no bounds checks
 * beyond the wasm memory's. Not here: threads, packing/blocking over K (the trainer's K ≤ a few thousand).
 */
import { UnsupportedError } from '../../errors.ts';
import { emitModule, I32, op, V128 } from './emit.ts';

// Parameter and local indices of `gemm`.
const [A, B, C, M, N, K, LDA, LDB, LDC, ACC] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
const [I, J, KK, PA, PB, PC, LDA2, LDA3] = [10, 11, 12, 13, 14, 15, 16, 17];
const ACC0 = 18; // 8 v128 accumulators: 18..25, row r, half h at ACC0 + 2r + h
const B0 = 26;
const B1 = 27;
const AV = 28;

function gemmBody(fma: boolean): number[] {
  const g = op.get;
  const s = op.set;
  const madd = (acc: number, b: number) =>
    fma
      ? [...g(AV), ...g(b), ...g(acc), ...op.f32x4RelaxedMadd(), ...s(acc)]
      : [...g(acc), ...g(AV), ...g(b), ...op.f32x4Mul(), ...op.f32x4Add(), ...s(acc)];
  // Address of row r of the C tile: pc + r·ldc.
  const cRow = (r: number) => [
    ...g(PC),
    ...(r ? [...g(LDC), ...op.i32(r), ...op.i32Mul(), ...op.i32Add()] : []),
  ];
  const aRow = [
    [...g(PA)],
    [...g(PA), ...g(LDA), ...op.i32Add()],
    [...g(PA), ...g(LDA2), ...op.i32Add()],
    [...g(PA), ...g(LDA3), ...op.i32Add()],
  ];
  const loadAcc: number[] = [];
  const storeAcc: number[] = [];
  for (let r = 0; r < 4; r++) {
    for (let h = 0; h < 2; h++) {
      loadAcc.push(...cRow(r), ...op.v128Load(16 * h), ...s(ACC0 + 2 * r + h));
      storeAcc.push(...cRow(r), ...g(ACC0 + 2 * r + h), ...op.v128Store(16 * h));
    }
  }
  const zeroAcc = Array.from({ length: 8 }, (_, i) => [...op.v128Zero(), ...s(ACC0 + i)]).flat();
  const kBody = [
    ...g(PB),
    ...op.v128Load(0),
    ...s(B0),
    ...g(PB),
    ...op.v128Load(16),
    ...s(B1),
    ...[0, 1, 2, 3].flatMap((r) => [
      ...aRow[r]!,
      ...op.v128Load32Splat(),
      ...s(AV),
      ...madd(ACC0 + 2 * r, B0),
      ...madd(ACC0 + 2 * r + 1, B1),
    ]),
    ...g(PA),
    ...op.i32(4),
    ...op.i32Add(),
    ...s(PA),
    ...g(PB),
    ...g(LDB),
    ...op.i32Add(),
    ...s(PB),
  ];
  // biome-ignore format: one instruction sequence per line reads as the loop nest
  return [
    ...g(LDA), ...op.i32(2), ...op.i32Mul(), ...s(LDA2),
    ...g(LDA), ...op.i32(3), ...op.i32Mul(), ...s(LDA3),
    ...op.i32(0), ...s(J),
    ...op.block(), ...op.loop(), // over column tiles j
      ...g(J), ...g(N), ...op.i32GeS(), ...op.brIf(1),
      ...op.i32(0), ...s(I),
      ...op.block(), ...op.loop(), // over row tiles i
        ...g(I), ...g(M), ...op.i32GeS(), ...op.brIf(1),
        // pa = a + i·lda; pb = b + 4j; pc = c + i·ldc + 4j
        ...g(A), ...g(I), ...g(LDA), ...op.i32Mul(), ...op.i32Add(), ...s(PA),
        ...g(B), ...g(J), ...op.i32(4), ...op.i32Mul(), ...op.i32Add(), ...s(PB),
        ...g(C), ...g(I), ...g(LDC), ...op.i32Mul(), ...op.i32Add(), ...g(J), ...op.i32(4), ...op.i32Mul(), ...op.i32Add(), ...s(PC),
        ...g(ACC), ...op.if(), ...loadAcc, ...op.else(), ...zeroAcc, ...op.end(),
        ...g(K), ...s(KK),
        ...op.block(), ...op.loop(), // over k
          ...g(KK), ...op.i32Eqz(), ...op.brIf(1),
          ...kBody,
          ...g(KK), ...op.i32(1), ...op.i32Sub(), ...s(KK),
          ...op.br(0),
        ...op.end(), ...op.end(),
        ...storeAcc,
        ...g(I), ...op.i32(4), ...op.i32Add(), ...s(I),
        ...op.br(0),
      ...op.end(), ...op.end(),
      ...g(J), ...op.i32(8), ...op.i32Add(), ...s(J),
      ...op.br(0),
    ...op.end(), ...op.end(),
  ];
}

/** The module bytes: one export, gemm(a, b, c, M, N, K, lda, ldb, ldc, accumulate). */
export function gemmModuleBytes(fma: boolean): Uint8Array<ArrayBuffer> {
  return emitModule([
    {
      name: 'gemm',
      params: new Array<number>(10).fill(I32),
      locals: [...new Array<number>(8).fill(I32), ...new Array<number>(11).fill(V128)],
      body: gemmBody(fma),
    },
  ]);
}

let compiled: { module: WebAssembly.Module; fma: boolean } | null | undefined;

/** The compiled module (relaxed-SIMD variant where it validates), or null without wasm SIMD. */
export function gemmModule(): { module: WebAssembly.Module; fma: boolean } | null {
  if (compiled !== undefined) return compiled;
  compiled = null;
  if (typeof WebAssembly === 'undefined') return null;
  for (const fma of [true, false]) {
    const bytes = gemmModuleBytes(fma);
    if (WebAssembly.validate(bytes)) {
      compiled = { module: new WebAssembly.Module(bytes), fma };
      break;
    }
  }
  return compiled;
}

type GemmFn = (
  a: number,
  b: number,
  c: number,
  M: number,
  N: number,
  K: number,
  lda: number,
  ldb: number,
  ldc: number,
  acc: number,
) => void;

const PAGE = 65536;

/**
 * One wasm memory with a bump allocator and the GEMM bound to it. Pointers are byte offsets (16-aligned);
 * `mark()` / `release(m)` free everything allocated after the mark (per-call scratch). Views must be
 * re-made after any allocation (growing the memory detaches the old buffer): use `f32(ptr, n)`.
 */
export class WasmGemm {
  readonly memory: WebAssembly.Memory;
  readonly fma: boolean;
  private readonly fn: GemmFn;
  private top = 16; // 0 stays unused

  constructor() {
    const m = gemmModule();
    if (!m) throw new UnsupportedError('the CPU trainer needs WebAssembly SIMD', { feature: 'wasm-simd' });
    this.memory = new WebAssembly.Memory({ initial: 16 });
    const inst = new WebAssembly.Instance(m.module, { env: { mem: this.memory } });
    this.fn = inst.exports.gemm as GemmFn;
    this.fma = m.fma;
  }

  /** `n` floats, 16-byte aligned, zeroed. */
  alloc(n: number): number {
    const ptr = this.top;
    const end = ptr + ((n * 4 + 15) & ~15);
    const have = this.memory.buffer.byteLength;
    if (end > have) {
      try {
        this.memory.grow(Math.ceil((end - have) / PAGE));
      } catch (e) {
        throw new UnsupportedError(
          `the CPU trainer could not grow its wasm memory to ${Math.ceil(end / 2 ** 20)} MiB (${(e as Error).message})`,
          { feature: 'wasm-memory', bytes: end },
        );
      }
    }
    this.top = end;
    new Float32Array(this.memory.buffer, ptr, n).fill(0);
    return ptr;
  }

  mark(): number {
    return this.top;
  }

  release(mark: number): void {
    this.top = mark;
  }

  f32(ptr: number, n: number): Float32Array {
    return new Float32Array(this.memory.buffer, ptr, n);
  }

  /** C (M, N) = [C +] A (M, K) · B (K, N); pointers in bytes, leading dimensions in floats. */
  gemm(
    a: number,
    b: number,
    c: number,
    M: number,
    N: number,
    K: number,
    lda: number,
    ldb: number,
    ldc: number,
    acc: boolean,
  ): void {
    this.fn(a, b, c, M, N, K, lda * 4, ldb * 4, ldc * 4, acc ? 1 : 0);
  }
}
