// Linear layer over a frozen fp32 base with a LoRA branch, forward (the default model's onnx/model.onnx
// path; matmul_q4_lora.wgsl is the 4-bit twin); the WGSL twin of src/train/ref/linear.ts
// linearLoraForward (its test oracle):
//   out = inp · Wᵀ + scale · xa · Bᵀ,  xa = inp · Aᵀ (saved for the backward).
// W is (O, K) row-major, PyTorch layout (FrozenLinear kind 'f32'); lora = [A (R, K) | B (O, R)] (a
// subrange of the backend's one LoRA buffer, src/train/gpu-layout.ts). R = 0: no LoRA branch (lm_head,
// untargeted projections; bind any buffer to xa / lora). Same bindings and entry points as the q4 file.
// Entry points: `lora_xa` first (one invocation per (m, r), dispatch ceil(M*R / 64)), then `main`: one
// invocation per 4 rows × 4 outputs, dispatch ceil(ceil(M/4)*ceil(O/4) / 64).
// Not here: biases, fp16 storage, workgroup-memory tiling.
struct Params {
  M: u32,
  K: u32,
  O: u32,
  R: u32,
  scale: f32, // LoRA scale (alpha / r or alpha / sqrt(r))
  wf16: u32,  // 0: w is f32; else f16 pairs at scale 1 / wInv (f16.ts packF16Scaled; the tied lm_head)
  wInv: f32,
  _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>; // (M, O)
@group(0) @binding(1) var<storage, read_write> xa: array<f32>;  // (M, R) saved
@group(0) @binding(2) var<storage, read> inp: array<f32>;       // (M, K)
@group(0) @binding(3) var<storage, read> w: array<u32>;         // (O, K) f32 bits or f16 pairs
@group(0) @binding(4) var<storage, read> lora: array<f32>;      // A (R, K) | B (O, R)
@group(0) @binding(5) var<uniform> p: Params;

@compute @workgroup_size(64)
fn lora_xa(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x;
  if (i >= p.M * p.R) {
    return;
  }
  let m = i / p.R;
  let r = i % p.R;
  var s = 0.0;
  for (var k = 0u; k < p.K; k++) {
    s += inp[m * p.K + k] * lora[r * p.K + k];
  }
  xa[i] = s;
}

// One invocation per 4 rows × 4 outputs (a register tile: 8 loads per 16 multiply-adds).
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x;
  let ob = (p.O + 3u) / 4u;
  let mb = (p.M + 3u) / 4u;
  if (i >= mb * ob) {
    return;
  }
  let o0 = (i % ob) * 4u;
  let m0 = (i / ob) * 4u;
  // Rows past M / outputs past O read the last one (in bounds) and are not stored.
  let r0 = min(m0, p.M - 1u) * p.K;
  let r1 = min(m0 + 1u, p.M - 1u) * p.K;
  let r2 = min(m0 + 2u, p.M - 1u) * p.K;
  let r3 = min(m0 + 3u, p.M - 1u) * p.K;
  let c0 = min(o0, p.O - 1u) * p.K;
  let c1 = min(o0 + 1u, p.O - 1u) * p.K;
  let c2 = min(o0 + 2u, p.O - 1u) * p.K;
  let c3 = min(o0 + 3u, p.O - 1u) * p.K;
  var acc = array<vec4f, 4>(vec4f(0.0), vec4f(0.0), vec4f(0.0), vec4f(0.0)); // acc[row][output]
  for (var k = 0u; k < p.K; k++) {
    let wk = vec4f(wAt(c0 + k), wAt(c1 + k), wAt(c2 + k), wAt(c3 + k));
    acc[0] += inp[r0 + k] * wk;
    acc[1] += inp[r1 + k] * wk;
    acc[2] += inp[r2 + k] * wk;
    acc[3] += inp[r3 + k] * wk;
  }
  let bOff = p.R * p.K;
  for (var jm = 0u; jm < 4u; jm++) {
    let m = m0 + jm;
    for (var jo = 0u; jo < 4u; jo++) {
      let o = o0 + jo;
      if (m < p.M && o < p.O) {
        var l = 0.0;
        for (var r = 0u; r < p.R; r++) {
          l += xa[m * p.R + r] * lora[bOff + o * p.R + r];
        }
        out[m * p.O + o] = acc[jm][jo] + p.scale * l;
      }
    }
  }
}

fn wAt(i: u32) -> f32 {
  if (p.wf16 == 0u) {
    return bitcast<f32>(w[i]);
  }
  return unpack2x16float(w[i >> 1u])[i & 1u] * p.wInv;
}
