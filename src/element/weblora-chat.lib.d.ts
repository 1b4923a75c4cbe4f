/**
 * Hand-written type declarations shipped as dist-lib/weblora-chat.d.ts (vite.lib.config.ts copies this
 * file). Hand-written so the library's public types are one self-contained file that pulls in neither
 * onnxruntime-web nor the engine's internals. `lib-types.check.ts` makes tsc fail when these drift from
 * the implementation (src/element/index.ts).
 */

export type Backend = 'webgpu' | 'wasm';
export type ModelDtype = 'fp32' | 'fp16' | 'q4' | 'q4f16';

export interface LoadProgress {
  stage: 'download' | 'prepare' | 'session' | 'ready';
  file?: string;
  fileLoaded?: number;
  fileTotal?: number | null;
  loaded: number;
  total: number | null;
  /** The file is read from Cache Storage (download stage). */
  fromCache?: boolean;
}

export interface LoraTarget {
  layer: number;
  module: string;
  in: number;
  out: number;
  node: string;
  inputA: string;
  inputB: string;
}

export interface LoadReport {
  backend: Backend;
  /** Why `backend`, in one sentence (auto skips software WebGPU adapters such as SwiftShader). */
  backendReason: string;
  adapterInfo: { vendor: string; architecture: string; device: string; description: string } | null;
  dtype: ModelDtype;
  config: {
    modelType: string;
    vocabSize: number;
    hiddenSize: number;
    numLayers: number;
    numHeads: number;
    numKvHeads: number;
    headDim: number;
    maxPositionEmbeddings: number;
    eosTokenIds: number[];
    hasChatTemplate: boolean;
  };
  /** ONNX file bytes plus its external-data chunks. */
  modelBytes: number;
  /** External-data chunks (`model.onnx_data`, `_1`, …) passed to onnxruntime-web; 0 when none. */
  externalDataChunks: number;
  /** A second session of the un-injected graph serves "no adapter" requests (weights held twice). */
  baseSession: boolean;
  /** ONNX bytes handed to onnxruntime-web (both sessions when `baseSession`). */
  sessionBytes: number;
  targets: LoraTarget[];
  targetCount: number;
  /** Operator of the LoRA branch: 'einsum' on webgpu, 'matmul' on wasm. */
  loraBranchOp: 'matmul' | 'einsum';
  loadMs: number;
}

export interface TokenDelta {
  tokenId: number;
  text: string;
}

export type FinishReason = 'eos' | 'length' | 'stop' | 'abort';

export interface GenerateResult {
  text: string;
  tokenIds: number[];
  finishReason: FinishReason;
  timings: {
    prefillMs: number;
    decodeMs: number;
    tokensPerSecond: number;
    promptTokens: number;
    /** Most requests that decoded in one forward with this one (itself included; 1 = alone). */
    batchRows?: number;
  };
  /** Only with adapter 'auto': each stored adapter's prompt loss (nats/token) and what was chosen. */
  routing?: {
    mode: 'pick' | 'mix';
    scores: { adapter: string | null; nll: number }[];
    chosen: (string | null)[];
    weights: number[];
    scoredTokens: number;
    temperature: number;
    ms: number;
  };
}

export interface WebLoraErrorDetail {
  /** Typed error class name ('FetchError', 'AdapterFormatError', …) or 'Error'. */
  name: string;
  message: string;
  data: Record<string, unknown>;
  error: unknown;
}

export interface WebLoraChatEventMap {
  progress: CustomEvent<LoadProgress>;
  token: CustomEvent<TokenDelta>;
  done: CustomEvent<GenerateResult>;
  error: CustomEvent<WebLoraErrorDetail>;
  ready: CustomEvent<LoadReport>;
}

export interface WebLoraConfig {
  /** Folder URL of onnxruntime-web's runtime files; default `./ort/` next to this module. */
  wasmPaths: string;
  /** Model loaded when an element has no `model` attribute; default `./models/weblora-shakespeare/` next to this module. */
  defaultModel: string;
  /** onnxruntime-web wasm threads; default 1 unless the page is cross-origin isolated. */
  numThreads?: number;
}

export declare function configureWebLora(c: Partial<WebLoraConfig>): void;
export declare function getWebLoraConfig(): WebLoraConfig;
export declare function defineWebLoraChat(tag?: string): void;

/**
 * `<weblora-chat model adapter system max-tokens temperature backend dtype model-picker>`. Defined on import.
 * `model-picker` shows an "Open model folder…" button (part `picker`); without a `model` attribute such
 * an element loads nothing until a folder is picked (a prompt before that: `error` with NoModelError).
 */
export declare class WebLoraChat extends HTMLElement {
  static readonly observedAttributes: string[];
  /** Absolute model folder URL (the `model` attribute resolved, or the default model). */
  get model(): string;
  set model(v: string);
  /**
   * The files of a local Hugging Face-layout folder (config.json, tokenizer.json, onnx/model*.onnx …):
   * a FileList from `<input type="file" webkitdirectory>` or Files whose `webkitRelativePath` keeps the
   * folder layout. Loaded instead of `model` while set (setting `model` again switches back; null too).
   * A folder without config.json (ModelPackageError) or the dtype's ONNX file (DtypeUnavailableError)
   * fires `error` like a bad URL.
   */
  get modelFiles(): File[] | null;
  set modelFiles(v: FileList | readonly File[] | null);
  /** Stored adapter name, PEFT folder URL (contains '/') or 'auto' (chosen per prompt); null = base model. */
  get adapter(): string | null;
  set adapter(v: string | null);
  /** 'chat' (history, chat template; default when the model has one) or 'completion' (raw continuation). */
  get mode(): 'chat' | 'completion';
  set mode(v: 'chat' | 'completion');
  /** The chat so far, oldest first (user and assistant turns). */
  get history(): { role: string; content: string }[];
  /** System prompt (chat mode). */
  get system(): string | null;
  set system(v: string | null);
  get maxTokens(): number;
  set maxTokens(v: number);
  get temperature(): number | undefined;
  set temperature(v: number | undefined);
  get report(): LoadReport | null;
  get busy(): boolean;
  generate(prompt: string): Promise<GenerateResult>;
  stop(): void;
  /** Starts a new conversation (forgets the history, empties the output). */
  clear(): void;
  connectedCallback(): void;
  disconnectedCallback(): void;
  attributeChangedCallback(name: string, old: string | null, value: string | null): void;
  addEventListener<K extends keyof WebLoraChatEventMap>(
    type: K,
    listener: (this: WebLoraChat, ev: WebLoraChatEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject,
    options?: boolean | AddEventListenerOptions,
  ): void;
}

declare global {
  interface HTMLElementTagNameMap {
    'weblora-chat': WebLoraChat;
  }
}
