/**
 * Adapters in IndexedDB (idb-keyval, dedicated object store `weblora` / `adapters`). Each adapter is two
 * records written in ONE transaction: `['meta', name]` (small metadata, what `list` reads) and
 * `['files', name]` (the original PEFT file bytes, exported byte-identical); plus, once it has been
 * swapped in, `['feeds', name, <target-set signature>]`: its graph feeds packed in the feed layout
 * (feed-pack.ts), which save, rename and delete drop. Import validates fully
 * (import.ts) before the transaction opens, so a failed import leaves the store unchanged; rename and
 * delete are single transactions too. `version` changes on every write, so caches key on name@version.
 * Not here: tensors on the GPU (gpu-cache.ts) and which adapter a prompt uses (provider.ts).
 * Note: idb-keyval creates the object store only when it creates the database, so no other code may
 * open the database `weblora` with another object store name.
 */
import { createStore, promisifyRequest, type UseStore } from 'idb-keyval';
import { AdapterNameConflictError, AdapterNotFoundError, InvalidOptionError } from '../errors.ts';
import type { LoraTarget } from '../model/inject-lora.ts';
import {
  type FeedPrecision,
  fromStoredPack,
  type PackedFeeds,
  packFeeds,
  type StoredPack,
  targetsSignature,
  toStoredPack,
  unpackFeeds,
} from './feed-pack.ts';
import {
  type AdapterModelInfo,
  type AdapterSummary,
  feedsFromFiles,
  type ImportedAdapter,
  type ImportInput,
  type ImportOptions,
  importPeftAdapter,
  type PeftFiles,
} from './import.ts';
import type { PeftFeeds } from './peft.ts';
import type { CpuFeeds } from './types.ts';

export const DEFAULT_DB = 'weblora';
export const DEFAULT_STORE = 'adapters';
const MAX_NAME = 200;

export interface StoredAdapterMeta extends AdapterSummary {
  name: string;
  /** Changes on every write of this adapter's bytes (not on rename: the bytes stay the same). */
  version: string;
  createdAt: number;
  /** Id of the model it was validated against at import. */
  modelId: string;
  layout: ImportedAdapter['layout'];
  source: 'import' | 'in-app' | 'train';
  /**
   * How it was trained (source 'train'): the trainer's TrainMetadata (src/train/types.ts), stored as
   * given. Typed as a plain object here so the store (below src/train/) does not depend on the trainer;
   * read it as TrainMetadata.
   */
  train?: object;
  /**
   * How an in-app adapter was derived from stored ones (adapters/derive.ts): merged (method, seed) or
   * truncated, the parents' names at that time, and the rank asked for.
   */
  derived?: { op: 'merge' | 'truncate'; parents: string[]; rank: number; method?: string; seed?: number };
}

export interface SaveOptions {
  /** Replace an adapter of the same name (default: AdapterNameConflictError). */
  overwrite?: boolean;
  source?: StoredAdapterMeta['source'];
  /** Training metadata stored with the adapter (source 'train'; see StoredAdapterMeta.train). */
  train?: object;
  /** Derivation metadata stored with an in-app adapter (see StoredAdapterMeta.derived). */
  derived?: StoredAdapterMeta['derived'];
}

const metaKey = (name: string): IDBValidKey => ['meta', name];
const filesKey = (name: string): IDBValidKey => ['files', name];
/** Packed graph feeds of an adapter for one target set (feed-pack.ts): ['feeds', name, signature]. */
const feedsKey = (name: string, sig: string): IDBValidKey => ['feeds', name, sig];
const FEEDS_RANGE = (name: string): IDBKeyRange =>
  IDBKeyRange.bound(['feeds', name, ''], ['feeds', name, []]);
/** All ['meta', <string>] keys: arrays sort after strings, so ['meta', []] bounds every string name. */
const META_RANGE = (): IDBKeyRange => IDBKeyRange.bound(['meta', ''], ['meta', []]);

function newVersion(): string {
  const rnd = globalThis.crypto?.randomUUID?.() ?? Math.random().toString(36).slice(2);
  return `${Date.now().toString(36)}-${rnd}`;
}

function checkName(name: unknown): string {
  if (typeof name !== 'string' || name.trim() === '' || name !== name.trim() || name.length > MAX_NAME) {
    throw new InvalidOptionError(
      `adapter name must be a non-empty string of at most ${MAX_NAME} characters without leading/trailing spaces (got ${JSON.stringify(name)})`,
      { name },
    );
  }
  return name;
}

function req<T>(r: IDBRequest<T>): Promise<T> {
  return promisifyRequest(r);
}

export class AdapterStore {
  private readonly use: UseStore;
  private readonly feedPrecision: FeedPrecision;

  /**
   * `feedPrecision`: how `loadPackedFeeds` stores the packed feeds ('exact', the default: float16 only
   * when lossless; 'f16': always float16, see feed-pack.ts for the error).
   */
  constructor(opts: { dbName?: string; storeName?: string; feedPrecision?: FeedPrecision } = {}) {
    this.use = createStore(opts.dbName ?? DEFAULT_DB, opts.storeName ?? DEFAULT_STORE);
    this.feedPrecision = opts.feedPrecision ?? 'exact';
  }

  /** The idb-keyval store itself: gated-store.ts keeps gated mixes beside the adapters (`['gated', name]`). */
  get idb(): UseStore {
    return this.use;
  }

  /** One transaction; an exception in `body` aborts it (nothing written) and is rethrown. */
  private tx<T>(mode: IDBTransactionMode, body: (s: IDBObjectStore) => Promise<T>): Promise<T> {
    return this.use(mode, async (s) => {
      const done = promisifyRequest(s.transaction);
      done.catch(() => {});
      let out: T;
      try {
        out = await body(s);
      } catch (e) {
        try {
          s.transaction.abort();
        } catch {
          // already finished
        }
        throw e;
      }
      await done;
      return out;
    });
  }

  /** Validate against `model` (import.ts) and store; nothing is written when validation fails. */
  async import(
    name: string,
    input: ImportInput,
    model: AdapterModelInfo,
    opts: ImportOptions & SaveOptions = {},
  ): Promise<StoredAdapterMeta> {
    checkName(name);
    const imported = importPeftAdapter(input, model, opts);
    return this.save(name, imported, model.id, opts);
  }

  /** Store an already validated adapter (e.g. from `importPeftAdapter` or an in-app one) atomically. */
  async save(
    name: string,
    imported: Pick<ImportedAdapter, 'files' | 'layout' | 'summary'>,
    modelId: string,
    opts: SaveOptions = {},
  ): Promise<StoredAdapterMeta> {
    checkName(name);
    const meta: StoredAdapterMeta = {
      ...imported.summary,
      name,
      version: newVersion(),
      createdAt: Date.now(),
      modelId,
      layout: imported.layout,
      source: opts.source ?? 'import',
      ...(opts.train ? { train: opts.train } : {}),
      ...(opts.derived ? { derived: opts.derived } : {}),
    };
    // Copies own exactly the file bytes (a Uint8Array view into a bigger buffer would store all of it).
    const files: PeftFiles = {
      'adapter_config.json': imported.files['adapter_config.json'].slice(),
      'adapter_model.safetensors': imported.files['adapter_model.safetensors'].slice(),
    };
    await this.tx('readwrite', async (s) => {
      if (!opts.overwrite && (await req(s.getKey(metaKey(name)))) !== undefined) {
        throw new AdapterNameConflictError(
          `an adapter named "${name}" already exists; pick another name or overwrite`,
          {
            name,
          },
        );
      }
      s.put(meta, metaKey(name));
      s.put(files, filesKey(name));
      s.delete(FEEDS_RANGE(name));
    });
    return meta;
  }

  /** Metadata of every adapter, by name; reads no tensor bytes. */
  async list(): Promise<StoredAdapterMeta[]> {
    const all = await this.use('readonly', (s) => req(s.getAll(META_RANGE())));
    return (all as StoredAdapterMeta[]).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async getMeta(name: string): Promise<StoredAdapterMeta | undefined> {
    return this.use('readonly', (s) => req(s.get(metaKey(name)))) as Promise<StoredAdapterMeta | undefined>;
  }

  async has(name: string): Promise<boolean> {
    return (await this.getMeta(name)) !== undefined;
  }

  /** Metadata and files, read in one transaction (so they belong together). */
  async get(name: string): Promise<{ meta: StoredAdapterMeta; files: PeftFiles }> {
    const [meta, files] = await this.use('readonly', (s) =>
      Promise.all([req(s.get(metaKey(name))), req(s.get(filesKey(name)))]),
    );
    if (meta === undefined || files === undefined) throw notFound(name);
    return { meta: meta as StoredAdapterMeta, files: files as PeftFiles };
  }

  /** The PEFT files exactly as imported (or as written for in-app adapters). */
  async export(name: string): Promise<PeftFiles> {
    return (await this.get(name)).files;
  }

  /** Graph feeds for `targets` (parse + PEFT mapping of the stored files) and the version they are of. */
  async loadFeeds(
    name: string,
    targets: readonly LoraTarget[],
  ): Promise<{ meta: StoredAdapterMeta; feeds: PeftFeeds }> {
    const { meta, files } = await this.get(name);
    return { meta, feeds: feedsFromFiles(files, targets) };
  }

  /**
   * The same feeds as `loadFeeds`, from the packed copy in the feed layout when one of this version and
   * target set is stored (one read, no parsing: what makes a cold swap cheap); otherwise parsed from the
   * files, and the packed copy is written in the background (it costs the adapter's size once more in
   * storage; save, rename and delete drop it). `packed` says which path served the call.
   */
  async loadPackedFeeds(
    name: string,
    targets: readonly LoraTarget[],
  ): Promise<{ meta: StoredAdapterMeta; feeds: CpuFeeds; packed: boolean }> {
    const sig = targetsSignature(targets);
    const [meta, pack] = await this.use('readonly', (s) =>
      Promise.all([req(s.get(metaKey(name))), req(s.get(feedsKey(name, sig)))]),
    );
    if (meta === undefined) throw notFound(name);
    const m = meta as StoredAdapterMeta;
    const p = pack as StoredPack | undefined;
    if (p && p.version === m.version && p.sig === sig)
      return { meta: m, feeds: unpackFeeds(await fromStoredPack(p)), packed: true };
    const loaded = await this.loadFeeds(name, targets);
    const packed = packFeeds(loaded.feeds, targets, loaded.meta.version, this.feedPrecision);
    this.writePack(name, packed).catch((e) =>
      console.warn(`weblora: could not store packed feeds of "${name}"`, e),
    );
    return { meta: loaded.meta, feeds: loaded.feeds, packed: false };
  }

  /** Stores a pack only while the adapter still has the version it was made from. */
  private async writePack(name: string, p: PackedFeeds): Promise<void> {
    await this.tx('readwrite', async (s) => {
      const meta = (await req(s.get(metaKey(name)))) as StoredAdapterMeta | undefined;
      if (meta?.version === p.version) s.put(toStoredPack(p), feedsKey(name, p.sig));
    });
  }

  /** Atomic rename; AdapterNameConflictError when `to` exists, AdapterNotFoundError when `from` does not. */
  async rename(from: string, to: string): Promise<StoredAdapterMeta> {
    checkName(to);
    if (from === to) {
      const m = await this.getMeta(from);
      if (!m) throw notFound(from);
      return m;
    }
    return this.tx('readwrite', async (s) => {
      const [meta, files, clash] = await Promise.all([
        req(s.get(metaKey(from))),
        req(s.get(filesKey(from))),
        req(s.getKey(metaKey(to))),
      ]);
      if (meta === undefined || files === undefined) throw notFound(from);
      if (clash !== undefined) {
        throw new AdapterNameConflictError(`cannot rename "${from}" to "${to}": that name is taken`, {
          from,
          to,
          name: to,
        });
      }
      const next = { ...(meta as StoredAdapterMeta), name: to };
      s.put(next, metaKey(to));
      s.put(files, filesKey(to));
      s.delete(metaKey(from));
      s.delete(filesKey(from));
      s.delete(FEEDS_RANGE(from));
      return next;
    });
  }

  /** Removes metadata and bytes in one transaction; AdapterNotFoundError when absent. */
  async delete(name: string): Promise<void> {
    await this.tx('readwrite', async (s) => {
      if ((await req(s.getKey(metaKey(name)))) === undefined) throw notFound(name);
      s.delete(metaKey(name));
      s.delete(filesKey(name));
      s.delete(FEEDS_RANGE(name));
    });
  }
}

function notFound(name: string): AdapterNotFoundError {
  return new AdapterNotFoundError(`no adapter named "${name}" in the store`, { name });
}
