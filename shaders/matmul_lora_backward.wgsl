// Linear layer over a frozen fp32 base with a LoRA branch, backward; the WGSL twin of
// src/train/ref/linear.ts linearLoraBackward (its test oracle). Same w / lora layouts and Params as
// matmul_lora.wgsl; dlora = [dA (R, K) | dB (O, R)] (a subrange of the backend's one gradient buffer).
// Gradient contract: dA and dB ACCUMULATE (+=) (gradient accumulation over micro-batches); dinp
// ACCUMULATES (+=) (q/k/v and gate/up share one input); dxa is scratch, assigned.
//   dxa = scale · dout · B            (M, R)   entry `lora_dxa`,  n = M*R   (run first)
//   dB += scale · doutᵀ · xa          (O, R)   entry `lora_db`,   n = ceil(O*R/2) (one g16 word each)
//   dA += dxaᵀ · inp                  (R, K)   entry `lora_da`,   n = R*K/2 (one g16 word each; R*K even)
//   dinp += dout · W + dxa · A        (M, K)   entry `dinp_main`, n = ceil(M/4)*ceil(K/4) (4 rows × 4 k)
// Dispatch ceil(n / 64) workgroups each. Not here: base-weight gradients (frozen).
struct Params {
  M: u32,
  K: u32,
  O: u32,
  R: u32,
  scale: f32,
  wf16: u32,  // 0: w is f32; else f16 pairs at scale 1 / wInv (f16.ts packF16Scaled; the tied lm_head)
  wInv: f32,
  _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> dinp: array<f32>;  // (M, K) +=
@group(0) @binding(1) var<storage, read_write> dxa: array<f32>;   // (M, R) scratch
@group(0) @binding(2) var<storage, read_write> dlora: array<u32>; // dA (R, K) | dB (O, R), +=, g16 pairs
@group(0) @binding(3) var<storage, read> dout: array<f32>;        // (M, O)
@group(0) @binding(4) var<storage, read> inp: array<f32>;         // (M, K)
@group(0) @binding(5) var<storage, read> xa: array<f32>;          // (M, R) saved by the forward
@group(0) @binding(6) var<storage, read> w: array<u32>;           // (O, K) f32 bits or f16 pairs
@group(0) @binding(7) var<storage, read> lora: array<f32>;        // A (R, K) | B (O, R)
@group(0) @binding(8) var<uniform> p: Params;

@compute @workgroup_size(64)
fn lora_dxa(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x;
  if (i >= p.M * p.R) {
    return;
  }
  let m = i / p.R;
  let r = i % p.R;
  let bOff = p.R * p.K;
  var s = 0.0;
  for (var o = 0u; o < p.O; o++) {
    s += dout[m * p.O + o] * lora[bOff + o * p.R + r];
  }
  dxa[i] = p.scale * s;
}

fn dbAt(i: u32) -> f32 {
  let o = i / p.R;
  let r = i % p.R;
  var s = 0.0;
  for (var m = 0u; m < p.M; m++) {
    s += dout[m * p.O + o] * xa[m * p.R + r];
  }
  return p.scale * s;
}

// One invocation per g16 word: dB elements 2j, 2j + 1 (R*K is even, so dB starts on a word).
@compute @workgroup_size(64)
fn lora_db(@builtin(global_invocation_id) gid: vec3u) {
  let j = gid.x;
  let n = p.O * p.R;
  if (2u * j >= n) {
    return;
  }
  var b = 0.0;
  if (2u * j + 1u < n) {
    b = dbAt(2u * j + 1u);
  }
  let wi = p.R * p.K / 2u + j;
  dlora[wi] = g16Add2(dlora[wi], dbAt(2u * j), b);
}

fn daAt(i: u32) -> f32 {
  let r = i / p.K;
  let k = i % p.K;
  var s = 0.0;
  for (var m = 0u; m < p.M; m++) {
    s += dxa[m * p.R + r] * inp[m * p.K + k];
  }
  return s;
}

// One invocation per g16 word: dA elements 2j, 2j + 1.
@compute @workgroup_size(64)
fn lora_da(@builtin(global_invocation_id) gid: vec3u) {
  let j = gid.x;
  if (2u * j >= p.R * p.K) {
    return;
  }
  dlora[j] = g16Add2(dlora[j], daAt(2u * j), daAt(2u * j + 1u));
}

// One invocation per 4 rows × 4 consecutive k (a register tile: 8 loads per 16 multiply-adds).
@compute @workgroup_size(64)
fn dinp_main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x;
  let kb = (p.K + 3u) / 4u;
  let mb = (p.M + 3u) / 4u;
  if (i >= mb * kb) {
    return;
  }
  let k0 = (i % kb) * 4u;
  let m0 = (i / kb) * 4u;
  let r0 = min(m0, p.M - 1u) * p.O;
  let r1 = min(m0 + 1u, p.M - 1u) * p.O;
  let r2 = min(m0 + 2u, p.M - 1u) * p.O;
  let r3 = min(m0 + 3u, p.M - 1u) * p.O;
  let k1 = min(k0 + 1u, p.K - 1u);
  let k2 = min(k0 + 2u, p.K - 1u);
  let k3 = min(k0 + 3u, p.K - 1u);
  var acc = array<vec4f, 4>(vec4f(0.0), vec4f(0.0), vec4f(0.0), vec4f(0.0)); // acc[row][k]
  for (var o = 0u; o < p.O; o++) {
    let wo = o * p.K;
    let wk = vec4f(wAt(wo + k0), wAt(wo + k1), wAt(wo + k2), wAt(wo + k3));
    acc[0] += dout[r0 + o] * wk;
    acc[1] += dout[r1 + o] * wk;
    acc[2] += dout[r2 + o] * wk;
    acc[3] += dout[r3 + o] * wk;
  }
  for (var jm = 0u; jm < 4u; jm++) {
    let m = m0 + jm;
    for (var jk = 0u; jk < 4u; jk++) {
      let k = k0 + jk;
      if (m < p.M && k < p.K) {
        var s = acc[jm][jk];
        for (var r = 0u; r < p.R; r++) {
          s += dxa[m * p.R + r] * lora[r * p.K + k];
        }
        dinp[m * p.K + k] += s;
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
