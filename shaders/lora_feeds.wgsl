// A trained LoRA module written as onnxruntime-web feeds of the injected graph (src/model/inject-lora.ts),
// on the GPU: the transpose/scale that src/adapters/peft.ts peftToFeeds does on the CPU (its test oracle):
//   feedA (K, Rf) [k, j] = A[j, k]            for j < R, 0 for R <= j < Rf
//   feedB (Rf, O) [j, o] = scale · B[o, j]    for j < R, 0 for R <= j < Rf
// Rf = the feed rank (the largest module rank). Both feeds ASSIGNED (=). lora = [A (R, K) | B (O, R)]
// (a subrange of the backend's one LoRA buffer). One invocation per feed element of A then of B:
// dispatch ceil((K + O) * Rf / 64).
struct Params {
  K: u32,
  O: u32,
  R: u32,
  Rf: u32,
  scale: f32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> feedA: array<f32>; // (K, Rf)
@group(0) @binding(1) var<storage, read_write> feedB: array<f32>; // (Rf, O)
@group(0) @binding(2) var<storage, read> lora: array<f32>;        // A (R, K) | B (O, R)
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x;
  let nA = p.K * p.Rf;
  if (i < nA) {
    let k = i / p.Rf;
    let j = i % p.Rf;
    feedA[i] = select(0.0, lora[j * p.K + k], j < p.R);
    return;
  }
  let e = i - nA;
  if (e >= p.Rf * p.O) {
    return;
  }
  let j = e / p.O;
  let o = e % p.O;
  feedB[e] = select(0.0, p.scale * lora[p.R * p.K + o * p.R + j], j < p.R);
}
