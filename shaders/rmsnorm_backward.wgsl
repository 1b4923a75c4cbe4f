// RMSNorm backward, the WGSL twin of src/train/ref/rmsnorm.ts rmsnormBackward (its test oracle).
// Gradient contract: dinp ACCUMULATES (+=): the input is the residual stream, whose gradient already
// holds the skip connection's share. No dweight: the norm weights are frozen in LoRA training.
//   dinp_j += r * w_j * g_j - (r^3 / C) * x_j * sum_i(w_i * g_i * x_i),  r = rstd saved by the forward.
// One workgroup of 64 invocations per row (dispatch N workgroups). Shape key: N = rows, C = channels.
struct Params {
  N: u32,
  C: u32,
  eps: f32, // unused here (rstd is saved); kept so forward and backward share one uniform layout
  _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> dinp: array<f32>; // (N, C) +=
@group(0) @binding(1) var<storage, read> dout: array<f32>;       // (N, C)
@group(0) @binding(2) var<storage, read> inp: array<f32>;        // (N, C)
@group(0) @binding(3) var<storage, read> weight: array<f32>;     // (C)
@group(0) @binding(4) var<storage, read> rstd: array<f32>;       // (N)
@group(0) @binding(5) var<uniform> p: Params;

const WG: u32 = 64u;
var<workgroup> partial: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let row = wg.x;
  let base = row * p.C;
  var acc = 0.0;
  for (var c = lid.x; c < p.C; c += WG) {
    acc += weight[c] * dout[base + c] * inp[base + c];
  }
  partial[lid.x] = acc;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s /= 2u) {
    if (lid.x < s) {
      partial[lid.x] += partial[lid.x + s];
    }
    workgroupBarrier();
  }
  let r = rstd[row];
  let k = r * r * r * partial[0] / f32(p.C);
  for (var c = lid.x; c < p.C; c += WG) {
    dinp[base + c] += r * weight[c] * dout[base + c] - k * inp[base + c];
  }
}
