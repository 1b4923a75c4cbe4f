// AdamW (Loshchilov & Hutter 2019, arXiv:1711.05101) with PyTorch semantics exactly as
// src/train/optim.ts AdamW.step (its test oracle), over ALL LoRA parameters at once (the backend keeps
// them in one buffer; padding elements have value, grad and moments 0 and stay 0). The gradient is first
// multiplied by the clip coefficient stats[1] written by gradnorm.wgsl (1 when no clipping):
//   g = grad · coef;  x ← x·(1 − lr·wd);  m ← b1·m + (1−b1)·g;  v ← b2·v + (1−b2)·g²;
//   x ← x − stepSize · m / (sqrt(v) / bc2sqrt + eps),  stepSize = lr / (1 − b1^t), bc2sqrt = sqrt(1 − b2^t)
// (bias corrections and 1 − beta computed on the CPU in f64 per step). Parameters and moments are updated in place;
// gradients are read only (the backend clears them after the step). Dispatch ceil(n / 64).
// Moments are stored packed, 4 bytes per parameter instead of 8: mv[i] = pack2x16float(m·S, sqrt(v)·S),
// f16 (11 significant bits) at the power-of-two scale S = stats[2] that gradnorm.wgsl `finish` picked so
// that nothing overflows (|m|, sqrt(v) ≤ the largest gradient norm so far) and small moments stay
// normal; the previous step's values are read at its scale stats[3] (0: none yet). sqrt(v) rather
// than v halves the exponent range v needs. This step's update uses the unrounded f32 m and v; only
// the carried state is rounded (relative 2^-11 per step).
struct Params {
  n: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
  lr: f32,
  beta1: f32,
  beta2: f32,
  eps: f32,
  weightDecay: f32,
  stepSize: f32,
  bc2sqrt: f32,
  oneMinusBeta1: f32, // 1 - beta1 and 1 - beta2 computed in f64 then rounded: 1 - f32(0.999) in f32
  oneMinusBeta2: f32, // is off by 1.3e-5 relative, which the moments would inherit
  _pad3: u32,
  _pad4: u32,
  _pad5: u32,
}

@group(0) @binding(0) var<storage, read_write> param: array<f32>; // (n)
@group(0) @binding(1) var<storage, read_write> mv: array<u32>;    // (n) packed f16 (m·S, sqrt(v)·S)
@group(0) @binding(2) var<storage, read> grad: array<u32>;        // (n / 2) g16 pairs (see below)
@group(0) @binding(3) var<storage, read> stats: array<f32>;       // [norm, coef, S, S_prev, gmax]
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x;
  if (i >= p.n) {
    return;
  }
  let g = g16Dec((grad[i / 2u] >> ((i & 1u) * 16u)) & 0xffffu) * stats[1];
  var x = param[i] * (1.0 - p.lr * p.weightDecay);
  var m0 = 0.0;
  var v0 = 0.0;
  if (stats[3] > 0.0) {
    let u = unpack2x16float(mv[i]) / stats[3];
    m0 = u.x;
    v0 = u.y * u.y;
  }
  let mi = p.beta1 * m0 + p.oneMinusBeta1 * g;
  let vi = p.beta2 * v0 + p.oneMinusBeta2 * g * g;
  mv[i] = pack2x16float(vec2f(mi, sqrt(vi)) * stats[2]);
  x -= p.stepSize * mi / (sqrt(vi) / p.bc2sqrt + p.eps);
  param[i] = x;
}

