/**
 * The module-level registry behind `<weblora-chat>`: every element on a page that names the same model
 * (URL + backend + dtype) shares ONE worker engine and ONE model load; the first element starts the
 * load, later ones join it and receive its progress (the last event is replayed). A page that already
 * has an engine (the demo) hands it in with `adoptEngine`, so elements whose model key matches use that
 * worker — and their requests batch with the page's own — instead of starting another; the registry
 * never terminates an adopted engine, and the page releases it (elements then re-resolve) when its
 * engine switches model. PEFT adapters given by URL are imported into the engine's adapter store once
 * per engine (the store is per origin, so a name already stored is reused without fetching). A failed
 * load is dropped from the registry (its own worker terminated), so a later attempt starts afresh. It
 * deliberately never unloads a model that no element uses any more: models are small and a page
 * usually keeps its elements.
 */

import { getWebLoraConfig, workerName } from '../config.ts';
import { type WorkerEngine, wrapWorkerEngine } from '../engine/remote-engine.ts';
import type {
  AdapterSelection,
  BackendPreference,
  LoadProgress,
  LoadReport,
  ModelDtype,
} from '../engine/types.ts';
import { AdapterNameConflictError, UnsupportedError } from '../errors.ts';
import { normalizeModelUrl } from '../model/package.ts';
import { notifyStorageChanged } from '../ui/events.ts';

/**
 * The worker engine; adapter methods are checked at run time too, so an engine without an adapter
 * store reports UnsupportedError instead of a TypeError.
 */
export type ChatEngine = WorkerEngine;

export { configureWebLora, getWebLoraConfig, type WebLoraConfig } from '../config.ts';

function pageBase(): string {
  return typeof document !== 'undefined' ? document.baseURI : String(globalThis.location?.href ?? '');
}

export interface ModelKey {
  /** Absolute folder URL, or for picked files their id (localModelId). */
  model: string;
  /** The files of a picked/dropped HF-layout folder: loaded from these instead of `model`. */
  files?: readonly File[];
  backend: BackendPreference;
  dtype: ModelDtype | undefined;
}

export interface SharedModel {
  readonly key: string;
  readonly engine: ChatEngine;
  /** Settles once the model is loaded (or failed). */
  readonly ready: Promise<LoadReport>;
  /** Subscribes to load progress (the latest event is replayed at once); returns an unsubscribe. */
  onProgress(fn: (p: LoadProgress) => void): () => void;
  /** Adapter attribute → engine selection (URLs imported once). */
  resolveAdapter(value: string | null): Promise<AdapterSelection>;
  /** True for an engine the page handed in (`adoptEngine`): the registry never terminates it. */
  readonly adopted: boolean;
  /**
   * Calls `fn` once when this entry is released — its engine no longer serves this model key (the page
   * switched its adopted engine to another model, or another engine was adopted under this key) — so a
   * user re-resolves its model; requests already sent finish on the engine they went to. A failed load
   * is not a release (`ready` rejects). Returns an unsubscribe.
   */
  onRelease(fn: () => void): () => void;
}

/** A registry entry: the shared model plus what only the registry and the adopting page may do. */
interface Entry {
  shared: SharedModel;
  emit(p: LoadProgress): void;
  /** Removes the entry from the registry (when it is still there) and tells its users once. */
  release(): void;
}

const models = new Map<string, Entry>();

export function modelKeyString(k: ModelKey): string {
  return `${k.model}|${k.backend}|${k.dtype ?? 'auto'}`;
}

/**
 * Resolves a model attribute to an absolute folder URL: Hugging Face repo/tree URLs become resolve URLs
 * (normalizeModelUrl), relative URLs resolve against the page.
 */
export function resolveModelUrl(value: string | null): string {
  if (!value) return getWebLoraConfig().defaultModel;
  const href = new URL(normalizeModelUrl(value), pageBase()).href;
  return href.endsWith('/') ? href : `${href}/`;
}

const localIds = new WeakMap<object, string>();
let localSeq = 0;

/**
 * The registry id of a set of local model files: `local:<n>/<folder>`, one per assigned object (a
 * FileList or array), so elements given the same object share one load and a new pick loads anew.
 */
export function localModelId(assigned: object, files: readonly File[]): string {
  let id = localIds.get(assigned);
  if (!id) {
    const folder = files.map((f) => f.webkitRelativePath.split('/')[0]).find((s) => s) ?? 'files';
    id = `local:${++localSeq}/${folder}`;
    localIds.set(assigned, id);
  }
  return id;
}

function createEngine(): ChatEngine {
  // The page's settings (runtime folder, threads) travel in the worker's name (config.ts).
  const worker = new Worker(new URL('./engine-worker.ts', import.meta.url), {
    type: 'module',
    name: workerName(),
  });
  return wrapWorkerEngine(worker);
}

/** True for adapter attribute values that name a PEFT folder URL rather than a stored adapter. */
export function isAdapterUrl(value: string): boolean {
  return value.includes('/');
}

/** The stored name an adapter URL is imported under: its last path segment (e.g. 'weblora-shout'). */
export function adapterNameFromUrl(url: string): string {
  const segs = new URL(url, pageBase()).pathname.split('/').filter((s) => s !== '');
  const last = decodeURIComponent(segs[segs.length - 1] ?? 'adapter');
  return last.replace(/\.(safetensors|json)$/i, '');
}

/**
 * An entry for `engine`, whose load `start` begins (given the progress sink). `adopted`: the page's own
 * engine, never terminated here (not even after a failed load).
 */
function makeEntry(
  key: string,
  engine: ChatEngine,
  adopted: boolean,
  start: (emit: (p: LoadProgress) => void) => Promise<LoadReport>,
): Entry {
  const listeners = new Set<(p: LoadProgress) => void>();
  const releaseListeners = new Set<() => void>();
  let last: LoadProgress | null = null;
  let released = false;
  const imports = new Map<string, Promise<string>>();
  const emit = (p: LoadProgress): void => {
    last = p;
    for (const fn of listeners) fn(p);
  };

  const ready = start(emit);
  ready.then(notifyStorageChanged, () => {
    if (models.get(key) === entry) models.delete(key);
    if (!adopted) engine.terminate();
  });

  async function importOnce(url: string): Promise<string> {
    if (typeof engine.importAdapter !== 'function' || typeof engine.listAdapters !== 'function') {
      throw new UnsupportedError('this engine cannot import adapters (no importAdapter method)', {
        adapter: url,
      });
    }
    const name = adapterNameFromUrl(url);
    await ready;
    const stored = await engine.listAdapters();
    if (stored.some((a) => a.name === name)) return name;
    try {
      const info = await engine.importAdapter({ url }, { name });
      notifyStorageChanged();
      return info.name;
    } catch (e) {
      // Another engine (another model on this page) imported it meanwhile: the store is per origin.
      if (e instanceof AdapterNameConflictError) return name;
      throw e;
    }
  }

  const shared: SharedModel = {
    key,
    engine,
    ready,
    adopted,
    onProgress(fn) {
      listeners.add(fn);
      if (last) fn(last);
      return () => listeners.delete(fn);
    },
    onRelease(fn) {
      if (!released) releaseListeners.add(fn);
      return () => releaseListeners.delete(fn);
    },
    async resolveAdapter(value) {
      const v = value?.trim() ?? '';
      if (v === '' || v === 'none') return null;
      if (!isAdapterUrl(v)) return v;
      let url = new URL(v, pageBase()).href;
      if (!url.endsWith('/') && !/\.(safetensors|json)$/i.test(url)) url += '/';
      let p = imports.get(url);
      if (!p) {
        p = importOnce(url);
        imports.set(url, p);
        p.catch(() => imports.delete(url)); // retry on the next prompt
      }
      return p;
    },
  };
  const entry: Entry = {
    shared,
    emit,
    release() {
      if (models.get(key) === entry) models.delete(key);
      if (released) return;
      released = true;
      const fns = [...releaseListeners];
      releaseListeners.clear();
      for (const fn of fns) fn();
    },
  };
  return entry;
}

/** The shared engine + load for a model, created on first request (or the adopted engine for its key). */
export function sharedModel(k: ModelKey): SharedModel {
  const key = modelKeyString(k);
  let e = models.get(key);
  if (!e) {
    const engine = createEngine();
    e = makeEntry(key, engine, false, (emit) =>
      engine.loadModel(k.files ? [...k.files] : k.model, {
        backend: k.backend,
        ...(k.dtype ? { dtype: k.dtype } : {}),
        onProgress: emit,
      }),
    );
    models.set(key, e);
  }
  return e.shared;
}

/** The page's handle on an engine it handed to the registry (`adoptEngine`). */
export interface AdoptedModel {
  readonly shared: SharedModel;
  /** Passes one of the page's load progress events on to the elements waiting for this model. */
  progress(p: LoadProgress): void;
  /**
   * Takes the engine out of the registry (call it before the engine loads another model): elements
   * that used it re-resolve their model — a new adoption under their key, else a worker of their own.
   * The engine is not touched. Idempotent.
   */
  release(): void;
}

/**
 * Shares an engine the page already has (e.g. the demo's) with every `<weblora-chat>` whose model key
 * (`modelKeyString`: model URL or local id, backend preference, dtype) equals `k`, instead of each
 * element group starting a worker: one worker, one model, and their requests join one continuous batch.
 * `ready` is the page's load of that model on `engine` (an already loaded model: `Promise.resolve(report)`).
 * If it rejects the entry leaves the registry, but the engine is never terminated or disposed by the
 * registry. An entry already registered under `k` is released: an adopted one is left alone, a worker
 * the registry started itself is disposed and terminated (its users move to `engine`).
 */
export function adoptEngine(k: ModelKey, engine: ChatEngine, ready: Promise<LoadReport>): AdoptedModel {
  const key = modelKeyString(k);
  const previous = models.get(key);
  const entry = makeEntry(key, engine, true, () => ready);
  models.set(key, entry);
  if (previous) {
    previous.release();
    const old = previous.shared;
    if (!old.adopted && old.engine !== engine) {
      // dispose() ends its running requests (finishReason 'abort') before it answers.
      void old.engine
        .dispose()
        .catch(() => {})
        .finally(() => old.engine.terminate());
    }
  }
  return { shared: entry.shared, progress: entry.emit, release: () => entry.release() };
}

/** Engines currently alive (for the storage view and diagnostics). */
export function sharedModels(): SharedModel[] {
  return [...models.values()].map((e) => e.shared);
}

let bare: ChatEngine | null = null;

/**
 * An engine for store-only work (list/delete adapters) when no element has one: a live shared engine
 * if there is one, else one worker without a model (created once).
 */
export function storeEngine(): ChatEngine {
  const live = models.values().next().value;
  if (live) return live.shared.engine;
  bare ??= createEngine();
  return bare;
}
