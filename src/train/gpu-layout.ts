/**
 * GPU buffer layouts of the training kernels (shaders/matmul_q4_lora*.wgsl), built from the CPU
 * reference's FrozenLinear / LoraBranch so both paths read one description. WebGPU guarantees only 8
 * storage buffers per shader stage, so each frozen 4-bit weight travels as ONE u32 buffer
 * [packed nibbles | f16 scale pairs | packed zero points] (word offsets in the kernel's Params), and each
 * LoRA pair as one f32 buffer [A (R, K) | B (O, R)] (its gradient buffer has the same layout).
 * The block scales are stored as f16 at a power-of-two scale (f16.ts packF16Scaled: ≤ 2^-11 = 4.9e-4
 * relative each, measured 4.86e-4 on the default model's 138,240 scales; they are f32 in the file and
 * not f16-exact), half their bytes. `gpuStoredWeights` gives the CPU the weights exactly as the GPU
 * holds them (these scales, the f16 embedding), for same-math comparisons.
 * Not here: device/pipeline management, fp32 base weights.
 */
import { InvalidOptionError } from '../errors.ts';
import type { FrozenWeights } from './cpu-model.ts';
import { packF16Scaled, unpackF16Scaled } from './f16.ts';
import type { FrozenLinear, LoraBranch } from './ref/linear.ts';

export interface Q4Words {
  words: Uint32Array; // [packed (O, nb, bs/2) bytes | scales (O, nb) f16 pairs | zero points (O, ceil(nb/2)) bytes]
  nb: number; // blocks per output row
  scalesOffset: number; // in words
  zpOffset: number; // in words; 0 when there are no zero points (the kernel then uses 8)
  scaleInv: number; // the f16 scales are stored times 1 / scaleInv (a power of two)
}

/** One u32 buffer holding a MatMulNBits weight; byte arrays are zero-padded to whole words. */
export function packQ4ForGpu(w: FrozenLinear): Q4Words {
  if (w.kind !== 'q4') throw new InvalidOptionError('packQ4ForGpu needs a 4-bit weight', { kind: w.kind });
  const nb = Math.ceil(w.K / w.blockSize);
  const packedWords = Math.ceil(w.packed.length / 4);
  const zpWords = w.zeroPoints ? Math.ceil(w.zeroPoints.length / 4) : 0;
  const sc = packF16Scaled(w.scales);
  const words = new Uint32Array(packedWords + sc.words.length + zpWords);
  const bytes = new Uint8Array(words.buffer);
  bytes.set(w.packed, 0);
  words.set(sc.words, packedWords);
  const zpOffset = w.zeroPoints ? packedWords + sc.words.length : 0;
  if (w.zeroPoints) bytes.set(w.zeroPoints, zpOffset * 4);
  return { words, nb, scalesOffset: packedWords, zpOffset, scaleInv: sc.inv };
}

/** [A (R, K) | B (O, R)] as one f32 buffer; gradients use the same layout ([dA | dB]). */
export function packLoraForGpu(b: LoraBranch): Float32Array {
  const out = new Float32Array(b.A.length + b.B.length);
  out.set(b.A, 0);
  out.set(b.B, b.A.length);
  return out;
}

/** A frozen weight as the GPU backend holds it: 4-bit with its scales rounded as packQ4ForGpu stores them. */
export function gpuStoredLinear(w: FrozenLinear): FrozenLinear {
  if (w.kind !== 'q4') return w;
  const sc = packF16Scaled(w.scales);
  return { ...w, scales: unpackF16Scaled(sc.words, sc.inv, w.scales.length) };
}

/**
 * Whether GpuTrainBackend holds the embedding (and a tied lm_head) as f16: only on a 4-bit base, whose
 * projections already carry the 4-bit quantization error (a few % per weight) next to which f16's
 * 2^-11 is negligible. An fp32 base keeps every base weight in f32 (its training matches PyTorch's
 * 10-step trajectory to 3e-4; with an f16 embedding it drifted 2% by step 10, measured).
 */
export function f16Embedding(w: FrozenWeights): boolean {
  return w.layers.some((l) => Object.values(l.proj).some((p) => p.kind === 'q4'));
}

/**
 * The weights exactly as GpuTrainBackend holds them (f16 embedding / tied lm_head, f16 block scales), so
 * that a CPU backend built on them runs the GPU's math (tests; error statements vs the file's weights).
 */
export function gpuStoredWeights(w: FrozenWeights): FrozenWeights {
  const e = f16Embedding(w) ? packF16Scaled(w.embed) : null;
  const embed = e ? unpackF16Scaled(e.words, e.inv, w.embed.length) : w.embed;
  return {
    ...w,
    embed,
    layers: w.layers.map((l) => ({
      ...l,
      proj: Object.fromEntries(
        Object.entries(l.proj).map(([m, p]) => [m, gpuStoredLinear(p)]),
      ) as typeof l.proj,
    })),
    lmHead: w.tied ? { kind: 'f32', K: w.lmHead.K, O: w.lmHead.O, w: embed } : gpuStoredLinear(w.lmHead),
  };
}
