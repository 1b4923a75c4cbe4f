// The demo's sampling form rules (src/app/sampling.ts parseSampling): defaults, each field's rule named
// by the label the user sees (not the option name), and Max new tokens capped by the model's context.
import { describe, expect, it } from 'vitest';
import { parseSampling } from '../../../src/app/sampling.ts';
import { InvalidOptionError } from '../../../src/errors.ts';

function errorOf(f: () => unknown): InvalidOptionError {
  try {
    f();
  } catch (e) {
    return e as InvalidOptionError;
  }
  throw new Error('expected an error');
}

describe('parseSampling', () => {
  it('defaults for blank fields; stop strings with escapes', () => {
    expect(parseSampling({})).toEqual({
      temperature: 0,
      topK: 0,
      topP: 1,
      repetitionPenalty: 1,
      maxNewTokens: 48,
    });
    expect(parseSampling({ temperature: '0.8', seed: '7', stop: 'END\n\\n' })).toMatchObject({
      temperature: 0.8,
      seed: 7,
      stop: ['END', '\n'],
    });
  });

  it('names the field by its label and says the rule', () => {
    const cases: [Record<string, string>, RegExp, string][] = [
      [{ topP: '1.5' }, /^Top-p must be more than 0 and at most 1 \(1 = off\) \(got "1.5"\)$/, 'top-p'],
      [{ temperature: '-1' }, /^Temperature must be between 0 \(greedy\) and 5/, 'temperature'],
      [{ maxNewTokens: '2.5' }, /^Max new tokens must be a whole number of at least 1/, 'max-tokens'],
      [{ topK: 'x' }, /^Top-k must be a number/, 'top-k'],
      [{ repetitionPenalty: '0' }, /^Repetition penalty must be more than 0/, 'repetition-penalty'],
      [{ seed: '-3' }, /^Seed must be a whole number/, 'seed'],
    ];
    for (const [raw, msg, field] of cases) {
      const e = errorOf(() => parseSampling(raw));
      expect(e).toBeInstanceOf(InvalidOptionError);
      expect(e.message).toMatch(msg);
      expect(e.message).not.toMatch(/topP|maxNewTokens|repetitionPenalty/);
      expect(e.data.field).toBe(field);
    }
  });

  it('caps Max new tokens by the context size', () => {
    expect(parseSampling({ maxNewTokens: '900' }, 512).maxNewTokens).toBe(512);
    expect(parseSampling({ maxNewTokens: '100' }, 512).maxNewTokens).toBe(100);
  });
});
