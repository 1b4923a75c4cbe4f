/**
 * The module-level registry behind `<weblora-chat>`: every element on a page that names the same model
 * (URL + backend + dtype) shares ONE worker engine and ONE model load; the first element starts the
 * load, later ones join it and receive its progress (the last event is replayed). PEFT adapters given
 * by URL are imported into the engine's adapter store once per engine (the store is per origin, so a
 * name already stored is reused without fetching). A failed load is dropped from the registry (its
 * worker terminated), so a later attempt starts afresh. It deliberately never unloads a model that
 * no element uses any more: models are small and a page usually keeps its elements.
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
}

const models = new Map<string, SharedModel>();

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

function makeShared(k: ModelKey): SharedModel {
  const key = modelKeyString(k);
  const engine = createEngine();
  const listeners = new Set<(p: LoadProgress) => void>();
  let last: LoadProgress | null = null;
  const imports = new Map<string, Promise<string>>();

  const ready = engine.loadModel(k.files ? [...k.files] : k.model, {
    backend: k.backend,
    ...(k.dtype ? { dtype: k.dtype } : {}),
    onProgress: (p) => {
      last = p;
      for (const fn of listeners) fn(p);
    },
  });
  ready.then(notifyStorageChanged, () => {
    if (models.get(key) === shared) models.delete(key);
    engine.terminate();
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
    onProgress(fn) {
      listeners.add(fn);
      if (last) fn(last);
      return () => listeners.delete(fn);
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
  return shared;
}

/** The shared engine + load for a model, created on first request. */
export function sharedModel(k: ModelKey): SharedModel {
  const key = modelKeyString(k);
  let s = models.get(key);
  if (!s) {
    s = makeShared(k);
    models.set(key, s);
  }
  return s;
}

/** Engines currently alive (for the storage view and diagnostics). */
export function sharedModels(): SharedModel[] {
  return [...models.values()];
}

let bare: ChatEngine | null = null;

/**
 * An engine for store-only work (list/delete adapters) when no element has one: a live shared engine
 * if there is one, else one worker without a model (created once).
 */
export function storeEngine(): ChatEngine {
  const live = models.values().next().value;
  if (live) return live.engine;
  bare ??= createEngine();
  return bare;
}
