/**
 * GPU buffer layouts of the training kernels (shaders/matmul_q4_lora*.wgsl), built from the CPU
 * reference's FrozenLinear / LoraBranch so both paths read one description. WebGPU guarantees only 8
 * storage buffers per shader stage, so each frozen 4-bit weight travels as ONE u32 buffer
 * [packed nibbles | f32 scale bits | packed zero points] (word offsets in the kernel's Params), and each
 * LoRA pair as one f32 buffer [A (R, K) | B (O, R)] (its gradient buffer has the same layout).
 * Not here: device/pipeline management, fp16 scale storage, fp32 base weights.
 */
import { InvalidOptionError } from '../errors.ts';
import type { FrozenLinear, LoraBranch } from './ref/linear.ts';

export interface Q4Words {
  words: Uint32Array; // [packed (O, nb, bs/2) bytes | scales (O, nb) f32 bits | zero points (O, ceil(nb/2)) bytes]
  nb: number; // blocks per output row
  scalesOffset: number; // in words
  zpOffset: number; // in words; 0 when there are no zero points (the kernel then uses 8)
}

/** One u32 buffer holding a MatMulNBits weight; byte arrays are zero-padded to whole words. */
export function packQ4ForGpu(w: FrozenLinear): Q4Words {
  if (w.kind !== 'q4') throw new InvalidOptionError('packQ4ForGpu needs a 4-bit weight', { kind: w.kind });
  const nb = Math.ceil(w.K / w.blockSize);
  const packedWords = Math.ceil(w.packed.length / 4);
  const zpWords = w.zeroPoints ? Math.ceil(w.zeroPoints.length / 4) : 0;
  const words = new Uint32Array(packedWords + w.scales.length + zpWords);
  const bytes = new Uint8Array(words.buffer);
  bytes.set(w.packed, 0);
  new Float32Array(words.buffer, packedWords * 4, w.scales.length).set(w.scales);
  const zpOffset = w.zeroPoints ? packedWords + w.scales.length : 0;
  if (w.zeroPoints) bytes.set(w.zeroPoints, zpOffset * 4);
  return { words, nb, scalesOffset: packedWords, zpOffset };
}

/** [A (R, K) | B (O, R)] as one f32 buffer; gradients use the same layout ([dA | dB]). */
export function packLoraForGpu(b: LoraBranch): Float32Array {
  const out = new Float32Array(b.A.length + b.B.length);
  out.set(b.A, 0);
  out.set(b.B, b.A.length);
  return out;
}
