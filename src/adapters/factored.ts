/**
 * Stored PEFT adapters as plain per-module factors with the scale folded in, ΔW = B·A with A (r, in) and
 * B (out, r) in PEFT's layout (so ΔW = scale·lora_B·lora_A of the file), and back to PEFT files. It is the
 * common ground of merge.ts and truncate.ts, which change factors, never file formats. The way back writes
 * `lora_alpha = r` (the largest module rank) and divides each module's B by its PEFT scale (r / rank_m,
 * through rank_pattern), so importing the written files gives back exactly the folded factors.
 * Limits: only the modules buildPeftFiles can name (the Llama q/k/v/o/gate/up/down projections).
 */
import type { PeftFiles } from './import.ts';
import { CONFIG_FILE, parseAdapterConfig, parseAdapterSafetensors, WEIGHTS_FILE } from './import.ts';
import { locateModule, PEFT_KEY_RE, patternValue } from './peft.ts';
import type { InAppAdapter } from './peft-writer.ts';
import { readFloat32 } from './safetensors.ts';

/** One adapted module: ΔW (out, in) = B·A, the PEFT scale already folded into B. */
export interface FactoredModule {
  layer: number;
  module: string;
  in: number;
  out: number;
  rank: number;
  /** (rank, in), row-major: row j is the j-th rank's input direction. */
  A: Float32Array;
  /** (out, rank), row-major: column j is the j-th rank's output direction, times the scale. */
  B: Float32Array;
}

export interface FactoredAdapter {
  baseModel: string | null;
  /** Sorted by layer, then module name. */
  modules: FactoredModule[];
}

export const moduleKey = (m: { layer: number; module: string }): string => `${m.layer}.${m.module}`;

/** The factors of already-validated PEFT files (the store's bytes). */
export function readFactored(files: PeftFiles): FactoredAdapter {
  const cfg = parseAdapterConfig(new TextDecoder().decode(files[CONFIG_FILE]));
  const st = parseAdapterSafetensors(files[WEIGHTS_FILE]);
  const parts = new Map<
    string,
    { A?: Float32Array; B?: Float32Array; shapeA?: number[]; shapeB?: number[] }
  >();
  for (const [key, t] of st.tensors) {
    const m = PEFT_KEY_RE.exec(key);
    if (!m?.[1] || !m[2]) continue;
    const p = parts.get(m[1]) ?? {};
    if (m[2] === 'A') {
      p.A = readFloat32(t);
      p.shapeA = t.shape;
    } else {
      p.B = readFloat32(t);
      p.shapeB = t.shape;
    }
    parts.set(m[1], p);
  }
  const modules: FactoredModule[] = [];
  for (const [path, p] of parts) {
    const loc = locateModule(path, cfg);
    if (!loc || !p.A || !p.B || !p.shapeA || !p.shapeB) continue; // validated at import; cannot happen
    const [rank = 0, inDim = 0] = p.shapeA;
    const outDim = p.shapeB[0] ?? 0;
    const alpha = patternValue(cfg.alphaPattern, path) ?? cfg.loraAlpha;
    const scale = cfg.useRslora ? alpha / Math.sqrt(rank) : alpha / rank;
    const B = p.B;
    for (let i = 0; i < B.length; i++) B[i] = B[i]! * scale;
    modules.push({ layer: loc.layer, module: loc.module, in: inDim, out: outDim, rank, A: p.A, B });
  }
  modules.sort((x, y) => x.layer - y.layer || x.module.localeCompare(y.module));
  return { baseModel: cfg.baseModelNameOrPath, modules };
}

/** Factors → the in-app adapter buildPeftFiles writes: alpha = r = max rank, B unfolded per module. */
export function toInApp(a: FactoredAdapter, baseModel: string): InAppAdapter {
  const r = Math.max(1, ...a.modules.map((m) => m.rank));
  return {
    baseModel,
    r,
    loraAlpha: r,
    useRslora: false,
    modules: a.modules.map((m) => {
      const inv = m.rank / r; // 1 / (alpha / rank_m) with alpha = r
      return {
        layer: m.layer,
        module: m.module,
        in: m.in,
        out: m.out,
        A: m.A,
        B: Float32Array.from(m.B, (x) => x * inv),
      };
    }),
  };
}

/** Bytes of the adapter's weights as F32 PEFT tensors (what the written safetensors mostly holds). */
export function factoredBytes(modules: readonly { in: number; out: number; rank: number }[]): number {
  return modules.reduce((n, m) => n + 4 * m.rank * (m.in + m.out), 0);
}
