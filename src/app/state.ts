/**
 * The demo's shared state: the one worker engine, the list of stored adapters (re-read after every
 * change and broadcast to the panels that show it), and the page-level state hook for automation,
 * `document.body.dataset.state` = 'loading' | 'ready' | 'generating' | 'error' ('error' only when the
 * model could not be loaded; a failed request is shown where it was made). Panels subscribe with
 * `onAdapters` / `onModel`; this file deliberately renders nothing.
 */
import type { AdapterInfo, AdapterStats, Engine, LoadReport } from '../engine/types.ts';
import { notifyStorageChanged, onStorageChanged } from '../ui/events.ts';

export type ModelPhase = 'loading' | 'ready' | 'error';

export class AppState {
  adapters: AdapterInfo[] = [];
  /** One-line descriptions by adapter name (the example index, adapters/index.json). */
  descriptions = new Map<string, string>();
  report: LoadReport | null = null;
  phase: ModelPhase = 'loading';
  private running = 0;
  private readonly adapterListeners = new Set<(list: AdapterInfo[]) => void>();
  private readonly modelListeners = new Set<() => void>();
  private readonly statsListeners = new Set<(s: AdapterStats | null) => void>();

  constructor(readonly engine: Engine) {
    // The storage panel (src/pwa) can delete adapters too.
    onStorageChanged(() => void this.refreshAdapters({ notify: false }));
  }

  onAdapters(cb: (list: AdapterInfo[]) => void): void {
    this.adapterListeners.add(cb);
    cb(this.adapters);
  }

  onModel(cb: () => void): void {
    this.modelListeners.add(cb);
    cb();
  }

  onStats(cb: (s: AdapterStats | null) => void): void {
    this.statsListeners.add(cb);
  }

  /** Re-reads the adapter feed cache counters (bytes held by adapters) after requests and imports. */
  async refreshStats(): Promise<void> {
    let s: AdapterStats | null = null;
    try {
      s = this.ready ? await this.engine.adapterStats() : null;
    } catch (e) {
      console.warn('adapterStats failed', e);
    }
    for (const cb of this.statsListeners) cb(s);
  }

  /** Re-reads the store; `notify` (default) also tells the storage view that stored data changed. */
  async refreshAdapters(opts: { notify?: boolean } = {}): Promise<AdapterInfo[]> {
    try {
      this.adapters = (await this.engine.listAdapters()).sort((a, b) => a.name.localeCompare(b.name));
    } catch (e) {
      console.warn('listAdapters failed', e);
    }
    for (const cb of this.adapterListeners) cb(this.adapters);
    if (opts.notify !== false) notifyStorageChanged();
    void this.refreshStats();
    return this.adapters;
  }

  /** Sets the descriptions shown next to adapter names and re-renders the lists. */
  setDescriptions(d: ReadonlyMap<string, string>): void {
    this.descriptions = new Map(d);
    for (const cb of this.adapterListeners) cb(this.adapters);
  }

  /** The description of a stored adapter, when one is known. */
  describe(name: string): string | undefined {
    return this.descriptions.get(name);
  }

  setModel(phase: ModelPhase, report: LoadReport | null = this.report): void {
    this.phase = phase;
    this.report = phase === 'ready' ? report : null;
    if (report) document.body.dataset.backend = report.backend;
    this.syncBody();
    for (const cb of this.modelListeners) cb();
  }

  /** True while any generation (this panel's or a compare run) holds the engine. */
  get busy(): boolean {
    return this.running > 0;
  }

  get ready(): boolean {
    return this.phase === 'ready';
  }

  /** Marks one generation running; call the returned function when it settled. */
  beginGeneration(): () => void {
    this.running++;
    this.syncBody();
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.running--;
      this.syncBody();
    };
  }

  /** True while a training run holds the engine (Train panel); generate requests then wait for it. */
  training = false;

  private syncBody(): void {
    document.body.dataset.state =
      this.phase !== 'ready' ? this.phase : this.running > 0 ? 'generating' : 'ready';
  }
}

/** A request id the page can later pass to `engine.abort`. */
export function newRequestId(prefix: string): string {
  const rnd = globalThis.crypto?.randomUUID?.() ?? Math.random().toString(36).slice(2);
  return `${prefix}-${rnd}`;
}
