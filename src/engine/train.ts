/**
 * Training on the engine: what `Engine.train` / `pauseTraining` / `cancelTraining` / `resumeTraining` /
 * `listCheckpoints` / `deleteCheckpoint` do in LocalEngine (and so in the worker). A run is a task on
 * the engine's SerialQueue (it holds the model): resolve the options, read the frozen weights from the
 * loaded model's own ONNX bytes (load.ts `trainWeights`), parse and split the data (train/data.ts),
 * build the backend (the ONE place that picks the device: `createTrainBackend`), run the loop
 * (train/trainer.ts), checkpoint to IndexedDB (train/checkpoints.ts), and on success write PEFT files
 * (buildPeftFiles) that go through the same validation as an import (importPeftAdapter) into the
 * adapter store with the TrainMetadata. Pause and cancel are flags the loop reads between steps; it
 * yields to the event loop before each step so those messages are handled.
 */
import { importPeftAdapter } from '../adapters/import.ts';
import { buildPeftFiles } from '../adapters/peft-writer.ts';
import type { AdapterStore } from '../adapters/store.ts';
import type { ReadyGpuFeeds } from '../adapters/types.ts';
import {
  AdapterNameConflictError,
  InvalidOptionError,
  TrainCheckpointError,
  UnsupportedError,
} from '../errors.ts';
import { type CheckpointRecord, CheckpointStore } from '../train/checkpoints.ts';
import { CpuTrainBackend } from '../train/cpu-backend.ts';
import type { FrozenWeights, LoraModule } from '../train/cpu-model.ts';
import { BatchSchedule, evalBatches, parseTrainData, splitExamples } from '../train/data.ts';
import { writeLoraFeeds } from '../train/gpu-feeds.ts';
import { requestTrainDevice } from '../train/gpu-kernels.ts';
import { GpuTrainBackend } from '../train/gpu-model.ts';
import { initLora } from '../train/lora.ts';
import {
  planSteps,
  type ResolvedTrainOptions,
  resolveTrainOptions,
  START_CURSOR,
  type TrainControl,
  type TrainCursor,
  trainLoop,
} from '../train/trainer.ts';
import type {
  TrainBackend,
  TrainCheckpointInfo,
  TrainMetadata,
  TrainOptions,
  TrainProgress,
  TrainResult,
} from '../train/types.ts';
import { callQuietly, yieldToEventLoop } from './decode.ts';
import {
  type GateTrainProgress,
  type GateTrainRequest,
  type GateTrainResult,
  trainGatesTask,
} from './gates.ts';
import type { LoadedModel } from './load.ts';
import type { SerialQueue } from './queue.ts';

/** What the manager needs from its engine. */
export interface TrainHost {
  queue: SerialQueue;
  /** The loaded model (NoModelError when none). */
  model(why: string): LoadedModel;
  /** The adapter store (UnsupportedError when the engine has none). */
  store(): AdapterStore;
  /** Drop cached feeds of an overwritten adapter. */
  forgetAdapter(name: string): void;
  /** Hand ready GPU feeds of a stored adapter version to the feed cache; false: not taken (dispose them). */
  adoptAdapter?(name: string, version: string, feeds: ReadyGpuFeeds): boolean;
  /** Checkpoints store; default `new CheckpointStore()`. */
  checkpoints?: CheckpointStore;
}

/**
 * THE place where a run's device becomes a backend. 'webgpu': the WGSL kernels (GpuTrainBackend) on the
 * GPUDevice onnxruntime-web runs the model on, so a trained adapter can feed inference from GPU buffers;
 * when the model runs on wasm, on a device of its own. 'auto': WebGPU when the model runs there, else the
 * CPU reference path (which on a software adapter such as SwiftShader is as fast: src/train/README.md).
 */
export async function createTrainBackend(
  device: ResolvedTrainOptions['device'],
  m: Pick<LoadedModel, 'backend' | 'device'>,
  weights: FrozenWeights,
  modules: LoraModule[],
  o: ResolvedTrainOptions,
): Promise<TrainBackend> {
  const adam = { weightDecay: o.weightDecay };
  const recompute = o.recompute ?? false; // checkpoints from before the option lack it
  if (device === 'webgpu' || (device === 'auto' && m.backend === 'webgpu' && m.device)) {
    const gpu = m.device ?? (await requestTrainDevice());
    return GpuTrainBackend.create(gpu, weights, modules, { adam, recompute });
  }
  return new CpuTrainBackend(weights, modules, { adam, recompute });
}

let trainCounter = 0;
export function newTrainId(): string {
  const rnd = globalThis.crypto?.randomUUID?.() ?? Math.random().toString(36).slice(2);
  return `train-${++trainCounter}-${rnd}`;
}

export async function sha256Hex(text: string): Promise<string> {
  const d = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text));
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, '0')).join('');
}

/** One run as started or resumed. */
interface RunSpec {
  trainId: string;
  options: ResolvedTrainOptions;
  data: string;
  overwrite: boolean;
  /** From a checkpoint: its record (cursor + state). */
  from: CheckpointRecord | null;
}

export class TrainingManager {
  private readonly runs = new Map<string, TrainControl>();
  private ckpts: CheckpointStore | null = null;

  constructor(private readonly host: TrainHost) {}

  /** Gate training over stored adapters (engine/gates.ts), on the same queue, model and store. */
  trainGates(opts: GateTrainRequest, onProgress?: (p: GateTrainProgress) => void): Promise<GateTrainResult> {
    return trainGatesTask(this.host, opts, onProgress);
  }

  private checkpoints(): CheckpointStore {
    if (this.host.checkpoints) return this.host.checkpoints;
    if (typeof indexedDB === 'undefined')
      throw new UnsupportedError('training checkpoints need IndexedDB, which this context lacks', {
        feature: 'indexeddb',
      });
    this.ckpts ??= new CheckpointStore();
    return this.ckpts;
  }

  async train(opts: TrainOptions, onProgress?: (p: TrainProgress) => void): Promise<TrainResult> {
    const trainId = opts?.trainId ?? newTrainId();
    if (typeof trainId !== 'string' || trainId === '')
      throw new InvalidOptionError('trainId must be a non-empty string', {
        option: 'trainId',
        value: trainId,
      });
    return this.enqueue(trainId, onProgress, async () => {
      const m = this.host.model('train');
      const options = resolveTrainOptions(opts, {
        numLayers: m.report.config.numLayers,
        maxPositions: m.maxPositions,
      });
      if (await this.checkpoints().has(trainId)) {
        throw new InvalidOptionError(
          `a checkpoint of run "${trainId}" exists: resume it (resumeTraining) or delete it first`,
          { option: 'trainId', value: trainId },
        );
      }
      return { trainId, options, data: opts.data, overwrite: opts.overwrite ?? false, from: null };
    });
  }

  async resume(trainId: string, onProgress?: (p: TrainProgress) => void): Promise<TrainResult> {
    return this.enqueue(trainId, onProgress, async () => {
      const m = this.host.model('resumeTraining');
      const rec = await this.checkpoints().get(trainId);
      if (!rec) {
        throw new TrainCheckpointError(
          `no training checkpoint "${trainId}" (listCheckpoints shows the stored ones)`,
          {
            trainId,
            reason: 'not-found',
          },
        );
      }
      if (rec.modelId !== m.report.modelId) {
        throw new TrainCheckpointError(
          `checkpoint "${trainId}" was made on model "${rec.modelId}" but "${m.report.modelId}" is loaded`,
          { trainId, reason: 'model-mismatch', modelId: rec.modelId, loaded: m.report.modelId },
        );
      }
      if ((await sha256Hex(rec.data)) !== rec.dataSha256) {
        throw new TrainCheckpointError(`checkpoint "${trainId}": its data does not match its sha256`, {
          trainId,
          reason: 'corrupt',
        });
      }
      return { trainId, options: rec.options, data: rec.data, overwrite: rec.overwrite, from: rec };
    });
  }

  async pause(trainId: string): Promise<boolean> {
    const c = this.runs.get(trainId);
    if (!c) return false;
    c.pause = true;
    return true;
  }

  /** Engine dispose: every running or queued run stops at its next step boundary with a checkpoint. */
  pauseAll(): void {
    for (const c of this.runs.values()) c.pause = true;
  }

  async cancel(trainId: string): Promise<boolean> {
    const c = this.runs.get(trainId);
    if (c) {
      c.cancel = true;
      return true;
    }
    return this.checkpoints().delete(trainId);
  }

  list(): Promise<TrainCheckpointInfo[]> {
    return Promise.resolve().then(() => this.checkpoints().list());
  }

  async deleteCheckpoint(trainId: string): Promise<void> {
    if (this.runs.has(trainId))
      throw new InvalidOptionError(`run "${trainId}" is running: pause or cancel it first`, { trainId });
    await this.checkpoints().delete(trainId);
  }

  private async enqueue(
    trainId: string,
    onProgress: ((p: TrainProgress) => void) | undefined,
    prepare: () => Promise<RunSpec>,
  ): Promise<TrainResult> {
    if (this.runs.has(trainId)) {
      throw new InvalidOptionError(`trainId "${trainId}" is already in use by a running or queued run`, {
        option: 'trainId',
        value: trainId,
      });
    }
    const control: TrainControl = { pause: false, cancel: false };
    this.runs.set(trainId, control);
    try {
      return await this.host.queue.enqueue(async () => this.run(await prepare(), control, onProgress));
    } finally {
      this.runs.delete(trainId);
    }
  }

  /**
   * A run on ORT's own GPUDevice: the final weights become the inference feeds on the GPU
   * (writeLoraFeeds) and go straight into the provider's cache under the stored version, so the first
   * `generate` with the new adapter reads no IndexedDB and uploads nothing. Best effort: on any other
   * device (or a CPU cache) the adapter loads from the store as usual.
   */
  private async adoptFeeds(
    backend: TrainBackend,
    m: LoadedModel,
    name: string,
    version: string,
  ): Promise<void> {
    if (!(backend instanceof GpuTrainBackend) || !m.device || backend.kernels.device !== m.device) return;
    if (!this.host.adoptAdapter) return;
    // Block-diagonal packed or float16 LoRA inputs: the store's import path builds those feeds.
    if (m.targets.some((t) => t.parts || t.inputDtype === 'float16')) return;
    const feeds = writeLoraFeeds(backend, m.targets, m.ort);
    // The feeds are written from the backend's LoRA buffer, which dispose() destroys right after.
    await m.device.queue.onSubmittedWorkDone();
    if (!this.host.adoptAdapter(name, version, feeds)) feeds.dispose();
  }

  private async run(
    spec: RunSpec,
    control: TrainControl,
    onProgress: ((p: TrainProgress) => void) | undefined,
  ): Promise<TrainResult> {
    const t0 = performance.now();
    const { trainId, data } = spec;
    let { options } = spec;
    const m = this.host.model('train');
    const store = this.host.store();
    const ckpts = this.checkpoints();
    let device: 'webgpu' | 'cpu' = options.device === 'webgpu' ? 'webgpu' : 'cpu';
    let tokensPerSecond = 0; // the loop's last figure, carried into the 'save' and 'done' events
    const emit = (p: Omit<TrainProgress, 'trainId' | 'device'>): void => {
      if (p.tokensPerSecond > 0) tokensPerSecond = p.tokensPerSecond;
      callQuietly(onProgress, {
        ...p,
        tokensPerSecond: p.tokensPerSecond || tokensPerSecond,
        trainId,
        device,
      });
    };
    emit({
      stage: 'prepare',
      step: spec.from?.cursor.step ?? 0,
      totalSteps: options.steps,
      epoch: 0,
      loss: null,
      evalLoss: null,
      lr: 0,
      tokensPerSecond: 0,
      etaMs: null,
    });
    if (!spec.overwrite && (await store.has(options.name))) {
      throw new AdapterNameConflictError(
        `an adapter named "${options.name}" already exists; pick another name or train with overwrite`,
        { name: options.name },
      );
    }
    // Data: checked and tokenized before any weight is read or allocated.
    const tok = m.tokenizer;
    const parsed = parseTrainData(
      data,
      options.format,
      {
        encode: (s) => tok.encode(s),
        eosTokenId: tok.eosTokenId,
        chatTemplate: tok.chatTemplate,
        specialTokens: m.specialTokens,
      },
      options.seqLen,
    );
    const split = splitExamples(parsed.examples, options.evalSplit, options.seed);
    const padId = tok.eosTokenId;
    const schedule = new BatchSchedule(split.train, options.batchSize, options.seed, padId);
    options = spec.from ? spec.from.options : planSteps(options, schedule.perEpoch);
    const dataSha256 = spec.from?.dataSha256 ?? (await sha256Hex(data));

    const weights = await m.trainWeights();
    const modules = initLora(weights, {
      rank: options.rank,
      alpha: options.alpha,
      targets: options.targets,
      layers: options.layers,
      seed: options.seed,
    });
    const backend = await createTrainBackend(options.device, m, weights, modules, options);
    device = backend.device;
    try {
      if (spec.from) await backend.restore(spec.from.state);
      const start: TrainCursor = spec.from ? spec.from.cursor : START_CURSOR;
      const record = (state: CheckpointRecord['state'], cursor: TrainCursor): CheckpointRecord => ({
        version: 1,
        trainId,
        name: options.name,
        modelId: m.report.modelId,
        overwrite: spec.overwrite,
        options,
        data,
        dataSha256,
        dataExamples: parsed.examples.length,
        cursor,
        state,
        savedAt: Date.now(),
      });
      const out = await trainLoop(
        backend,
        options,
        schedule,
        evalBatches(split.eval, options.batchSize, padId),
        control,
        start,
        {
          progress: emit,
          checkpoint: async (state, cursor) => {
            await ckpts.save(record(state, cursor));
          },
          yieldNow: yieldToEventLoop,
        },
      );
      const c = out.cursor;
      const last = (stage: TrainProgress['stage']): void =>
        emit({
          stage,
          step: c.step,
          totalSteps: options.steps,
          epoch: Math.round((c.micro / schedule.perEpoch) * 1000) / 1000,
          loss: c.lastLoss,
          evalLoss: c.lastEvalLoss,
          lr: 0,
          tokensPerSecond: 0,
          etaMs: out.status === 'done' ? 0 : null,
        });
      let adapter: TrainResult['adapter'] = null;
      if (out.status === 'cancelled') await ckpts.delete(trainId);
      if (out.status === 'done') {
        last('save');
        const state = await backend.snapshot();
        const meta: TrainMetadata = {
          dataSha256,
          dataExamples: parsed.examples.length,
          options,
          steps: c.step,
          finalLoss: c.lastLoss,
          finalEvalLoss: c.lastEvalLoss,
          device,
          modelId: m.report.modelId,
        };
        const w = await m.trainWeights();
        const files = buildPeftFiles({
          baseModel: m.report.modelId,
          r: options.rank,
          loraAlpha: options.alpha,
          modules: state.modules.map((s) => {
            const lin = w.layers[s.layer]!.proj[s.module];
            return { layer: s.layer, module: s.module, A: s.A, B: s.B, in: lin.K, out: lin.O };
          }),
        });
        const imported = importPeftAdapter(
          { config: files['adapter_config.json'], weights: files['adapter_model.safetensors'] },
          { id: m.report.modelId, aliases: m.report.modelAliases, targets: m.targets },
        );
        const saved = await store.save(options.name, imported, m.report.modelId, {
          overwrite: spec.overwrite,
          source: 'train',
          train: meta,
        });
        this.host.forgetAdapter(options.name);
        await this.adoptFeeds(backend, m, options.name, saved.version);
        await ckpts.delete(trainId);
        adapter = { name: options.name };
      }
      last('done');
      return {
        trainId,
        status: out.status,
        adapter,
        steps: c.step,
        finalLoss: c.lastLoss,
        finalEvalLoss: c.lastEvalLoss,
        initialEvalLoss: c.initialEvalLoss,
        device,
        ms: performance.now() - t0,
      };
    } finally {
      backend.dispose();
    }
  }
}
