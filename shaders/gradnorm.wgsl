// Global gradient norm and clip coefficient (torch.nn.utils.clip_grad_norm_, as src/train/optim.ts
// clipGradNorm, its test oracle): total = ‖all LoRA grads‖₂ (read as g16 pairs, see below), coef = maxNorm / (total + 1e-6) if that is
// < 1 (and clipping is on), else 1. The gradients are NOT rewritten: adamw.wgsl multiplies by stats[1].
// Two entry points sharing one layout, a two-level reduction:
//   `partial`  one workgroup of 256 per chunk of p.chunk elements: Σ g² into partials[wg] (dispatch P).
//   `finish`   one workgroup of 256: Σ partials → stats = [total, coef, ...] (dispatch 1).
// `finish` also keeps the scale of adamw.wgsl's packed f16 moments: stats[4] = gmax, the largest
// clipped gradient norm so far, bounds every |g| ever seen, hence |m| and sqrt(v) (convex combinations
// of past g and g²); stats[2] = the power of two S with gmax·S ≤ 2^14 (2^15 if log2 is off by one; f16
// max 65504) that this step
// stores moments at, stats[3] = the previous step's S (0: no moments stored yet).
struct Params {
  n: u32,       // gradient elements
  chunk: u32,   // elements per `partial` workgroup (even: chunks start on a g16 word)
  P: u32,       // number of partials
  clip: u32,    // 0: no clipping (coef 1)
  maxNorm: f32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> partials: array<f32>; // (P)
@group(0) @binding(1) var<storage, read_write> stats: array<f32>;    // [total, coef, S, S_prev, gmax]
@group(0) @binding(2) var<storage, read> grad: array<u32>;           // (n / 2) g16 pairs
@group(0) @binding(3) var<uniform> p: Params;

const WG: u32 = 256u;
var<workgroup> red: array<f32, 256>;

fn reduce(lid: u32) {
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s /= 2u) {
    if (lid < s) {
      red[lid] += red[lid + s];
    }
    workgroupBarrier();
  }
}

@compute @workgroup_size(256)
fn partial(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let start = wg.x * p.chunk;
  let end = min(p.n, start + p.chunk);
  var ss = 0.0;
  for (var i = start / 2u + lid.x; i < (end + 1u) / 2u; i += WG) {
    let a = g16Dec(grad[i] & 0xffffu);
    let b = g16Dec(grad[i] >> 16u);
    ss += a * a + b * b;
  }
  red[lid.x] = ss;
  reduce(lid.x);
  if (lid.x == 0u) {
    partials[wg.x] = red[0];
  }
}

@compute @workgroup_size(256)
fn finish(@builtin(local_invocation_id) lid: vec3u) {
  var ss = 0.0;
  for (var i = lid.x; i < p.P; i += WG) {
    ss += partials[i];
  }
  red[lid.x] = ss;
  reduce(lid.x);
  if (lid.x == 0u) {
    let total = sqrt(red[0]);
    var coef = 1.0;
    if (p.clip != 0u) {
      let c = p.maxNorm / (total + 1e-6);
      if (c < 1.0) {
        coef = c;
      }
    }
    stats[0] = total;
    stats[1] = coef;
    let gmax = max(stats[4], total * coef);
    stats[3] = stats[2];
    stats[2] = momentScale(gmax);
    stats[4] = gmax;
  }
}

// 2^e with gmax·2^e ≤ 2^14, e in [-100, 100] (gmax 0: 2^100); built from bits, so exact.
fn momentScale(gmax: f32) -> f32 {
  var e = 100;
  if (gmax > 0.0) {
    e = clamp(14 - i32(ceil(log2(gmax))), -100, 100);
  }
  return bitcast<f32>(u32(e + 127) << 23u);
}

