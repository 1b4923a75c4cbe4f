// The in-thread LocalEngine on the default model package: webgpu really is used and keeps the KV cache
// on the GPU, its greedy tokens equal the wasm engine's, streaming/abort/stop/queueing behave as the
// Engine contract (src/engine/types.ts) says. Every check compares two paths with each other, never
// against fixed text; the abort/stop tests only rely on greedy runs of the committed default model not
// meeting eos within 32 tokens, and assert that precondition instead of skipping when it fails.
// SwiftShader WebGPU decodes about one token per second here: webgpu runs stay at ≤ 5 tokens,
// everything else runs on the wasm engine.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultAdapterName } from '../../src/adapters/import-sources.ts';
import { parseSafetensors, readInt32 } from '../../src/adapters/safetensors.ts';
import { AdapterStore } from '../../src/adapters/store.ts';
import { LocalEngine } from '../../src/engine/engine.ts';
import { watchDeviceLost } from '../../src/engine/load.ts';
import type { OrtTensor } from '../../src/engine/session.ts';
import { TextTokenizer } from '../../src/engine/tokenizer.ts';
import type { AdapterFeedProvider, GenerateRequest, LoadReport, TokenDelta } from '../../src/engine/types.ts';
import {
  AdapterNotFoundError,
  InvalidOptionError,
  NoModelError,
  UnsupportedError,
} from '../../src/errors.ts';
import { weightsAsExternal } from '../../src/model/external-weights.ts';
import { decodeModel, encodeModel } from '../../src/model/onnx-io.ts';
import { modelFileName, parseModelConfig } from '../../src/model/package.ts';
import { prepareDecoderGraph } from '../../src/model/prepare-decoder.ts';
import { MODEL_BASE, PROMPT, setupOrt } from './helpers/model.ts';

const ort = setupOrt();
const GPU_TOKENS = 5;

async function collect(engine: LocalEngine, req: GenerateRequest) {
  const deltas: TokenDelta[] = [];
  const result = await engine.generate(req, (d) => deltas.push(d));
  return { result, deltas };
}

describe('LocalEngine', () => {
  let cpu: LocalEngine;
  let gpu: LocalEngine;
  let cpuReport: LoadReport;
  let gpuReport: LoadReport;
  let released = 0;
  const progress: string[] = [];

  beforeAll(async () => {
    cpu = new LocalEngine({
      numThreads: 1,
      // A provider that knows one adapter, 'zeros' (rank-0 feeds, which the wasm EP accepts: the base
      // model), and counts releases (the engine must release per request); null is "no adapter".
      adapterProvider: ({ targets }) => {
        const provider: AdapterFeedProvider = {
          async feedsFor(selection) {
            if (selection === null) return null;
            if (selection !== 'zeros') throw new UnsupportedError('test provider: zeros only', {});
            const feeds: Record<string, OrtTensor> = {};
            for (const t of targets) {
              feeds[t.inputA] = new ort.Tensor('float32', new Float32Array(0), [t.in, 0]);
              feeds[t.inputB] = new ort.Tensor('float32', new Float32Array(0), [0, t.out]);
            }
            return { feeds, release: () => released++ };
          },
        };
        return provider;
      },
    });
    cpuReport = await cpu.loadModel(MODEL_BASE, {
      backend: 'wasm',
      onProgress: (p) => progress.push(p.stage),
    });
    gpu = new LocalEngine();
    gpuReport = await gpu.loadModel(MODEL_BASE, { backend: 'webgpu', dtype: cpuReport.dtype });
  });

  afterAll(async () => {
    await gpu?.dispose();
    await cpu?.dispose();
  });

  it('reports backend, adapter, dtype, config summary and LoRA targets', () => {
    expect(gpuReport.backend).toBe('webgpu');
    expect(gpuReport.adapterInfo?.architecture).toBe('swiftshader');
    expect(cpuReport.backend).toBe('wasm');
    expect(cpuReport.adapterInfo).toBeNull();
    // The LoRA branch operator per backend (inject-lora.ts: Einsum is the cheap kernel on ORT's WebGPU EP).
    expect(gpuReport.loraBranchOp).toBe('einsum');
    expect(cpuReport.loraBranchOp).toBe('matmul');
    expect(cpuReport.modelId).toBe('weblora-shakespeare');
    expect(gpuReport.modelId).toBe('weblora-shakespeare');
    expect(['q4', 'fp32']).toContain(cpuReport.dtype);
    const c = cpuReport.config;
    expect(cpuReport.targetCount).toBe(c.numLayers * 7);
    expect(cpuReport.targets).toHaveLength(cpuReport.targetCount);
    expect(c.hasChatTemplate).toBe(true);
    expect(cpuReport.modelBytes).toBeGreaterThan(1e6);
    // Default: a second, un-injected session for "no adapter"; both sessions' bytes are counted.
    expect(cpuReport.baseSession).toBe(true);
    expect(gpuReport.baseSession).toBe(true);
    expect(cpuReport.sessionBytes).toBeGreaterThan(2 * cpuReport.modelBytes);
    // wasm runs 4-bit projections as fp32 MatMuls dequantized at load (model/dequantize.ts); webgpu keeps them.
    expect(cpuReport.dequantizedAtLoad?.nodes ?? 0).toBe(cpuReport.dtype === 'q4' ? 42 : 0);
    expect(gpuReport.dequantizedAtLoad).toBeNull();
    expect(progress[0]).toBe('download');
    expect(progress.slice(-3)).toEqual(['prepare', 'session', 'ready']);
    expect(cpu.debugState().inputNames.filter((n) => n.startsWith('lora.'))).toHaveLength(
      2 * cpuReport.targetCount,
    );
  });

  it(`greedy ${GPU_TOKENS} tokens: webgpu == wasm; KV stays on the GPU on webgpu, CPU on wasm`, async () => {
    const req = { prompt: PROMPT, maxNewTokens: GPU_TOKENS };
    const g = await collect(gpu, req);
    expect(gpu.debugState().lastKvLocations.length).toBe(2 * gpuReport.config.numLayers);
    expect(new Set(gpu.debugState().lastKvLocations)).toEqual(new Set(['gpu-buffer']));
    expect(gpu.debugState().lastGraph).toBe('base');
    const c = await collect(cpu, req);
    expect(new Set(cpu.debugState().lastKvLocations)).toEqual(new Set(['cpu']));
    expect(cpu.debugState().lastGraph).toBe('base');
    expect(g.result.tokenIds.length).toBeGreaterThan(0);
    expect(g.result.tokenIds).toEqual(c.result.tokenIds);
    expect(g.result.text).toBe(c.result.text);
    for (const { result, deltas } of [g, c]) {
      expect(deltas.map((d) => d.tokenId)).toEqual(result.tokenIds);
      expect(deltas.map((d) => d.text).join('')).toBe(result.text);
      expect(result.timings.promptTokens).toBeGreaterThan(0);
      expect(result.timings.prefillMs).toBeGreaterThan(0);
    }
    console.info(
      `webgpu ${g.result.timings.tokensPerSecond.toFixed(2)} tok/s, wasm ${c.result.timings.tokensPerSecond.toFixed(1)} tok/s`,
    );
  });

  it('streaming deltas concatenate to the final text; greedy runs to maxNewTokens (finishReason length)', async () => {
    // Greedy on the committed default model is deterministic and meets no eos within 24 tokens.
    const { result, deltas } = await collect(cpu, { prompt: PROMPT, maxNewTokens: 24, temperature: 0 });
    expect(deltas.map((d) => d.text).join('')).toBe(result.text);
    expect(deltas.map((d) => d.tokenId)).toEqual(result.tokenIds);
    expect(result.finishReason).toBe('length');
    expect(result.tokenIds).toHaveLength(24);
  });

  it('abort mid-stream returns finishReason abort; the next generate equals a fresh one', async () => {
    const req = { prompt: PROMPT, maxNewTokens: 16, temperature: 0, requestId: 'abort-me' };
    // Precondition: the greedy run on the committed default model meets no eos within 16 tokens, so an
    // abort after the 3rd token always has tokens left to cut.
    const fresh = await cpu.generate({ prompt: PROMPT, maxNewTokens: 16, temperature: 0 });
    expect(fresh.finishReason, 'precondition: the greedy run reaches maxNewTokens').toBe('length');
    expect(fresh.tokenIds).toHaveLength(16);
    const deltas: TokenDelta[] = [];
    const aborted = await cpu.generate(req, (d) => {
      deltas.push(d);
      if (deltas.length === 3) void cpu.abort('abort-me');
    });
    expect(aborted.finishReason).toBe('abort');
    expect(aborted.tokenIds).toEqual(fresh.tokenIds.slice(0, 3)); // stopped within one step
    expect(deltas.map((d) => d.text).join('')).toBe(aborted.text);
    expect(await cpu.abort('abort-me')).toBe(false); // finished requests are forgotten
    const after = await cpu.generate({ prompt: PROMPT, maxNewTokens: 16 });
    expect(after.tokenIds).toEqual(fresh.tokenIds);
    expect(after.text).toBe(fresh.text);

    const ac = new AbortController();
    const viaSignal = await cpu.generate({ prompt: PROMPT, maxNewTokens: 16, signal: ac.signal }, (d) => {
      if (d.tokenId >= 0) ac.abort();
    });
    expect(viaSignal.finishReason).toBe('abort');
    expect(viaSignal.tokenIds).toHaveLength(1);
  });

  it('two concurrent generate calls return exactly what each returns alone', async () => {
    const a: GenerateRequest = { prompt: PROMPT, maxNewTokens: 12 };
    const b: GenerateRequest = {
      prompt: 'JULIET:\nO Romeo',
      maxNewTokens: 10,
      temperature: 0.8,
      topK: 20,
      seed: 7,
    };
    const aloneA = await collect(cpu, a);
    const aloneB = await collect(cpu, b);
    const [ca, cb] = await Promise.all([collect(cpu, a), collect(cpu, b)]);
    expect(ca.result.tokenIds).toEqual(aloneA.result.tokenIds);
    expect(cb.result.tokenIds).toEqual(aloneB.result.tokenIds);
    expect(ca.result.text).toBe(aloneA.result.text);
    expect(cb.result.text).toBe(aloneB.result.text);
    expect(ca.deltas.map((d) => d.tokenId)).toEqual(ca.result.tokenIds);
    expect(cb.deltas.map((d) => d.tokenId)).toEqual(cb.result.tokenIds);
  });

  it('aborting a queued request removes it: finishReason abort, no tokens, the running one unaffected', async () => {
    const req = { prompt: PROMPT, maxNewTokens: 8 };
    const alone = await cpu.generate(req);
    let queuedTokens = 0;
    // Once `running` streams, a new request waits (to join its batch at the next step, batch.ts).
    let started!: () => void;
    const streaming = new Promise<void>((r) => {
      started = r;
    });
    const running = cpu.generate(req, () => started());
    await streaming;
    const queued = cpu.generate({ ...req, requestId: 'queued' }, () => queuedTokens++);
    expect(cpu.debugState().queued).toBe(1);
    expect(await cpu.abort('queued')).toBe(true);
    const q = await queued;
    expect(q.finishReason).toBe('abort');
    expect(q.tokenIds).toEqual([]);
    expect(q.text).toBe('');
    expect(queuedTokens).toBe(0);
    expect((await running).tokenIds).toEqual(alone.tokenIds);
  });

  it('stop strings end the output before the stop string', async () => {
    // Greedy on the committed (trained) default model writes 32 tokens of visible text, so there is a
    // 3-character stop string to cut at.
    const base = await cpu.generate({ prompt: PROMPT, maxNewTokens: 32, temperature: 0 });
    expect(base.finishReason, 'precondition: the greedy run reaches maxNewTokens').toBe('length');
    const k = Math.floor(base.text.length / 2);
    const stop = base.text.slice(k, k + 3);
    expect(stop, 'precondition: visible text to cut').toHaveLength(3);
    const expected = base.text.slice(0, base.text.indexOf(stop));
    const { result, deltas } = await collect(cpu, {
      prompt: PROMPT,
      maxNewTokens: 32,
      temperature: 0,
      stop: ['\u0000never', stop],
    });
    expect(result.finishReason).toBe('stop');
    expect(result.text).toBe(expected);
    expect(deltas.map((d) => d.text).join('')).toBe(expected);
    expect(result.tokenIds).toEqual(base.tokenIds.slice(0, result.tokenIds.length));
  });

  it('chat messages go through the chat_template (same tokens as the rendered prompt)', async () => {
    const messages = [{ role: 'user', content: 'Who art thou?' }];
    const viaChat = await cpu.generate({ messages, maxNewTokens: 6 });
    const viaPrompt = await cpu.generate({ prompt: 'USER:\nWho art thou?\n\nASSISTANT:\n', maxNewTokens: 6 });
    expect(viaChat.tokenIds).toEqual(viaPrompt.tokenIds);
  });

  it('the adapter provider is asked per request and released; bad requests throw typed errors', async () => {
    const before = released;
    const none = await cpu.generate({ prompt: PROMPT, maxNewTokens: 2 });
    expect(released).toBe(before); // "no adapter": nothing to release
    const zeros = await cpu.generate({ prompt: PROMPT, maxNewTokens: 2, adapter: 'zeros' });
    expect(cpu.debugState().lastGraph).toBe('injected');
    expect(released).toBe(before + 1);
    expect(zeros.tokenIds).toEqual(none.tokenIds);
    await expect(cpu.generate({ prompt: PROMPT, adapter: 'bard', maxNewTokens: 2 })).rejects.toBeInstanceOf(
      UnsupportedError,
    );
    // The default provider reads the IndexedDB store, which has no adapter of that name.
    await expect(
      gpu.generate({ prompt: PROMPT, adapter: 'no-such-adapter-in-engine-test', maxNewTokens: 1 }),
    ).rejects.toBeInstanceOf(AdapterNotFoundError);
    await expect(cpu.generate({ prompt: PROMPT, temperature: -1 })).rejects.toBeInstanceOf(
      InvalidOptionError,
    );
    await expect(cpu.generate({ maxNewTokens: 1 })).rejects.toBeInstanceOf(InvalidOptionError);
    await expect(cpu.generate({ prompt: 'x', messages: [] })).rejects.toBeInstanceOf(InvalidOptionError);
  });

  it('device loss is reported unless the device was destroyed on purpose', async () => {
    const seen: string[] = [];
    const fake = (reason: GPUDeviceLostReason) =>
      ({ lost: Promise.resolve({ reason, message: `m-${reason}` } as GPUDeviceLostInfo) }) as GPUDevice;
    watchDeviceLost(fake('unknown'), (i) => seen.push(i.reason));
    watchDeviceLost(fake('destroyed'), (i) => seen.push(i.reason));
    await new Promise((r) => setTimeout(r, 0));
    expect(seen).toEqual(['unknown']);
  });

  it('without an adapter store, adapter names and adapter methods are UnsupportedError', async () => {
    const e = new LocalEngine({ adapterStore: null });
    await expect(e.listAdapters()).rejects.toBeInstanceOf(UnsupportedError);
    await expect(e.deleteAdapter('x')).rejects.toBeInstanceOf(UnsupportedError);
    const stats = await e.adapterStats();
    expect(stats).toMatchObject({ bytesHeld: 0, entries: 0, hits: 0, misses: 0, uploads: 0 });
    // A store but no model: nothing to validate an import against.
    const s = new LocalEngine({
      adapterStore: new AdapterStore({ dbName: `weblora-test-engine-${Date.now()}` }),
    });
    await expect(s.importAdapter({ weights: new Uint8Array(8) }, { name: 'x' })).rejects.toBeInstanceOf(
      NoModelError,
    );
    expect(await s.listAdapters()).toEqual([]);
  });

  it('import names default to the adapter folder (files or URL); bytes need a name', () => {
    const f = (path: string) => {
      const file = new File(['x'], path.split('/').at(-1)!);
      Object.defineProperty(file, 'webkitRelativePath', { value: path });
      return file;
    };
    expect(
      defaultAdapterName({ files: [f('shout/adapter_config.json'), f('shout/adapter_model.safetensors')] }),
    ).toBe('shout');
    expect(defaultAdapterName({ files: [new File(['x'], 'romeo.safetensors')] })).toBe('romeo');
    expect(defaultAdapterName({ url: '/adapters/reverse/' })).toBe('reverse');
    expect(defaultAdapterName({ url: 'https://huggingface.co/org/bard/resolve/main/' })).toBe('bard');
    expect(defaultAdapterName({ url: 'https://x.test/a/b/adapter_model.safetensors' })).toBe('b');
    expect(() => defaultAdapterName({ weights: new Uint8Array(1) })).toThrow(InvalidOptionError);
  });

  it('baseGraphForNoAdapter: false runs "no adapter" on the injected graph with zero feeds: same tokens', async () => {
    const req = { prompt: PROMPT, maxNewTokens: 12 };
    const viaBase = await collect(cpu, req);
    const baseLogits = cpu.debugState().lastPrefillLogits!;
    const e = new LocalEngine({ numThreads: 1, adapterStore: null, baseGraphForNoAdapter: false });
    try {
      const r = await e.loadModel(MODEL_BASE, { backend: 'wasm', dtype: cpuReport.dtype });
      expect(r.baseSession).toBe(false);
      // The base session's bytes: the file, or on wasm its dequantized fp32 form.
      const file = new Uint8Array(
        await (await fetch(`${MODEL_BASE}${modelFileName(r.dtype)}`)).arrayBuffer(),
      );
      // The base graph is always re-encoded (it is prepared: dequantized, decoder-fused, greedy head, as
      // load.ts builds it with model/prepare-decoder.ts): its graph plus the weights it reads as external
      // data (external-weights.ts; the file's own, or dequantized ones).
      const config = parseModelConfig(await (await fetch(`${MODEL_BASE}config.json`)).json());
      const prepared = prepareDecoderGraph(decodeModel(file), config, 'wasm');
      const slim = weightsAsExternal(prepared.model, file);
      const baseBytes = encodeModel(slim.model).byteLength + slim.externalBytes;
      expect(cpuReport.sessionBytes - r.sessionBytes).toBe(baseBytes);
      const viaInjected = await collect(e, req);
      expect(e.debugState().lastGraph).toBe('injected');
      expect(viaInjected.result.tokenIds).toEqual(viaBase.result.tokenIds);
      expect(viaInjected.result.text).toBe(viaBase.result.text);
      expect(viaInjected.deltas).toEqual(viaBase.deltas);
      expect(Array.from(e.debugState().lastPrefillLogits!)).toEqual(Array.from(baseLogits));
    } finally {
      await e.dispose();
    }
  });

  it('dispose releases the session; generate then fails until a new loadModel', async () => {
    const e = new LocalEngine({ adapterStore: null });
    await e.loadModel(MODEL_BASE, { backend: 'wasm', dtype: cpuReport.dtype });
    // No store: the base-only provider refuses adapter names.
    await expect(e.generate({ prompt: PROMPT, adapter: 'bard', maxNewTokens: 1 })).rejects.toBeInstanceOf(
      UnsupportedError,
    );
    await e.dispose();
    expect(await e.info()).toBeNull();
    await expect(e.generate({ prompt: PROMPT, maxNewTokens: 1 })).rejects.toBeInstanceOf(NoModelError);
  });
});

// The acceptance chain "webgpu == wasm == the golden fixture tokens": the fp32 engine on each backend
// against the PyTorch oracle's greedy continuation (tests/fixtures/golden.safetensors, seq0), whose
// top-1/top-2 margins are all >= 3e-3 so fp32 noise cannot flip a token.
describe('LocalEngine fp32 vs the PyTorch golden greedy tokens', () => {
  it('wasm (20 tokens) and webgpu (5 tokens) reproduce golden seq0', async () => {
    const golden = parseSafetensors(
      new Uint8Array(await (await fetch('/tests/fixtures/golden.safetensors')).arrayBuffer()),
    );
    const tok = TextTokenizer.fromJSON(
      await (await fetch(`${MODEL_BASE}tokenizer.json`)).json(),
      await (await fetch(`${MODEL_BASE}tokenizer_config.json`)).json(),
    );
    const promptIds = Array.from(readInt32(golden.tensors.get('seq0.tokens')!));
    const prompt = tok.decode(promptIds);
    expect(tok.encode(prompt)).toEqual(promptIds);
    const want = Array.from(readInt32(golden.tensors.get('base.seq0.greedy')!));
    for (const [backend, n] of [
      ['wasm', 20],
      ['webgpu', GPU_TOKENS],
    ] as const) {
      const e = new LocalEngine({ numThreads: 1 });
      try {
        const report = await e.loadModel(MODEL_BASE, { backend, dtype: 'fp32' });
        expect(report.backend).toBe(backend);
        const r = await e.generate({ prompt, maxNewTokens: n, temperature: 0 });
        expect(r.tokenIds, `${backend} greedy tokens`).toEqual(want.slice(0, n));
      } finally {
        await e.dispose();
      }
    }
  });
});
