// Widens packed IEEE binary16 values to float32, bit-exactly (bench/swap-ways.ts: a float16
// adapter pack uploaded as is, then widened on the GPU instead of on the CPU). Integer arithmetic only,
// no unpack2x16float: WGSL lets implementations flush f16 subnormals, and every binary16 value (subnormals
// included) is exactly a float32. NaN becomes the quiet NaN 0x7fc00000 (what a JS Float32Array stores for
// NaN, as model/half.ts's table does); ±Infinity and ±0 keep their sign. Branch-free, 8 halves per
// invocation (SwiftShader runs invocations as SIMD lanes: divergent branches cost every lane).
//   dst (4N) [8i + 2c + h] = float32(half h of src[i].c)   (h = 0: low 16 bits, the first in memory)
// dst ASSIGNED (=). N = vec4 words of src (the caller pads the halves with zeros to a multiple of 8).
// Grid-stride over N: dispatch min(ceil(N / 256), 65535) workgroups.
struct Params {
  N: u32,
  stride: u32, // invocations per pass = workgroups · 256
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<storage, read_write> dst: array<vec4u>; // (2N) float32 bits
@group(0) @binding(1) var<storage, read> src: array<vec4u>;       // (N) eight binary16 each
@group(0) @binding(2) var<uniform> p: Params;

fn widen(h: vec4u) -> vec4u {
  let sign = (h & vec4u(0x8000u)) << vec4u(16u);
  let e = (h >> vec4u(10u)) & vec4u(0x1fu);
  let m = h & vec4u(0x3ffu);
  let normal = sign | ((e + vec4u(112u)) << vec4u(23u)) | (m << vec4u(13u)); // rebias 15 -> 127
  let special = select(sign | vec4u(0x7f800000u), vec4u(0x7fc00000u), m != vec4u(0u)); // Inf / NaN
  // Subnormal m·2^-24: shift the leading 1 up to bit 10 (s ∈ 1..10), exponent 113 - s. (m = 0: ±0.)
  let s = min(countLeadingZeros(m) - vec4u(21u), vec4u(10u));
  let sub = sign | ((vec4u(113u) - s) << vec4u(23u)) | (((m << s) & vec4u(0x3ffu)) << vec4u(13u));
  let small = select(sub, sign, m == vec4u(0u));
  return select(select(normal, special, e == vec4u(0x1fu)), small, e == vec4u(0u));
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  for (var i = gid.x; i < p.N; i += p.stride) {
    let w = src[i];
    let lo = widen(w & vec4u(0xffffu));
    let hi = widen(w >> vec4u(16u));
    dst[2u * i] = vec4u(lo.x, hi.x, lo.y, hi.y);
    dst[2u * i + 1u] = vec4u(lo.z, hi.z, lo.w, hi.w);
  }
}
