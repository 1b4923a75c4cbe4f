// The public barrel loads in Node and names the pieces users build on; typed errors survive a
// serialize/revive round trip (the worker boundary) as the same class with their data.
import { describe, expect, it } from 'vitest';
import * as weblora from '../../src/index.ts';

describe('src/index.ts', () => {
  it('exports the engine, adapter, graph-pass and error API', () => {
    for (const name of [
      'createWorkerEngine',
      'wrapWorkerEngine',
      'loraBranchOpFor',
      'LocalEngine',
      'AdapterStore',
      'importPeftAdapter',
      'injectLora',
      'quantize',
      'decodeModel',
      'parseSafetensors',
      'createSampler',
      'detectCapabilities',
    ] as const) {
      // biome-ignore lint/performance/noDynamicNamespaceImportAccess: a test enumerating the public names
      expect(typeof weblora[name], name).toBe('function');
    }
    expect(weblora.LORA_MODULES).toEqual([
      'q_proj',
      'k_proj',
      'v_proj',
      'o_proj',
      'gate_proj',
      'up_proj',
      'down_proj',
    ]);
    // injectLora's option defaults, next to its option types (LoraBranchDtype, PackedLoraMode).
    const dtype: weblora.LoraBranchDtype = weblora.LORA_BRANCH_DTYPE_DEFAULT;
    const packed: weblora.PackedLoraMode = weblora.PACKED_LORA_DEFAULT;
    expect([dtype, packed]).toEqual(['float32', 'per-part']);
  });

  it('revives typed errors as the same class with their data', () => {
    const e = new weblora.AdapterRankError('rank 0 is out of range', { rank: 0 });
    const back = weblora.reviveError(structuredClone(weblora.serializeError(e)));
    expect(back).toBeInstanceOf(weblora.AdapterRankError);
    expect(back).toBeInstanceOf(weblora.WebLoraError);
    expect(back.name).toBe('AdapterRankError');
    expect((back as weblora.WebLoraError).data).toEqual({ rank: 0 });
    expect(back.message).toBe('rank 0 is out of range');
  });
});
