// Bytes an adapter holds on a packed `qkv_proj` graph (the onnxruntime-genai builder replica fixture). The
// graph shares one rank R across all LoRA inputs (the batch row mask's `lora_mask_rank`), so in
// 'block-diagonal' mode a rank-r q/k/v adapter makes the qkv branch rank 3r and pads every other target to
// 3r too: 3× the raw factors. The default ('per-part', PACKED_LORA_DEFAULT) gives q, k and v their own
// rank-r branches: the feeds hold exactly the adapter's factors. Same logits either way (replicas.test.ts).
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { importPeftAdapter } from '../../../src/adapters/import.ts';
import { buildPeftFiles } from '../../../src/adapters/peft-writer.ts';
import { injectLora, PACKED_LORA_DEFAULT, type PackedLoraMode } from '../../../src/model/inject-lora.ts';
import { decodeModel } from '../../../src/model/onnx-io.ts';

const BUILDER = new URL('../../fixtures/replicas/builder/model.onnx', import.meta.url);
const R = 4;

/** A rank-R adapter on every module of the builder replica (q/k/v named by part, as PEFT does). */
function adapterFor(mode: PackedLoraMode) {
  const { targets } = injectLora(decodeModel(new Uint8Array(readFileSync(BUILDER))), { packed: mode });
  type Module = { layer: number; module: string; in: number; out: number };
  const modules = targets.flatMap((t): Module[] =>
    t.parts?.length ? t.parts.map((p) => ({ layer: t.layer, module: p.module, in: t.in, out: p.size })) : [t],
  );
  const files = buildPeftFiles({
    baseModel: 'weblora/replica',
    r: R,
    loraAlpha: 2 * R,
    modules: modules.map((m, i) => ({
      layer: m.layer,
      module: m.module,
      in: m.in,
      out: m.out,
      A: new Float32Array(R * m.in).fill(0.01 * (i + 1)),
      B: new Float32Array(m.out * R).fill(0.02),
    })),
  });
  const imported = importPeftAdapter(
    { config: files['adapter_config.json'], weights: files['adapter_model.safetensors'] },
    { id: 'weblora/replica', targets },
  );
  const held = [...imported.feeds.feeds.values()].reduce((n, f) => n + f.data.byteLength, 0);
  const raw = modules.reduce((n, m) => n + 4 * R * (m.in + m.out), 0);
  return { targets, imported, held, raw };
}

describe('bytes an adapter holds on a packed qkv_proj graph (builder replica)', () => {
  it('default (per-part): the feeds hold exactly the raw factors, one rank-r branch per q/k/v part', () => {
    expect(PACKED_LORA_DEFAULT).toBe('per-part');
    const { targets, imported, held, raw } = adapterFor(PACKED_LORA_DEFAULT);
    expect(targets.filter((t) => t.layer === 0).map((t) => [t.module, t.packedIn ?? null])).toEqual([
      ['q_proj', 'qkv_proj'],
      ['k_proj', 'qkv_proj'],
      ['v_proj', 'qkv_proj'],
      ['o_proj', null],
      ['gate_proj', null],
      ['up_proj', null],
      ['down_proj', null],
    ]);
    expect(imported.feeds.rank).toBe(R);
    expect(held).toBe(raw);
  });

  it("'block-diagonal': the qkv branch is rank 3r and every target is padded to it (3× the raw bytes)", () => {
    const { targets, imported, held, raw } = adapterFor('block-diagonal');
    expect(targets.filter((t) => t.layer === 0).map((t) => t.module)[0]).toBe('qkv_proj');
    expect(imported.feeds.rank).toBe(3 * R);
    // Σ over targets of 4·3r·(in + out); the qkv target's `in` is counted once where q, k, v count it 3×.
    const padded = targets.reduce((n, t) => n + 4 * 3 * R * (t.in + t.out), 0);
    expect(held).toBe(padded);
    expect(held / raw).toBeGreaterThan(2.5);
  });
});
