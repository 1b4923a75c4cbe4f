// Token embedding lookup (nn.Embedding / ONNX Gather), forward only; the WGSL twin of
// src/train/ref/embedding.ts embeddingForward (its test oracle): out[i, :] = wte[tokens[i], :].
// The base embedding is frozen in LoRA training, so there is no embedding_backward.wgsl: nothing below
// the embedding needs a gradient. Token ids are range-checked on the CPU once per batch.
// Shape key: N = rows (B*T), C = channels. One invocation per output element; dispatch ceil(N*C / 64).
struct Params {
  N: u32,
  C: u32,
  wf16: u32,  // 0: wte is f32; else f16 pairs at scale 1 / wInv (src/train/f16.ts packF16Scaled)
  wInv: f32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>; // (N, C)
@group(0) @binding(1) var<storage, read> tokens: array<u32>;    // (N)
@group(0) @binding(2) var<storage, read> wte: array<u32>;       // (V, C) f32 bits or f16 pairs
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x;
  if (i >= p.N * p.C) {
    return;
  }
  let n = i / p.C;
  let c = i % p.C;
  out[i] = wAt(tokens[n] * p.C + c);
}

fn wAt(i: u32) -> f32 {
  if (p.wf16 == 0u) {
    return bitcast<f32>(wte[i]);
  }
  return unpack2x16float(wte[i >> 1u])[i & 1u] * p.wInv;
}
