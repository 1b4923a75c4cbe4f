/**
 * Gated mixes in IndexedDB, beside the adapters they route (same database and object store as
 * store.ts, keys `['gated', name]`; store.ts only reads `['meta', …]` / `['files', …]`). One record per mix
 * holds its summary and its two files as serialized by gated.ts (so export is byte-identical to what was
 * stored). The experts are referenced by name and must exist when the mix is saved; `version` changes on
 * every write. Not here: the file format (gated.ts), running a mix (gated-provider.ts).
 */
import { promisifyRequest, type UseStore } from 'idb-keyval';
import {
  AdapterFormatError,
  AdapterNameConflictError,
  AdapterNotFoundError,
  InvalidOptionError,
} from '../errors.ts';
import type { GateSite } from '../model/inject-gates.ts';
import {
  GATED_CONFIG_FILE,
  GATED_WEIGHTS_FILE,
  type GatedMix,
  type GatedMixFiles,
  type GateExpert,
  parseGatedMix,
  serializeGatedMix,
} from './gated.ts';
import { withGates } from './gated-provider.ts';
import type { AdapterStore } from './store.ts';
import type { AdapterFeedProvider, OrtLike } from './types.ts';

export interface GatedMixInfo {
  name: string;
  version: string;
  createdAt: number;
  experts: GateExpert[];
  hiddenSize: number;
  /** Layers with a trained gate. */
  layers: number[];
  source: 'import' | 'train';
  /** Gate-training summary (engine/gates.ts), when trained in the app. */
  train?: object;
}

interface GatedRecord {
  info: GatedMixInfo;
  files: GatedMixFiles;
}

const key = (name: string): IDBValidKey => ['gated', name];
const RANGE = (): IDBKeyRange => IDBKeyRange.bound(['gated', ''], ['gated', []]);

function newVersion(): string {
  const rnd = globalThis.crypto?.randomUUID?.() ?? Math.random().toString(36).slice(2);
  return `${Date.now().toString(36)}-${rnd}`;
}

export class GatedMixStore {
  constructor(
    private readonly adapters: Pick<AdapterStore, 'idb' | 'getMeta'>,
    private readonly use: UseStore = adapters.idb,
  ) {}

  /** Stores `mix` (or parsed files) under `name`; its experts must be stored adapters. */
  async save(
    name: string,
    mix: GatedMix | GatedMixFiles,
    opts: { overwrite?: boolean; source?: GatedMixInfo['source']; train?: object } = {},
  ): Promise<GatedMixInfo> {
    if (typeof name !== 'string' || name.trim() === '' || name !== name.trim() || name.length > 200)
      throw new InvalidOptionError(
        `gated mix name must be a non-empty trimmed string (got ${JSON.stringify(name)})`,
        {
          name,
        },
      );
    const parsed = 'config' in mix ? parseGatedMix(mix) : mix;
    const files = 'config' in mix ? mix : serializeGatedMix(mix);
    for (const e of parsed.experts) {
      if (!(await this.adapters.getMeta(e.name)))
        throw new AdapterNotFoundError(
          `gated mix "${name}": expert adapter "${e.name}" is not in the store`,
          {
            name: e.name,
          },
        );
    }
    const info: GatedMixInfo = {
      name,
      version: newVersion(),
      createdAt: Date.now(),
      experts: parsed.experts.map((e) => ({ name: e.name, weight: e.weight })),
      hiddenSize: parsed.hiddenSize,
      layers: [...parsed.gates.keys()].sort((a, b) => a - b),
      source: opts.source ?? ('config' in mix ? 'import' : 'train'),
      ...(opts.train ? { train: opts.train } : {}),
    };
    await this.use('readwrite', async (s) => {
      if (!opts.overwrite && (await promisifyRequest(s.get(key(name)))) !== undefined)
        throw new AdapterNameConflictError(
          `a gated mix named "${name}" exists; pass overwrite: true to replace it`,
          {
            name,
          },
        );
      s.put({ info, files } satisfies GatedRecord, key(name));
      await promisifyRequest(s.transaction);
    });
    return info;
  }

  /**
   * Imports picked or dropped files: `gated_mix_config.json` and `gates.safetensors` (matched by file name,
   * any folder). AdapterFormatError when either is missing or invalid.
   */
  async importFiles(
    name: string,
    files: readonly File[],
    opts: { overwrite?: boolean } = {},
  ): Promise<GatedMixInfo> {
    const pick = (n: string) => files.find((f) => f.name === n);
    const cfg = pick(GATED_CONFIG_FILE);
    const weights = pick(GATED_WEIGHTS_FILE);
    if (!cfg || !weights)
      throw new AdapterFormatError(`a gated mix needs ${GATED_CONFIG_FILE} and ${GATED_WEIGHTS_FILE}`, {
        files: files.map((f) => f.name),
      });
    const parsed = { config: await cfg.text(), weights: new Uint8Array(await weights.arrayBuffer()) };
    return this.save(name, parsed, { ...opts, source: 'import' });
  }

  async list(): Promise<GatedMixInfo[]> {
    const all = (await this.use('readonly', (s) => promisifyRequest(s.getAll(RANGE())))) as GatedRecord[];
    return all.map((r) => r.info).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  private async record(name: string): Promise<GatedRecord> {
    const r = (await this.use('readonly', (s) => promisifyRequest(s.get(key(name))))) as
      | GatedRecord
      | undefined;
    if (!r) throw new AdapterNotFoundError(`no gated mix named "${name}" in the store`, { name });
    return r;
  }

  async get(name: string): Promise<{ info: GatedMixInfo; mix: GatedMix }> {
    const r = await this.record(name);
    return { info: r.info, mix: parseGatedMix(r.files) };
  }

  /** The two files (gated_mix_config.json, gates.safetensors) exactly as stored. */
  async export(name: string): Promise<GatedMixFiles> {
    return (await this.record(name)).files;
  }

  async delete(name: string): Promise<void> {
    await this.record(name);
    await this.use('readwrite', (s) => promisifyRequest(s.delete(key(name))));
  }
}

/** `inner` as is on an ungated graph; on a gated one (ctx.gates), wrapped to run gated mixes from `store`. */
export function withStoreGates(
  inner: AdapterFeedProvider,
  store: AdapterStore,
  ctx: { ort: OrtLike; gates?: readonly GateSite[] },
): AdapterFeedProvider {
  if (!ctx.gates) return inner;
  return withGates({ inner, sites: ctx.gates, gated: new GatedMixStore(store), store, ort: ctx.ort });
}
