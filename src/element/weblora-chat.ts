/**
 * `<weblora-chat>`: a self-contained chat box around the worker engine, for plain HTML pages.
 * Attributes: `model` (HF-layout folder URL — same origin, a CORS host, or a Hugging Face repo / tree /
 * resolve URL; default the bundled Shakespeare model), `adapter` (a stored
 * adapter name, a PEFT folder URL — anything containing '/' — imported once, or `auto`: per prompt the
 * engine picks the stored adapter that fits it best, shown in the status line; read at each prompt),
 * `mode` ('chat' | 'completion'; default chat when the model has a chat template, else completion),
 * `system` (chat only), `max-tokens`, `temperature`, and `backend` ('auto' | 'webgpu' | 'wasm'), `dtype`
 * ('fp32' | 'fp16' | 'q4' | 'q4f16'; default q4 when the model has it, else fp32).
 * Local models: property `modelFiles` (a folder's files, e.g. from `<input webkitdirectory>`) loads
 * instead of `model` until `model` is set again; attribute `model-picker` adds an "Open model folder…"
 * button (part `picker`) that sets it, and without `model` waits for a folder (prompts: NoModelError).
 * Chat keeps the conversation (`history`) and sends it through the model's chat template, shows each
 * reply on its own line and clears the input; completion continues the raw prompt text, shown inline.
 * Methods `generate(prompt)` (resolves to the GenerateResult), `stop()` and `clear()` (new conversation). Events (bubbling, composed):
 * `progress` (LoadProgress), `token` (TokenDelta), `done` (GenerateResult), `error` ({ name, message,
 * data } — name is the typed error class, e.g. 'FetchError'). Elements naming the same model share one
 * worker and one load (registry.ts), or the page's engine when it adopted one for that model (its status
 * line then says "batch of N" when prompts decoded together). Keyboard: Enter sends, Shift+Enter is a
 * newline, Escape stops. Parts: container, output, turn, prompt, response, status, progress, error,
 * form, label, input, send, stop, clear, picker. Changing `mode`, `model`, `backend` or `dtype` starts a new conversation.
 */

import { abortedResult } from '../engine/aborted.ts';
import type {
  AdapterSelection,
  ChatMessage,
  GenerateRequest,
  GenerateResult,
  LoadProgress,
  LoadReport,
  TokenDelta,
} from '../engine/types.ts';
import { NoModelError } from '../errors.ts';
import { isModelDtype } from '../model/package.ts';
import { formatBytes } from '../ui/format.ts';
import { errorDetail, type WebLoraErrorDetail } from './error-detail.ts';
import { FOLDER_PICKER_HTML, wireFolderPicker } from './folder-picker.ts';
import {
  type ChatEngine,
  localModelId,
  type ModelKey,
  resolveModelUrl,
  type SharedModel,
  sharedModel,
} from './registry.ts';
import { STYLES } from './styles.ts';
import { appendTurn } from './turn.ts';

export type { WebLoraErrorDetail } from './error-detail.ts';

export interface WebLoraChatEventMap {
  progress: CustomEvent<LoadProgress>;
  token: CustomEvent<TokenDelta>;
  done: CustomEvent<GenerateResult>;
  error: CustomEvent<WebLoraErrorDetail>;
  ready: CustomEvent<LoadReport>;
}

const OBSERVED = [
  'model',
  'backend',
  'dtype',
  'adapter',
  'mode',
  'system',
  'max-tokens',
  'temperature',
  'model-picker',
] as const;

export type ChatMode = 'chat' | 'completion';
const DEFAULT_MAX_TOKENS = 64;
let instances = 0;

const Base: typeof HTMLElement =
  typeof HTMLElement === 'undefined' ? (class {} as unknown as typeof HTMLElement) : HTMLElement;

export class WebLoraChat extends Base {
  static readonly observedAttributes = [...OBSERVED];

  readonly #root: ShadowRoot;
  readonly #output: HTMLElement;
  readonly #status: HTMLElement;
  readonly #progress: HTMLProgressElement;
  readonly #error: HTMLElement;
  readonly #input: HTMLTextAreaElement;
  readonly #stop: HTMLButtonElement;
  #shared: SharedModel | null = null;
  #unsubscribe: (() => void) | null = null;
  /** Running prompts → the engine each was sent to (null until sent). */
  #running = new Map<string, ChatEngine | null>();
  #seq = 0;
  readonly #id = ++instances;
  #report: LoadReport | null = null;
  /** Chat turns so far (user/assistant pairs; the system prompt is added per request). */
  #history: ChatMessage[] = [];
  #files: File[] | null = null; // modelFiles (null: the `model` URL) and their registry id
  #filesId = '';
  readonly #pickerRow: HTMLElement;

  constructor() {
    super();
    this.#root = this.attachShadow({ mode: 'open', delegatesFocus: false });
    const uid = `weblora-chat-${this.#id}`;
    this.#root.innerHTML = `
      <style>${STYLES}</style>
      <div part="container" class="container">${FOLDER_PICKER_HTML}
        <div part="output" class="output" role="log" aria-live="polite" aria-atomic="false"
          aria-label="Conversation" tabindex="0" data-placeholder="Output appears here."></div>
        <progress part="progress" max="1" value="0" hidden aria-label="Model download"></progress>
        <p part="status" class="status" role="status"></p>
        <p part="error" class="error" role="alert"></p>
        <form part="form" novalidate>
          <label part="label" for="${uid}-input">Prompt</label>
          <textarea part="input" id="${uid}-input" rows="3" aria-describedby="${uid}-hint"></textarea>
          <div class="row">
            <button part="send" type="submit" class="send">Send</button>
            <button part="stop" type="button" class="stop secondary" disabled>Stop</button>
            <button part="clear" type="button" class="clear secondary">Clear</button>
            <span class="hint" id="${uid}-hint">Enter to send, Shift+Enter for a new line, Escape to stop.</span>
          </div>
        </form>
      </div>`;
    const q = <T extends Element>(sel: string): T => this.#root.querySelector(sel) as T;
    this.#output = q('.output');
    this.#status = q('.status');
    this.#progress = q('progress');
    this.#error = q('.error');
    this.#input = q('textarea');
    this.#stop = q('.stop');
    this.#pickerRow = wireFolderPicker(this.#root, (files) => {
      this.modelFiles = files;
    });

    q<HTMLFormElement>('form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.#submit();
    });
    this.#input.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        this.#submit();
      }
    });
    this.#stop.addEventListener('click', () => this.stop());
    q<HTMLButtonElement>('.clear').addEventListener('click', () => this.clear());
    // Escape stops from anywhere inside the element (input, buttons, output).
    this.addEventListener('keydown', (e) => {
      const ev = e as KeyboardEvent;
      if (ev.key === 'Escape' && this.#running.size > 0) {
        ev.preventDefault();
        this.stop();
      }
    });
  }

  connectedCallback(): void {
    // After the parser set every attribute: load eagerly so progress shows before the first prompt.
    queueMicrotask(() => this.#load());
  }

  disconnectedCallback(): void {
    this.stop();
  }

  attributeChangedCallback(name: string, old: string | null, value: string | null): void {
    if (old === value) return;
    if (name === 'model-picker') this.#pickerRow.hidden = value === null;
    if (name === 'model') this.#files = null; // the URL set last wins over picked files
    if (name === 'mode' || name === 'model' || name === 'backend' || name === 'dtype') this.#history = [];
    if (name === 'model' || name === 'backend' || name === 'dtype') this.#reload();
  }

  /** Drops the current model and loads the new choice once the attributes set in this task are in. */
  #reload(): void {
    if (this.#shared) this.#detach();
    queueMicrotask(() => this.#load());
  }

  /** Starts the load when connected, unless a picker element still waits for its folder. */
  #load(): void {
    if (!this.isConnected) return;
    if (this.#waitsForFolder()) this.#setStatus('Open a model folder to start.');
    else this.#ensureModel().ready.catch(() => {});
  }

  #waitsForFolder(): boolean {
    return !this.#files && this.hasAttribute('model-picker') && !this.hasAttribute('model');
  }

  // ---------------------------------------------------------------- attributes as properties

  get model(): string {
    return resolveModelUrl(this.getAttribute('model'));
  }
  set model(v: string) {
    this.setAttribute('model', v);
  }
  /** A local HF-layout folder's files, loaded instead of `model` while set (null: the URL); new conversation. */
  get modelFiles(): File[] | null {
    return this.#files ? [...this.#files] : null;
  }
  set modelFiles(v: FileList | readonly File[] | null) {
    const files = v ? Array.from(v) : [];
    this.#files = files.length > 0 ? files : null;
    this.#filesId = v && this.#files ? localModelId(v, files) : '';
    this.#history = [];
    this.#reload();
  }
  get adapter(): string | null {
    return this.getAttribute('adapter');
  }
  set adapter(v: string | null) {
    if (v === null) this.removeAttribute('adapter');
    else this.setAttribute('adapter', v);
  }
  /**
   * 'chat' or 'completion': the `mode` attribute when valid, else chat when the loaded model has a chat
   * template, completion when it has none (chat until the model is known).
   */
  get mode(): ChatMode {
    return this.#modeFor(this.#report);
  }
  #modeFor(report: LoadReport | null): ChatMode {
    const m = this.getAttribute('mode');
    if (m === 'chat' || m === 'completion') return m;
    return report && !report.config.hasChatTemplate ? 'completion' : 'chat';
  }
  set mode(v: ChatMode) {
    this.setAttribute('mode', v);
  }
  /** The chat so far (user and assistant turns, oldest first); empty in completion mode. */
  get history(): ChatMessage[] {
    return this.#history.map((m) => ({ ...m }));
  }
  get system(): string | null {
    return this.getAttribute('system');
  }
  set system(v: string | null) {
    if (v === null) this.removeAttribute('system');
    else this.setAttribute('system', v);
  }
  get maxTokens(): number {
    const n = Number(this.getAttribute('max-tokens'));
    return Number.isFinite(n) && n >= 1 ? Math.floor(n) : DEFAULT_MAX_TOKENS;
  }
  set maxTokens(v: number) {
    this.setAttribute('max-tokens', String(v));
  }
  get temperature(): number | undefined {
    const raw = this.getAttribute('temperature');
    if (raw === null || raw.trim() === '') return undefined;
    const n = Number(raw);
    return Number.isFinite(n) ? n : undefined;
  }
  set temperature(v: number | undefined) {
    if (v === undefined) this.removeAttribute('temperature');
    else this.setAttribute('temperature', String(v));
  }
  /** The load report once the model is ready, else null. */
  get report(): LoadReport | null {
    return this.#report;
  }
  /** True while a prompt of this element is generating. */
  get busy(): boolean {
    return this.#running.size > 0;
  }

  // ---------------------------------------------------------------- public API

  /** Generates a reply to `prompt`, streaming into the output; rejects (after an `error` event) on failure. */
  async generate(prompt: string): Promise<GenerateResult> {
    return this.#generate(prompt, false);
  }

  /** Starts a new conversation: forgets the chat history and empties the output. */
  clear(): void {
    this.#history = [];
    this.#output.replaceChildren();
    this.#error.textContent = '';
  }

  async #generate(prompt: string, fromInput: boolean): Promise<GenerateResult> {
    const requestId = `${this.#id}-${++this.#seq}-${Date.now().toString(36)}`;
    this.#running.set(requestId, null);
    this.#syncButtons();
    this.#error.textContent = '';
    const turn = appendTurn(this.#output, prompt);
    try {
      let shared: SharedModel;
      let report: LoadReport;
      let adapter: AdapterSelection;
      do {
        // Again when the model was released meanwhile (the page's adopted engine switched model).
        shared = this.#ensureModel();
        report = await shared.ready;
        if (!this.#running.has(requestId)) return this.#aborted();
        adapter = await shared.resolveAdapter(this.getAttribute('adapter'));
        if (!this.#running.has(requestId)) return this.#aborted();
      } while (this.#shared !== shared);
      const req: GenerateRequest = { requestId, adapter, maxNewTokens: this.maxTokens };
      const temperature = this.temperature;
      if (temperature !== undefined) req.temperature = temperature;
      const mode = this.#modeFor(report);
      turn.turn.classList.add(mode);
      const user: ChatMessage = { role: 'user', content: prompt };
      if (mode === 'chat') {
        const system = this.system;
        req.messages = [...(system ? [{ role: 'system', content: system }] : []), ...this.#history, user];
        // The prompt is in the conversation now: the input is free for the next message.
        if (fromInput && this.#input.value === prompt) this.#input.value = '';
      } else {
        req.prompt = prompt;
      }
      this.#setStatus('Generating…');
      this.#running.set(requestId, shared.engine);
      const result = await shared.engine.generate(req, (delta) => {
        turn.response.textContent += delta.text;
        this.#output.scrollTop = this.#output.scrollHeight;
        this.#emit('token', delta);
      });
      if (mode === 'chat' && result.text !== '')
        this.#history.push(user, { role: 'assistant', content: result.text });
      const t = result.timings;
      this.#setStatus(
        `${result.tokenIds.length} tokens${t.tokensPerSecond > 0 ? `, ${t.tokensPerSecond.toFixed(1)} tok/s` : ''} ` +
          `(${report.backend}${result.finishReason === 'abort' ? ', stopped' : ''}` +
          `${(t.batchRows ?? 1) > 1 ? `, batch of ${t.batchRows}` : ''})` +
          (result.routing ? ` · auto: ${result.routing.chosen.map((a) => a ?? 'base').join(' + ')}` : ''),
      );
      this.#emit('done', result);
      return result;
    } catch (e) {
      this.#fail(e);
      throw e;
    } finally {
      this.#running.delete(requestId);
      this.#syncButtons();
    }
  }

  /** Stops this element's running (and queued) prompts; their `done` fires with finishReason 'abort'. */
  stop(): void {
    for (const [id, engine] of this.#running) {
      if (engine) engine.abort(id).catch(() => {});
      else this.#running.delete(id); // not sent yet (model loading): it resolves as stopped
    }
    this.#syncButtons();
  }

  /** Typed listeners for this element's events (others fall through to HTMLElement's). */
  override addEventListener<K extends keyof WebLoraChatEventMap>(
    type: K,
    listener: (this: WebLoraChat, ev: WebLoraChatEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  override addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject,
    options?: boolean | AddEventListenerOptions,
  ): void;
  override addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject,
    options?: boolean | AddEventListenerOptions,
  ): void {
    super.addEventListener(type, listener, options);
  }

  override focus(options?: FocusOptions): void {
    this.#input.focus(options);
  }

  // ---------------------------------------------------------------- internals

  #submit(): void {
    const prompt = this.#input.value;
    if (prompt.trim() === '') {
      this.#error.textContent = 'Type a prompt first.';
      return;
    }
    this.#generate(prompt, true).catch(() => {}); // reported through the error event and the alert region
  }

  #aborted(): GenerateResult {
    const result = abortedResult();
    this.#setStatus('Stopped.');
    this.#emit('done', result);
    return result;
  }

  #key(): ModelKey {
    const b = this.getAttribute('backend');
    const d = this.getAttribute('dtype');
    const files = this.#files ? { model: this.#filesId, files: this.#files } : { model: this.model };
    return {
      ...files,
      backend: b === 'webgpu' || b === 'wasm' ? b : 'auto',
      dtype: isModelDtype(d) ? d : undefined,
    };
  }

  #ensureModel(): SharedModel {
    if (this.#shared) return this.#shared;
    if (this.#waitsForFolder())
      throw new NoModelError('no model folder yet: "Open model folder…" or set modelFiles', {
        state: 'no-model',
      });
    const shared = sharedModel(this.#key());
    this.#shared = shared;
    this.#report = null;
    const offProgress = shared.onProgress((p) => this.#onProgress(p));
    // Released (the page's adopted engine now serves another model): resolve the model anew; running
    // prompts finish on the engine they went to.
    const offRelease = shared.onRelease(() => {
      if (this.#shared !== shared) return;
      this.#unsubscribe?.();
      this.#unsubscribe = null;
      this.#shared = null;
      this.#report = null;
      queueMicrotask(() => this.#load());
    });
    this.#unsubscribe = () => {
      offProgress();
      offRelease();
    };
    this.#setStatus('Loading model…');
    shared.ready.then(
      (report) => {
        if (this.#shared !== shared) return;
        this.#report = report;
        this.#progress.hidden = true;
        // With why this backend (e.g. auto skipped a software WebGPU adapter); kept on hover afterwards.
        if (this.#running.size === 0)
          this.#setStatus(`Ready (${report.backend}, ${report.dtype}) — ${report.backendReason}.`);
        this.#status.title = report.backendReason;
        this.#status.dataset.backendReason = report.backendReason;
        this.#emit('ready', report);
      },
      (e) => {
        if (this.#shared !== shared) return;
        this.#progress.hidden = true;
        this.#detach(); // the registry dropped the failed load: the next prompt retries
        if (this.#running.size === 0) this.#fail(e); // a running prompt reports it itself
      },
    );
    return shared;
  }

  #detach(): void {
    this.stop();
    this.#unsubscribe?.();
    this.#unsubscribe = null;
    this.#shared = null;
    this.#report = null;
  }

  #onProgress(p: LoadProgress): void {
    if (p.stage === 'download') {
      this.#progress.hidden = false;
      this.#progress.max = p.total ?? Math.max(p.loaded, 1);
      this.#progress.value = p.loaded;
      this.#setStatus(
        `Downloading model: ${p.total ? `${formatBytes(p.loaded)} / ${formatBytes(p.total)}` : formatBytes(p.loaded)}`,
      );
    } else if (p.stage === 'prepare' || p.stage === 'session') {
      this.#setStatus('Preparing model…');
    }
    this.#emit('progress', p);
  }

  #fail(e: unknown): void {
    const detail = errorDetail(e);
    this.#error.textContent = `${detail.name}: ${detail.message}`;
    this.#setStatus('');
    this.#emit('error', detail);
  }

  #setStatus(text: string): void {
    this.#status.textContent = text;
  }

  #syncButtons(): void {
    this.#stop.disabled = this.#running.size === 0;
    this.toggleAttribute('busy', this.#running.size > 0);
  }

  #emit<K extends keyof WebLoraChatEventMap>(type: K, detail: WebLoraChatEventMap[K]['detail']): void {
    this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
  }
}

/** Registers the element under `tag` (default 'weblora-chat') unless a definition exists. */
export function defineWebLoraChat(tag = 'weblora-chat'): void {
  if (typeof customElements !== 'undefined' && !customElements.get(tag))
    customElements.define(tag, WebLoraChat);
}
