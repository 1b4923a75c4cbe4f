/**
 * Where a CPU training step's time goes: `npx tsx bench/cpu-profile.ts [rank] [steps]` runs
 * CpuTrainBackend (the default wasm kernels) on the default model (model_q4.onnx, B 2 × T 32, all 42
 * projections, as the training suite) in Node under V8's sampling profiler (node:inspector) and prints
 * self time per function: `wasm gemm` is the SIMD GEMM (src/train/wasm/gemm.ts), the ref/*.ts names are
 * the plain-TS layer functions, `(garbage collector)` the per-step allocations. Node, not the browser:
 * V8 is the same engine, but Node 20 has no relaxed SIMD (mul + add instead of FMA), so the GEMM's share
 * is a little higher here than in Chromium. Not a test; shares, not absolute times, are the point.
 */
import { readFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { decodeModel } from '../src/model/onnx-io.ts';
import { parseModelConfig } from '../src/model/package.ts';
import { MODULE_ORDER } from '../src/model/targets.ts';
import { CpuTrainBackend } from '../src/train/cpu-backend.ts';
import { initLora } from '../src/train/lora.ts';
import { decoderConfig, loadFrozenWeights } from '../src/train/weights.ts';

const dir = 'public/models/weblora-shakespeare';
const rank = Number(process.argv[2] ?? 4);
const steps = Number(process.argv[3] ?? 30);
const cfg = decoderConfig(parseModelConfig(JSON.parse(readFileSync(`${dir}/config.json`, 'utf8'))));
const w = loadFrozenWeights(decodeModel(new Uint8Array(readFileSync(`${dir}/onnx/model_q4.onnx`))), cfg);
const mods = initLora(w, { rank, alpha: 2 * rank, targets: MODULE_ORDER, seed: 0 });
const be = new CpuTrainBackend(w, mods, { adam: { weightDecay: 0 } });
const batch = { B: 2, T: 32, tokens: Array.from({ length: 64 }, (_, i) => (i * 37 + 5) % cfg.V) };
for (let i = 0; i < 3; i++) {
  await be.accumulate(batch, 1);
  await be.step(1e-3, 1);
}

const session = new Session();
session.connect();
await session.post('Profiler.enable');
await session.post('Profiler.setSamplingInterval', { interval: 200 });
await session.post('Profiler.start');
const t0 = performance.now();
for (let i = 0; i < steps; i++) {
  await be.accumulate(batch, 1);
  await be.step(1e-3, 1);
}
const ms = performance.now() - t0;
const { profile } = await session.post('Profiler.stop');
session.disconnect();

const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const self = new Map<string, number>();
profile.samples!.forEach((id, i) => {
  const f = byId.get(id)!.callFrame;
  const name = f.url.startsWith('wasm://')
    ? 'wasm gemm'
    : `${f.functionName || '(anonymous)'} ${f.url.split('/').pop()}`;
  self.set(name, (self.get(name) ?? 0) + (profile.timeDeltas![i] ?? 0));
});
self.delete('(idle) ');
self.delete('(program) ');
const total = [...self.values()].reduce((a, b) => a + b, 0);
console.log(`rank ${rank}: ${steps} steps, ${(ms / steps).toFixed(1)} ms/step (wall, profiler on)`);
for (const [name, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 15))
  console.log(`${((100 * us) / total).toFixed(1).padStart(5)}%  ${name}`);
