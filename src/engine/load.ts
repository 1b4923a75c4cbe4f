/**
 * Loading a model for the engine: fetch the package (model-files.ts: cached, verified), parse its JSON
 * files and tokenizer, pick the backend (backend-choice.ts: auto takes a hardware WebGPU adapter, else
 * wasm; an 'auto' webgpu session that fails falls back to wasm), inject the LoRA inputs (inject-lora.ts), create the decoder session(s)
 * (session.ts) and watch the GPU device. It also owns "no adapter": the un-injected base session when it
 * pays, otherwise the injected graph with `noAdapterFeeds`. It deliberately holds no request state:
 * engine.ts runs requests on the `LoadedModel` this returns.
 */

import { gateFeeds } from '../adapters/gated.ts';
import { toOrtFeeds } from '../adapters/gated-provider.ts';
import { detectCapabilities } from '../env.ts';
import { DeviceLostError, UnsupportedError } from '../errors.ts';
import { specialTokensOf } from '../model/chat.ts';
import { wasmDequantizeBudget } from '../model/dequantize.ts';
import { withInlineExternalData } from '../model/external-data.ts';
import { weightsAsExternal } from '../model/external-weights.ts';
import type { GateSite } from '../model/inject-gates.ts';
import { injectLora, type LoraTarget, loraBranchOpFor, loraInjectOptionsFor } from '../model/inject-lora.ts';
import { detectLayout } from '../model/layout.ts';
import { decodeModel, encodeModel, graphOf, type ModelProto, outputsOf } from '../model/onnx-io.ts';
import {
  type ModelConfig,
  normalizeModelUrl,
  parseGenerationConfig,
  parseModelConfig,
} from '../model/package.ts';
import { withoutPlannerShapes } from '../model/planner-shapes.ts';
import { prepareDecoderGraph } from '../model/prepare-decoder.ts';
import type { FrozenWeights } from '../train/cpu-model.ts';
import { decoderConfig, loadFrozenWeights } from '../train/weights.ts';
import { checkShaderF16, chooseBackend, fallbackReason } from './backend-choice.ts';
import { parseJson } from './estimate.ts';
import { fetchFiles, modelFileReader } from './load-files.ts';
import { phaseClock } from './load-phases.ts';
import type { FetchModelFilesOptions } from './model-files.ts';
import { createDecoderSession, type DecoderGraph, type Ort, type OrtTensor } from './session.ts';
import { TextTokenizer } from './tokenizer.ts';
import type { Backend, DeviceLostInfo, LoadOptions, LoadProgress, LoadReport, ModelSource } from './types.ts';

/**
 * Largest model file (bytes) for which "no adapter" gets its own un-injected session by default. That
 * session skips the LoRA branch (2 extra MatMuls + Add per target): measured on the default model
 * (q4, 5 MB; `npm run bench`, rows (a) vs (b)) it decodes 4–8 % faster than the injected graph with
 * no-adapter feeds, but it holds the weights a second time. Below this size the copy is noise; above
 * it (the 100 MB–1 GB models users bring) doubling the weights is not worth a few percent.
 */
export const BASE_SESSION_MAX_BYTES = 32 * 1024 * 1024;

/** What the engine runs requests on. */
export interface LoadedModel {
  ort: Ort;
  backend: Backend;
  /** The LoRA-injected graph (every request with an adapter; "no adapter" when there is no base graph). */
  graph: DecoderGraph;
  /** The un-injected graph for "no adapter" requests, or null (see BASE_SESSION_MAX_BYTES). */
  baseGraph: DecoderGraph | null;
  /** Feeds that make the injected graph the base model (noAdapterFeeds). */
  noAdapterFeeds: Record<string, OrtTensor>;
  targets: LoraTarget[];
  /** Gate inputs of the gated graph (LoadOptions.gates), else absent. */
  gates?: GateSite[];
  tokenizer: TextTokenizer;
  specialTokens: Record<string, string>;
  eosIds: Set<number>;
  bosId: number | null;
  maxPositions: number;
  /** The GPUDevice ORT runs on (webgpu), else null. */
  device: GPUDevice | null;
  /**
   * Whether rows of a batch may be left-padded (engine/batch.ts): false for GroupQueryAttention graphs,
   * which read each row's length from the mask and expect its positions at the start of the cache.
   */
  leftPadding: boolean;
  report: LoadReport;
  /**
   * The frozen base weights for training, read from the same ONNX file (and external-data chunks) the
   * session was built from. The loaded model keeps no copy of the file's bytes once its sessions own the
   * weights, so the first call reads the files again (Cache Storage, the picked File, else the network),
   * decodes them and keeps the result (q4 blocks stay views of those bytes: no full-precision copy).
   */
  trainWeights(): Promise<FrozenWeights>;
  /** Frees the sessions and the no-adapter feeds. */
  release(): Promise<void>;
}

export interface LoadSettings {
  files?: Pick<FetchModelFilesOptions, 'cacheName' | 'useCache' | 'fetch' | 'estimate'>;
  /** Force (true) or forbid (false) the base session; default: by BASE_SESSION_MAX_BYTES. */
  baseGraphForNoAdapter?: boolean;
  /**
   * Hand the injected graph's weights to onnxruntime-web as external data pointing into the fetched file
   * (external-weights.ts) instead of re-encoding them into a second buffer. Default true.
   */
  fileWeights?: boolean;
  /**
   * Declare the injected graph's row mask (else its A inputs) without a shape, which makes onnxruntime's
   * allocation planner much cheaper (model/planner-shapes.ts says why). Default true.
   */
  plannerShapes?: boolean;
  /**
   * Rewrite the Optimum decoder's spelled-out RMSNorm, rotary and repeat_kv into onnxruntime's fused
   * kernels before injecting (model/fuse-decoder.ts). Default true.
   */
  fuse?: boolean;
  /** Runs once the new package is valid and just before its sessions are created (frees the old model). */
  beforeSessions(): Promise<void>;
  /** The device was lost (not destroyed on purpose) while this model was loaded. */
  onDeviceLost(error: DeviceLostError, info: DeviceLostInfo): void;
}

/**
 * Feeds that turn the LoRA branch off, made once per loaded model. wasm: rank-0 empty tensors (no work
 * at all). webgpu: onnxruntime-web 1.30's WebGPU EP cannot bind zero-size inputs (createBindGroup fails:
 * "Required member is undefined"), so there the branch is rank 1 with all-zero A and B — x·0·0 adds
 * exactly +0 — in GPU buffers (WebGPU zero-fills new buffers), so nothing is uploaded per step. This is
 * the only place that works around it.
 */
export function noAdapterFeeds(
  ort: Ort,
  targets: readonly LoraTarget[],
  device: GPUDevice | null,
): { feeds: Record<string, OrtTensor>; dispose(): void } {
  const feeds: Record<string, OrtTensor> = {};
  // float16 inputs only where injectLora was asked for a float16 branch (branchDtype).
  const half = (t: LoraTarget) => t.inputDtype === 'float16';
  if (!device) {
    for (const t of targets) {
      const empty = (dims: number[]) =>
        half(t)
          ? new ort.Tensor('float16', new Uint16Array(0), dims)
          : new ort.Tensor('float32', new Float32Array(0), dims);
      feeds[t.inputA] = empty([t.in, 0]); // (in, R=0)
      feeds[t.inputB] = empty([0, t.out]); // (R=0, out)
    }
    return { feeds, dispose: () => {} };
  }
  const zeros = (n: number, dims: number[], f16: boolean): OrtTensor => {
    const buffer = device.createBuffer({
      size: Math.max(16, Math.ceil((n * (f16 ? 2 : 4)) / 16) * 16),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    const dataType = f16 ? 'float16' : 'float32';
    return ort.Tensor.fromGpuBuffer(buffer, { dataType, dims, dispose: () => buffer.destroy() });
  };
  for (const t of targets) {
    feeds[t.inputA] = zeros(t.in, [t.in, 1], half(t)); // (in, R=1)
    feeds[t.inputB] = zeros(t.out, [1, t.out], half(t)); // (R=1, out)
  }
  return {
    feeds,
    dispose: () => {
      for (const f of Object.values(feeds)) f.dispose();
    },
  };
}

/**
 * Calls `onLost` when `device` is lost for any reason but an intentional `destroy()` (reason
 * 'destroyed'), which is how ORT and tests release a device on purpose.
 */
export function watchDeviceLost(
  device: Pick<GPUDevice, 'lost'>,
  onLost: (info: DeviceLostInfo) => void,
): void {
  device.lost.then(
    (info) => {
      if (info.reason === 'destroyed') return;
      onLost({ reason: String(info.reason ?? 'unknown'), message: info.message });
    },
    () => {},
  );
}

export async function loadModel(
  ort: Ort,
  source: ModelSource,
  opts: LoadOptions,
  settings: LoadSettings,
  progress: (p: LoadProgress) => void,
): Promise<LoadedModel> {
  const t0 = performance.now();
  const clock = phaseClock();
  wasmDequantizeBudget(opts.wasmDequantize); // a bad value fails on every backend, before any download

  // 1. Files (q4 when present unless a dtype is forced), external data included.
  const fetched = await fetchFiles(source, opts.dtype, settings.files, progress, clock);
  const { files, dtype, decoded, externalData } = fetched;
  const modelBytes = files.get(fetched.modelFile)!;
  const externalDataBytes = externalData.reduce((n, c) => n + c.data.byteLength, 0);
  const weightBytes = modelBytes.byteLength + externalDataBytes;
  const layout = detectLayout(decoded);
  const configJson = parseJson(files.get('config.json'), 'config.json');
  const config = parseModelConfig(configJson);
  const modelId = opts.modelId ?? modelIdOf(source);
  const genJson = files.get('generation_config.json');
  const gen = genJson ? parseGenerationConfig(parseJson(genJson, 'generation_config.json')) : null;
  const tokenizerConfig = parseJson(files.get('tokenizer_config.json'), 'tokenizer_config.json') as Record<
    string,
    unknown
  >;
  const tokenizer = TextTokenizer.fromJSON(
    parseJson(files.get('tokenizer.json'), 'tokenizer.json'),
    tokenizerConfig,
    config.eosTokenIds[0],
  );

  // 2. Backend (backend-choice.ts): auto = hardware WebGPU, else wasm. It picks the LoRA branch operator.
  const caps = await detectCapabilities();
  const want = opts.backend ?? 'auto';
  if (want === 'webgpu' && !caps.webgpu) {
    throw new UnsupportedError('backend "webgpu" was requested but this browser offers no WebGPU adapter', {
      feature: 'webgpu',
    });
  }
  const f16Graph = layout.weights === 'fp16' || layout.weights === 'q4f16' || layout.kvDtype === 'float16';
  const choice = checkShaderF16(chooseBackend(want, caps), want, caps, f16Graph, dtype);
  let backend: Backend = choice.backend;
  let backendReason = choice.reason;

  // 3. LoRA inputs into the graph.
  const total = weightBytes;
  progress({ stage: 'prepare', loaded: total, total });
  const presentNames = outputsOf(graphOf(decoded))
    .map((o) => o.name)
    .filter((n) => n.startsWith('present.'));
  // model/prepare-decoder.ts, shared with the bench's loops: on wasm, 4-bit MatMulNBits run as fp32
  // MatMuls dequantized here (model/dequantize.ts says why; external-data weights of builder packages are
  // read in place, views of the chunks, no copy); then the decoder fusion (model/fuse-decoder.ts), per
  // backend; then the greedy head (model/greedy-head.ts): last-row logits, an argmax output.
  const forBackend = (b: Backend) =>
    prepareDecoderGraph(b === 'wasm' ? withInlineExternalData(decoded, externalData) : decoded, config, b, {
      wasmDequantize: opts.wasmDequantize,
      fuse: settings.fuse,
    });
  // Graphs are encoded without their weights: those stay in the buffers they are in (the fetched file,
  // the dequantized fp32 tensors) and reach onnxruntime-web from there as external data
  // (external-weights.ts), so no weight is copied in JS.
  const slimmed = (model: ModelProto) => {
    const slim = settings.fileWeights === false ? null : weightsAsExternal(model, modelBytes);
    const bytes = clock.time('encode', () => encodeModel(slim?.model ?? model));
    // What the session is handed: the graph, the weights its external data points at, the package's chunks.
    const held = bytes.byteLength + (slim?.externalBytes ?? 0) + externalDataBytes;
    return { bytes, externalData: [...externalData, ...(slim?.externalData ?? [])], held };
  };
  const inject = (b: Backend) => {
    const prepared = clock.time('inject', () => forBackend(b));
    const { model, targets, gates } = clock.time('inject', () =>
      injectLora(prepared.model, {
        ...loraInjectOptionsFor(b),
        gates: !!opts.gates,
        ...(opts.packedLora ? { packed: opts.packedLora } : {}),
      }),
    );
    const light = settings.plannerShapes === false ? model : withoutPlannerShapes(model, targets);
    return { ...slimmed(light), targets, gates, prepared };
  };
  let injected = inject(backend);

  // 4. Sessions. The new package is valid: only now free the old model (a failed fetch keeps it usable).
  progress({ stage: 'session', loaded: total, total });
  await settings.beforeSessions();
  const create = (bytes: Uint8Array, b: Backend, ext: { path: string; data: Uint8Array }[]) =>
    createDecoderSession(ort, bytes, config, {
      backend: b,
      presentNames,
      ...(ext.length ? { externalData: ext } : {}),
    });
  let graph: DecoderGraph;
  try {
    graph = await clock.timeAsync('session', () => create(injected.bytes, backend, injected.externalData));
  } catch (e) {
    if (want !== 'auto' || backend !== 'webgpu') throw e;
    console.warn('weblora: WebGPU session failed, falling back to wasm', e);
    backend = 'wasm';
    backendReason = fallbackReason(e);
    injected = inject(backend);
    graph = await clock.timeAsync('session', () => create(injected.bytes, backend, injected.externalData));
  }
  const { targets } = injected;

  let baseGraph: DecoderGraph | null = null;
  let baseSessionBytes = 0;
  let noAdapter: ReturnType<typeof noAdapterFeeds> | null = null;
  try {
    if (settings.baseGraphForNoAdapter ?? weightBytes <= BASE_SESSION_MAX_BYTES) {
      // The original bytes, same EP/options (on webgpu ORT shares its one GPUDevice between sessions).
      try {
        const p = injected.prepared;
        const base =
          p.model !== decoded ? slimmed(p.model) : { bytes: modelBytes, externalData, held: weightBytes };
        baseGraph = await clock.timeAsync('baseSession', () =>
          create(base.bytes, backend, base.externalData),
        );
        baseSessionBytes = base.held;
      } catch (e) {
        console.warn('weblora: the un-injected base session failed; "no adapter" uses the LoRA graph', e);
      }
    }
    let device: GPUDevice | null = null;
    let adapterInfo: LoadReport['adapterInfo'] = null;
    if (backend === 'webgpu') {
      device = (await ort.env.webgpu.device) as GPUDevice;
      const info = device.adapterInfo ?? (ort.env.webgpu.adapter as GPUAdapter | undefined)?.info;
      if (info) {
        adapterInfo = {
          vendor: info.vendor,
          architecture: info.architecture,
          device: info.device,
          description: info.description,
        };
      }
      watchDeviceLost(device, (info) => {
        const error = new DeviceLostError(
          `the GPU device was lost (${info.reason}: ${info.message}); reload the model (or the page) to continue`,
          { reason: info.reason, message: info.message },
        );
        settings.onDeviceLost(error, info);
      });
    }
    noAdapter = noAdapterFeeds(ort, targets, device);
    // Gated graph: the neutral gate (n = 1) over the off branch's rank (0 on wasm, 1 on webgpu).
    if (injected.gates)
      Object.assign(noAdapter.feeds, toOrtFeeds(ort, gateFeeds(injected.gates, null, [device ? 1 : 0])));
    const eos = new Set([...config.eosTokenIds, ...(gen?.eosTokenIds ?? []), tokenizer.eosTokenId]);
    const report: LoadReport = {
      backend,
      backendReason,
      adapterInfo,
      dtype,
      layout,
      config: {
        modelType: config.modelType,
        vocabSize: config.vocabSize,
        hiddenSize: config.hiddenSize,
        numLayers: config.numLayers,
        numHeads: config.numHeads,
        numKvHeads: config.numKvHeads,
        headDim: config.headDim,
        maxPositionEmbeddings: config.maxPositionEmbeddings,
        eosTokenIds: [...eos],
        hasChatTemplate: tokenizer.chatTemplate !== null,
      },
      modelBytes: weightBytes,
      externalDataChunks: externalData.length,
      externalDataBytes,
      baseSession: baseGraph !== null,
      // External data is handed to both sessions: count it once per session.
      sessionBytes: injected.held + baseSessionBytes,
      targets,
      targetCount: targets.length,
      loraBranchOp: loraBranchOpFor(backend),
      fused: injected.prepared.fused,
      loadMs: performance.now() - t0,
      phases: clock.done(),
      modelId,
      modelAliases: aliasesOf(configJson, opts.modelAliases, modelId),
      dequantizedAtLoad: injected.prepared.dequantized,
    };
    return loadedModel({
      ort,
      backend,
      graph,
      baseGraph,
      noAdapter,
      targets,
      ...(injected.gates ? { gates: injected.gates } : {}),
      tokenizer,
      specialTokens: specialTokensOf(tokenizerConfig),
      eosIds: eos,
      bosId: config.bosTokenId,
      maxPositions: config.maxPositionEmbeddings,
      device,
      leftPadding: !graphOf(decoded).node.some((n) => n.opType === 'GroupQueryAttention'),
      report,
      // trainWeights reads the files again: the loaded model holds no reference to the fetched bytes.
      readFile: modelFileReader(
        source,
        settings.files,
        fetched.modelFile,
        externalData.map((c) => c.path),
      ),
      config,
    });
  } catch (e) {
    noAdapter?.dispose();
    await baseGraph?.session.release().catch(() => {});
    await graph.session.release().catch(() => {});
    throw e;
  }
}

/**
 * The `LoadedModel` around finished sessions. A separate function on purpose: closures made inside
 * loadModel would share its scope and keep the fetched bytes, the decoded graph and the external data
 * alive for as long as the model is loaded.
 */
function loadedModel(
  parts: Omit<LoadedModel, 'noAdapterFeeds' | 'trainWeights' | 'release'> & {
    noAdapter: ReturnType<typeof noAdapterFeeds>;
    readFile(): Promise<{ bytes: Uint8Array; externalData: { path: string; data: Uint8Array }[] }>;
    config: ModelConfig;
  },
): LoadedModel {
  const { noAdapter, readFile, config, ...rest } = parts;
  const readWeights = async () => {
    const { bytes, externalData } = await readFile();
    return loadFrozenWeights(decodeModel(bytes), decoderConfig(config), externalData);
  };
  const sessions = { graph: parts.graph, baseGraph: parts.baseGraph };
  let frozen: Promise<FrozenWeights> | null = null;
  return {
    ...rest,
    noAdapterFeeds: noAdapter.feeds,
    trainWeights() {
      frozen ??= readWeights();
      frozen.catch(() => {
        frozen = null; // a failed read (offline, evicted cache) may be retried
      });
      return frozen;
    },
    async release() {
      frozen = null;
      noAdapter.dispose();
      try {
        await sessions.baseGraph?.session.release();
      } finally {
        await sessions.graph.session.release();
      }
    },
  };
}

/** Last non-empty path segment of a URL or path ("…/weblora-shakespeare/" → "weblora-shakespeare"). */
function lastSegment(path: string): string {
  const clean = path.replace(/[?#].*$/, '');
  const parts = clean.split(/[\\/]+/).filter((p) => p.length > 0);
  return parts[parts.length - 1] ?? '';
}

/** The default model id: the source URL's last path segment, or the picked folder's name. */
function modelIdOf(source: ModelSource): string {
  if (typeof source === 'string') {
    const hub = /^https:\/\/huggingface\.co\/[^/]+\/([^/]+)\/resolve\//.exec(normalizeModelUrl(source));
    return hub?.[1] ?? (lastSegment(source) || source);
  }
  for (const f of source) {
    const rel = f.webkitRelativePath;
    if (rel?.includes('/')) return rel.split('/')[0]!;
  }
  return 'local-model';
}

function aliasesOf(configJson: unknown, extra: readonly string[] | undefined, id: string): string[] {
  const out = new Set<string>(extra ?? []);
  const c = configJson as Record<string, unknown> | null;
  for (const k of ['_name_or_path', 'name_or_path']) {
    const v = c?.[k];
    if (typeof v === 'string' && v.trim() !== '') out.add(v);
  }
  out.delete(id);
  return [...out];
}
