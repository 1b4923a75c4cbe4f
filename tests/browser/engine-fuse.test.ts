// The decoder fusion through the in-page LocalEngine (load.ts fuses every graph at load) on the default model
// package (q4), on wasm and on webgpu: LoadReport.fused counts every site of the 6-layer model (13 RMSNorms,
// 12 of them after a residual Add, Q and K rotary per layer, 6 attentions); LocalEngineOptions.fuseDecoder:
// false loads the graph as exported (fused null). Oracle: the unfused engine on the same backend: 16 greedy
// tokens identical, and the prompt's logits row within FUSED_WEBGPU (tests/helpers/expect-close.ts says why)
// on webgpu, FP32_LOGITS on wasm (observed there: bit-identical). Graph-level checks of the fused kernels:
// tests/unit/model/fuse-decoder.test.ts (wasm) and tests/browser/fuse-webgpu.test.ts (webgpu).
import { describe, expect, it } from 'vitest';
import { LocalEngine } from '../../src/engine/engine.ts';
import type { GenerateResult, LoadReport } from '../../src/engine/types.ts';
import {
  expectClose,
  FP32_LOGITS,
  FUSED_WEBGPU,
  maxAbsDiff,
  type Tolerance,
} from '../helpers/expect-close.ts';
import { MODEL_BASE, PROMPT } from './helpers/model.ts';

const TOKENS = 16;
const TOL: Record<'wasm' | 'webgpu', Tolerance> = { wasm: FP32_LOGITS, webgpu: FUSED_WEBGPU };

async function run(
  backend: 'wasm' | 'webgpu',
  fuseDecoder: boolean,
): Promise<{ report: LoadReport; result: GenerateResult; prefill: Float32Array; graph: string | null }> {
  const e = new LocalEngine({ numThreads: 1, adapterStore: null, fuseDecoder });
  try {
    const report = await e.loadModel(MODEL_BASE, { backend });
    const result = await e.generate({ prompt: PROMPT, maxNewTokens: TOKENS, temperature: 0 });
    const dbg = e.debugState();
    return { report, result, prefill: dbg.lastPrefillLogits!, graph: dbg.lastGraph };
  } finally {
    await e.dispose();
  }
}

describe('LocalEngine decoder fusion', () => {
  for (const backend of ['wasm', 'webgpu'] as const) {
    it(`${backend}: report.fused counts every site; fuseDecoder: false → null, same ${TOKENS} greedy tokens`, async () => {
      const on = await run(backend, true);
      expect(on.report.backend).toBe(backend);
      expect(on.report.fused).toEqual({ norms: 13, skipNorms: 12, rotary: 12, attention: 6, scaleFolds: 6 });
      const off = await run(backend, false);
      expect(off.report.backend).toBe(backend);
      expect(off.report.dtype).toBe(on.report.dtype);
      expect(off.report.fused).toBeNull();
      expect(on.result.finishReason).toBe('length');
      expect(on.result.tokenIds).toHaveLength(TOKENS);
      expect(on.result.tokenIds).toEqual(off.result.tokenIds);
      expect(on.result.text).toBe(off.result.text);
      // "No adapter" ran the base session, which is fused too (it is the fused graph before injection).
      expect(on.graph).toBe('base');
      expect(on.prefill).toHaveLength(on.report.config.vocabSize);
      expectClose(on.prefill, off.prefill, TOL[backend], `${backend} prompt logits fused vs unfused`);
      console.info(
        `engine ${backend} (${on.report.dtype}): fused vs unfused prompt logits max |diff| ${maxAbsDiff(on.prefill, off.prefill).toExponential(1)}`,
      );
    });
  }
});
