// Rotary position embedding, backward, IN PLACE (the transpose rotation); the WGSL twin of
// src/train/ref/rope.ts ropeBackward (its test oracle). Gradient contract: dx is ASSIGNED (=), here by
// overwriting dout in place (dq / dk after attention_backward):
//   g[i] <- g1 cos_i + g2 sin_{i+D/2},  g[i + D/2] <- g2 cos_{i+D/2} - g1 sin_i.
// Same Params, tables and dispatch as rope.wgsl.
struct Params {
  N: u32,
  nh: u32,
  D: u32,
  _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> g: array<f32>; // (N, nh, D) dout in, dinp out
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
  let nh = idx / half;
  let n = nh / p.nh;
  let o = nh * p.D;
  let g1 = g[o + i];
  let g2 = g[o + i + half];
  g[o + i] = g1 * cosT[n * p.D + i] + g2 * sinT[n * p.D + i + half];
  g[o + i + half] = g2 * cosT[n * p.D + i + half] - g1 * sinT[n * p.D + i];
}
