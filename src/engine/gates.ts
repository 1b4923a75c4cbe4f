/**
 * `Engine.trainGates`: trains the per-token routing gates of a gated mix over frozen stored adapters
 * (MeteoRA / LoRA-Mixer style) and stores the mix (adapters/gated-store.ts), as one task on the engine's
 * queue. The data is the ordinary training data (train/data.ts: text, or JSONL prompt/completion whose
 * completion tokens carry the loss); the math is the CPU gated model (train/gate-model.ts, frozen
 * weights read from the loaded model's ONNX bytes) with AdamW on the gates only (train/gate-train.ts).
 * It reports the held-out loss of the uniform mix (zero gates) and of the trained gates. Generation
 * with the result needs the model loaded with `gates: true` and `adapter: { gated: name }`.
 * Not here: WebGPU gate training (no gate kernels), pause/resume/checkpoints (a gate run is short).
 */
import { checkGatedMix } from '../adapters/gated.ts';
import { type GatedMixInfo, GatedMixStore } from '../adapters/gated-store.ts';
import { parsePeftConfig } from '../adapters/peft.ts';
import { parseSafetensors } from '../adapters/safetensors.ts';
import type { AdapterStore } from '../adapters/store.ts';
import { AdapterNameConflictError, InvalidOptionError } from '../errors.ts';
import { parseTrainData, splitExamples } from '../train/data.ts';
import { CpuGatedModel } from '../train/gate-model.ts';
import {
  type GateTrainOptions,
  gateEvalLoss,
  resolveGateTrainOptions,
  trainGates,
  zeroGates,
} from '../train/gate-train.ts';
import { loraFromPeft } from '../train/lora.ts';
import type { TrainDataFormat } from '../train/types.ts';
import { yieldToEventLoop } from './decode.ts';
import type { LoadedModel } from './load.ts';
import type { SerialQueue } from './queue.ts';

export interface GateTrainRequest extends GateTrainOptions {
  /** Name the gated mix is stored under (AdapterNameConflictError unless `overwrite`). */
  name: string;
  /** The experts: stored adapters, each with a static mix weight (default 1). At least one. */
  adapters: { name: string; weight?: number }[];
  data: string;
  format?: TrainDataFormat;
  /** Tokens per sequence; default 128 (at most the model's context). */
  seqLen?: number;
  /** Share of examples held out for the before/after loss; default 0.1 (0: none). */
  evalSplit?: number;
  /** Layers that get a gate; default all (the others route uniformly). */
  layers?: number[];
  overwrite?: boolean;
}

export interface GateTrainProgress {
  step: number;
  totalSteps: number;
  loss: number;
}

export interface GateTrainResult {
  mix: GatedMixInfo;
  /** Training loss per step. */
  losses: number[];
  /** Held-out loss with zero gates (the uniform mix) and with the trained gates; null without eval data. */
  evalLossBefore: number | null;
  evalLossAfter: number | null;
  trainMs: number;
}

export interface GateHost {
  queue: SerialQueue;
  model(why: string): LoadedModel;
  store(): AdapterStore;
}

export function trainGatesTask(
  host: GateHost,
  req: GateTrainRequest,
  onProgress?: (p: GateTrainProgress) => void,
): Promise<GateTrainResult> {
  return host.queue.enqueue(() => run(host, req, onProgress));
}

async function run(
  host: GateHost,
  req: GateTrainRequest,
  onProgress?: (p: GateTrainProgress) => void,
): Promise<GateTrainResult> {
  const m = host.model('gate training runs on the loaded model');
  const store = host.store();
  const gated = new GatedMixStore(store);
  const o = resolveGateTrainOptions(req);
  if (!Array.isArray(req.adapters) || req.adapters.length < 1)
    throw new InvalidOptionError('trainGates: adapters must list at least one stored adapter', {});
  const seqLen = req.seqLen ?? Math.min(128, m.maxPositions);
  const evalSplit = req.evalSplit ?? 0.1;
  if (!(Number.isInteger(seqLen) && seqLen >= 2 && seqLen <= m.maxPositions))
    throw new InvalidOptionError(`trainGates: seqLen must be an integer in 2..${m.maxPositions}`, { seqLen });
  if (!(evalSplit >= 0 && evalSplit < 1))
    throw new InvalidOptionError('trainGates: evalSplit must be in [0, 1)', { evalSplit });
  if (!req.overwrite && (await gated.list()).some((x) => x.name === req.name))
    throw new AdapterNameConflictError(`a gated mix named "${req.name}" exists; pass overwrite: true`, {
      name: req.name,
    });
  const tok = m.tokenizer;
  const parsed = parseTrainData(
    req.data,
    req.format ?? 'auto',
    {
      encode: (s) => tok.encode(s),
      eosTokenId: tok.eosTokenId,
      chatTemplate: tok.chatTemplate,
      specialTokens: m.specialTokens,
    },
    seqLen,
  );
  const split = splitExamples(parsed.examples, evalSplit, o.seed);
  const w = await m.trainWeights();
  const layers = req.layers ?? Array.from({ length: w.config.L }, (_, l) => l);
  if (!layers.every((l) => Number.isInteger(l) && l >= 0 && l < w.config.L))
    throw new InvalidOptionError(`trainGates: layers must be in 0..${w.config.L - 1}`, { layers });
  const named = req.adapters.map((a) => ({ name: a?.name, weight: a?.weight ?? 1 }));
  checkGatedMix({ experts: named, hiddenSize: w.config.C, gates: new Map() }); // names, non-zero weights
  const experts = await Promise.all(
    req.adapters.map(async (a) => {
      const { files } = await store.get(a.name); // AdapterNotFoundError when missing
      const cfg = parsePeftConfig(new TextDecoder().decode(files['adapter_config.json']));
      const { tensors } = parseSafetensors(files['adapter_model.safetensors']);
      return { name: a.name, weight: a.weight ?? 1, modules: loraFromPeft(cfg, tensors, w) };
    }),
  );
  const gates = zeroGates(layers, experts.length, w.config.C);
  const model = new CpuGatedModel(w, experts, gates);
  const pad = tok.eosTokenId;
  const evalLoss = () => (split.eval.length ? gateEvalLoss(model, split.eval, pad, o.batchSize) : null);
  try {
    const evalLossBefore = evalLoss();
    const t0 = performance.now();
    const log = await trainGates(model, split.train, pad, o, async (s) => {
      onProgress?.({ step: s.step, totalSteps: o.steps, loss: s.loss });
      await yieldToEventLoop();
      return true;
    });
    const trainMs = performance.now() - t0;
    const evalLossAfter = evalLoss();
    const mix = await gated.save(
      req.name,
      {
        experts: experts.map((e) => ({ name: e.name, weight: e.weight })),
        hiddenSize: w.config.C,
        gates: new Map(gates.map((g) => [g.layer, { W: Float32Array.from(g.W), b: Float32Array.from(g.b) }])),
      },
      {
        overwrite: !!req.overwrite,
        source: 'train',
        train: {
          ...o,
          seqLen,
          evalSplit,
          layers,
          examples: parsed.examples.length,
          evalLossBefore,
          evalLossAfter,
        },
      },
    );
    return { mix, losses: log.map((s) => s.loss), evalLossBefore, evalLossAfter, trainMs };
  } finally {
    model.dispose();
  }
}
