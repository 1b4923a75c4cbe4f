// Shared by the gate tests: the gate oracle fixture (scripts/py/gate_fixtures.py), the example adapters it
// routes over as CPU feeds, and the gated feeds of a graph for them.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type GatedMix, gateFeeds, type LayerGate } from '../../src/adapters/gated.ts';
import { mixFeeds } from '../../src/adapters/mix.ts';
import { parsePeftConfig, peftToFeeds } from '../../src/adapters/peft.ts';
import { parseSafetensors, type Safetensors } from '../../src/adapters/safetensors.ts';
import type { LoraFeed } from '../../src/adapters/types.ts';
import type { GateSite } from '../../src/model/inject-gates.ts';
import type { LoraTarget } from '../../src/model/inject-lora.ts';
import { assertFresh, FIXTURES_DIR, f32, i32, loadSafetensorsFile, REPO_ROOT } from './fixtures.ts';

export const ADAPTERS_DIR = join(REPO_ROOT, 'public/adapters');

export interface GateFixture {
  st: Safetensors;
  tokens: number[];
  logits: Float32Array;
  batch: number[];
  loss: number;
  mix: GatedMix;
  grads: Map<number, LayerGate>;
}

export function loadGateFixture(): GateFixture {
  const st = loadSafetensorsFile(join(FIXTURES_DIR, 'gates.safetensors'));
  assertFresh(st, 'tests/fixtures/gates.safetensors');
  const experts = JSON.parse(st.metadata.experts!) as { name: string; weight: number }[];
  const gates = new Map<number, LayerGate>();
  const grads = new Map<number, LayerGate>();
  for (let l = 0; st.tensors.has(`layers.${l}.gate.weight`); l++) {
    gates.set(l, { W: f32(st, `layers.${l}.gate.weight`), b: f32(st, `layers.${l}.gate.bias`) });
    grads.set(l, { W: f32(st, `grad.layers.${l}.gate.weight`), b: f32(st, `grad.layers.${l}.gate.bias`) });
  }
  const hiddenSize = st.tensors.get('layers.0.gate.weight')!.shape[1]!;
  return {
    st,
    tokens: i32(st, 'tokens'),
    logits: f32(st, 'logits'),
    batch: i32(st, 'batch'),
    loss: Number(st.metadata.loss_f64),
    mix: { experts, hiddenSize, gates },
    grads,
  };
}

/** An example adapter's PEFT config and tensors. */
export function readExample(name: string) {
  const dir = join(ADAPTERS_DIR, name);
  const cfg = parsePeftConfig(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
  const st = parseSafetensors(new Uint8Array(readFileSync(join(dir, 'adapter_model.safetensors'))));
  return { cfg, tensors: st.tensors };
}

/** The concatenated mix feeds + gate feeds of `mix` (or neutral gates when `gated` is false). */
export function gatedMixFeeds(
  mix: GatedMix,
  targets: LoraTarget[],
  sites: readonly GateSite[],
  gated = true,
): Map<string, LoraFeed> {
  const parts = mix.experts.map((e) => {
    const { cfg, tensors } = readExample(e.name);
    return { weight: e.weight, feeds: peftToFeeds(cfg, tensors, targets) };
  });
  const mixed = mixFeeds(parts, targets);
  const g = gateFeeds(sites, gated ? mix : null, gated ? parts.map((p) => p.feeds.rank) : [mixed.rank]);
  return new Map([...mixed.feeds, ...g]);
}
