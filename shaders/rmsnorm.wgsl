// RMSNorm forward, the WGSL twin of src/train/ref/rmsnorm.ts rmsnormForward (its test oracle):
//   out = inp * rstd * weight,  rstd = 1 / sqrt(mean(inp^2) + eps), saved per row for the backward.
// One workgroup of 64 invocations per row (dispatch N workgroups); strided partial sums, then a tree
// reduction in workgroup memory. Shape key: N = rows (B*T), C = channels. Not here: fp16 storage,
// fusing with the following matmul, rows longer than memory allows (none: C is read in strides).
struct Params {
  N: u32,
  C: u32,
  eps: f32,
  _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;  // (N, C)
@group(0) @binding(1) var<storage, read_write> rstd: array<f32>; // (N) saved
@group(0) @binding(2) var<storage, read> inp: array<f32>;        // (N, C)
@group(0) @binding(3) var<storage, read> weight: array<f32>;     // (C)
@group(0) @binding(4) var<uniform> p: Params;

const WG: u32 = 64u;
var<workgroup> partial: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let row = wg.x; // uniform per workgroup: the barriers below stay in uniform control flow
  let base = row * p.C;
  var ss = 0.0;
  for (var c = lid.x; c < p.C; c += WG) {
    let x = inp[base + c];
    ss += x * x;
  }
  partial[lid.x] = ss;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s /= 2u) {
    if (lid.x < s) {
      partial[lid.x] += partial[lid.x + s];
    }
    workgroupBarrier();
  }
  let r = 1.0 / sqrt(partial[0] / f32(p.C) + p.eps);
  if (lid.x == 0u) {
    rstd[row] = r;
  }
  for (var c = lid.x; c < p.C; c += WG) {
    out[base + c] = inp[base + c] * r * weight[c];
  }
}
