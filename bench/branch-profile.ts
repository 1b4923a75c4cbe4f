/**
 * `npx tsx bench/branch-profile.ts [package folder] [--steps 32] [--rank 8] [--variants …] [--profile] [--fuse]` —
 * what the LoRA branch costs per decode step on onnxruntime-web's wasm build in Node (1 thread, like the
 * bench page), on the graph the engine's wasm load builds (model_q4.onnx dequantized at load, wasmGraphOf
 * 'auto') minus the decoder fusion load.ts applies since 2026-11-30, as the README figures were measured
 * (`--fuse` adds it). Variants (graph forms of ONE package), stepped in lockstep (step i of each back to back, order
 * rotating) so a busy machine's load hits them alike:
 *   base        the un-injected graph (bench row (a))
 *   lora        injectLora as load.ts builds it (rowMask), a random rank-R adapter on every projection (row (c))
 *   nomask      the same without the row-mask input (what the mask costs)
 *   <others>    injectLora option sets named in VARIANTS below (candidate branch forms)
 * Prints median ms/step, tok/s and the ratio to `base` (median of paired steps), and checks every LoRA
 * variant's logits against `lora`'s (same feeds, so the same maths). `--profile` instead runs each variant
 * with ORT's per-node profiler (it prints a JSON trace to stdout, captured here) and sums node time per
 * step by LoRA op kind, plus the executor's time outside the nodes. Not a test; default package
 * public/models/weblora-shakespeare.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-web';
import { argmax } from '../src/engine/sampling.ts';
import {
  decoderGraph,
  decoderSessionOptions,
  KvStepper,
  type Ort,
  type OrtTensor,
} from '../src/engine/session.ts';
import { weightsAsExternal } from '../src/model/external-weights.ts';
import { type InjectOptions, injectLora, type LoraTarget } from '../src/model/inject-lora.ts';
import { decodeModel, encodeModel, graphOf, type ModelProto, outputsOf } from '../src/model/onnx-io.ts';
import { parseModelConfig } from '../src/model/package.ts';
import { prepareDecoderGraph } from '../src/model/prepare-decoder.ts';
import { packedFeeds, packSharedInputs } from './branch-forms.ts';
import { randomLoraFeeds } from './random-lora.ts';
import { median } from './stats.ts';

/** A graph form: injectLora options on top of `{ branchOp: 'matmul' }` (null: not injected), session options. */
interface Form {
  inject: InjectOptions | null;
  session?: Partial<ort.InferenceSession.SessionOptions>;
  /** branch-forms.ts's packSharedInputs before injection: the base q/k/v and gate/up fused too. */
  pack?: boolean;
  /** Packed targets' feeds at their own rank (3r, 2r), the others at r: not what peft.ts feeds. */
  unpadded?: boolean;
}
const ARENA = { enableCpuMemArena: true, enableMemPattern: true };
const VARIANTS: Record<string, Form> = {
  base: { inject: null },
  lora: { inject: { rowMask: true } },
  nomask: { inject: {} },
  einsum: { inject: { rowMask: true, branchOp: 'einsum' } },
  'base+arena': { inject: null, session: ARENA },
  'lora+arena': { inject: { rowMask: true }, session: ARENA },
  fold: { inject: { rowMask: true, foldResidual: true } },
  'nomask+fold': { inject: { foldResidual: true } },
  shared: { inject: { rowMask: true, packShared: true } },
  'shared+fold': { inject: { rowMask: true, packShared: true, foldResidual: true } },
  'base-packed': { inject: null, pack: true },
  packed: { inject: { rowMask: true }, pack: true },
  'packed+fold': { inject: { rowMask: true, foldResidual: true }, pack: true },
  'shared-unpadded': { inject: { rowMask: true, packShared: true }, unpadded: true },
  'shared+fold-unpadded': { inject: { rowMask: true, packShared: true, foldResidual: true }, unpadded: true },
  'packed+fold-unpadded': { inject: { rowMask: true, foldResidual: true }, pack: true, unpadded: true },
};

const { values: args, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    steps: { type: 'string', default: '32' },
    rounds: { type: 'string', default: '1' },
    prompt: { type: 'string', default: '16' },
    rank: { type: 'string', default: '8' },
    file: { type: 'string', default: 'model_q4.onnx' },
    fuse: { type: 'boolean', default: false },
    variants: { type: 'string', default: 'base,lora,nomask' },
    profile: { type: 'boolean', default: false },
    'profile-child': { type: 'string' },
  },
});
const dir = positionals[0] ?? 'public/models/weblora-shakespeare';
const rank = Number(args.rank);
const steps = Number(args.steps);
ort.env.wasm.numThreads = 1;
const config = parseModelConfig(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')));
const fileBytes = new Uint8Array(readFileSync(join(dir, 'onnx', args.file!)));
// The engine's wasm load without the decoder fusion (the README figures' graph); --fuse: with it, as
// load.ts since 2026-11-30 (src/model/prepare-decoder.ts; no greedy head here either way).
const prepared = prepareDecoderGraph(decodeModel(fileBytes), config, 'wasm', {
  fuse: args.fuse === true,
  greedyHead: false,
}).model;

/** The plain graph's adapter (what `lora` feeds): the packed forms are fed the same one, repacked. */
/** The engine's API view of onnxruntime-web (the random adapter's tensors). */
const ortApi = ort as unknown as Ort;
const plainFeeds = randomLoraFeeds(ortApi, injectLora(prepared).targets, rank, 1);

interface Variant {
  name: string;
  graph: ReturnType<typeof decoderGraph>;
  feeds: Record<string, OrtTensor>;
  loraNodes: number;
  stepMs: number[];
  /** Process CPU time per step (user + system): what a preempting neighbour does not inflate. */
  cpuMs: number[];
  tokens: number[];
  logits: Float32Array[];
}

async function variant(name: string, profile: boolean): Promise<Variant> {
  const form = VARIANTS[name];
  if (form === undefined)
    throw new Error(`unknown variant ${name}; known: ${Object.keys(VARIANTS).join(', ')}`);
  const packed = form.pack ? packSharedInputs(prepared) : null;
  let model: ModelProto = packed?.model ?? prepared;
  let targets: LoraTarget[] = [];
  if (form.inject) ({ model, targets } = injectLora(model, { branchOp: 'matmul', ...form.inject }));
  const slim = weightsAsExternal(model, fileBytes);
  const present = outputsOf(graphOf(model))
    .map((o) => o.name)
    .filter((n) => n.startsWith('present.'));
  const options = { ...decoderSessionOptions('wasm', present), ...form.session };
  options.externalData = slim.externalData;
  if (profile) options.enableProfiling = true;
  const session = await ort.InferenceSession.create(encodeModel(slim.model), options);
  const loraNodes = graphOf(model).node.filter((n) => (n.name ?? '').startsWith('/lora.')).length;
  return {
    name,
    graph: decoderGraph(session, config),
    feeds: targets.some((t) => t.parts)
      ? packedFeeds(
          ort,
          targets,
          packed?.layout ?? new Map(),
          (n) => {
            const t = plainFeeds[n]!;
            return { data: t.data as Float32Array, dims: t.dims };
          },
          !form.unpadded,
        )
      : randomLoraFeeds(ortApi, targets, rank, 1),
    loraNodes,
    stepMs: [],
    cpuMs: [],
    tokens: [],
    logits: [],
  };
}

/**
 * `rounds` × (the prompt, then `steps` decode steps) of every variant in lockstep, order rotating; each
 * round starts new KV caches, so positions stay in 16 … 16 + steps.
 */
async function lockstep(variants: Variant[]): Promise<void> {
  const prompt = Array.from({ length: Number(args.prompt) }, (_, i) => (i * 7919 + 13) % config.vocabSize);
  for (let round = 0; round < Number(args.rounds); round++) {
    const steppers = variants.map((v) => new KvStepper(ort, v.graph, v.feeds));
    const last = variants.map(() => 0);
    for (let i = 0; i < variants.length; i++) last[i] = argmax(await steppers[i]!.step(prompt));
    for (let s = 0; s < steps; s++) {
      for (let j = 0; j < variants.length; j++) {
        const i = (j + s + round) % variants.length;
        const v = variants[i]!;
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        const logits = await steppers[i]!.step([last[i]!]);
        v.stepMs.push(performance.now() - t0);
        const c = process.cpuUsage(c0);
        v.cpuMs.push((c.user + c.system) / 1000);
        last[i] = argmax(logits);
        if (round === 0) v.tokens.push(last[i]!);
        if (round === 0 && s < 4) v.logits.push(logits);
      }
    }
    for (const s of steppers) s.dispose();
  }
}

/** The 10th percentile: a step the machine's other load did not slow down. */
function p10(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) * 0.1)]!;
}

function maxAbsDiff(a: readonly Float32Array[], b: readonly Float32Array[]): number {
  let m = 0;
  a.forEach((x, i) => {
    const y = b[i]!;
    for (let k = 0; k < x.length; k++) m = Math.max(m, Math.abs(x[k]! - y[k]!));
  });
  return m;
}

/** Base-graph nodes: projections and packed Splits by op, the rest together. */
function baseKind(node: string, op: string): string {
  if (/_proj\/(MatMul|Split)/.test(node)) return `base ${op} (projections)`;
  if (/^\/model\/layers\.\d+\/Add(_1)?_kernel_time$/.test(node)) return `base ${op} (residual)`;
  return 'base graph, other nodes';
}

/** Which LoRA op kind a profiled node is ('' for the base graph's own nodes). */
function kindOf(node: string, op: string): string {
  if (!node.startsWith('/lora.')) return '';
  const last = node
    .split('/')
    .at(-1)!
    .replace(/_kernel_time$/, '');
  return `${op} ${last.replace(/_\d+$/, '')}`;
}

interface TraceEvent {
  cat: string;
  name: string;
  dur: number;
  ts: number;
  args?: { op_name?: string };
}

async function profileOne(name: string): Promise<void> {
  const v = await variant(name, true);
  await lockstep([v]);
  // ORT's wasm profiler writes its JSON trace to fd 1 on endProfiling: the parent (main) captures it.
  await v.graph.session.endProfiling();
  await v.graph.session.release();
}

/** Runs `--profile-child <name>` in a child process and reads the trace it printed. */
function profileOf(name: string): void {
  const argv = process.argv.slice(1).filter((a) => a !== '--profile');
  // Children run one at a time (a 2-core machine): each gets a fresh wasm heap.
  // stdout to a file, not a pipe: the wasm module's blocking writes spin on a full pipe.
  const file = join(tmpdir(), `branch-profile-${process.pid}-${name}.json`);
  const fd = openSync(file, 'w');
  const child = spawnSync(process.execPath, [...process.execArgv, ...argv, '--profile-child', name], {
    stdio: ['ignore', fd, 'inherit'],
  });
  closeSync(fd);
  if (child.status !== 0) throw new Error(`profile of ${name} failed (exit ${child.status})`);
  const text = readFileSync(file, 'utf8');
  rmSync(file);
  const events = JSON.parse(text.slice(text.indexOf('['), text.lastIndexOf(']') + 1)) as TraceEvent[];
  // Decode runs only: skip the prompt's run (the first model_run) and its nodes. Per node (the sequential
  // executor runs them in the same order every step), the median over steps: a busy machine preempts a
  // few-µs node rarely, so medians, not sums, say what a node costs.
  const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run');
  const nodes = events.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time'));
  const perRun = nodes.length / runs.length;
  const n = runs.length - 1;
  const at = (r: number, i: number) => nodes[(r + 1) * perRun + i]!;
  const byKind = new Map<string, { us: number; count: number }>();
  let gaps = 0;
  for (let i = 0; i < perRun; i++) {
    const e = at(0, i);
    const k = kindOf(e.name, e.args?.op_name ?? '?') || baseKind(e.name, e.args?.op_name ?? '?');
    const s = byKind.get(k) ?? { us: 0, count: 0 };
    s.us += median(Array.from({ length: n }, (_, r) => at(r, i).dur));
    s.count++;
    byKind.set(k, s);
    if (i > 0)
      gaps += median(Array.from({ length: n }, (_, r) => at(r, i).ts - at(r, i - 1).ts - at(r, i - 1).dur));
  }
  const runUs = median(runs.slice(1).map((e) => e.dur));
  const lora = nodes.slice(0, perRun).filter((e) => e.name.startsWith('/lora.')).length;
  console.log(
    `\n${name}: ${n} decode runs, ${perRun} nodes per run (${lora} LoRA), rank ${rank}; medians over runs`,
  );
  console.log('| part | nodes per step | µs per step | µs per node |');
  console.log('|---|---|---|---|');
  for (const [k, s] of [...byKind].sort((a, b) => b[1].us - a[1].us)) {
    console.log(`| ${k} | ${s.count} | ${s.us.toFixed(0)} | ${(s.us / s.count).toFixed(2)} |`);
  }
  console.log(
    `| between nodes (executor) | ${perRun - 1} | ${gaps.toFixed(0)} | ${(gaps / (perRun - 1)).toFixed(2)} |`,
  );
  const total = [...byKind.values()].reduce((a, k) => a + k.us, gaps);
  console.log(`| sum of the medians above (a step without preemption) | ${perRun} | ${total.toFixed(0)} | |`);
  console.log(`| model_run, median | | ${runUs.toFixed(0)} | |`);
}

async function main(): Promise<void> {
  const names = args.variants!.split(',');
  if (!args['profile-child'])
    console.log(
      `onnxruntime-web ${ort.env.versions.web} wasm, 1 thread, ${dir}/onnx/${args.file} dequantized at load, ${args.fuse ? 'decoder fusion on' : 'unfused'}; rank ${rank}, ` +
        `${args.prompt}-token prompt, ${steps} decode steps`,
    );
  if (args['profile-child']) return profileOne(args['profile-child']);
  if (args.profile) {
    for (const n of names) profileOf(n);
    return;
  }
  const variants: Variant[] = [];
  for (const n of names) variants.push(await variant(n, false));
  await lockstep(variants);
  const ref = variants[0]!;
  const lora = variants.find((v) => v.name === 'lora');
  console.log(
    `| variant | LoRA nodes | wall ms/step: median (p10) | CPU ms/step: median (p10) | speed vs ${ref.name}: wall, median of paired steps | CPU, median of pairs | wall p10 / p10 | max abs logit diff vs lora |`,
  );
  console.log('|---|---|---|---|---|---|---|---|');
  for (const v of variants) {
    const wall = median(v.stepMs.map((ms, i) => ref.stepMs[i]! / ms));
    const cpu = median(v.cpuMs.map((ms, i) => ref.cpuMs[i]! / ms));
    const diff = lora && v.loraNodes > 0 ? maxAbsDiff(v.logits, lora.logits).toExponential(1) : '—';
    const ms = (xs: number[]) => `${median(xs).toFixed(3)} (${p10(xs).toFixed(3)})`;
    console.log(
      `| ${v.name} | ${v.loraNodes} | ${ms(v.stepMs)} | ${ms(v.cpuMs)} | ${wall.toFixed(3)} | ${cpu.toFixed(3)} | ${(p10(ref.stepMs) / p10(v.stepMs)).toFixed(3)} | ${diff} |`,
    );
  }
  for (const v of variants) await v.graph.session.release();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
