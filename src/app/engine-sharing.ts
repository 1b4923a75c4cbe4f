/**
 * Lends the demo's one worker engine to `<weblora-chat>` elements on the page (src/element/registry.ts,
 * `adoptEngine`): while the demo's engine holds model M, loaded with backend preference B and dtype D, an
 * element whose model key is (M, B, D) — the embedded panel's element (element-panel.ts) or one a page
 * author added — uses this worker instead of starting its own, so its prompts and the demo's join one
 * continuous batch. Before the engine loads another model the old adoption is released (elements that
 * used it re-resolve), and the new load is adopted under its key; after a failed load the model still
 * loaded is shared again. It never terminates or disposes the engine; listeners hear which model the
 * demo serves (or is loading) now.
 */
import {
  type AdoptedModel,
  adoptEngine,
  type ChatEngine,
  localModelId,
  type ModelKey,
  resolveModelUrl,
} from '../element/registry.ts';
import type { BackendPreference, LoadProgress, LoadReport } from '../engine/types.ts';
import type { ModelChoice } from './model-chooser.ts';

/** A model as the demo loads it: the chooser's choice and the backend preference. */
export interface DemoModel {
  choice: ModelChoice;
  backend: BackendPreference;
}

/** The registry key of the demo's model: the same key an element with the matching attributes has. */
export function demoModelKey({ choice, backend }: DemoModel): ModelKey {
  const dtype = choice.dtype;
  const src = choice.source;
  if (src === undefined || typeof src === 'string')
    return { model: resolveModelUrl(src ?? null), backend, dtype };
  return { model: localModelId(src, src), files: src, backend, dtype };
}

export class EngineSharing {
  private adopted: AdoptedModel | null = null;
  /** The model loaded last (shared again when a later load fails). */
  private served: DemoModel | null = null;
  private readonly listeners = new Set<(m: DemoModel) => void>();
  private now: DemoModel | null = null;

  constructor(private readonly engine: ChatEngine) {}

  /** The model the demo loads or serves now (null before its first load). */
  get current(): DemoModel | null {
    return this.now;
  }

  /** Calls `fn` whenever the demo switches model (a load starts, or a failed one falls back). */
  onChange(fn: (m: DemoModel) => void): void {
    this.listeners.add(fn);
  }

  /**
   * The demo starts loading `m` on its engine (`ready`): releases the model shared so far and shares this
   * load. Call it right after sending the load, in the same task. Returns the sink for the load's progress.
   */
  loading(m: DemoModel, ready: Promise<LoadReport>): (p: LoadProgress) => void {
    const adopted = this.share(m, ready);
    ready.then(
      () => {
        if (this.adopted === adopted) this.served = m;
      },
      () => {},
    );
    return (p) => adopted.progress(p);
  }

  /** A load failed: `still` is the model the engine kept (engine.info()), shared again; null: none. */
  failed(still: LoadReport | null): void {
    this.adopted?.release();
    this.adopted = null;
    if (still && this.served) this.share(this.served, Promise.resolve(still));
  }

  private share(m: DemoModel, ready: Promise<LoadReport>): AdoptedModel {
    this.adopted?.release();
    const adopted = adoptEngine(demoModelKey(m), this.engine, ready);
    this.adopted = adopted;
    this.now = m;
    for (const fn of this.listeners) fn(m);
    return adopted;
  }
}
