// The adapter store on real IndexedDB in Chromium: import → list (metadata only) → export byte-identical
// → re-import; rename (atomic, collisions refused); delete; every malformed import leaves the store
// exactly as it was. "Survives a reload" is simulated by opening a fresh store handle (a new IndexedDB
// connection through a new idb-keyval createStore) and by reading the records with the raw IndexedDB
// API; a true page reload is not possible inside a vitest browser test.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AdapterModelInfo, type ImportInput, importPeftAdapter } from '../../src/adapters/import.ts';
import { buildPeftFiles } from '../../src/adapters/peft-writer.ts';
import {
  parseSafetensors,
  readFloat32,
  type TensorView,
  writeSafetensors,
} from '../../src/adapters/safetensors.ts';
import { AdapterStore } from '../../src/adapters/store.ts';
import {
  AdapterBaseModelError,
  AdapterConfigError,
  AdapterModuleError,
  AdapterNameConflictError,
  AdapterNotFoundError,
  AdapterRankError,
  AdapterShapeError,
  AdapterValueError,
  InvalidOptionError,
  SafetensorsHeaderBoundsError,
  SafetensorsHeaderJsonError,
  SafetensorsTruncatedError,
} from '../../src/errors.ts';
import { MODEL } from '../unit/adapters/model-targets.ts';

const DB = `weblora-test-store-${Date.now()}`;
const model: AdapterModelInfo = MODEL;

async function bytes(url: string): Promise<Uint8Array> {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

async function fixture(name: string): Promise<{ config: Uint8Array; weights: Uint8Array }> {
  const base = `/tests/fixtures/${name}/`;
  return {
    config: await bytes(`${base}adapter_config.json`),
    weights: await bytes(`${base}adapter_model.safetensors`),
  };
}

/** Every key and a digest of every value, through a raw IndexedDB connection (not idb-keyval). */
async function rawDump(): Promise<Record<string, string>> {
  const db = await new Promise<IDBDatabase>((res, rej) => {
    const r = indexedDB.open(DB);
    r.onsuccess = () => res(r.result);
    r.onerror = () => rej(r.error);
  });
  try {
    const s = db.transaction('adapters', 'readonly').objectStore('adapters');
    const [keys, values] = await Promise.all([
      new Promise<IDBValidKey[]>((res) => {
        const r = s.getAllKeys();
        r.onsuccess = () => res(r.result);
      }),
      new Promise<unknown[]>((res) => {
        const r = s.getAll();
        r.onsuccess = () => res(r.result);
      }),
    ]);
    const out: Record<string, string> = {};
    keys.forEach((k, i) => {
      const v = values[i] as Record<string, unknown>;
      out[JSON.stringify(k)] =
        (k as string[])[0] === 'files'
          ? Object.entries(v)
              .map(([f, b]) => `${f}:${(b as Uint8Array).byteLength}:${sum(b as Uint8Array)}`)
              .join(',')
          : JSON.stringify(v);
    });
    return out;
  } finally {
    db.close();
  }
}

function sum(b: Uint8Array): number {
  let h = 0;
  for (let i = 0; i < b.length; i++) h = (Math.imul(h, 31) + b[i]!) >>> 0;
  return h;
}

let store: AdapterStore;
let plain: { config: Uint8Array; weights: Uint8Array };
let rslora: { config: Uint8Array; weights: Uint8Array };

beforeAll(async () => {
  store = new AdapterStore({ dbName: DB });
  plain = await fixture('peft-adapter');
  rslora = await fixture('peft-adapter-rslora');
});

afterAll(async () => {
  await new Promise((res) => {
    const r = indexedDB.deleteDatabase(DB);
    r.onsuccess = r.onerror = r.onblocked = res;
  });
});

describe('AdapterStore on IndexedDB', () => {
  it('imports the fixtures; list gives metadata only; a fresh handle (reload) sees the same', async () => {
    const a = await store.import('plain', plain, model);
    const b = await store.import('rslora', rslora, model);
    expect(a).toMatchObject({
      name: 'plain',
      rank: 4,
      moduleCount: 42,
      layout: 'two-file',
      modelId: 'weblora-shakespeare',
    });
    expect(b).toMatchObject({ name: 'rslora', rank: 8, layers: [0, 2, 3, 5], useRslora: true });
    const list = await store.list();
    expect(list.map((m) => m.name)).toEqual(['plain', 'rslora']);
    for (const m of list) expect(JSON.stringify(m).length).toBeLessThan(2000);

    const reopened = new AdapterStore({ dbName: DB });
    expect(await reopened.list()).toEqual(list);
    expect((await reopened.export('plain'))['adapter_model.safetensors']).toEqual(plain.weights);
    const raw = await rawDump();
    expect(Object.keys(raw).sort()).toEqual(
      ['["files","plain"]', '["files","rslora"]', '["meta","plain"]', '["meta","rslora"]'].sort(),
    );
  });

  it('list() reads only metadata records, never the tensor bytes', async () => {
    const seen: unknown[] = [];
    const proto = IDBObjectStore.prototype;
    const { get, getAll } = proto;
    proto.get = function (this: IDBObjectStore, q: IDBValidKey | IDBKeyRange) {
      seen.push(q);
      return get.call(this, q);
    };
    proto.getAll = function (this: IDBObjectStore, q?: IDBValidKey | IDBKeyRange | null, n?: number) {
      seen.push(q);
      return getAll.call(this, q, n);
    };
    try {
      await store.list();
    } finally {
      proto.get = get;
      proto.getAll = getAll;
    }
    expect(seen).toHaveLength(1);
    const range = seen[0] as IDBKeyRange;
    expect(range.includes(['meta', 'plain'])).toBe(true);
    expect(range.includes(['files', 'plain'])).toBe(false);
  });

  it('export is byte-identical to the import; exporting and re-importing is byte-identical again', async () => {
    for (const [name, src] of [
      ['plain', plain],
      ['rslora', rslora],
    ] as const) {
      const out = await store.export(name);
      expect(out['adapter_config.json']).toEqual(src.config);
      expect(out['adapter_model.safetensors']).toEqual(src.weights);
      await store.import(
        `${name}-copy`,
        { config: out['adapter_config.json'], weights: out['adapter_model.safetensors'] },
        model,
      );
      const again = await store.export(`${name}-copy`);
      expect(again['adapter_config.json']).toEqual(src.config);
      expect(again['adapter_model.safetensors']).toEqual(src.weights);
      await store.delete(`${name}-copy`);
    }
  });

  it('single-file adapters (config in __metadata__) export the original .safetensors unchanged', async () => {
    const imp = importPeftAdapter(plain, model);
    const text = new TextDecoder().decode(plain.config);
    const tensors = new Map([...importPeftTensors(plain.weights)]);
    const single = writeSafetensors(tensors, { format: 'pt', adapter_config: text });
    const meta = await store.import('single', { weights: single }, model);
    expect(meta.layout).toBe('single-file');
    const out = await store.export('single');
    expect(out['adapter_model.safetensors']).toEqual(single);
    expect(new TextDecoder().decode(out['adapter_config.json'])).toBe(text);
    expect(meta.rank).toBe(imp.summary.rank);
    await store.delete('single');
  });

  it('adapters created in-app are stored as PEFT files and export as written', async () => {
    const t = model.targets[0]!;
    const files = buildPeftFiles({
      baseModel: 'weblora-shakespeare',
      r: 2,
      loraAlpha: 4,
      modules: [
        {
          layer: t.layer,
          module: t.module,
          in: t.in,
          out: t.out,
          A: new Float32Array(2 * t.in).fill(0.5),
          B: new Float32Array(t.out * 2).fill(-1),
        },
      ],
    });
    const imp = importPeftAdapter(
      { config: files['adapter_config.json'], weights: files['adapter_model.safetensors'] },
      model,
    );
    const meta = await store.save('trained', imp, model.id, { source: 'in-app' });
    expect(meta.source).toBe('in-app');
    const out = await store.export('trained');
    expect(out['adapter_model.safetensors']).toEqual(files['adapter_model.safetensors']);
    expect(out['adapter_config.json']).toEqual(files['adapter_config.json']);
    await store.delete('trained');
  });

  it('rename is atomic: bytes move, the old name is gone, collisions and missing names are refused', async () => {
    const before = await store.getMeta('plain');
    const renamed = await store.rename('plain', 'shakespeare-lora');
    expect(renamed.name).toBe('shakespeare-lora');
    expect(renamed.version).toBe(before!.version);
    expect(await store.has('plain')).toBe(false);
    expect((await store.export('shakespeare-lora'))['adapter_model.safetensors']).toEqual(plain.weights);

    const snapshot = await rawDump();
    await expect(store.rename('shakespeare-lora', 'rslora')).rejects.toBeInstanceOf(AdapterNameConflictError);
    await expect(store.rename('nope', 'x')).rejects.toBeInstanceOf(AdapterNotFoundError);
    await expect(store.rename('rslora', ' padded ')).rejects.toBeInstanceOf(InvalidOptionError);
    expect(await rawDump()).toEqual(snapshot);
    await store.rename('shakespeare-lora', 'plain');
  });

  it('importing under a taken name is refused unless overwrite; overwrite gives a new version', async () => {
    const snapshot = await rawDump();
    const e = await store.import('plain', rslora, model).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(AdapterNameConflictError);
    expect((e as AdapterNameConflictError).data).toEqual({ name: 'plain' });
    expect(await rawDump()).toEqual(snapshot);
    const v0 = (await store.getMeta('plain'))!.version;
    const m = await store.import('plain', plain, model, { overwrite: true });
    expect(m.version).not.toBe(v0);
  });

  it('delete removes metadata and bytes', async () => {
    await store.import('tmp', plain, model);
    await store.delete('tmp');
    expect(await store.has('tmp')).toBe(false);
    expect(Object.keys(await rawDump()).filter((k) => k.includes('"tmp"'))).toEqual([]);
    await expect(store.delete('tmp')).rejects.toBeInstanceOf(AdapterNotFoundError);
    await expect(store.export('tmp')).rejects.toBeInstanceOf(AdapterNotFoundError);
  });

  it('every malformed import leaves the store unchanged (list and raw records before == after)', async () => {
    const cfg = JSON.parse(new TextDecoder().decode(plain.config));
    const withCfg = (over: Record<string, unknown>): ImportInput => ({
      config: JSON.stringify({ ...cfg, ...over }),
      weights: plain.weights,
    });
    const nan = (): ImportInput => {
      const tensors = importPeftTensors(plain.weights);
      const k = 'base_model.model.model.layers.2.mlp.up_proj.lora_B.weight';
      const v = readFloat32(tensors.get(k)!);
      v[5] = Number.NaN;
      tensors.set(k, { dtype: 'F32', shape: tensors.get(k)!.shape, data: new Uint8Array(v.buffer) });
      return { config: plain.config, weights: writeSafetensors(tensors) };
    };
    const renamedModule = (): ImportInput => {
      const tensors = importPeftTensors(plain.weights);
      const out = new Map(
        [...tensors].map(([k, t]) => [k.replace('layers.0.mlp.up_proj', 'layers.0.mlp.fc1'), t]),
      );
      return { config: plain.config, weights: writeSafetensors(out) };
    };
    const headerLen = plain.weights.slice();
    new DataView(headerLen.buffer).setBigUint64(0, BigInt(headerLen.length), true);
    const badJson = plain.weights.slice();
    badJson[9] = 0x7b;
    const cases: [string, ImportInput, new (...a: never[]) => Error][] = [
      [
        'truncated',
        { config: plain.config, weights: plain.weights.slice(0, plain.weights.length - 1) },
        SafetensorsTruncatedError,
      ],
      [
        'header length beyond file',
        { config: plain.config, weights: headerLen },
        SafetensorsHeaderBoundsError,
      ],
      ['invalid header JSON', { config: plain.config, weights: badJson }, SafetensorsHeaderJsonError],
      ['NaN', nan(), AdapterValueError],
      ['rank 0', withCfg({ r: 0 }), AdapterRankError],
      ['rank 65', withCfg({ r: 65 }), AdapterRankError],
      [
        'config rank disagrees with tensors',
        { config: rslora.config, weights: plain.weights },
        AdapterRankError,
      ],
      ['unknown module', renamedModule(), AdapterModuleError],
      ['invalid config JSON', { config: '{"r": 4,', weights: plain.weights }, AdapterConfigError],
      ['other base model', withCfg({ base_model_name_or_path: 'gpt2' }), AdapterBaseModelError],
    ];
    const listBefore = await store.list();
    const rawBefore = await rawDump();
    for (const [what, input, cls] of cases) {
      const e = await store.import(`bad-${what}`, input, model).catch((x: unknown) => x);
      expect(e, what).toBeInstanceOf(cls);
    }
    // A shape error specifically (other model's in-dim).
    const t = model.targets[0]!;
    const wrong = buildPeftFiles({
      baseModel: 'weblora-shakespeare',
      r: 2,
      loraAlpha: 2,
      modules: [
        {
          layer: 0,
          module: 'q_proj',
          in: 128,
          out: t.out,
          A: new Float32Array(256),
          B: new Float32Array(2 * t.out),
        },
      ],
    });
    const e = await store
      .import(
        'bad-shape',
        { config: wrong['adapter_config.json'], weights: wrong['adapter_model.safetensors'] },
        model,
      )
      .catch((x: unknown) => x);
    expect(e).toBeInstanceOf(AdapterShapeError);
    expect(await store.list()).toEqual(listBefore);
    expect(await rawDump()).toEqual(rawBefore);
  });
});

function importPeftTensors(weights: Uint8Array): Map<string, TensorView> {
  const st = parseSafetensors(weights);
  return new Map([...st.tensors].map(([k, t]) => [k, { ...t, data: t.data.slice() }]));
}
