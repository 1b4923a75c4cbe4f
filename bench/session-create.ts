/**
 * `npx tsx bench/session-create.ts [flags] [variant ...]` — onnxruntime-web (Node, wasm, 1 thread)
 * InferenceSession.create for the 135M replica's q4 graph (default path) as the engine's wasm load hands
 * it over (dequantized at load, LoRA-injected with the row mask, weights as external data, the engine's
 * session options), one session per variant, then a greedy decode on all of them in lockstep (step i of
 * each back to back, the order rotating), so a variant is judged on both: creation CPU/wall ms, and
 * prefill and per-step decode time as a median of paired ratios against the first variant. A small
 * session is created first so the wasm module's compilation is not counted. Creation order also rotates
 * with --rotate N (the heap the second session is created in is not fresh). Not a test.
 *
 * A variant is a comma-separated list (empty = the engine's load before 2026-11-30, which is what the
 * README figures measured; the engine now also fuses (fuse=on) and adds the greedy head, not done here):
 *   deq=auto|never             wasmGraphOf mode (4-bit MatMulNBits → fp32 MatMul at load); default auto
 *   fuse=off|on                the decoder fusion load.ts applies since 2026-11-30 (prepareDecoderGraph); default off
 *   graph=inject|nomask|raw    injectLora with the row mask (the engine), without it, or the file's graph
 *   level=all|extended|basic|disabled   graphOptimizationLevel
 *   opt:key=value              extra session config entry, e.g. opt:session.disable_prepacking=1
 *   mempattern=on|off  arena=on|off  log=0..4 (0 prints onnxruntime's own per-phase log lines)
 *   shapes=engine|declared|none   LoRA inputs' declared shapes: the engine's (model/planner-shapes.ts: the row
 *                              mask shape-less), all declared (before that pass), or none; default engine
 * Flags: --steps N (default 16), --prompt N (default 16), --prefill N --rounds R (later prefills with a
 * fresh cache each, default 64 × 4), --model path/to/model_q4.onnx, --rotate K.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import * as ort from 'onnxruntime-web';
import { argmax } from '../src/engine/sampling.ts';
import { decoderGraph, decoderSessionOptions, KvStepper, type OrtTensor } from '../src/engine/session.ts';
import { weightsAsExternal } from '../src/model/external-weights.ts';
import { injectLora, loraBranchOpFor } from '../src/model/inject-lora.ts';
import { decodeModel, encodeModel, graphOf, type ModelProto, outputsOf } from '../src/model/onnx-io.ts';
import { parseModelConfig } from '../src/model/package.ts';
import { withoutInputShapes, withoutPlannerShapes } from '../src/model/planner-shapes.ts';
import { prepareDecoderGraph } from '../src/model/prepare-decoder.ts';
import { median, pairedStepRatio } from './stats.ts';

const args = process.argv.slice(2);
const flag = (name: string, def: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? (args[i + 1] ?? def) : def;
};
const variants = args.filter((a, i) => !a.startsWith('--') && !args[i - 1]?.startsWith('--'));
if (variants.length === 0) variants.push('');
const steps = Number(flag('steps', '16'));
const promptLen = Number(flag('prompt', '16'));
const rotate = Number(flag('rotate', '0'));
const path = flag('model', join(homedir(), '.cache/weblora/smollm2-135m-replica/onnx/model_q4.onnx'));

function parse(spec: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const part of spec.split(',').filter(Boolean)) {
    const eq = part.indexOf('=');
    m.set(part.slice(0, eq), part.slice(eq + 1));
  }
  return m;
}

ort.env.wasm.numThreads = 1;
const warm = await ort.InferenceSession.create(
  new Uint8Array(readFileSync('public/models/weblora-shakespeare/onnx/model_q4.onnx')),
);
await warm.release();
const bytes = new Uint8Array(readFileSync(path));
const config = parseModelConfig(JSON.parse(readFileSync(join(dirname(path), '../config.json'), 'utf8')));
const decoded = decodeModel(bytes);

interface Built {
  spec: string;
  session: ort.InferenceSession;
  feeds: Record<string, OrtTensor>;
  createWall: number;
  createCpu: number;
}

async function build(spec: string): Promise<Built> {
  const v = parse(spec);
  const deq = (v.get('deq') ?? 'auto') === 'never' ? 'never' : 'auto';
  const fuse = v.get('fuse') === 'on';
  let model: ModelProto = prepareDecoderGraph(decoded, config, 'wasm', {
    wasmDequantize: deq,
    fuse,
    greedyHead: false,
  }).model;
  const graph = v.get('graph') ?? 'inject';
  const injected =
    graph === 'raw'
      ? null
      : injectLora(model, { branchOp: loraBranchOpFor('wasm'), rowMask: graph === 'inject' });
  if (injected) model = injected.model;
  // The LoRA inputs' declared shapes: 'engine' (model/planner-shapes.ts: the row mask shape-less), 'declared'
  // (every input with its shape, the load before that pass), 'none' (every LoRA input shape-less).
  const shapes = v.get('shapes') ?? 'engine';
  if (injected && shapes === 'engine') model = withoutPlannerShapes(model, injected.targets);
  if (injected && shapes === 'none') {
    const names = graphOf(model).input.map((i) => i.name ?? '');
    model = withoutInputShapes(
      model,
      names.filter((n) => n.startsWith('lora')),
    );
  }
  const slim = weightsAsExternal(model, bytes);
  const g = encodeModel(slim.model);
  const present = outputsOf(graphOf(model))
    .map((o) => o.name)
    .filter((n) => n.startsWith('present.'));
  const options = decoderSessionOptions('wasm', present);
  options.externalData = slim.externalData;
  const level = v.get('level');
  if (level) options.graphOptimizationLevel = level as 'all' | 'basic' | 'extended' | 'disabled';
  if (v.has('mempattern')) options.enableMemPattern = v.get('mempattern') === 'on';
  if (v.has('arena')) options.enableCpuMemArena = v.get('arena') === 'on';
  if (v.has('log')) options.logSeverityLevel = Number(v.get('log')) as 0 | 1 | 2 | 3 | 4;
  const extra: Record<string, unknown> = { ...(options.extra as Record<string, unknown> | undefined) };
  for (const [k, value] of v) {
    if (!k.startsWith('opt:')) continue;
    // Nested the way onnxruntime-web flattens `extra` into config entries ("a.b" → a: { b }).
    let at = extra;
    const parts = k.slice(4).split('.');
    for (const p of parts.slice(0, -1)) {
      at[p] ??= {};
      at = at[p] as Record<string, unknown>;
    }
    at[parts[parts.length - 1]!] = value;
  }
  if (Object.keys(extra).length) options.extra = extra;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const session = await ort.InferenceSession.create(g, options);
  const createWall = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  // The engine's "no adapter" feeds on wasm: rank-0 A/B (the row mask 1 comes from KvStepper).
  const feeds: Record<string, OrtTensor> = {};
  for (const t of injected?.targets ?? []) {
    feeds[t.inputA] = new ort.Tensor('float32', new Float32Array(0), [t.in, 0]);
    feeds[t.inputB] = new ort.Tensor('float32', new Float32Array(0), [0, t.out]);
  }
  return { spec, session, feeds, createWall, createCpu: (cpu.user + cpu.system) / 1000 };
}

const order = variants.map((_, i) => variants[(i + rotate) % variants.length]!);
const built = new Map<string, Built>();
for (const spec of order) built.set(spec, await build(spec));
const all = variants.map((s) => built.get(s)!);

// Lockstep decode: the same prompt, then `steps` 1-token steps; step i of every variant back to back.
const steppers = all.map((b) => new KvStepper(ort as never, decoderGraph(b.session, config), b.feeds));
const prompt = Array.from({ length: promptLen }, (_, i) => (i * 37 + 11) % config.vocabSize);
const prefillMs = all.map(() => 0);
const next: number[] = [];
const ids: number[][] = all.map(() => []);
for (let k = 0; k < all.length; k++) {
  const i = (k + rotate) % all.length;
  const t0 = performance.now();
  next[i] = argmax(await steppers[i]!.step(prompt));
  prefillMs[i] = performance.now() - t0;
  ids[i]!.push(next[i]!);
}
const stepMs: number[][] = all.map(() => []);
const stepCpu: number[][] = all.map(() => []);
for (let s = 0; s < steps; s++) {
  for (let k = 0; k < all.length; k++) {
    const i = (k + s) % all.length;
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    next[i] = argmax(await steppers[i]!.step([next[i]!]));
    stepMs[i]!.push(performance.now() - t0);
    const c = process.cpuUsage(c0);
    stepCpu[i]!.push((c.user + c.system) / 1000);
    ids[i]!.push(next[i]!);
  }
}
for (const s of steppers) s.dispose();
// Prefill rounds: a fresh cache each round, `prefill` tokens, the order rotating.
const prefillLen = Number(flag('prefill', '64'));
const rounds = Number(flag('rounds', '4'));
const longPrompt = Array.from({ length: prefillLen }, (_, i) => (i * 53 + 7) % config.vocabSize);
const prefillRounds: number[][] = all.map(() => []);
const prefillCpu: number[][] = all.map(() => []);
for (let r = 0; r < rounds; r++) {
  for (let k = 0; k < all.length; k++) {
    const i = (k + r) % all.length;
    const st = new KvStepper(ort as never, decoderGraph(all[i]!.session, config), all[i]!.feeds);
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await st.step(longPrompt);
    prefillRounds[i]!.push(performance.now() - t0);
    const c = process.cpuUsage(c0);
    prefillCpu[i]!.push((c.user + c.system) / 1000);
    st.dispose();
  }
}
all.forEach((b, i) => {
  const same = ids[i]!.join() === ids[0]!.join() ? 'same ids' : `IDS DIFFER ${ids[i]!.slice(0, 8).join(',')}`;
  console.log(
    `[${b.spec || 'default: unfused'}] create ${b.createWall.toFixed(0)} ms wall, ${b.createCpu.toFixed(0)} ms CPU; ` +
      `prefill ${promptLen} ${prefillMs[i]!.toFixed(0)} ms; step ${median(stepMs[i]!).toFixed(1)} ms (median of ${steps}); ` +
      `step CPU ${median(stepCpu[i]!).toFixed(1)} ms; speed vs first: wall ${pairedStepRatio([stepMs[i]!], [stepMs[0]!]).toFixed(3)}, ` +
      `CPU ${pairedStepRatio([stepCpu[i]!], [stepCpu[0]!]).toFixed(3)}; prefill ${prefillLen} ` +
      `${median(prefillRounds[i]!).toFixed(0)} ms (median of ${rounds}), speed vs first ` +
      `${pairedStepRatio([prefillRounds[i]!], [prefillRounds[0]!]).toFixed(3)} (CPU ${median(prefillCpu[i]!).toFixed(0)} ms, ` +
      `${pairedStepRatio([prefillCpu[i]!], [prefillCpu[0]!]).toFixed(3)}); ${same}`,
  );
});
for (const b of all) await b.session.release();
