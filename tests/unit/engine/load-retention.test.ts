// The engine's model load (src/engine/load.ts) on Node's onnxruntime-web (wasm), from picked Files: once
// the session owns the weights, nothing keeps the fetched model bytes alive (the injected graph reads its
// weights straight out of them as external data, external-weights.ts, and the LoadedModel holds no
// reference), checked with WeakRefs after a forced GC; trainWeights reads the file again; the report's
// phases account for the load.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import * as ort from 'onnxruntime-web';
import { describe, expect, it } from 'vitest';
import { type LoadedModel, loadModel } from '../../../src/engine/load.ts';
import { KvStepper } from '../../../src/engine/session.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const PKG = fileURLToPath(new URL('../../../public/models/weblora-shakespeare/', import.meta.url));
const FILES = [
  'config.json',
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'onnx/model_q4.onnx',
];

/** The package as picked Files; every ArrayBuffer the model file hands out is tracked by a WeakRef. */
function picked(refs: WeakRef<ArrayBuffer>[]): File[] {
  return FILES.map((path) => {
    const f = new File([readFileSync(PKG + path)], path);
    if (path.endsWith('.onnx')) {
      const read = f.arrayBuffer.bind(f);
      Object.defineProperty(f, 'arrayBuffer', {
        value: async () => {
          const b = await read();
          refs.push(new WeakRef(b));
          return b;
        },
      });
    }
    return f;
  });
}

async function collected(refs: WeakRef<ArrayBuffer>[]): Promise<boolean> {
  for (let i = 0; i < 10; i++) {
    await new Promise((r) => setTimeout(r, 10));
    gc();
    if (refs.every((r) => r.deref() === undefined)) return true;
  }
  return false;
}

async function load(files: File[], fileWeights: boolean): Promise<LoadedModel> {
  ort.env.wasm.numThreads = 1;
  return loadModel(
    ort,
    files,
    { backend: 'wasm' },
    { baseGraphForNoAdapter: false, fileWeights, beforeSessions: async () => {}, onDeviceLost: () => {} },
    () => {},
  );
}

describe('loadModel memory', () => {
  for (const fileWeights of [true, false]) {
    it(`keeps no reference to the model file's bytes once loaded (fileWeights ${fileWeights})`, async () => {
      const refs: WeakRef<ArrayBuffer>[] = [];
      const m = await load(picked(refs), fileWeights);
      try {
        expect(refs.length).toBeGreaterThan(0);
        expect(await collected(refs)).toBe(true);
        // …and the model still runs (the session owns its weights).
        const stepper = new KvStepper(ort, m.graph, m.noAdapterFeeds);
        const logits = await stepper.step([813, 58, 10]);
        stepper.dispose();
        expect(logits.length).toBe(m.report.config.vocabSize);
        expect(logits.every(Number.isFinite)).toBe(true);
        const p = m.report.phases;
        const named = p.files + p.decode + p.inject + p.encode + p.session + p.baseSession;
        expect(named + p.other).toBeCloseTo(m.report.loadMs, -1);
        expect(p.session).toBeGreaterThan(0);
        expect(p.baseSession).toBe(0);
      } finally {
        await m.release();
      }
    });
  }

  it('gives the same logits either way, and trainWeights reads the file again', async () => {
    const a = await load(picked([]), true);
    const b = await load(picked([]), false);
    try {
      const run = async (m: LoadedModel) => {
        const s = new KvStepper(ort, m.graph, m.noAdapterFeeds);
        try {
          return await s.step([813, 58, 10, 449]);
        } finally {
          s.dispose();
        }
      };
      expect(await run(a)).toEqual(await run(b));
      const w = await a.trainWeights();
      expect(w.layers.length).toBe(a.report.config.numLayers);
      expect(await a.trainWeights()).toBe(w); // decoded once, then kept
    } finally {
      await a.release();
      await b.release();
    }
  });
});
