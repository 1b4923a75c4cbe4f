/**
 * The contract between adapters (store, GPU cache) and the engine: per prompt the engine asks an
 * `AdapterFeedProvider` for the LoRA graph inputs of a selection and releases them after the run. The
 * engine declares a structurally identical interface; TypeScript's structural typing makes them one.
 * CPU-side feeds (`CpuFeeds`) are plain Float32Arrays in the injected graph's layout:
 * A (in, R), B (R, out), R shared by every input of one run, scale already folded into B.
 */
import type * as ort from 'onnxruntime-web';
import type { LoraTarget } from '../model/inject-lora.ts';

export type { LoraTarget };

/** null / []: base model (rank 0); a name: that adapter; a list: a weighted mix of stored adapters. */
export type AdapterSelection = null | string | { name: string; weight: number }[];

export interface AdapterFeeds {
  /** Graph input name (`lora.{layer}.{module}.A|B`) → tensor, for every target passed in. */
  feeds: Record<string, ort.Tensor>;
  /** Call once the run that used `feeds` finished; the tensors must not be used afterwards. */
  release(): void;
}

export interface AdapterFeedProvider {
  feedsFor(selection: AdapterSelection, targets: LoraTarget[]): Promise<AdapterFeeds>;
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
