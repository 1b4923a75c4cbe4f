// Causal grouped-query self-attention, forward, on already-rotated q/k; the WGSL twin of
// src/train/ref/attention.ts attentionForward (its test oracle). Query head h reads key/value head
// h / (H / Hkv). Saves the softmax probabilities att (B, H, T, T) for the backward (0 above the diagonal
// and on masked keys). keyMask (N) is 1 for a visible key, 0 for padding; a query with no visible key
// gets a zero output (loss-mask such rows). One invocation per (b, h, t) query row: the scores go
// straight into `att` (its row is scratch until normalized). Dispatch ceil(B*H*T / 64).
// Not here: flash-style recomputation, KV cache, dropout, sliding windows.
struct Params {
  B: u32,
  T: u32,
  H: u32,
  Hkv: u32,
  D: u32,
  scale: f32, // 1 / sqrt(D)
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>; // (N, H*D)
@group(0) @binding(1) var<storage, read_write> att: array<f32>; // (B, H, T, T) saved
@group(0) @binding(2) var<storage, read> q: array<f32>;         // (N, H*D)
@group(0) @binding(3) var<storage, read> k: array<f32>;         // (N, Hkv*D)
@group(0) @binding(4) var<storage, read> v: array<f32>;         // (N, Hkv*D)
@group(0) @binding(5) var<storage, read> keyMask: array<f32>;   // (N) 1 = visible
@group(0) @binding(6) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
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
  var mx = -3.0e38;
  var any = false;
  for (var s = 0u; s <= t; s++) {
    if (keyMask[b * p.T + s] == 0.0) {
      continue;
    }
    let ko = (b * p.T + s) * KD + kh * p.D;
    var dot = 0.0;
    for (var d = 0u; d < p.D; d++) {
      dot += q[qo + d] * k[ko + d];
    }
    let sc = dot * p.scale;
    att[ao + s] = sc;
    mx = max(mx, sc);
    any = true;
  }
  var sum = 0.0;
  for (var s = 0u; s < p.T; s++) {
    var e = 0.0;
    if (any && s <= t && keyMask[b * p.T + s] != 0.0) {
      e = exp(att[ao + s] - mx);
    }
    att[ao + s] = e;
    sum += e;
  }
  let inv = select(0.0, 1.0 / sum, any);
  for (var s = 0u; s <= t; s++) {
    att[ao + s] *= inv;
  }
  for (var d = 0u; d < p.D; d++) {
    var acc = 0.0;
    for (var s = 0u; s <= t; s++) {
      acc += att[ao + s] * v[(b * p.T + s) * KD + kh * p.D + d];
    }
    out[qo + d] = acc;
  }
}
