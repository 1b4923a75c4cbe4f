// The worker protocol's ordering promise: a call resolves only after every callback it made has been
// delivered to the caller — `generate` after its last token delta, `importAdapter` after its last
// progress event, `loadModel` after its last progress event. The hard case is a main thread that is
// busy while the worker finishes: the reply and the callbacks then wait in different queues (Comlink
// sends callbacks on their own MessagePort), and without the protocol's count the reply can win.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWorkerEngine, type WorkerEngine } from '../../src/engine/client.ts';
import type { AdapterImportProgress, LoadProgress, TokenDelta } from '../../src/engine/types.ts';
import { MODEL_BASE, PROMPT, setupOrt } from './helpers/model.ts';

setupOrt();

/** Blocks this thread for `ms` (what a long paint or a heavy handler does). */
function busy(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // spin
  }
}

describe('worker protocol: replies after callbacks', () => {
  let engine: WorkerEngine;

  beforeAll(async () => {
    engine = createWorkerEngine();
    await engine.loadModel(MODEL_BASE, { backend: 'wasm', modelAliases: ['model'] });
  });

  afterAll(async () => {
    await engine?.dispose();
    engine?.terminate();
  });

  it('generate resolves after every token delta, even with the main thread busy meanwhile', async () => {
    for (let round = 0; round < 3; round++) {
      const deltas: TokenDelta[] = [];
      const result = await engine.generate({ prompt: PROMPT, maxNewTokens: 48, seed: round }, (d) => {
        // The first delta blocks the page while the worker produces the rest and replies.
        if (deltas.length === 0) busy(1500);
        deltas.push(d);
      });
      // Checked synchronously on resolution: nothing may still be in flight.
      const seen = deltas.length;
      expect(result.tokenIds.length).toBeGreaterThan(1);
      expect(seen).toBe(result.tokenIds.length);
      expect(deltas.map((d) => d.tokenId)).toEqual(result.tokenIds);
      expect(deltas.map((d) => d.text).join('')).toBe(result.text);
    }
  });

  it('importAdapter resolves after its last progress event', async () => {
    const stages: AdapterImportProgress['stage'][] = [];
    const url = new URL('/adapters/weblora-shout/', location.href).href;
    await engine.importAdapter(
      { url },
      {
        name: 'order-test',
        overwrite: true,
        onProgress: (p) => {
          if (stages.length === 0) busy(800);
          stages.push(p.stage);
        },
      },
    );
    expect(stages).toEqual(['read', 'validate', 'store', 'done']);
    await engine.deleteAdapter('order-test');
  });

  it('loadModel resolves after its last progress event (ready)', async () => {
    const events: LoadProgress[] = [];
    await engine.loadModel(MODEL_BASE, {
      backend: 'wasm',
      onProgress: (p) => {
        if (events.length === 0) busy(800);
        events.push(p);
      },
    });
    expect(events.at(-1)?.stage).toBe('ready');
  });
});
