// Residual add on the residual stream, IN PLACE: out += inp (x2 = o_proj(y) + x; x3 = down(h) + x2).
// Its backward needs no kernel: the gradient of the residual stream passes through unchanged, which the
// accumulating (+=) RMSNorm backward implements (see rmsnorm_backward.wgsl). So no residual_backward.wgsl.
// Elementwise over n; dispatch ceil(n / 64).
struct Params {
  n: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>; // (N, C) +=
@group(0) @binding(1) var<storage, read> inp: array<f32>;       // (N, C)
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x;
  if (i >= p.n) {
    return;
  }
  out[i] += inp[i];
}
