// SwiGLU gate of the Llama MLP, forward; the WGSL twin of src/train/ref/swiglu.ts swigluForward (its test
// oracle): h = silu(gate) * up, silu(g) = g * sigmoid(g). Elementwise over n = N*I; dispatch ceil(n / 64).
struct Params {
  n: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> h: array<f32>; // (N, I)
@group(0) @binding(1) var<storage, read> gate: array<f32>;    // (N, I)
@group(0) @binding(2) var<storage, read> up: array<f32>;      // (N, I)
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x;
  if (i >= p.n) {
    return;
  }
  let g = gate[i];
  h[i] = g / (1.0 + exp(-g)) * up[i];
}
