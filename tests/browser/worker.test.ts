// The same Engine through a module Web Worker + Comlink (client.ts → worker.ts): progress events
// cross the boundary, typed errors thrown in the worker are rebuilt as the same class with their data,
// abort works by requestId and by AbortSignal, and results equal the in-thread engine's. wasm keeps it
// fast; one short webgpu run checks the GPU path inside a worker.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWorkerEngine, type WorkerEngine } from '../../src/engine/client.ts';
import { LocalEngine } from '../../src/engine/engine.ts';
import type { LoadProgress, LoadReport, TokenDelta } from '../../src/engine/types.ts';
import {
  AdapterBaseModelError,
  AdapterNameConflictError,
  AdapterNotFoundError,
  FetchError,
  InvalidOptionError,
  ModelPackageError,
} from '../../src/errors.ts';
import { MODEL_BASE, PROMPT, setupOrt } from './helpers/model.ts';

setupOrt();

describe('worker engine (wasm)', () => {
  let engine: WorkerEngine;
  let local: LocalEngine;
  let report: LoadReport;
  const events: LoadProgress[] = [];

  beforeAll(async () => {
    engine = createWorkerEngine();
    report = await engine.loadModel(MODEL_BASE, {
      backend: 'wasm',
      onProgress: (p) => events.push(p),
      // The fixture adapters may declare base model "model" (older fixtures) or "weblora-shakespeare".
      modelAliases: ['model'],
    });
    local = new LocalEngine({ numThreads: 1 });
    await local.loadModel(MODEL_BASE, { backend: 'wasm', dtype: report.dtype });
  });

  afterAll(async () => {
    await engine?.dispose();
    engine?.terminate();
    await local?.dispose();
  });

  it('loadModel reports and streams byte progress per file and overall', async () => {
    expect(report.backend).toBe('wasm');
    expect(report.targetCount).toBeGreaterThan(0);
    expect(await engine.info()).toEqual(report);
    const modelFile = report.dtype === 'q4' ? 'onnx/model_q4.onnx' : 'onnx/model.onnx';
    const downloads = events.filter((e) => e.stage === 'download');
    const last = downloads.filter((e) => e.file === modelFile).at(-1);
    expect(last?.fileLoaded).toBe(report.modelBytes);
    const overall = downloads.map((e) => e.loaded);
    expect(overall).toEqual([...overall].sort((a, b) => a - b)); // monotonic
    expect(overall.at(-1)).toBeGreaterThan(report.modelBytes);
    expect(events.at(-1)?.stage).toBe('ready');
  });

  it('generates the same tokens as the in-thread engine; deltas stream across', async () => {
    const req = { prompt: PROMPT, maxNewTokens: 12 };
    const deltas: TokenDelta[] = [];
    const viaWorker = await engine.generate(req, (d) => deltas.push(d));
    const inThread = await local.generate(req);
    expect(viaWorker.tokenIds).toEqual(inThread.tokenIds);
    expect(viaWorker.text).toBe(inThread.text);
    expect(deltas.map((d) => d.tokenId)).toEqual(viaWorker.tokenIds);
    expect(deltas.map((d) => d.text).join('')).toBe(viaWorker.text);
  });

  it('typed errors arrive as the same class with their data', async () => {
    const bad = await engine.loadModel('/models/no-such-model/', { backend: 'wasm' }).catch((e) => e);
    expect(bad).toBeInstanceOf(FetchError);
    expect((bad as FetchError).name).toBe('FetchError');
    expect((bad as FetchError).data.file).toBe('config.json');
    // A failed fetch keeps the loaded model usable.
    expect(await engine.info()).toEqual(report);
    const inv = await engine.generate({ prompt: PROMPT, topP: 2 }).catch((e) => e);
    expect(inv).toBeInstanceOf(InvalidOptionError);
    expect((inv as InvalidOptionError).data.option).toBe('topP');
  });

  it('abort works across the boundary (requestId and AbortSignal)', async () => {
    // Greedy (temperature 0) on the committed default model: a deterministic run that does not meet eos
    // within 16 tokens, so every abort below has tokens left to cut.
    const fresh = await engine.generate({ prompt: PROMPT, maxNewTokens: 16, temperature: 0 });
    expect(fresh.finishReason, 'precondition: the greedy run reaches maxNewTokens').toBe('length');
    expect(fresh.tokenIds).toHaveLength(16);
    let n = 0;
    const byId = await engine.generate({ prompt: PROMPT, maxNewTokens: 16, requestId: 'w-abort' }, () => {
      if (++n === 2) void engine.abort('w-abort');
    });
    expect(byId.finishReason).toBe('abort');
    // The abort message races the worker's decode loop by one step at most (one step per round trip).
    expect(byId.tokenIds.length).toBeLessThan(16);
    expect(byId.tokenIds).toEqual(fresh.tokenIds.slice(0, byId.tokenIds.length));

    const ac = new AbortController();
    const bySignal = await engine.generate({ prompt: PROMPT, maxNewTokens: 16, signal: ac.signal }, () =>
      ac.abort(),
    );
    expect(bySignal.finishReason).toBe('abort');
    expect(bySignal.tokenIds.length).toBeLessThan(16);

    const queuedAc = new AbortController();
    const running = engine.generate({ prompt: PROMPT, maxNewTokens: 16 });
    const queued = engine.generate({ prompt: PROMPT, maxNewTokens: 16, signal: queuedAc.signal });
    queuedAc.abort();
    expect((await queued).tokenIds).toEqual([]);
    expect((await running).tokenIds).toEqual(fresh.tokenIds);
  });

  it('adapter API across the boundary: import, list, generate, rename, export, delete, typed errors', async () => {
    // The worker's engine uses the default IndexedDB store, the same one this page's engine opens.
    const name = `worker-test-${Date.now()}`;
    const dir = '/tests/fixtures/peft-adapter/';
    const files: File[] = [];
    for (const n of ['adapter_config.json', 'adapter_model.safetensors']) {
      files.push(new File([await (await fetch(dir + n)).blob()], n));
    }
    const stages: string[] = [];
    try {
      const info = await engine.importAdapter({ files }, { name, onProgress: (p) => stages.push(p.stage) });
      expect(info.name).toBe(name);
      expect(info.moduleCount).toBe(report.targetCount);
      expect(stages).toEqual(['read', 'validate', 'store', 'done']);
      expect((await engine.listAdapters()).map((a) => a.name)).toContain(name);
      expect(await local.listAdapters()).toContainEqual(info);

      const req = { prompt: PROMPT, maxNewTokens: 8, adapter: name };
      const viaWorker = await engine.generate(req);
      expect(viaWorker.tokenIds).toEqual((await local.generate(req)).tokenIds);
      const base = await engine.generate({ prompt: PROMPT, maxNewTokens: 8 });
      const mixed = await engine.generate({ ...req, adapter: [{ name, weight: 0 }] });
      expect(mixed.tokenIds).toEqual(base.tokenIds); // a zero-weight mix is the base model
      const stats = await engine.adapterStats();
      expect(stats.entries).toBe(1);
      expect(stats.misses).toBe(1);
      expect(stats.uploads).toBe(1);

      const dup = await engine.importAdapter({ files }, { name }).catch((e) => e);
      expect(dup).toBeInstanceOf(AdapterNameConflictError);
      const cfg = await (await fetch(`${dir}adapter_config.json`)).json();
      cfg.base_model_name_or_path = 'someone/else';
      const weights = new Uint8Array(await files[1]!.arrayBuffer());
      const mismatch = await engine
        .importAdapter({ config: JSON.stringify(cfg), weights }, { name: `${name}-other` })
        .catch((e) => e);
      expect(mismatch).toBeInstanceOf(AdapterBaseModelError);
      expect((mismatch as AdapterBaseModelError).data.declared).toBe('someone/else');

      await engine.renameAdapter(name, `${name}-renamed`);
      const exported = await engine.exportAdapter(`${name}-renamed`);
      expect(exported['adapter_model.safetensors']).toEqual(weights);
      expect(exported['adapter_config.json']).toEqual(new Uint8Array(await files[0]!.arrayBuffer()));
      const gone = await engine.generate(req).catch((e) => e);
      expect(gone).toBeInstanceOf(AdapterNotFoundError);
      expect((gone as AdapterNotFoundError).data.name).toBe(name);
      await engine.deleteAdapter(`${name}-renamed`);
      expect((await engine.listAdapters()).map((a) => a.name)).not.toContain(`${name}-renamed`);
    } finally {
      for (const n of [name, `${name}-renamed`]) await engine.deleteAdapter(n).catch(() => {});
    }
  });

  it('messages on a model without chat_template → ModelPackageError (picked local files, no template)', async () => {
    const names = ['config.json', 'tokenizer.json', 'generation_config.json', 'onnx/model.onnx'];
    const files: File[] = [];
    for (const n of names) {
      const blob = await (await fetch(MODEL_BASE + n)).blob();
      files.push(new File([blob], n.split('/').at(-1)!));
      Object.defineProperty(files.at(-1)!, 'webkitRelativePath', { value: `picked/${n}` });
    }
    const cfg = await (await fetch(`${MODEL_BASE}tokenizer_config.json`)).json();
    delete cfg.chat_template;
    const f = new File([JSON.stringify(cfg)], 'tokenizer_config.json');
    Object.defineProperty(f, 'webkitRelativePath', { value: 'picked/tokenizer_config.json' });
    files.push(f);
    const r = await engine.loadModel(files, { backend: 'wasm', dtype: 'fp32' });
    expect(r.config.hasChatTemplate).toBe(false);
    const err = await engine.generate({ messages: [{ role: 'user', content: 'Hi' }] }).catch((e) => e);
    expect(err).toBeInstanceOf(ModelPackageError);
    expect((err as ModelPackageError).data.field).toBe('chat_template');
  });
});

describe('worker engine (webgpu)', () => {
  it('runs on webgpu inside the worker and matches wasm for 3 greedy tokens, with and without an adapter', async () => {
    const gpu = createWorkerEngine();
    const cpu = new LocalEngine({ numThreads: 1 });
    const name = `worker-gpu-test-${Date.now()}`;
    try {
      const r = await gpu.loadModel(MODEL_BASE, { backend: 'webgpu', dtype: 'fp32' });
      expect(r.backend).toBe('webgpu');
      expect(r.adapterInfo?.architecture).toBe('swiftshader');
      await cpu.loadModel(MODEL_BASE, { backend: 'wasm', dtype: 'fp32' });
      const req = { prompt: PROMPT, maxNewTokens: 3 };
      expect((await gpu.generate(req)).tokenIds).toEqual((await cpu.generate(req)).tokenIds);
      // The worker's default provider keeps adapter feeds in GPU buffers on ORT's device.
      const dir = '/tests/fixtures/peft-adapter-rslora/';
      await gpu.importAdapter({ url: dir }, { name, allowBaseModelMismatch: true });
      const withAdapter = { ...req, adapter: name };
      expect((await gpu.generate(withAdapter)).tokenIds).toEqual((await cpu.generate(withAdapter)).tokenIds);
      const stats = await gpu.adapterStats();
      expect(stats.uploads).toBe(1);
      expect(stats.bytesHeld).toBeGreaterThan(0);
    } finally {
      await gpu.deleteAdapter(name).catch(() => {});
      await gpu.dispose();
      gpu.terminate();
      await cpu.dispose();
    }
  });
});
