/**
 * The gates suite (`npm run bench -- --suite gates`, runs in the bench page): what per-token routing
 * costs per decode step. The example adapters weblora-shout and weblora-romeo (rank 8 each, all 42
 * projections) as one rank-16 concatenated mix, fed to sessions made exactly as the engine makes them
 * (createDecoderSession, the backend's LoRA branch operator):
 *   (a) ordinary injected graph, static mix 0.5/0.5
 *   (b) gated graph (injectLora gates: true), the same static mix with the neutral gate (n = 1)
 *   (c) gated graph, gated mix (2 experts, random seeded gates: the cost does not depend on their values)
 *   (d) as (c) with the other operator for the branch and the gate products (MatMul vs Einsum)
 * timed by the bench loop (decode-loop.ts) in lockstep — step i of a, b, c, d back to back, order
 * rotating — so the ratios (medians over paired steps) hold on a loaded machine. On webgpu the A/B feeds
 * live in GPU buffers (as the engine's feed cache keeps them) and the gate feeds are CPU tensors (as the
 * engine's gated provider passes them: a few KB uploaded with each run).
 */
import * as ortWebgpu from 'onnxruntime-web/webgpu';
import { gateFeeds } from '../src/adapters/gated.ts';
import { mixFeeds } from '../src/adapters/mix.ts';
import { parsePeftConfig, peftToFeeds } from '../src/adapters/peft.ts';
import { parseSafetensors } from '../src/adapters/safetensors.ts';
import type { LoraFeed } from '../src/adapters/types.ts';
import type { Ort, OrtTensor } from '../src/engine/session.ts';
import { TextTokenizer } from '../src/engine/tokenizer.ts';
import { injectLora, type LoraBranchOp, loraBranchOpFor } from '../src/model/inject-lora.ts';
import { decodeModel, encodeModel } from '../src/model/onnx-io.ts';
import { fetchModelPackage, modelFileName } from '../src/model/package.ts';
import { createBenchSession, emptySeries, lockstepGreedy, record } from './decode-loop.ts';
import { MODEL_BASE, promptIdsOf } from './ours.ts';
import type { GatesResult, GatesSuiteOptions } from './types.ts';

type Log = (msg: string) => void;
const EXPERTS = ['weblora-shout', 'weblora-romeo'];

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  };
}

async function bytes(url: string): Promise<Uint8Array> {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

export async function runGates(o: GatesSuiteOptions, log: Log): Promise<GatesResult> {
  const ort = ortWebgpu as unknown as Ort;
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = new URL('/ort/', location.href).href; // served by the bench server
  const pkg = await fetchModelPackage(MODEL_BASE, { dtype: o.dtype });
  const model = decodeModel(await bytes(MODEL_BASE + modelFileName(o.dtype)));
  const tok = TextTokenizer.fromJSON(pkg.tokenizerJson, pkg.tokenizerConfig, pkg.config.eosTokenIds[0]);
  const promptIds = promptIdsOf((t) => tok.encode(t)).slice(0, 32);
  const op = loraBranchOpFor(o.backend);
  const other: LoraBranchOp = op === 'matmul' ? 'einsum' : 'matmul';
  log(`gates/${o.backend}/${o.dtype}: building 3 sessions (branch op ${op}, other ${other})`);
  const plain = injectLora(model, { branchOp: op });
  const gated = injectLora(model, { branchOp: op, gates: true });
  const gatedAlt = injectLora(model, { branchOp: other, gates: true });
  const sessions = []; // one at a time: ORT's WebGPU EP refuses concurrent session creation
  for (const m of [plain, gated, gatedAlt])
    sessions.push(await createBenchSession(ort, encodeModel(m.model), o.backend, pkg.config));
  const parts = await Promise.all(
    EXPERTS.map(async (name) => {
      const cfg = parsePeftConfig(
        new TextDecoder().decode(await bytes(`/adapters/${name}/adapter_config.json`)),
      );
      const st = parseSafetensors(await bytes(`/adapters/${name}/adapter_model.safetensors`));
      return { weight: 0.5, feeds: peftToFeeds(cfg, st.tensors, plain.targets) };
    }),
  );
  const mixed = mixFeeds(parts, plain.targets);
  const C = gated.gates![0]!.in;
  const rand = rng(7);
  const gates = new Map<number, { W: Float32Array; b: Float32Array }>();
  for (const s of gated.gates!)
    gates.set(s.layer, {
      W: Float32Array.from({ length: 2 * C }, () => (rand() * 2) / Math.sqrt(C)),
      b: Float32Array.from({ length: 2 }, () => rand() * 0.5),
    });
  const mix = { experts: EXPERTS.map((name) => ({ name, weight: 0.5 })), hiddenSize: C, gates };
  const ranks = parts.map((p) => p.feeds.rank);
  const device = o.backend === 'webgpu' ? ((await ort.env.webgpu.device) as GPUDevice) : null;
  const owned: OrtTensor[] = [];
  const tensor = (f: LoraFeed, gpu: boolean): OrtTensor => {
    if (!gpu || !device) return new ort.Tensor('float32', f.data, f.dims);
    const buffer = device.createBuffer({
      size: Math.max(16, Math.ceil(f.data.byteLength / 16) * 16),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    device.queue.writeBuffer(buffer, 0, f.data);
    const t = ort.Tensor.fromGpuBuffer(buffer, {
      dataType: 'float32',
      dims: f.dims,
      dispose: () => buffer.destroy(),
    });
    owned.push(t);
    return t;
  };
  const ab: Record<string, OrtTensor> = {};
  for (const [k, f] of mixed.feeds) ab[k] = tensor(f, true);
  const cpu = (m: Map<string, LoraFeed>) => Object.fromEntries([...m].map(([k, f]) => [k, tensor(f, false)]));
  const neutral = cpu(gateFeeds(gated.gates!, null, [mixed.rank]));
  const routed = cpu(gateFeeds(gated.gates!, mix, ranks));
  const configs = [
    { label: `(a) ungated graph, static mix (${op})`, s: sessions[0]!, feeds: ab },
    {
      label: `(b) gated graph, static mix, neutral gate (${op})`,
      s: sessions[1]!,
      feeds: { ...ab, ...neutral },
    },
    { label: `(c) gated graph, gated mix (${op})`, s: sessions[1]!, feeds: { ...ab, ...routed } },
    { label: `(d) gated graph, gated mix (${other})`, s: sessions[2]!, feeds: { ...ab, ...routed } },
  ].map((c) => ({ ...c, series: emptySeries() }));
  try {
    await lockstepGreedy(ort, configs, promptIds, 2); // warm-up
    for (let rep = 0; rep < o.reps; rep++) {
      const runs = await lockstepGreedy(ort, configs, promptIds, o.decodeTokens);
      for (const [i, c] of configs.entries()) record(c.series, runs[i]!, promptIds.length);
      log(
        `gates/${o.backend}: rep ${rep + 1}/${o.reps}: ${configs.map((c) => c.series.decodeTps.at(-1)!.toFixed(1)).join(' / ')} tok/s`,
      );
    }
  } finally {
    for (const t of owned) t.dispose();
    for (const s of sessions) await s.session.release();
  }
  return {
    kind: 'gates',
    backend: o.backend,
    dtype: o.dtype,
    rows: configs.map((c) => ({ label: c.label, series: c.series })),
  };
}
