// Next-token cross-entropy with per-row weights, softmax + loss + dlogits fused (one file: the backward is
// the same row pass); the WGSL twin of src/train/ref/crossentropy.ts crossEntropyForward / Backward
// (its test oracle). The CPU turns the label mask into row weights w_i = mask_i / count * lossScale, so one
// kernel serves the plain mean, completion-only loss, padding and token-weighted accumulation.
//   losses[i] = logsumexp(logits_i) - logits_i[targets_i]   (every row; weights are applied by the caller)
//   if p.grad != 0: logits_i <- (softmax(logits_i) - onehot(targets_i)) * w_i, IN PLACE (dlogits).
// Gradient contract: dlogits ASSIGNED (=), overwriting the logits (read fully before written; rows with
// w_i = 0 become 0). One workgroup of 64 per row (dispatch N workgroups); tree reductions in workgroup memory.
struct Params {
  N: u32,
  V: u32,
  grad: u32, // 0: losses only (eval); 1: also dlogits in place
  _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> logits: array<f32>;  // (N, V) -> dlogits when grad
@group(0) @binding(1) var<storage, read_write> losses: array<f32>;  // (N)
@group(0) @binding(2) var<storage, read> targets: array<u32>;       // (N)
@group(0) @binding(3) var<storage, read> weights: array<f32>;       // (N)
@group(0) @binding(4) var<uniform> p: Params;

const WG: u32 = 64u;
var<workgroup> red: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let row = wg.x;
  let base = row * p.V;
  var mx = -3.0e38;
  for (var j = lid.x; j < p.V; j += WG) {
    mx = max(mx, logits[base + j]);
  }
  red[lid.x] = mx;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s /= 2u) {
    if (lid.x < s) {
      red[lid.x] = max(red[lid.x], red[lid.x + s]);
    }
    workgroupBarrier();
  }
  mx = red[0];
  workgroupBarrier();
  var sum = 0.0;
  for (var j = lid.x; j < p.V; j += WG) {
    sum += exp(logits[base + j] - mx);
  }
  red[lid.x] = sum;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s /= 2u) {
    if (lid.x < s) {
      red[lid.x] += red[lid.x + s];
    }
    workgroupBarrier();
  }
  let lse = mx + log(red[0]);
  let tgt = targets[row];
  let w = weights[row];
  // Every invocation reads the target logit before any write below (barrier in between).
  let lt = logits[base + tgt];
  workgroupBarrier();
  if (lid.x == 0u) {
    losses[row] = lse - lt;
  }
  if (p.grad != 0u) {
    for (var j = lid.x; j < p.V; j += WG) {
      var g = 0.0;
      if (w != 0.0) {
        g = exp(logits[base + j] - lse) * w;
        if (j == tgt) {
          g -= w;
        }
      }
      logits[base + j] = g;
    }
  }
}
