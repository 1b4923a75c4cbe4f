/**
 * The contract between adapters (store, GPU cache) and the engine: per prompt the engine asks an
 * `AdapterFeedProvider` for the LoRA graph inputs of a selection and releases them after the run.
 * src/engine/types.ts re-exports these types as part of the engine's contract.
 * CPU-side feeds (`CpuFeeds`) are plain Float32Arrays in the injected graph's layout:
 * A (in, R), B (R, out), R shared by every input of one run, scale already folded into B.
 */
import type * as ort from 'onnxruntime-web';
import type { LoraTarget } from '../model/inject-lora.ts';

export type { LoraTarget };

/**
 * No adapter (base model), one stored adapter by name, or a weighted mix of stored adapters.
 * null, [] or a mix whose weights are all 0: no adapter.
 */
export type AdapterSelection = null | string | { name: string; weight: number }[] | GatedSelection;

/**
 * A stored gated mix (adapters/gated-store.ts): its experts weighted token by token by trained per-layer
 * gates. Only on a model loaded with `gates: true` (UnsupportedError otherwise).
 */
export interface GatedSelection {
  gated: string;
}

/**
 * Where `importAdapter` reads an adapter: picked/dropped files (adapter_config.json + one .safetensors,
 * or a lone single-file .safetensors), a URL (folder holding both PEFT files, or a .safetensors URL),
 * or the bytes themselves.
 */
export type AdapterImportInput =
  | { files: File[] }
  | { url: string }
  | { config?: Uint8Array | string; weights: Uint8Array };

/** Counters of the adapter feed cache of the loaded model (zeros when none is loaded). */
export interface AdapterStats {
  /** Bytes of cached feeds (GPU buffers on webgpu, tensor data on wasm). */
  bytesHeld: number;
  /** Cached feed sets (adapters and mixes). */
  entries: number;
  hits: number;
  misses: number;
  /**
   * Feed sets made ready for the backend: on webgpu, adapters uploaded to GPU buffers (a hot hit
   * uploads nothing); on wasm, CPU tensor sets built from the store. "No adapter" never counts.
   */
  uploads: number;
  evictions: number;
  budgetBytes: number;
}

export interface AdapterFeeds {
  /**
   * Graph input name (`lora.{layer}.{module}.A|B`) → tensor, one per target passed in (one shared
   * rank ≥ 1; modules of lower rank are zero-padded, which is exact).
   */
  feeds: Record<string, ort.Tensor>;
  /**
   * Called once the request that used `feeds` finished (e.g. unpin from a GPU LRU cache); the tensors
   * must not be used afterwards.
   */
  release(): void;
}

/** The seam between the engine and src/adapters: the engine asks it once per generate request. */
export interface AdapterFeedProvider {
  /**
   * The feeds of `selection`, or null when it means no adapter (null, [], every mix weight 0; names
   * are still checked first): then the engine runs the base model its own way.
   */
  feedsFor(selection: AdapterSelection, targets: readonly LoraTarget[]): Promise<AdapterFeeds | null>;
  /** Optional: drop cached tensors of an adapter (the engine calls it after rename/delete/overwrite). */
  forget?(name: string): void;
  /**
   * Optional: take over `feeds` of stored adapter `name` at `version` (GPU buffers already in the graph
   * layout, e.g. written by the trainer on ORT's device), so its next request is a cache hit with no
   * upload. true: adopted (the provider disposes them); false: not usable here (the caller disposes).
   */
  adopt?(name: string, version: string, targets: readonly LoraTarget[], feeds: ReadyGpuFeeds): boolean;
  /** Optional: cache counters for `adapterStats`. */
  stats?(): AdapterStats;
  /** Optional: free everything; called when the model is released. */
  dispose?(): void;
}

/** Ready-to-feed GPU tensors for every LoRA input of a graph (`AdapterFeedProvider.adopt`). */
export interface ReadyGpuFeeds {
  /** The device the buffers live on (adopted only when it is the cache's, i.e. ORT's). */
  device: GPUDevice;
  /** Graph input name → tensor on `device`, one shared rank ≥ 1, scale folded into B. */
  feeds: Record<string, ort.Tensor>;
  /** Bytes of GPU buffers held. */
  bytes: number;
  /** Destroys the buffers. */
  dispose(): void;
}

/** One graph input's data, row-major. */
export interface LoraFeed {
  data: Float32Array;
  dims: [number, number];
}

/** All LoRA inputs of a run on the CPU: `rank` is the shared R of every feed. */
export interface CpuFeeds {
  rank: number;
  feeds: Map<string, LoraFeed>;
}

/** The part of the onnxruntime-web module the adapter code uses (`onnxruntime-web` or `/webgpu`). */
export interface OrtLike {
  Tensor: typeof ort.Tensor;
}
