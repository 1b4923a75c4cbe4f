/**
 * Where an adapter module's LoRA lands in the graph's targets when projections are packed on one side:
 * q/k/v (gate/up) modules into the columns of a packed target (builder `qkv_proj`), or Phi-3's packed PEFT
 * modules (`qkv_proj`, `gate_up_proj`: lora_B rows Q, K, V; gate, up) split over separate targets, as
 * onnxruntime-genai's builder slices them. Shared by peftToFeeds (the mapping) and the importer's checks.
 * It does not read tensors or check ranks.
 */
/** A graph target as peft.ts sees it (structurally its LoraTarget). */
export interface LoraTarget {
  layer: number;
  module: string;
  in: number;
  out: number;
  parts?: readonly { module: string; offset: number; size: number }[];
}

/** Phi-3's packed PEFT modules and the modules they hold, in row order of lora_B. */
export const PACKED_PEFT: Record<string, readonly string[]> = {
  qkv_proj: ['q_proj', 'k_proj', 'v_proj'],
  gate_up_proj: ['gate_proj', 'up_proj'],
};

/** Where rows [rowStart, rowStart + rows) of an adapter module's lora_B land: columns of `target`. */
export interface Destination {
  target: LoraTarget;
  outOffset: number;
  rowStart: number;
  rows: number;
}

/** Destinations of adapter module `module` in `layer`, or null when the model has no place for it. */
export function destinationsOf(
  layer: number,
  module: string,
  targets: readonly LoraTarget[],
): Destination[] | null {
  const inLayer = targets.filter((t) => t.layer === layer);
  const direct = inLayer.find((t) => t.module === module);
  if (direct) return [{ target: direct, outOffset: 0, rowStart: 0, rows: direct.out }];
  for (const t of inLayer) {
    const part = t.parts?.find((p) => p.module === module);
    if (part) return [{ target: t, outOffset: part.offset, rowStart: 0, rows: part.size }];
  }
  const split = PACKED_PEFT[module];
  if (!split) return null;
  const out: Destination[] = [];
  let row = 0;
  for (const m of split) {
    const d = destinationsOf(layer, m, targets);
    if (!d) return null;
    for (const x of d) {
      out.push({ ...x, rowStart: row });
      row += x.rows;
    }
  }
  return out;
}

/** The in / out a module's lora_A [r, in] and lora_B [out, r] must have on these targets, or null. */
export function moduleShape(
  layer: number,
  module: string,
  targets: readonly LoraTarget[],
): { in: number; out: number; label: string } | null {
  const d = destinationsOf(layer, module, targets);
  if (!d || d.length === 0) return null;
  const t = d[0]!.target;
  return { in: t.in, out: d.reduce((n, x) => n + x.rows, 0), label: d.length === 1 ? t.module : module };
}
