/**
 * The Train panel's "Fill example" data: a small task the base model cannot do and a rank-4 adapter
 * learns in a minute or two on the CPU path — "verb name" → the NAME in upper case (speaker tags of the
 * Shakespeare corpus, one token each), as JSONL `{prompt, completion}` lines. The same task
 * tests/browser/train-api.test.ts trains to ≥ 90 % held-out exact match with these settings. One pair
 * ("greet juliet") is left out of the data and used as the before/after sample prompt.
 */
import type { TrainFormValues } from './train-form.ts';

const NAMES = 'romeo juliet king queen duke lucio isabella leontes sicinius gloucester menenius lady'.split(
  ' ',
);
const VERBS = 'enter exit call hail see bid thank kill love mark find save fetch greet follow summon'.split(
  ' ',
);
const HELD_OUT = 'greet juliet\n';

export interface TrainExample {
  data: string;
  samplePrompt: string;
  /** Form settings that learn the task in a minute or two on the CPU path. */
  settings: Partial<TrainFormValues>;
}

export function upperCaseExample(): TrainExample {
  const lines: string[] = [];
  // Interleave names so that any prefix of the data (and the eval split) covers them all.
  for (const v of VERBS) {
    for (const n of NAMES) {
      const prompt = `${v} ${n}\n`;
      if (prompt !== HELD_OUT) lines.push(JSON.stringify({ prompt, completion: n.toUpperCase() }));
    }
  }
  return {
    data: lines.join('\n'),
    samplePrompt: HELD_OUT,
    settings: {
      name: 'upper-names',
      format: 'jsonl',
      rank: '4',
      layers: '3-5',
      steps: '60',
      lr: '0.01',
      batchSize: '8',
      seqLen: '16',
      alpha: '8',
      warmup: '2',
      evalSplit: '0.1',
      seed: '0',
    },
  };
}
