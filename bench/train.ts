/**
 * The training suite (issue 10 §6; runs in the bench page): one backend of src/train/ on the default
 * model, for each LoRA rank. 'cpu' is CpuTrainBackend (the TS reference, in the page's thread) next to an
 * onnxruntime-web session on 'wasm'; 'webgpu' is GpuTrainBackend on onnxruntime-web's own GPUDevice
 * (what Engine.train does) next to a session on 'webgpu'. Both sessions come from createDecoderSession on
 * the same model file the trainer reads its frozen weights from.
 *
 * Per rank (all 7 targets of every layer, alpha = 2·rank): `warmup` unmeasured steps, then `steps`
 * measured rounds of one training step, one ORT forward over the same B×T tokens and one forward of the
 * trainer itself (evalLoss), the order rotating every round, so drift and load spikes hit all three
 * alike and their ratios are medians of per-round ratios. A step is `accumulate` (forward, loss, backward)
 * + `step` (grad norm, clip, AdamW), each ending in its one readback, so the GPU work is finished when
 * the clock stops. On webgpu, `gpuBytes` is read after create, after the first evalLoss, after the first
 * accumulate and after the first step (one more unmeasured step), which splits it into frozen weights +
 * LoRA, activations (the (B, T) plan) and gradients + optimizer state; then one profiled pass
 * (gpu-profile.ts) per rank.
 */
import * as ortWebgpu from 'onnxruntime-web/webgpu';
import type { DecoderGraph, Ort, OrtTensor } from '../src/engine/session.ts';
import { createDecoderSession } from '../src/engine/session.ts';
import { TextTokenizer } from '../src/engine/tokenizer.ts';
import { decodeModel } from '../src/model/onnx-io.ts';
import { fetchModelPackage, modelFileName } from '../src/model/package.ts';
import { MODULE_ORDER } from '../src/model/targets.ts';
import { CpuTrainBackend } from '../src/train/cpu-backend.ts';
import type { Batch } from '../src/train/cpu-model.ts';
import { GpuTrainBackend } from '../src/train/gpu-model.ts';
import { profilePass } from '../src/train/gpu-profile.ts';
import { initLora } from '../src/train/lora.ts';
import type { TrainBackend } from '../src/train/types.ts';
import { decoderConfig, loadFrozenWeights } from '../src/train/weights.ts';
import { PASSAGE } from './prompt.ts';
import type { TrainGpuBytes, TrainRankResult, TrainResult, TrainSuiteOptions } from './types.ts';

type Log = (msg: string) => void;

const LR = 1e-3;
const MAX_GRAD_NORM = 1;

/** One ORT forward of a (B, T) batch with an empty KV cache; logits read back, presents disposed. */
async function ortForward(ort: Ort, g: DecoderGraph, batch: Batch): Promise<number> {
  const { B, T } = batch;
  const N = B * T;
  const { numKvHeads, headDim, pastNames, presentNames } = g.layout;
  const feeds: Record<string, OrtTensor> = {
    input_ids: new ort.Tensor(
      'int64',
      BigInt64Array.from(Array.from(batch.tokens), (x) => BigInt(x)),
      [B, T],
    ),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(N).fill(1n), [B, T]),
  };
  if (g.hasPositionIds)
    feeds.position_ids = new ort.Tensor(
      'int64',
      BigInt64Array.from({ length: N }, (_, i) => BigInt(i % T)),
      [B, T],
    );
  for (const n of pastNames)
    feeds[n] = new ort.Tensor('float32', new Float32Array(0), [B, numKvHeads, 0, headDim]);
  const t0 = performance.now();
  const out = await g.session.run(feeds, ['logits', ...presentNames]);
  const logits = (await out.logits!.getData()) as Float32Array;
  const dt = performance.now() - t0;
  if (!Number.isFinite(logits[0]!)) throw new Error('ORT forward gave non-finite logits');
  for (const t of Object.values(out)) t.dispose();
  for (const t of Object.values(feeds)) t.dispose();
  return dt;
}

async function timed<T>(f: () => Promise<T>): Promise<[number, T]> {
  const t0 = performance.now();
  const r = await f();
  return [performance.now() - t0, r];
}

export async function runTrain(opts: TrainSuiteOptions, log: Log): Promise<TrainResult> {
  const ort = ortWebgpu as unknown as Ort;
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = new URL('/ort/', location.href).href;
  const { backend, dtype, batch: B, seqLen: T } = opts;
  const ortBackend = backend === 'cpu' ? 'wasm' : 'webgpu';
  const t0 = performance.now();
  log(`train/${backend}/${dtype}: loading ${modelFileName(dtype)}`);
  const pkg = await fetchModelPackage(opts.model.base, { dtype });
  const cfg = decoderConfig(pkg.config);
  const weights = loadFrozenWeights(decodeModel(pkg.model), cfg);
  const session = await createDecoderSession(ort, pkg.model, pkg.config, { backend: ortBackend });
  const device = backend === 'webgpu' ? ((await ort.env.webgpu.device) as GPUDevice) : null;
  const loadMs = performance.now() - t0;

  // Real text (the inference suite's passage), B rows of T tokens.
  const tok = TextTokenizer.fromJSON(pkg.tokenizerJson, pkg.tokenizerConfig, pkg.config.eosTokenIds[0]);
  let ids = tok.encode(PASSAGE);
  while (ids.length < B * T) ids = ids.concat(ids);
  const batch: Batch = { B, T, tokens: ids.slice(0, B * T) };

  const ranks: TrainRankResult[] = [];
  try {
    log(`train/${backend}: ORT ${ortBackend} forward warm-up`);
    for (let i = 0; i < 2; i++) await ortForward(ort, session, batch);
    for (const rank of opts.ranks) {
      const modules = initLora(weights, { rank, alpha: 2 * rank, targets: MODULE_ORDER, seed: 0 });
      const adam = { weightDecay: 0 };
      let gpu: GpuTrainBackend | null = null;
      let tb: TrainBackend;
      let bytes: TrainGpuBytes | null = null;
      const r: TrainRankResult = {
        rank,
        targets: modules.length,
        params: modules.reduce((n, m) => n + m.branch.A.length + m.branch.B.length, 0),
        stepMs: [],
        accumulateMs: [],
        ortForwardMs: [],
        evalMs: [],
        losses: [],
        gpuBytes: null,
        profile: null,
      };
      if (device) {
        gpu = await GpuTrainBackend.create(device, weights, modules, { adam });
        tb = gpu;
        const afterCreate = gpu.gpuBytes;
        await gpu.evalLoss(batch);
        const afterEval = gpu.gpuBytes;
        r.losses.push(await gpu.accumulate(batch, 1)); // an extra warm-up step (its loss is kept)
        const afterAcc = gpu.gpuBytes;
        await gpu.step(LR, MAX_GRAD_NORM);
        const total = gpu.gpuBytes;
        const grads = Math.max(16, Math.ceil((gpu.n * 4) / 16) * 16);
        bytes = {
          afterCreate,
          lora: grads,
          activations: afterAcc - afterCreate - grads,
          optimizer: total - afterAcc + grads,
          total,
        };
        if (afterEval < afterCreate) throw new Error('gpuBytes shrank');
      } else {
        tb = new CpuTrainBackend(weights, modules, { adam });
      }
      r.gpuBytes = bytes;
      try {
        const trainStep = async (): Promise<void> => {
          const [acc, loss] = await timed(() => tb.accumulate(batch, 1));
          const [st] = await timed(() => tb.step(LR, MAX_GRAD_NORM));
          r.accumulateMs.push(acc);
          r.stepMs.push(acc + st);
          r.losses.push(loss);
        };
        log(`train/${backend}: rank ${rank}: ${opts.warmup} warm-up steps`);
        for (let i = 0; i < opts.warmup; i++) await trainStep();
        r.stepMs.length = 0;
        r.accumulateMs.length = 0;
        // Rounds of (training step, ORT forward, trainer forward), the order rotating every round.
        const parts = [
          trainStep,
          async () => {
            r.ortForwardMs.push(await ortForward(ort, session, batch));
          },
          async () => {
            r.evalMs.push((await timed(() => tb.evalLoss(batch)))[0]);
          },
        ];
        for (let i = 0; i < opts.steps; i++) for (let j = 0; j < 3; j++) await parts[(i + j) % 3]!();
        const med = [...r.stepMs].sort((a, b) => a - b)[r.stepMs.length >> 1]!;
        log(
          `train/${backend}: rank ${rank}: step ${med.toFixed(0)} ms (median of ${r.stepMs.length}), loss ${r.losses.at(-1)!.toFixed(4)}`,
        );
        if (gpu && opts.profile) {
          const p = await profilePass(gpu, batch);
          r.profile = {
            method: p.method,
            kernels: [...p.kernels]
              .map(([label, v]) => ({ label, ms: v.ms, count: v.count }))
              .sort((a, b) => b.ms - a.ms),
          };
          log(`train/${backend}: rank ${rank}: profiled (${p.method}), top ${r.profile.kernels[0]?.label}`);
        }
      } finally {
        tb.dispose();
      }
      ranks.push(r);
    }
  } finally {
    await session.session.release();
  }
  const info = device?.adapterInfo;
  return {
    suite: 'train',
    options: opts,
    adapterInfo: info ? { vendor: info.vendor, architecture: info.architecture } : null,
    modelFile: modelFileName(dtype),
    modelFileBytes: pkg.model.byteLength,
    config: { V: cfg.V, C: cfg.C, I: cfg.I, L: cfg.L, H: cfg.H, Hkv: cfg.Hkv },
    ortBackend,
    timestampQuery: device?.features.has('timestamp-query') ?? false,
    ranks,
    loadMs,
  };
}
