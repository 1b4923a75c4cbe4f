/**
 * Store actions that make a new adapter out of stored ones: merge (merge.ts) and truncate (truncate.ts).
 * Both read the parents' stored PEFT files, compute on the folded factors (factored.ts), write ordinary PEFT
 * files (buildPeftFiles), validate them like any import against the loaded model (importPeftAdapter) and
 * store them atomically with source 'in-app' and `derived` metadata naming the parents; the result
 * exports and re-imports like any adapter. Checks first, so a bad request stores nothing: unknown names
 * (AdapterNotFoundError), rank out of 1..64 or a bad name (InvalidOptionError), parents stored for another
 * model than the loaded one or for different models (AdapterMismatchError), shapes that disagree
 * (AdapterShapeError). Not here: the engine's queue/worker plumbing (engine/engine.ts, worker.ts).
 */
import { AdapterMismatchError, AdapterNameConflictError, InvalidOptionError } from '../errors.ts';
import { type FactoredAdapter, readFactored, toInApp } from './factored.ts';
import { type AdapterModelInfo, importPeftAdapter } from './import.ts';
import { type MergeMethod, mergeFactored } from './merge.ts';
import { buildPeftFiles } from './peft-writer.ts';
import type { AdapterStore, StoredAdapterMeta } from './store.ts';
import { checkRank, ranksForBudget, truncateFactored } from './truncate.ts';

export interface MergeAdaptersOptions {
  /** Stored adapters to merge (at least one; a single one is LEGO pruning to `rank`). */
  names: string[];
  /** Rank of the merged adapter (1..64). */
  rank: number;
  /** Store name of the result. */
  name: string;
  /** 'lego' (default): LoRA-LEGO unit clustering; 'average': mean ΔW projected to rank k (baseline). */
  method?: MergeMethod;
  /** k-means++ seed (default 0): the same inputs and seed give byte-identical files. */
  seed?: number;
  /** Replace an adapter of the same name (default: AdapterNameConflictError). */
  overwrite?: boolean;
}

/** Progress of merge/truncate: read parents, compute per module (done/total), store, done. */
export interface AdapterDeriveProgress {
  stage: 'read' | 'compute' | 'store' | 'done';
  name: string;
  done: number;
  total: number;
}

export interface TruncateAdapterOptions {
  /** Store name of the result; default `${name}-r${k}`. Truncating in place: pass `name` and `overwrite`. */
  name?: string;
  /** Replace an existing adapter of the result's name (default: AdapterNameConflictError). */
  overwrite?: boolean;
}

/** Rank cap from a byte budget instead of a number (truncate.ts ranksForBudget, one adapter). */
export interface RankBudget {
  budgetBytes: number;
}

async function readParents(
  store: AdapterStore,
  names: readonly string[],
  model: AdapterModelInfo,
): Promise<{ metas: StoredAdapterMeta[]; factored: FactoredAdapter[] }> {
  const metas: StoredAdapterMeta[] = [];
  const factored: FactoredAdapter[] = [];
  for (const n of names) {
    const { meta, files } = await store.get(n);
    if (meta.modelId !== model.id) {
      throw new AdapterMismatchError(
        `adapter "${n}" was stored for model "${meta.modelId}" but the loaded model is "${model.id}"; load that model to combine it`,
        { name: n, adapterModel: meta.modelId, model: model.id },
      );
    }
    metas.push(meta);
    factored.push(readFactored(files));
  }
  return { metas, factored };
}

function checkNames(names: unknown): string[] {
  if (!Array.isArray(names) || names.length === 0 || !names.every((n) => typeof n === 'string')) {
    throw new InvalidOptionError('names must be a non-empty list of stored adapter names', {
      option: 'names',
      value: names,
    });
  }
  if (new Set(names).size !== names.length) {
    throw new InvalidOptionError(`names lists an adapter twice: ${JSON.stringify(names)}`, {
      option: 'names',
      value: names,
    });
  }
  return names as string[];
}

async function storeDerived(
  store: AdapterStore,
  a: FactoredAdapter,
  model: AdapterModelInfo,
  name: string,
  overwrite: boolean,
  derived: NonNullable<StoredAdapterMeta['derived']>,
): Promise<StoredAdapterMeta> {
  const files = buildPeftFiles(toInApp(a, a.baseModel ?? model.id));
  const imported = importPeftAdapter(
    { config: files['adapter_config.json'], weights: files['adapter_model.safetensors'] },
    model,
    { allowBaseModelMismatch: true }, // parents were validated (or overridden) at their import
  );
  return store.save(name, imported, model.id, { overwrite, source: 'in-app', derived });
}

/** Merge stored adapters into a new stored adapter (see merge.ts for the math). */
export async function mergeStoredAdapters(
  store: AdapterStore,
  model: AdapterModelInfo,
  opts: MergeAdaptersOptions,
  onProgress?: (p: AdapterDeriveProgress) => void,
): Promise<StoredAdapterMeta> {
  const names = checkNames(opts?.names);
  const rank = checkRank(opts.rank);
  const method = opts.method ?? 'lego';
  const seed = opts.seed ?? 0;
  if (typeof opts.name !== 'string') {
    throw new InvalidOptionError("name (the merged adapter's store name) is required", { option: 'name' });
  }
  if (!opts.overwrite && (await store.has(opts.name))) {
    // Fail before the work; save() checks again inside its transaction.
    throw new AdapterNameConflictError(
      `an adapter named "${opts.name}" already exists; pick another name or overwrite`,
      { name: opts.name },
    );
  }
  const report = (stage: AdapterDeriveProgress['stage'], done: number, total: number) =>
    onProgress?.({ stage, name: opts.name, done, total });
  report('read', 0, names.length);
  const { factored } = await readParents(store, names, model);
  report('read', names.length, names.length);
  const merged = mergeFactored(factored, {
    rank,
    method,
    seed,
    onModule: (done, total) => report('compute', done, total),
  });
  report('store', 0, 1);
  const meta = await storeDerived(store, merged, model, opts.name, opts.overwrite ?? false, {
    op: 'merge',
    parents: names,
    method,
    rank,
    seed,
  });
  report('done', 1, 1);
  return meta;
}

/** Truncate a stored adapter to rank k (or to the rank that fits `budgetBytes`) as a new stored adapter. */
export async function truncateStoredAdapter(
  store: AdapterStore,
  model: AdapterModelInfo,
  name: string,
  rank: number | RankBudget,
  opts: TruncateAdapterOptions = {},
): Promise<StoredAdapterMeta> {
  const [factoredParent] = (await readParents(store, [name], model)).factored;
  const parent = factoredParent!;
  let k: number;
  if (typeof rank === 'object' && rank !== null && 'budgetBytes' in rank) {
    if (typeof rank.budgetBytes !== 'number' || !(rank.budgetBytes > 0)) {
      throw new InvalidOptionError(
        `budgetBytes must be a positive number (got ${JSON.stringify(rank.budgetBytes)})`,
        {
          option: 'budgetBytes',
          value: rank.budgetBytes,
        },
      );
    }
    k = ranksForBudget([{ name, modules: parent.modules }], rank.budgetBytes).get(name)!;
  } else {
    k = checkRank(rank);
  }
  return storeDerived(
    store,
    truncateFactored(parent, k),
    model,
    opts.name ?? `${name}-r${k}`,
    opts.overwrite ?? false,
    {
      op: 'truncate',
      parents: [name],
      rank: k,
    },
  );
}
