// Causal grouped-query self-attention, backward; the WGSL twin of src/train/ref/attention.ts
// attentionBackward (its test oracle). Gradient contract: dq, dk, dv are ASSIGNED (=); dk/dv sum over the
// H/Hkv query heads that share them. With P = att: dP_s = dout_t . v_s, dS_s = P_s (dP_s - sum_s' P_s' dP_s');
// dq_t = sum_s dS_s k_s / sqrt(D), dk_s = sum_{h,t} dS q_t / sqrt(D), dv_s = sum_{h,t} P dout_t.
// Two entry points sharing one layout (8 storage buffers: dk and dv travel in ONE buffer `dkv`,
// dv at element offset p.dvOff, so the stage limit of 8 holds):
//   `dscores`  one invocation per (b, h, t) query row: dS row into `dsc` (scaled by 1/sqrt(D)) and dq.
//              Dispatch ceil(B*H*T / 64). Run first.
//   `dkv_main` one invocation per (b*T + s, kh, d) element of dk and dv. Dispatch ceil(N*Hkv*D / 64).
struct Params {
  B: u32,
  T: u32,
  H: u32,
  Hkv: u32,
  D: u32,
  scale: f32,  // 1 / sqrt(D)
  dvOff: u32,  // element offset of dv in dkv
  _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> dq: array<f32>;  // (N, H*D) =
@group(0) @binding(1) var<storage, read_write> dkv: array<f32>; // dk (N, Hkv*D) = | dv (N, Hkv*D) = at dvOff
@group(0) @binding(2) var<storage, read_write> dsc: array<f32>; // (B, H, T, T) scratch: dS / sqrt(D)
@group(0) @binding(3) var<storage, read> dout: array<f32>;      // (N, H*D)
@group(0) @binding(4) var<storage, read> att: array<f32>;       // (B, H, T, T)
@group(0) @binding(5) var<storage, read> q: array<f32>;         // (N, H*D)
@group(0) @binding(6) var<storage, read> k: array<f32>;         // (N, Hkv*D)
@group(0) @binding(7) var<storage, read> v: array<f32>;         // (N, Hkv*D)
@group(0) @binding(8) var<uniform> p: Params;

@compute @workgroup_size(64)
fn dscores(@builtin(global_invocation_id) gid: vec3u) {
  let idx = gid.x; // (b * H + h) * T + t
  if (idx >= p.B * p.H * p.T) {
    return;
  }
  let t = idx % p.T;
  let bh = idx / p.T;
  let h = bh % p.H;
  let b = bh / p.H;
  let kh = h / (p.H / p.Hkv);
  let HD = p.H * p.D;
  let KD = p.Hkv * p.D;
  let qo = (b * p.T + t) * HD + h * p.D;
  let ao = idx * p.T;
  var dot = 0.0;
  for (var s = 0u; s < p.T; s++) {
    let pr = att[ao + s];
    var dp = 0.0;
    if (s <= t && pr != 0.0) {
      let vo = (b * p.T + s) * KD + kh * p.D;
      for (var d = 0u; d < p.D; d++) {
        dp += dout[qo + d] * v[vo + d];
      }
    }
    dsc[ao + s] = dp;
    dot += pr * dp;
  }
  for (var s = 0u; s < p.T; s++) {
    dsc[ao + s] = att[ao + s] * (dsc[ao + s] - dot) * p.scale;
  }
  for (var d = 0u; d < p.D; d++) {
    var acc = 0.0;
    for (var s = 0u; s <= t; s++) {
      acc += dsc[ao + s] * k[(b * p.T + s) * KD + kh * p.D + d];
    }
    dq[qo + d] = acc;
  }
}

@compute @workgroup_size(64)
fn dkv_main(@builtin(global_invocation_id) gid: vec3u) {
  let KD = p.Hkv * p.D;
  let idx = gid.x; // (b * T + s) * KD + kh * D + d
  if (idx >= p.B * p.T * KD) {
    return;
  }
  let d = idx % p.D;
  let kh = (idx / p.D) % p.Hkv;
  let n = idx / KD;
  let s = n % p.T;
  let b = n / p.T;
  let rep = p.H / p.Hkv;
  let HD = p.H * p.D;
  var gk = 0.0;
  var gv = 0.0;
  for (var j = 0u; j < rep; j++) {
    let h = kh * rep + j;
    for (var t = s; t < p.T; t++) {
      let a = ((b * p.H + h) * p.T + t) * p.T + s;
      let qo = (b * p.T + t) * HD + h * p.D + d;
      gk += dsc[a] * q[qo];
      gv += att[a] * dout[qo];
    }
  }
  dkv[idx] = gk;
  dkv[p.dvOff + idx] = gv;
}
