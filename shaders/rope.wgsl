// Rotary position embedding, rotate-half form (HF Llama), forward, IN PLACE on the (N, nh, D) projection
// layout; the WGSL twin of src/train/ref/rope.ts ropeForward (its test oracle):
//   x[i] <- x1 cos_i - x2 sin_i,  x[i + D/2] <- x2 cos_{i+D/2} + x1 sin_{i+D/2},  x1 = x[i], x2 = x[i + D/2].
// The cos/sin tables (N, D) come from ref/rope.ts ropeTables on the CPU (f64 angles, the float32
// inv_freq of PyTorch), uploaded once per batch: the GPU does only the rotation. Each invocation owns one
// (row, head, pair) so the in-place update never races. Dispatch ceil(N*nh*D/2 / 64).
struct Params {
  N: u32,
  nh: u32, // heads in this tensor (H for q, Hkv for k)
  D: u32,
  _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<f32>; // (N, nh, D) rotated in place
@group(0) @binding(1) var<storage, read> cosT: array<f32>;    // (N, D)
@group(0) @binding(2) var<storage, read> sinT: array<f32>;    // (N, D)
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let half = p.D / 2u;
  let idx = gid.x;
  if (idx >= p.N * p.nh * half) {
    return;
  }
  let i = idx % half;
  let nh = idx / half; // n * nh + h
  let n = nh / p.nh;
  let o = nh * p.D;
  let x1 = x[o + i];
  let x2 = x[o + i + half];
  x[o + i] = x1 * cosT[n * p.D + i] - x2 * sinT[n * p.D + i];
  x[o + i + half] = x2 * cosT[n * p.D + i + half] + x1 * sinT[n * p.D + i + half];
}
