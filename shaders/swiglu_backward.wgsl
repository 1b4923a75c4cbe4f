// SwiGLU backward; the WGSL twin of src/train/ref/swiglu.ts swigluBackward (its test oracle).
// Gradient contract: dgate and dup are ASSIGNED (=).
//   s = sigmoid(g);  dgate = dh * up * s * (1 + g * (1 - s));  dup = dh * g * s.
// Elementwise over n = N*I; dispatch ceil(n / 64).
struct Params {
  n: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> dgate: array<f32>; // (N, I) =
@group(0) @binding(1) var<storage, read_write> dup: array<f32>;   // (N, I) =
@group(0) @binding(2) var<storage, read> dh: array<f32>;          // (N, I)
@group(0) @binding(3) var<storage, read> gate: array<f32>;        // (N, I)
@group(0) @binding(4) var<storage, read> up: array<f32>;          // (N, I)
@group(0) @binding(5) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x;
  if (i >= p.n) {
    return;
  }
  let g = gate[i];
  let s = 1.0 / (1.0 + exp(-g));
  let d = dh[i];
  dgate[i] = d * up[i] * s * (1.0 + g * (1.0 - s));
  dup[i] = d * g * s;
}
