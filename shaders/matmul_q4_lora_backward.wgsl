// Linear layer over a frozen 4-bit base with a LoRA branch, backward; the WGSL twin of
// src/train/ref/linear.ts linearLoraBackward (its test oracle). Same qweight / lora layouts and Params as
// matmul_q4_lora.wgsl; dlora = [dA (R, K) | dB (O, R)]. Gradient contract: dA and dB ACCUMULATE (+=)
// (gradient accumulation over micro-batches); dinp ACCUMULATES (+=) (q/k/v and gate/up share one input);
// dxa is scratch, assigned.
//   dxa = scale · dout · B            (M, R)   entry `lora_dxa`,  n = M*R   (run first)
//   dB += scale · doutᵀ · xa          (O, R)   entry `lora_db`,   n = ceil(O*R/2) (one g16 word each)
//   dA += dxaᵀ · inp                  (R, K)   entry `lora_da`,   n = R*K/2 (one g16 word each; R*K even)
//   dinp += dout · W + dxa · A        (M, K)   entry `dinp_main`, n = ceil(M/8)*ceil(K/8) (8 rows × one
//                                                packed word of 8 k per invocation; more, e.g. M*K, is harmless)
// Dispatch ceil(n / 64) workgroups each.
// Not here: base-weight gradients (frozen), bits != 4, g_idx.
struct Params {
  M: u32,
  K: u32,
  O: u32,
  R: u32,
  bs: u32,       // block size (power of two >= 16)
  nb: u32,       // ceil(K / bs)
  scalesOff: u32, // word offset of the f16 scale pairs in qweight
  zpOff: u32,    // word offset of the packed zero points in qweight; 0 = none (zero point 8)
  scale: f32,    // LoRA scale (alpha / r or alpha / sqrt(r))
  sInv: f32,     // the f16 block scales are stored times 1 / sInv (gpu-layout.ts packQ4ForGpu)
}

@group(0) @binding(0) var<storage, read_write> dinp: array<f32>;  // (M, K) +=
@group(0) @binding(1) var<storage, read_write> dxa: array<f32>;   // (M, R) scratch
@group(0) @binding(2) var<storage, read_write> dlora: array<u32>; // dA (R, K) | dB (O, R), +=, g16 pairs
@group(0) @binding(3) var<storage, read> dout: array<f32>;        // (M, O)
@group(0) @binding(4) var<storage, read> inp: array<f32>;         // (M, K)
@group(0) @binding(5) var<storage, read> xa: array<f32>;          // (M, R) saved by the forward
@group(0) @binding(6) var<storage, read> qweight: array<u32>;     // packed | scales | zero points
@group(0) @binding(7) var<storage, read> lora: array<f32>;        // A (R, K) | B (O, R)
@group(0) @binding(8) var<uniform> p: Params;

fn byteAt(bi: u32) -> u32 {
  return (qweight[bi / 4u] >> ((bi & 3u) * 8u)) & 0xffu;
}

// W[o, k] dequantized: (q - zero point) * scale of (o, block).
fn weightAt(o: u32, k: u32) -> f32 {
  let b = k / p.bs;
  let q = (byteAt((o * p.nb + b) * (p.bs / 2u) + (k % p.bs) / 2u) >> ((k & 1u) * 4u)) & 0xfu;
  var z = 8u;
  if (p.zpOff != 0u) {
    z = (byteAt(p.zpOff * 4u + o * ((p.nb + 1u) / 2u) + b / 2u) >> ((b & 1u) * 4u)) & 0xfu;
  }
  return (f32(q) - f32(z)) * scaleAt(o * p.nb + b);
}

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

// One invocation per 8 rows × 8 consecutive k (one packed word, never straddling a block): per output o
// it reads one word, one scale and one zero point and does 64 multiply-adds (each nibble serves 8 rows).
@compute @workgroup_size(64)
fn dinp_main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x;
  let kws = (p.K + 7u) / 8u;
  let mb = (p.M + 7u) / 8u;
  if (i >= mb * kws) {
    return;
  }
  let kw = i % kws;
  let m0 = (i / kws) * 8u;
  // Rows past M read row M-1 (in bounds) and are not stored.
  var ro: array<u32, 8>;
  for (var j = 0u; j < 8u; j++) {
    ro[j] = min(m0 + j, p.M - 1u) * p.O;
  }
  let b = (kw * 8u) / p.bs;
  let wpr = p.nb * (p.bs / 8u); // packed words per output row
  var acc = array<vec4f, 16>(); // zero-initialized; acc[2k + rowQuad][row % 4]
  for (var o = 0u; o < p.O; o++) {
    let word = qweight[o * wpr + kw];
    var z = 8.0;
    if (p.zpOff != 0u) {
      z = f32((byteAt(p.zpOff * 4u + o * ((p.nb + 1u) / 2u) + b / 2u) >> ((b & 1u) * 4u)) & 0xfu);
    }
    let sc = scaleAt(o * p.nb + b);
    let d0 = vec4f(dout[ro[0] + o], dout[ro[1] + o], dout[ro[2] + o], dout[ro[3] + o]) * sc;
    let d1 = vec4f(dout[ro[4] + o], dout[ro[5] + o], dout[ro[6] + o], dout[ro[7] + o]) * sc;
    for (var j = 0u; j < 8u; j++) {
      let q = f32((word >> (j * 4u)) & 0xfu) - z;
      acc[2u * j] += d0 * q;
      acc[2u * j + 1u] += d1 * q;
    }
  }
  for (var j = 0u; j < 8u; j++) {
    let k = kw * 8u + j;
    if (k >= p.K) {
      break;
    }
    for (var jm = 0u; jm < 8u; jm++) {
      let m = m0 + jm;
      if (m < p.M) {
        var s = acc[2u * j + jm / 4u][jm % 4u];
        for (var r = 0u; r < p.R; r++) {
          s += dxa[m * p.R + r] * lora[r * p.K + k];
        }
        dinp[m * p.K + k] += s;
      }
    }
  }
}

// Block scale i (= o * nb + b): f16 pairs, element 2j in the low half.
fn scaleAt(i: u32) -> f32 {
  return unpack2x16float(qweight[p.scalesOff + (i >> 1u)])[i & 1u] * p.sInv;
}
