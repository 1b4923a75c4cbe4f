/**
 * Gated mixes: a list of stored adapters (the experts, each with a static mix weight) plus one trained
 * softmax gate per decoder layer that weights them token by token (MeteoRA / LoRA-Mixer style; the graph
 * side is src/model/inject-gates.ts). PEFT has no format for this, so weblora defines a small one:
 *
 *   gated_mix_config.json  {"format": "weblora-gated-mix", "format_version": 1,
 *                           "experts": [{"name": "weblora-shout", "weight": 1}, ...],
 *                           "gate_input": "input_layernorm", "hidden_size": 256, "layers": [0, 1, ...]}
 *   gates.safetensors      layers.{l}.gate.weight F32 [n, hidden_size]  (torch nn.Linear layout: out, in)
 *                          layers.{l}.gate.bias   F32 [n]
 *
 * G_l = softmax(h_l·Wᵀ + b) with h_l the output of layer l's input_layernorm (what q/k/v read). Layers
 * without a gate in the file route with a uniform gate (W = 0, b = 0). Experts are referenced by name:
 * the adapters themselves stay ordinary PEFT adapters in the store. Not here: storage (gated-store.ts),
 * loading the experts' tensors (provider.ts).
 */
import { AdapterFormatError, InvalidOptionError } from '../errors.ts';
import type { GateSite } from '../model/inject-gates.ts';
import { GATE_EXPAND_INPUT } from '../model/inject-gates.ts';
import {
  f32Tensor,
  parseSafetensors,
  readFloat32,
  type TensorView,
  writeSafetensors,
} from './safetensors.ts';
import type { LoraFeed } from './types.ts';

export const GATED_CONFIG_FILE = 'gated_mix_config.json';
export const GATED_WEIGHTS_FILE = 'gates.safetensors';
export const GATED_FORMAT = 'weblora-gated-mix';

export interface GateExpert {
  name: string;
  weight: number;
}

/** One layer's gate, torch layout: W (n, C), b (n). */
export interface LayerGate {
  W: Float32Array;
  b: Float32Array;
}

export interface GatedMix {
  experts: GateExpert[];
  hiddenSize: number;
  /** Gates by decoder layer. */
  gates: Map<number, LayerGate>;
}

/** The two files of a gated mix, as bytes. */
export interface GatedMixFiles {
  config: string;
  weights: Uint8Array;
}

const bad = (msg: string, data: Record<string, unknown> = {}) =>
  new AdapterFormatError(`${GATED_CONFIG_FILE} / ${GATED_WEIGHTS_FILE}: ${msg}`, data);

/** Checks experts (≥ 1, names, finite non-zero weights) and gate shapes; throws InvalidOptionError. */
export function checkGatedMix(mix: GatedMix): void {
  const n = mix.experts.length;
  if (n < 1) throw new InvalidOptionError('a gated mix needs at least one expert adapter', {});
  for (const [i, e] of mix.experts.entries()) {
    if (typeof e?.name !== 'string' || e.name === '')
      throw new InvalidOptionError(`expert ${i}: name must be a non-empty string`, { index: i });
    if (typeof e.weight !== 'number' || !Number.isFinite(e.weight) || e.weight === 0)
      throw new InvalidOptionError(`expert ${i} (${e.name}): weight must be a finite non-zero number`, {
        index: i,
        weight: e.weight,
      });
  }
  if (!(Number.isInteger(mix.hiddenSize) && mix.hiddenSize > 0))
    throw new InvalidOptionError(`hiddenSize must be a positive integer (got ${mix.hiddenSize})`, {});
  for (const [l, g] of mix.gates) {
    if (g.W.length !== n * mix.hiddenSize || g.b.length !== n)
      throw new InvalidOptionError(
        `layer ${l} gate: W must be [${n}, ${mix.hiddenSize}] and b [${n}] (got ${g.W.length} and ${g.b.length} values)`,
        { layer: l },
      );
    for (const v of [g.W, g.b])
      if (!v.every(Number.isFinite))
        throw new InvalidOptionError(`layer ${l} gate holds NaN or Infinity`, { layer: l });
  }
}

export function serializeGatedMix(mix: GatedMix): GatedMixFiles {
  checkGatedMix(mix);
  const layers = [...mix.gates.keys()].sort((a, b) => a - b);
  const config = {
    format: GATED_FORMAT,
    format_version: 1,
    experts: mix.experts.map((e) => ({ name: e.name, weight: e.weight })),
    gate_input: 'input_layernorm',
    hidden_size: mix.hiddenSize,
    layers,
  };
  const n = mix.experts.length;
  const tensors = new Map<string, TensorView>();
  for (const l of layers) {
    const g = mix.gates.get(l)!;
    tensors.set(`layers.${l}.gate.weight`, f32Tensor(g.W, [n, mix.hiddenSize]));
    tensors.set(`layers.${l}.gate.bias`, f32Tensor(g.b, [n]));
  }
  return {
    config: `${JSON.stringify(config, null, 2)}\n`,
    weights: writeSafetensors(tensors, { format: GATED_FORMAT }),
  };
}

/** Parses and checks the two files; AdapterFormatError names what is wrong. */
export function parseGatedMix(files: GatedMixFiles): GatedMix {
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(files.config) as Record<string, unknown>;
  } catch (e) {
    throw bad(`config is not JSON (${(e as Error).message})`);
  }
  if (cfg?.format !== GATED_FORMAT) throw bad(`"format" must be "${GATED_FORMAT}"`, { format: cfg?.format });
  if (cfg.format_version !== 1)
    throw bad(`unsupported format_version ${String(cfg.format_version)} (this build reads 1)`);
  if (cfg.gate_input !== 'input_layernorm') throw bad('"gate_input" must be "input_layernorm"');
  const experts = cfg.experts;
  if (!Array.isArray(experts)) throw bad('"experts" must be a list of {name, weight}');
  const hiddenSize = cfg.hidden_size;
  const layers = cfg.layers;
  if (
    typeof hiddenSize !== 'number' ||
    !Array.isArray(layers) ||
    !layers.every((l) => Number.isInteger(l) && l >= 0)
  )
    throw bad('"hidden_size" must be a number and "layers" a list of layer indices');
  const st = parseSafetensors(files.weights);
  const n = experts.length;
  const gates = new Map<number, LayerGate>();
  for (const l of layers as number[]) {
    const w = st.tensors.get(`layers.${l}.gate.weight`);
    const b = st.tensors.get(`layers.${l}.gate.bias`);
    if (!w || !b) throw bad(`layer ${l}: missing layers.${l}.gate.weight / .bias`, { layer: l });
    if (w.shape.join() !== `${n},${hiddenSize}` || b.shape.join() !== `${n}`)
      throw bad(`layer ${l}: weight must be [${n}, ${hiddenSize}] and bias [${n}]`, {
        layer: l,
        weight: w.shape,
        bias: b.shape,
      });
    gates.set(l, { W: readFloat32(w), b: readFloat32(b) });
  }
  const mix: GatedMix = { experts: experts as GateExpert[], hiddenSize, gates };
  try {
    checkGatedMix(mix);
  } catch (e) {
    throw bad((e as Error).message);
  }
  return mix;
}

/**
 * The gate feeds of a gated graph for a mix whose concatenated rank segments are `ranks` (expert i owns
 * columns [Σ_{j<i} r_j, Σ_{j≤i} r_j)): W (C, n) = gate Wᵀ, b (1, n), E (n, R). `gates` null: the
 * neutral gate of an ordinary selection (n = 1, W = 0, b = 0, E = 1 over all R columns).
 */
export function gateFeeds(
  sites: readonly GateSite[],
  gates: GatedMix | null,
  ranks: readonly number[],
): Map<string, LoraFeed> {
  const n = gates ? gates.experts.length : 1;
  const R = ranks.reduce((s, r) => s + r, 0);
  if (gates && ranks.length !== n)
    throw new InvalidOptionError(`gated mix: ${n} experts but ${ranks.length} rank segments`, {});
  const out = new Map<string, LoraFeed>();
  for (const s of sites) {
    const W = new Float32Array(s.in * n); // (C, n)
    const b = new Float32Array(n); // (1, n)
    const g = gates?.gates.get(s.layer);
    if (g) {
      if (gates!.hiddenSize !== s.in)
        throw new InvalidOptionError(
          `gated mix has hidden_size ${gates!.hiddenSize} but layer ${s.layer}'s gate input has ${s.in}`,
          { layer: s.layer },
        );
      for (let i = 0; i < n; i++) for (let c = 0; c < s.in; c++) W[c * n + i] = g.W[i * s.in + c]!;
      b.set(g.b);
    }
    out.set(s.inputW, { data: W, dims: [s.in, n] });
    out.set(s.inputB, { data: b, dims: [1, n] });
  }
  const E = new Float32Array(n * R); // (n, R)
  if (gates) {
    let off = 0;
    for (const [i, r] of ranks.entries()) {
      E.fill(1, i * R + off, i * R + off + r);
      off += r;
    }
  } else E.fill(1);
  out.set(GATE_EXPAND_INPUT, { data: E, dims: [n, R] });
  return out;
}
