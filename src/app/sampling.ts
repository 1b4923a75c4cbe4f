/**
 * Reads the sampling controls (index.html, #sampling-panel) into the `GenerateRequest` fields. Values
 * are passed through as typed; range checks are the engine's (sampling.ts), whose InvalidOptionError
 * names the option and the rule, and the demo shows that message. Stop strings: one per line, with
 * `\n` / `\t` escapes so a newline itself can be a stop string. No state, no rendering.
 */
import type { GenerateRequest } from '../engine/types.ts';
import { byId } from './dom.ts';

export type SamplingFields = Pick<
  GenerateRequest,
  'temperature' | 'topK' | 'topP' | 'repetitionPenalty' | 'seed' | 'maxNewTokens' | 'stop'
>;

function num(id: string): number | undefined {
  const v = byId<HTMLInputElement>(id).value.trim();
  return v === '' ? undefined : Number(v);
}

export function parseStopStrings(text: string): string[] {
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) =>
      line.replace(/\\(n|t|\\)/g, (_, c: string) => (c === 'n' ? '\n' : c === 't' ? '\t' : '\\')),
    );
}

export function readSampling(): SamplingFields {
  const out: SamplingFields = {
    temperature: num('temperature') ?? 0,
    topK: num('top-k') ?? 0,
    topP: num('top-p') ?? 1,
    repetitionPenalty: num('repetition-penalty') ?? 1,
    maxNewTokens: num('max-tokens') ?? 48,
  };
  const seed = num('seed');
  if (seed !== undefined) out.seed = seed;
  const stop = parseStopStrings(byId<HTMLTextAreaElement>('stop-strings').value);
  if (stop.length > 0) out.stop = stop;
  return out;
}
