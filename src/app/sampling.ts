/**
 * The sampling settings: Temperature and Max new tokens next to Generate, the rest under "Advanced
 * sampling" (index.html). `parseSampling` checks every field against the rule its label states and
 * names the field by that label ("Top-p must be more than 0 and at most 1"), so the form can mark the
 * field and say what to change before a request is made; the engine's own checks (sampling.ts in
 * src/engine) stay the last word. Max new tokens is capped by the model's context (a visible note says
 * so). Values are kept in localStorage across reloads. Stop strings: one per line, with `\n` / `\t`
 * escapes so a newline itself can be a stop string.
 */
import type { GenerateRequest } from '../engine/types.ts';
import { InvalidOptionError } from '../errors.ts';
import { byId } from './dom.ts';

export type SamplingFields = Pick<
  GenerateRequest,
  'temperature' | 'topK' | 'topP' | 'repetitionPenalty' | 'seed' | 'maxNewTokens' | 'stop'
>;

/** Input ids, as in index.html, with the label the user sees. */
export const FIELDS = {
  temperature: { id: 'temperature', label: 'Temperature' },
  maxNewTokens: { id: 'max-tokens', label: 'Max new tokens' },
  topK: { id: 'top-k', label: 'Top-k' },
  topP: { id: 'top-p', label: 'Top-p' },
  repetitionPenalty: { id: 'repetition-penalty', label: 'Repetition penalty' },
  seed: { id: 'seed', label: 'Seed' },
  stop: { id: 'stop-strings', label: 'Stop strings' },
} as const;

export type FieldKey = keyof typeof FIELDS;
export type RawSampling = Partial<Record<FieldKey, string>>;

const STORE_KEY = 'weblora-demo:sampling';

export function parseStopStrings(text: string): string[] {
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) =>
      line.replace(/\\(n|t|\\)/g, (_, c: string) => (c === 'n' ? '\n' : c === 't' ? '\t' : '\\')),
    );
}

function fail(field: FieldKey, rule: string, value: string): never {
  throw new InvalidOptionError(`${FIELDS[field].label} ${rule} (got "${value}")`, {
    option: field,
    field: FIELDS[field].id,
    label: FIELDS[field].label,
    value,
  });
}

/**
 * The request fields from the form's raw strings; an InvalidOptionError whose message names the field
 * by its label (data `{ option, field, label, value }`) for the first value that breaks its rule.
 * `maxPositions` caps Max new tokens (the model cannot see more tokens than that).
 */
export function parseSampling(raw: RawSampling, maxPositions?: number): SamplingFields {
  const num = (k: FieldKey): number | undefined => {
    const v = (raw[k] ?? '').trim();
    if (v === '') return undefined;
    const n = Number(v);
    if (!Number.isFinite(n)) fail(k, 'must be a number', v);
    return n;
  };
  const str = (k: FieldKey): string => (raw[k] ?? '').trim();
  const temperature = num('temperature') ?? 0;
  if (temperature < 0 || temperature > 5)
    fail('temperature', 'must be between 0 (greedy) and 5', str('temperature'));
  let maxNewTokens = num('maxNewTokens') ?? 48;
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1)
    fail('maxNewTokens', 'must be a whole number of at least 1', str('maxNewTokens'));
  if (maxPositions !== undefined) maxNewTokens = Math.min(maxNewTokens, maxPositions);
  const topK = num('topK') ?? 0;
  if (!Number.isInteger(topK) || topK < 0)
    fail('topK', 'must be a whole number, 0 or more (0 = off)', str('topK'));
  const topP = num('topP') ?? 1;
  if (!(topP > 0 && topP <= 1)) fail('topP', 'must be more than 0 and at most 1 (1 = off)', str('topP'));
  const repetitionPenalty = num('repetitionPenalty') ?? 1;
  if (!(repetitionPenalty > 0))
    fail('repetitionPenalty', 'must be more than 0 (1 = off)', str('repetitionPenalty'));
  const out: SamplingFields = { temperature, topK, topP, repetitionPenalty, maxNewTokens };
  const seed = num('seed');
  if (seed !== undefined) {
    if (!Number.isInteger(seed) || seed < 0)
      fail('seed', 'must be a whole number, 0 or more, or blank', str('seed'));
    out.seed = seed;
  }
  const stop = parseStopStrings(raw.stop ?? '');
  if (stop.length > 0) out.stop = stop;
  return out;
}

function input(k: FieldKey): HTMLInputElement | HTMLTextAreaElement {
  return byId<HTMLInputElement | HTMLTextAreaElement>(FIELDS[k].id);
}

function rawValues(): RawSampling {
  const raw: RawSampling = {};
  for (const k of Object.keys(FIELDS) as FieldKey[]) raw[k] = input(k).value;
  return raw;
}

let contextSize: number | undefined;

/**
 * The form's settings for a request. An invalid field is marked (its validity message, focus; an
 * "Advanced" field opens its section) and the InvalidOptionError is thrown for the caller to show.
 */
export function readSampling(): SamplingFields {
  for (const k of Object.keys(FIELDS) as FieldKey[]) input(k).setCustomValidity('');
  try {
    return parseSampling(rawValues(), contextSize);
  } catch (e) {
    if (e instanceof InvalidOptionError && typeof e.data.field === 'string') {
      const el = byId<HTMLInputElement>(e.data.field);
      el.setCustomValidity(e.message);
      const details = el.closest('details');
      if (details) details.open = true;
      el.focus();
    }
    throw e;
  }
}

/** Restores saved values, saves every change, and shows the context note under Max new tokens. */
export function mountSampling(): {
  setContext(maxPositions: number | null, lastPromptTokens?: number): void;
} {
  try {
    const saved = JSON.parse(localStorage.getItem(STORE_KEY) ?? 'null') as RawSampling | null;
    if (saved)
      for (const k of Object.keys(FIELDS) as FieldKey[])
        if (typeof saved[k] === 'string') input(k).value = saved[k];
  } catch {
    // nothing saved, or private mode
  }
  const note = byId('max-tokens-note');
  const max = byId<HTMLInputElement>(FIELDS.maxNewTokens.id);
  for (const k of Object.keys(FIELDS) as FieldKey[]) {
    input(k).addEventListener('input', () => {
      input(k).setCustomValidity('');
      try {
        localStorage.setItem(STORE_KEY, JSON.stringify(rawValues()));
      } catch {
        // private mode: not kept
      }
      showNote();
    });
  }
  let last: number | undefined;
  function showNote(): void {
    if (contextSize === undefined) {
      note.textContent = '';
      return;
    }
    const asked = Number(max.value);
    const room =
      last !== undefined ? ` The last prompt took ${last}, leaving ${Math.max(0, contextSize - last)}.` : '';
    note.textContent =
      asked > contextSize
        ? `Capped at ${contextSize}: the model's context holds ${contextSize} tokens, prompt included.${room}`
        : `The model's context holds ${contextSize} tokens, prompt included: a run stops there (“length”).${room}`;
    note.dataset.capped = String(asked > contextSize);
  }
  return {
    setContext(maxPositions, lastPromptTokens) {
      contextSize = maxPositions ?? undefined;
      if (maxPositions) max.max = String(maxPositions);
      if (lastPromptTokens !== undefined) last = lastPromptTokens;
      showNote();
    },
  };
}
