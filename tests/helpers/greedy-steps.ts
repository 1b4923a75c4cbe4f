import { argmax } from '../../src/engine/sampling.ts';
import { type DecoderGraph, KvStepper, type Ort, type OrtTensor } from '../../src/engine/session.ts';

/**
 * One sequence decoded alone, greedily, keeping every step's logits row: the reference a batched row is
 * compared with (exact tokens, logits within a tolerance). `feeds`: the LoRA feeds (or none) of that row.
 */
export async function greedySteps(
  ort: Ort,
  graph: DecoderGraph,
  feeds: Record<string, OrtTensor>,
  prompt: readonly number[],
  n: number,
): Promise<{ tokens: number[]; logits: Float32Array[] }> {
  const s = new KvStepper(ort, graph, feeds);
  const tokens: number[] = [];
  const logits: Float32Array[] = [];
  try {
    let input: readonly number[] = prompt;
    for (let i = 0; i < n; i++) {
      const l = await s.step(input);
      logits.push(l);
      tokens.push(argmax(l));
      input = [tokens.at(-1)!];
    }
  } finally {
    s.dispose();
  }
  return { tokens, logits };
}
