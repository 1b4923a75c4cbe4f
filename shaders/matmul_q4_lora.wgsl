// Linear layer over a frozen 4-bit base with a LoRA branch, forward; the WGSL twin of
// src/train/ref/linear.ts linearLoraForward (its test oracle):
//   out = inp · Wᵀ + scale · xa · Bᵀ,  xa = inp · Aᵀ (saved for the backward).
// W stays in com.microsoft.MatMulNBits layout (src/model/quantize.ts) and is dequantized inside the dot
// product (QLoRA-style; no fp32 copy). Buffers as src/train/gpu-layout.ts packs them (WebGPU allows only 8
// storage buffers per stage): qweight = [packed (O, nb, bs/2) bytes, low nibble = even k | scales (O, nb)
// as f32 bits | zero points (O, ceil(nb/2)) bytes, low nibble = even block], lora = [A (R, K) | B (O, R)].
// Shape key: M = rows (B*T), K = in, O = out, R = rank (0 = no LoRA).
// Entry points (dispatch ceil(n / 64) workgroups): `lora_xa` first (n = M*R), then `main`
// (n = ceil(M/4)*ceil(O/4): 4 rows × 4 outputs per invocation; dispatching more, e.g. M*O, is harmless).
// Not here: bits != 4, g_idx, bias, fp16 storage, workgroup-memory tiling, subgroups.
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

@group(0) @binding(0) var<storage, read_write> out: array<f32>; // (M, O)
@group(0) @binding(1) var<storage, read_write> xa: array<f32>;  // (M, R) saved
@group(0) @binding(2) var<storage, read> inp: array<f32>;       // (M, K)
@group(0) @binding(3) var<storage, read> qweight: array<u32>;   // packed | scales | zero points
@group(0) @binding(4) var<storage, read> lora: array<f32>;      // A (R, K) | B (O, R)
@group(0) @binding(5) var<uniform> p: Params;

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

// One invocation per 4 rows × 4 outputs: W is dequantized one packed word (8 nibbles) per output at a
// time, each block's zero points and scales read once, and each input value serves 4 outputs.
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
  let oc = vec4u(min(o0, p.O - 1u), min(o0 + 1u, p.O - 1u), min(o0 + 2u, p.O - 1u), min(o0 + 3u, p.O - 1u));
  let wpb = p.bs / 8u; // packed words per block
  let zpRow = (p.nb + 1u) / 2u;
  var acc = array<vec4f, 4>(vec4f(0.0), vec4f(0.0), vec4f(0.0), vec4f(0.0)); // acc[output][row]
  for (var b = 0u; b < p.nb; b++) {
    var z = vec4f(8.0);
    if (p.zpOff != 0u) {
      let zb = p.zpOff * 4u + b / 2u;
      let sh = (b & 1u) * 4u;
      z = vec4f(
        f32((byteAt(zb + oc.x * zpRow) >> sh) & 0xfu),
        f32((byteAt(zb + oc.y * zpRow) >> sh) & 0xfu),
        f32((byteAt(zb + oc.z * zpRow) >> sh) & 0xfu),
        f32((byteAt(zb + oc.w * zpRow) >> sh) & 0xfu),
      );
    }
    let sc = vec4f(
      scaleAt(oc.x * p.nb + b),
      scaleAt(oc.y * p.nb + b),
      scaleAt(oc.z * p.nb + b),
      scaleAt(oc.w * p.nb + b),
    );
    var blk = array<vec4f, 4>(vec4f(0.0), vec4f(0.0), vec4f(0.0), vec4f(0.0)); // explicit: reset per block
    for (var w = 0u; w < wpb; w++) {
      let wb = b * wpb + w;
      let rowWords = p.nb * wpb;
      let words = vec4u(
        qweight[oc.x * rowWords + wb],
        qweight[oc.y * rowWords + wb],
        qweight[oc.z * rowWords + wb],
        qweight[oc.w * rowWords + wb],
      );
      let kb = b * p.bs + w * 8u;
      for (var j = 0u; j < 8u; j++) {
        let k = kb + j;
        if (k < p.K) {
          let x = vec4f(inp[r0 + k], inp[r1 + k], inp[r2 + k], inp[r3 + k]);
          let q = vec4f((words >> vec4u(j * 4u)) & vec4u(0xfu)) - z;
          blk[0] += x * q.x;
          blk[1] += x * q.y;
          blk[2] += x * q.z;
          blk[3] += x * q.w;
        }
      }
    }
    acc[0] += blk[0] * sc.x;
    acc[1] += blk[1] * sc.y;
    acc[2] += blk[2] * sc.z;
    acc[3] += blk[3] * sc.w;
  }
  let bOff = p.R * p.K;
  for (var jo = 0u; jo < 4u; jo++) {
    let o = o0 + jo;
    for (var jm = 0u; jm < 4u; jm++) {
      let m = m0 + jm;
      if (m < p.M && o < p.O) {
        var l = 0.0;
        for (var r = 0u; r < p.R; r++) {
          l += xa[m * p.R + r] * lora[bOff + o * p.R + r];
        }
        out[m * p.O + o] = acc[jo][jm] + p.scale * l;
      }
    }
  }
}

// Block scale i (= o * nb + b): f16 pairs, element 2j in the low half.
fn scaleAt(i: u32) -> f32 {
  return unpack2x16float(qweight[p.scalesOff + (i >> 1u)])[i & 1u] * p.sInv;
}
