/**
 * Training checkpoints in IndexedDB (idb-keyval, its own database `weblora-train` / store `checkpoints`,
 * so it never touches the adapter store's database). A checkpoint is everything a fresh worker needs to
 * continue a run after the tab or worker died: the resolved options, the data itself (and its sha256),
 * the backend's TrainState (LoRA A/B + AdamW moments) and the cursor (steps done, micro-batches
 * consumed). Each save writes two records in ONE transaction — `['info', id]` (small, what `list` reads)
 * and `['ckpt', id]` — so a checkpoint is either the old one or the new one, never half of each.
 * Reading back validates types and sizes (TrainCheckpointError) before anything trusts them.
 */
import { createStore, promisifyRequest, type UseStore } from 'idb-keyval';
import { TrainCheckpointError } from '../errors.ts';
import { MODULE_ORDER } from '../model/targets.ts';
import type { ResolvedTrainOptions, TrainCursor } from './trainer.ts';
import type { TrainCheckpointInfo, TrainState } from './types.ts';

export const CHECKPOINT_DB = 'weblora-train';
export const CHECKPOINT_STORE = 'checkpoints';
export const CHECKPOINT_VERSION = 1;

export interface CheckpointRecord {
  version: typeof CHECKPOINT_VERSION;
  trainId: string;
  name: string;
  modelId: string;
  overwrite: boolean;
  options: ResolvedTrainOptions;
  data: string;
  dataSha256: string;
  dataExamples: number;
  cursor: TrainCursor;
  state: TrainState;
  savedAt: number;
}

const infoKey = (id: string): IDBValidKey => ['info', id];
const ckptKey = (id: string): IDBValidKey => ['ckpt', id];
const INFO_RANGE = (): IDBKeyRange => IDBKeyRange.bound(['info', ''], ['info', []]);

/** Bytes a checkpoint holds: tensors, moments and the data (UTF-16 in IndexedDB). */
export function checkpointBytes(r: Pick<CheckpointRecord, 'state' | 'data'>): number {
  let n = r.data.length * 2;
  for (const m of r.state.modules) n += m.A.byteLength + m.B.byteLength;
  for (const x of [...(r.state.adam?.m ?? []), ...(r.state.adam?.v ?? [])]) n += x.byteLength;
  return n;
}

export function checkpointInfo(r: CheckpointRecord): TrainCheckpointInfo {
  return {
    trainId: r.trainId,
    name: r.name,
    modelId: r.modelId,
    step: r.cursor.step,
    totalSteps: r.options.steps,
    savedAt: r.savedAt,
    bytes: checkpointBytes(r),
  };
}

function corrupt(id: string, why: string): never {
  throw new TrainCheckpointError(
    `training checkpoint "${id}" is corrupt (${why}); delete it and train again`,
    {
      trainId: id,
      reason: 'corrupt',
      detail: why,
    },
  );
}

const isCount = (x: unknown): x is number => typeof x === 'number' && Number.isInteger(x) && x >= 0;
const isF32 = (x: unknown): x is Float32Array => x instanceof Float32Array;
const isFloat = (x: unknown): x is Float32Array | Float64Array =>
  x instanceof Float32Array || x instanceof Float64Array;

/** Type and size checks of a record read back from IndexedDB. */
export function validateCheckpoint(id: string, raw: unknown): CheckpointRecord {
  const r = raw as Partial<CheckpointRecord> | null;
  if (typeof r !== 'object' || r === null) corrupt(id, 'not an object');
  if (r.version !== CHECKPOINT_VERSION)
    corrupt(id, `version ${String(r.version)}, expected ${CHECKPOINT_VERSION}`);
  if (r.trainId !== id) corrupt(id, 'its id does not match its key');
  for (const k of ['name', 'modelId', 'data', 'dataSha256'] as const)
    if (typeof r[k] !== 'string') corrupt(id, `${k} is not a string`);
  const o = r.options;
  if (typeof o !== 'object' || o === null || !isCount(o.steps) || !isCount(o.rank) || !isCount(o.batchSize))
    corrupt(id, 'options are missing');
  const c = r.cursor;
  if (typeof c !== 'object' || c === null || !isCount(c.step) || !isCount(c.micro) || c.step > o.steps)
    corrupt(id, 'cursor is not steps/micro-batches within the run');
  const s = r.state;
  if (typeof s !== 'object' || s === null || s.step !== c.step || !Array.isArray(s.modules))
    corrupt(id, 'state does not match the cursor');
  const modules = s.modules;
  if (modules.length !== o.layers.length * o.targets.length) corrupt(id, `${modules.length} LoRA modules`);
  for (const m of modules) {
    if (
      !isF32(m.A) ||
      !isF32(m.B) ||
      m.R !== o.rank ||
      m.A.length === 0 ||
      m.A.length % m.R !== 0 ||
      m.B.length % m.R !== 0 ||
      !MODULE_ORDER.includes(m.module) ||
      !o.layers.includes(m.layer)
    )
      corrupt(id, `module ${String(m.path)} has wrong types or sizes`);
  }
  if (s.adam !== null) {
    const a = s.adam;
    const n = 2 * modules.length;
    if (
      typeof a !== 'object' ||
      !Array.isArray(a.m) ||
      !Array.isArray(a.v) ||
      a.m.length !== n ||
      a.v.length !== n
    )
      corrupt(id, 'AdamW moments missing');
    modules.forEach((m, i) => {
      for (const [j, len] of [
        [2 * i, m.A.length],
        [2 * i + 1, m.B.length],
      ] as const) {
        if (!isFloat(a.m[j]) || !isFloat(a.v[j]) || a.m[j].length !== len || a.v[j].length !== len)
          corrupt(id, `AdamW moments of ${m.path} have wrong sizes`);
      }
    });
  } else if (s.step !== 0) corrupt(id, 'steps were taken but there are no AdamW moments');
  return r as CheckpointRecord;
}

export class CheckpointStore {
  private readonly use: UseStore;

  constructor(opts: { dbName?: string; storeName?: string } = {}) {
    this.use = createStore(opts.dbName ?? CHECKPOINT_DB, opts.storeName ?? CHECKPOINT_STORE);
  }

  /** Both records in one transaction (replacing the previous checkpoint of this run atomically). */
  async save(r: CheckpointRecord): Promise<TrainCheckpointInfo> {
    const info = checkpointInfo(r);
    await this.use('readwrite', (s) => {
      s.put(info, infoKey(r.trainId));
      s.put(r, ckptKey(r.trainId));
      return promisifyRequest(s.transaction);
    });
    return info;
  }

  /** The validated record, or undefined when there is none. */
  async get(trainId: string): Promise<CheckpointRecord | undefined> {
    const raw = await this.use('readonly', (s) => promisifyRequest(s.get(ckptKey(trainId))));
    return raw === undefined ? undefined : validateCheckpoint(trainId, raw);
  }

  async has(trainId: string): Promise<boolean> {
    const k = await this.use('readonly', (s) => promisifyRequest(s.getKey(infoKey(trainId))));
    return k !== undefined;
  }

  /** Every checkpoint's summary (no tensors read), oldest first. */
  async list(): Promise<TrainCheckpointInfo[]> {
    const all = (await this.use('readonly', (s) =>
      promisifyRequest(s.getAll(INFO_RANGE())),
    )) as TrainCheckpointInfo[];
    return all.sort((a, b) => a.savedAt - b.savedAt);
  }

  /** Removes both records in one transaction; false when there was no checkpoint. */
  async delete(trainId: string): Promise<boolean> {
    return this.use('readwrite', async (s) => {
      const had = (await promisifyRequest(s.getKey(infoKey(trainId)))) !== undefined;
      s.delete(infoKey(trainId));
      s.delete(ckptKey(trainId));
      await promisifyRequest(s.transaction);
      return had;
    });
  }
}
