/**
 * The gated variant of the LoRA graph pass (`injectLora(model, { gates: true })`): per-token routing over
 * a mix of adapters concatenated along the rank (MeteoRA, Xu et al. 2024, arXiv:2405.13053; LoRA-Mixer).
 * In each adapted decoder layer l one gate is computed from the layer's normed input h (the tensor that
 * q/k/v read: input_layernorm's output, found as the input of the layer's q_proj / qkv_proj node):
 *     G_l = softmax(h·W_l + b_l)                   W_l (C, n), b_l (1, n)  → (..., n)
 *     S_l = G_l·E                                   E (n, R) 0/1: column j belongs to expert i  → (..., R)
 * and every adapted projection of that layer computes (X·A ⊙ S_l)·B instead of (X·A)·B, with
 * A = [A₁ … Aₙ], B = [w₁s₁B₁; …; wₙsₙBₙ] the ordinary mix feeds (adapters/mix.ts). One gate per layer
 * (not one per projection as MeteoRA has) keeps the gate at n·(C+1) numbers per layer and lets q/k/v,
 * o and the MLP of a token agree on the experts. W, b and E are graph inputs (`lora.{l}.gate.W`,
 * `lora.{l}.gate.b`, `lora.gates.E`, n symbolic `lora_experts`), so any number of experts and any mix
 * runs on one session; an ordinary selection runs on the gated graph with n = 1, W = 0, b = 0, E = 1
 * (softmax of one logit is exactly 1). The expansion is a product with E rather than a Gather of expert
 * ids because every LoRA feed in the adapter pipeline (store, mix, GPU cache) is float32.
 * Not here: the ungated graph (inject-lora.ts; models loaded without gates pay nothing), training the gate
 * (src/train/gate-model.ts), the gated-mix file format (src/adapters/gated.ts).
 */
import { ModelFormatError } from '../errors.ts';
import { DataType, intAttr, type NodeProto, onnx, tensorValueInfo, type ValueInfoProto } from './onnx-io.ts';
import type { Projection } from './targets.ts';

export const GATE_EXPERTS_DIM = 'lora_experts';
/** Graph input of the 0/1 expansion (n, R): row i has ones on expert i's rank columns. */
export const GATE_EXPAND_INPUT = 'lora.gates.E';

/** Graph input name of a layer's gate weight (C, n) or bias (1, n), e.g. `lora.0.gate.W`. */
export function gateInputName(layer: number, which: 'W' | 'b'): string {
  return `lora.${layer}.gate.${which}`;
}

/** One layer's gate as injected: its feeds' names and the gate input width C. */
export interface GateSite {
  layer: number;
  /** C: width of the gate input (the layer's normed hidden state). */
  in: number;
  inputW: string;
  inputB: string;
}

/** The layers' gate inputs: the activation of each layer's q_proj (or packed qkv_proj). */
export function gateSources(all: readonly Projection[], layers: readonly number[]): Map<number, Projection> {
  const out = new Map<number, Projection>();
  for (const p of all) {
    if (!layers.includes(p.layer) || out.has(p.layer)) continue;
    if (p.module === 'q_proj' || p.module === 'qkv_proj') out.set(p.layer, p);
  }
  return out;
}

export interface GateEmitContext {
  push(node: NodeProto): void;
  fresh(base: string): string;
  /** The float32 version of a projection's activation (a shared Cast in fp16 graphs). */
  float32(p: Projection, scope: string): string;
  /** Einsum (webgpu) or MatMul for the two gate products; `rank` = the activation's tensor rank. */
  einsum: boolean;
  rankOf(name: string, p: Projection): number;
}

/**
 * Emits each layer's gate once, on first use (just before the layer's first gated branch: every adapted
 * projection of a layer depends on its normed input, so the gate's input is already computed there).
 */
export class GateEmitter {
  private readonly done = new Map<number, string>(); // layer -> S_l (..., R)

  constructor(
    private readonly sources: Map<number, Projection>,
    private readonly ctx: GateEmitContext,
  ) {}

  get sites(): GateSite[] {
    return [...this.done.keys()]
      .sort((a, b) => a - b)
      .map((layer) => ({
        layer,
        in: this.sources.get(layer)!.in,
        inputW: gateInputName(layer, 'W'),
        inputB: gateInputName(layer, 'b'),
      }));
  }

  /** `xa` (..., R) times the layer's expanded gate S_l (..., R). */
  apply(layer: number, xa: string, scope: string, out: string): void {
    const s = this.gate(layer);
    this.ctx.push(
      onnx.NodeProto.create({ name: `${scope}/Mul_gate`, opType: 'Mul', input: [xa, s], output: [out] }),
    );
  }

  private gate(layer: number): string {
    const have = this.done.get(layer);
    if (have) return have;
    const src = this.sources.get(layer);
    if (!src) {
      throw new ModelFormatError(
        `gated LoRA: layer ${layer} has no q_proj / qkv_proj projection whose input (the normed hidden ` +
          'state) could feed its gate',
        { layer },
      );
    }
    const { ctx } = this;
    const scope = `/lora.${layer}.gate`;
    const h = ctx.float32(src, scope);
    const logits = ctx.fresh(`${scope}/hW`); // (..., n)
    const biased = ctx.fresh(`${scope}/hW_b`); // (..., n)
    const probs = ctx.fresh(`${scope}/G`); // (..., n)
    const spread = ctx.fresh(`${scope}/S`); // (..., R)
    const rank = ctx.rankOf(src.node.input[0] ?? '', src);
    const lead = 'abcdefgh'.slice(0, Math.max(0, rank - 1));
    const W = gateInputName(layer, 'W');
    const b = gateInputName(layer, 'b');
    const mm = (name: string, eq: string, ins: string[], out: string): NodeProto =>
      ctx.einsum
        ? onnx.NodeProto.create({
            name: `${scope}/Einsum_${name}`,
            opType: 'Einsum',
            input: ins,
            output: [out],
            attribute: [
              onnx.AttributeProto.create({
                name: 'equation',
                type: onnx.AttributeProto.AttributeType.STRING,
                s: new TextEncoder().encode(eq),
              }),
            ],
          })
        : onnx.NodeProto.create({
            name: `${scope}/MatMul_${name}`,
            opType: 'MatMul',
            input: ins,
            output: [out],
          });
    ctx.push(mm('W', `${lead}c,cn->${lead}n`, [h, W], logits));
    ctx.push(
      onnx.NodeProto.create({ name: `${scope}/Add_b`, opType: 'Add', input: [logits, b], output: [biased] }),
    );
    ctx.push(
      onnx.NodeProto.create({
        name: `${scope}/Softmax`,
        opType: 'Softmax',
        input: [biased],
        output: [probs],
        attribute: [intAttr('axis', -1)],
      }),
    );
    ctx.push(mm('E', `${lead}n,nr->${lead}r`, [probs, GATE_EXPAND_INPUT], spread));
    this.done.set(layer, spread);
    return spread;
  }

  /** Graph inputs of the emitted gates (float32 like every LoRA input). */
  inputs(rankDim: string): ValueInfoProto[] {
    const sites = this.sites;
    if (sites.length === 0) return [];
    const out: ValueInfoProto[] = [];
    for (const s of sites) {
      out.push(tensorValueInfo(s.inputW, DataType.FLOAT, [s.in, GATE_EXPERTS_DIM])); // (C, n)
      out.push(tensorValueInfo(s.inputB, DataType.FLOAT, [1, GATE_EXPERTS_DIM])); // (1, n)
    }
    out.push(tensorValueInfo(GATE_EXPAND_INPUT, DataType.FLOAT, [GATE_EXPERTS_DIM, rankDim])); // (n, R)
    return out;
  }
}
