// mergeAdapters / truncateAdapter across the worker (client.ts → worker.ts → adapters/derive.ts): the
// result is an ordinary stored adapter (source 'in-app', `derived` naming the parents) that lists,
// exports, re-imports and generates; merge progress streams and is counted; identical inputs give
// identical bytes; bad requests fail with typed errors rebuilt on this side and store nothing. wasm only
// (the math is CPU-side; the GPU cache path is adapter-gpu-cache.test.ts's).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { importPeftAdapter } from '../../src/adapters/import.ts';
import { AdapterStore } from '../../src/adapters/store.ts';
import { createWorkerEngine, type WorkerEngine } from '../../src/engine/client.ts';
import type { AdapterDeriveProgress, LoadReport } from '../../src/engine/types.ts';
import {
  AdapterMismatchError,
  AdapterNameConflictError,
  AdapterNotFoundError,
  InvalidOptionError,
} from '../../src/errors.ts';
import { MODEL_BASE, PROMPT, setupOrt } from './helpers/model.ts';

setupOrt();
const tag = `derive-${Date.now().toString(36)}`;
const n = (s: string) => `${tag}-${s}`;

describe('merge and truncate through the worker engine (wasm)', () => {
  let engine: WorkerEngine;
  let report: LoadReport;

  beforeAll(async () => {
    engine = createWorkerEngine();
    report = await engine.loadModel(MODEL_BASE, { backend: 'wasm' });
    for (const a of ['shout', 'romeo']) {
      await engine.importAdapter({ url: `/adapters/weblora-${a}/` }, { name: n(a) });
    }
  });

  afterAll(async () => {
    for (const a of await engine.listAdapters().catch(() => [])) {
      if (a.name.startsWith(tag)) await engine.deleteAdapter(a.name).catch(() => {});
    }
    await engine?.dispose();
    engine?.terminate();
  });

  it('mergeAdapters stores an in-app rank-8 adapter naming its parents; progress streams in order', async () => {
    const events: AdapterDeriveProgress[] = [];
    const meta = await engine.mergeAdapters(
      { names: [n('shout'), n('romeo')], rank: 8, name: n('lego') },
      (p) => events.push(p),
    );
    expect(meta.source).toBe('in-app');
    expect(meta.rank).toBe(8);
    expect(meta.modelId).toBe(report.modelId);
    expect(meta.derived).toEqual({
      op: 'merge',
      parents: [n('shout'), n('romeo')],
      method: 'lego',
      rank: 8,
      seed: 0,
    });
    const stages = events.map((e) => e.stage);
    expect(stages[0]).toBe('read');
    expect(stages.at(-1)).toBe('done');
    const compute = events.filter((e) => e.stage === 'compute');
    expect(compute.length).toBe(meta.moduleCount);
    expect(compute.at(-1)).toMatchObject({ done: meta.moduleCount, total: meta.moduleCount });
    expect((await engine.listAdapters()).map((a) => a.name)).toContain(n('lego'));
    const out = await engine.generate({ prompt: PROMPT, maxNewTokens: 8, adapter: n('lego') });
    expect(out.tokenIds.length).toBeGreaterThan(0);
  });

  it('same inputs and seed → byte-identical files; export re-imports as an ordinary PEFT adapter', async () => {
    await engine.mergeAdapters({ names: [n('shout'), n('romeo')], rank: 8, name: n('lego2') });
    const a = await engine.exportAdapter(n('lego'));
    const b = await engine.exportAdapter(n('lego2'));
    expect(b['adapter_model.safetensors']).toEqual(a['adapter_model.safetensors']);
    expect(b['adapter_config.json']).toEqual(a['adapter_config.json']);
    const again = await engine.importAdapter(
      { config: a['adapter_config.json'], weights: a['adapter_model.safetensors'] },
      { name: n('reimported') },
    );
    expect(again.source).toBe('import');
    expect(again.rank).toBe(8);
    const avg = await engine.mergeAdapters({
      names: [n('shout'), n('romeo')],
      rank: 4,
      name: n('avg'),
      method: 'average',
    });
    expect(avg.rank).toBe(4);
    expect(avg.derived?.method).toBe('average');
  });

  it('truncateAdapter: rank k under the default name; a byte budget picks the rank; rank ≥ r keeps it', async () => {
    const t = await engine.truncateAdapter(n('shout'), 2);
    expect(t.name).toBe(`${n('shout')}-r2`);
    expect(t.rank).toBe(2);
    expect(t.derived).toEqual({ op: 'truncate', parents: [n('shout')], rank: 2 });
    // 42 modules; F32 weights at rank k are 4·k·Σ(in + out) bytes.
    const perRank = await weightsBytesPerRank(n('shout'));
    const b = await engine.truncateAdapter(
      n('shout'),
      { budgetBytes: 3 * perRank + 10 },
      { name: n('budget') },
    );
    expect(b.rank).toBe(3);
    const same = await engine.truncateAdapter(n('shout'), 64, { name: n('same') });
    expect(same.rank).toBe(8);
    const out = await engine.generate({ prompt: PROMPT, maxNewTokens: 8, adapter: t.name });
    expect(out.tokenIds.length).toBeGreaterThan(0);
  });

  it('typed errors cross the worker and nothing is stored', async () => {
    const before = (await engine.listAdapters()).length;
    const e1 = await engine
      .mergeAdapters({ names: [n('shout'), 'no-such'], rank: 8, name: n('x') })
      .catch((e) => e);
    expect(e1).toBeInstanceOf(AdapterNotFoundError);
    for (const rank of [0, 65, 1.5]) {
      const e = await engine.mergeAdapters({ names: [n('shout')], rank, name: n('x') }).catch((x) => x);
      expect(e).toBeInstanceOf(InvalidOptionError);
      expect((e as InvalidOptionError).data.option).toBe('rank');
    }
    const e2 = await engine.truncateAdapter(n('shout'), 0).catch((e) => e);
    expect(e2).toBeInstanceOf(InvalidOptionError);
    const e3 = await engine
      .mergeAdapters({ names: [n('shout'), n('shout')], rank: 8, name: n('x') })
      .catch((e) => e);
    expect(e3).toBeInstanceOf(InvalidOptionError);
    const e4 = await engine
      .mergeAdapters({ names: [n('shout'), n('romeo')], rank: 8, name: n('lego') })
      .catch((e) => e);
    expect(e4).toBeInstanceOf(AdapterNameConflictError);
    // An adapter stored for another model (same origin, same IndexedDB as the worker).
    const files = await engine.exportAdapter(n('romeo'));
    const imported = importPeftAdapter(
      { config: files['adapter_config.json'], weights: files['adapter_model.safetensors'] },
      { id: 'weblora-shakespeare', targets: report.targets },
    );
    await new AdapterStore().save(n('other-model'), imported, 'some-other-model');
    const e5 = await engine
      .mergeAdapters({ names: [n('shout'), n('other-model')], rank: 8, name: n('x') })
      .catch((e) => e);
    expect(e5).toBeInstanceOf(AdapterMismatchError);
    expect((e5 as AdapterMismatchError).data.adapterModel).toBe('some-other-model');
    expect((await engine.listAdapters()).length).toBe(before + 1); // only the one saved here
  });

  /** Bytes of one rank of the adapter's F32 weights: Σ over modules of 4·(in + out). */
  async function weightsBytesPerRank(name: string): Promise<number> {
    const meta = (await engine.listAdapters()).find((a) => a.name === name)!;
    const files = await engine.exportAdapter(name);
    const imported = importPeftAdapter(
      { config: files['adapter_config.json'], weights: files['adapter_model.safetensors'] },
      { id: report.modelId, aliases: report.modelAliases, targets: report.targets },
    );
    let bytes = 0;
    for (const m of imported.feeds.modules) {
      const t = report.targets.find((x) => x.layer === m.layer && x.module === m.module)!;
      bytes += 4 * (t.in + t.out);
    }
    expect(meta.moduleCount).toBe(imported.feeds.modules.length);
    return bytes;
  }
});
