// The registry's adoption of a page's own engine (src/element/registry.ts adoptEngine), with real
// workers, the real worker engine and <weblora-chat> in Chromium (wasm, default q4 model):
// an element whose model key matches the adopted engine's uses it — no worker of its own, and its prompt
// decodes in one batch with the page's (`timings.batchRows` 2; each reply equals its solo greedy reply);
// a release sends the element to a worker of its own while the page's engine lives on; adopting over
// that worker moves the element back and terminates the registry's worker; a failed adopted load leaves
// the registry without touching the engine; stop() ends a prompt still waiting for its model (nothing
// is generated). Workers are counted by wrapping the global Worker class.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configureWebLora } from '../../src/element/index.ts';
import {
  type AdoptedModel,
  adoptEngine,
  type ModelKey,
  modelKeyString,
  resolveModelUrl,
  sharedModel,
  sharedModels,
} from '../../src/element/registry.ts';
import type { WebLoraChat } from '../../src/element/weblora-chat.ts';
import { createWorkerEngine, type WorkerEngine } from '../../src/engine/client.ts';
import type { GenerateResult, LoadReport } from '../../src/engine/types.ts';
import { FetchError } from '../../src/errors.ts';
import { MODEL_BASE } from './helpers/model.ts';

const MAX_TOKENS = 6;
const PAGE_PROMPT = 'ROMEO:\nBut soft, what light';
const ELEMENT_PROMPT = 'JULIET:\nO Romeo, Romeo';

/** Every Worker this page starts, and whether it was terminated. */
const workers: { terminated: boolean }[] = [];
const NativeWorker = globalThis.Worker;
class CountedWorker extends NativeWorker {
  readonly record = { terminated: false };
  constructor(url: string | URL, opts?: WorkerOptions) {
    super(url, opts);
    workers.push(this.record);
  }
  override terminate(): void {
    this.record.terminated = true;
    super.terminate();
  }
}

let engine: WorkerEngine;
let key: ModelKey;
let el: WebLoraChat;
let pageSolo: GenerateResult;
let elementSolo: GenerateResult;

const reply = (r: GenerateResult) => ({ tokenIds: r.tokenIds, text: r.text });
const pageRequest = () => ({ prompt: PAGE_PROMPT, maxNewTokens: MAX_TOKENS, temperature: 0 });

async function waitFor(cond: () => boolean, what: string): Promise<void> {
  const t0 = performance.now();
  while (!cond()) {
    if (performance.now() - t0 > 60_000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

beforeAll(() => {
  globalThis.Worker = CountedWorker;
  configureWebLora({ wasmPaths: new URL('/ort/', location.href).href, defaultModel: MODEL_BASE });
  key = { model: resolveModelUrl(null), backend: 'wasm', dtype: undefined };
  engine = createWorkerEngine();
});

afterAll(() => {
  el?.remove();
  for (const s of sharedModels()) if (s.engine !== engine) s.engine.terminate();
  engine?.terminate();
  globalThis.Worker = NativeWorker;
});

function newElement(): WebLoraChat {
  const e = document.createElement('weblora-chat') as WebLoraChat;
  e.setAttribute('backend', 'wasm');
  e.setAttribute('mode', 'completion');
  e.setAttribute('temperature', '0');
  e.setAttribute('max-tokens', String(MAX_TOKENS));
  document.body.append(e);
  return e;
}

describe('adoptEngine: a page engine shared with <weblora-chat>', () => {
  let adopted: AdoptedModel;

  it('an element with the same model key uses the adopted engine and batches with the page', async () => {
    const ready = engine.loadModel(MODEL_BASE, { backend: 'wasm' });
    adopted = adoptEngine(key, engine, ready);
    expect(adopted.shared.key).toBe(modelKeyString(key));
    expect(adopted.shared.adopted).toBe(true);
    expect(sharedModel(key)).toBe(adopted.shared); // the registry hands out the adopted entry
    el = newElement();
    await ready;

    pageSolo = await engine.generate(pageRequest());
    elementSolo = await el.generate(ELEMENT_PROMPT);
    expect([pageSolo.timings.batchRows, elementSolo.timings.batchRows]).toEqual([1, 1]);
    expect(elementSolo.tokenIds).toHaveLength(MAX_TOKENS);

    const [page, element] = await Promise.all([engine.generate(pageRequest()), el.generate(ELEMENT_PROMPT)]);
    expect([page.timings.batchRows, element.timings.batchRows]).toEqual([2, 2]);
    expect(reply(page)).toEqual(reply(pageSolo));
    expect(reply(element)).toEqual(reply(elementSolo));
    expect(workers).toHaveLength(1); // the page's: the element started none
    expect(sharedModels()).toEqual([adopted.shared]);
  });

  it('release: the element moves to a worker of its own; the page engine is not touched', async () => {
    let released = 0;
    adopted.shared.onRelease(() => released++);
    adopted.release();
    adopted.release(); // idempotent
    expect(released).toBe(1);
    // The element re-resolves at once (it loads eagerly, as on connect) into a worker of its own.
    await waitFor(() => workers.length === 2 && el.report !== null, 'the element to load in its own worker');
    const own = sharedModels();
    expect(own).toHaveLength(1);
    expect(own[0]!.adopted).toBe(false);
    expect(own[0]!.engine).not.toBe(engine);
    expect(reply(await el.generate(ELEMENT_PROMPT))).toEqual(reply(elementSolo));
    // The page's engine still serves its model.
    expect(workers[0]!.terminated).toBe(false);
    expect(reply(await engine.generate(pageRequest()))).toEqual(reply(pageSolo));
  });

  it("adopting over the element's own worker moves the element back and terminates that worker", async () => {
    const report = (await engine.info()) as LoadReport;
    adopted = adoptEngine(key, engine, Promise.resolve(report));
    await waitFor(() => workers[1]!.terminated, "the registry's worker to be terminated");
    expect(workers[0]!.terminated).toBe(false);
    expect(sharedModels()).toEqual([adopted.shared]);
    const [page, element] = await Promise.all([engine.generate(pageRequest()), el.generate(ELEMENT_PROMPT)]);
    expect([page.timings.batchRows, element.timings.batchRows]).toEqual([2, 2]);
    expect(reply(element)).toEqual(reply(elementSolo));
    expect(workers).toHaveLength(2);
  });

  it('stop() ends a prompt still waiting for its model: nothing is generated, done says abort', async () => {
    // A load the test settles itself, adopted under the key of an element asking for fp32.
    let settle: (r: LoadReport) => void = () => {};
    const pending = new Promise<LoadReport>((resolve) => {
      settle = resolve;
    });
    const fp32: ModelKey = { ...key, dtype: 'fp32' };
    const waiting = adoptEngine(fp32, engine, pending);
    const other = newElement();
    other.setAttribute('dtype', 'fp32');
    try {
      const done: string[] = [];
      other.addEventListener('done', (e) => done.push(e.detail.finishReason));
      const prompt = other.generate(ELEMENT_PROMPT);
      expect(other.busy).toBe(true);
      other.stop();
      expect(other.busy).toBe(false);
      settle((await engine.info()) as LoadReport);
      const r = await prompt;
      expect([r.finishReason, r.tokenIds, done]).toEqual(['abort', [], ['abort']]);
    } finally {
      other.remove();
      waiting.release();
    }
    expect(workers).toHaveLength(2); // the fp32 element used the adopted engine too
  });

  it('a failed adopted load leaves the registry; the engine is neither terminated nor released', async () => {
    const other: ModelKey = { ...key, dtype: 'fp16' };
    const failed = adoptEngine(other, engine, Promise.reject(new FetchError('test: no such file', {})));
    let released = 0;
    failed.shared.onRelease(() => released++);
    await expect(failed.shared.ready).rejects.toBeInstanceOf(FetchError);
    await waitFor(() => sharedModels().length === 1, 'the failed entry to leave');
    expect(sharedModels()).toEqual([adopted.shared]); // the other key's entry is untouched
    expect(released).toBe(0);
    expect(workers[0]!.terminated).toBe(false);
    expect(await engine.info()).not.toBeNull();
  });
});
