// Packed LoRA gradients, "g16" (src/train/f16.ts g16Bits / g16Value are the CPU twins): two 16-bit
// values per u32 (element 2j low): sign | 6-bit exponent field f | 9-bit mantissa; f 0 = ±0, 63 = ±Inf
// (mantissa 0) / NaN, else ±(1 + m/512)·2^(f − 41). Range 2^-40 … 2^22, relative rounding ≤ 2^-10,
// round to nearest (ties away from zero); no scale. WGSL has no includes: src/train/gpu-kernels.ts appends
// this file to every shader that reads or writes gradients (matmul_lora_backward, matmul_q4_lora_backward,
// gradnorm, adamw).
fn g16Enc(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  let s = (b >> 16u) & 0x8000u;
  let mag = b & 0x7fffffffu;
  if (mag > 0x7f800000u) {
    return s | 0x7fffu;
  }
  let a = mag + 0x2000u;
  let e = i32(a >> 23u) - 127;
  if (e < -40) {
    return s;
  }
  if (e > 21) {
    return s | 0x7e00u;
  }
  return s | (u32(e + 41) << 9u) | ((a >> 14u) & 0x1ffu);
}

fn g16Dec(h: u32) -> f32 {
  let s = (h & 0x8000u) << 16u;
  let f = (h >> 9u) & 0x3fu;
  let m = h & 0x1ffu;
  if (f == 0u) {
    return bitcast<f32>(s);
  }
  if (f == 63u) {
    return bitcast<f32>(s | 0x7f800000u | (m << 14u));
  }
  return bitcast<f32>(s | ((f + 86u) << 23u) | (m << 14u));
}

// Adds (a, b) to the pair in word w (a to the low half, b to the high one).
fn g16Add2(w: u32, a: f32, b: f32) -> u32 {
  return g16Enc(g16Dec(w & 0xffffu) + a) | (g16Enc(g16Dec(w >> 16u) + b) << 16u);
}
