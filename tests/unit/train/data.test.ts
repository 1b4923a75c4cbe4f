// Training data pipeline (src/train/data.ts) on the default model's real tokenizer and chat template:
// formats, loss masks, chat assistant spans, every typed error with its reason and line, and the seeded
// shuffle / eval split / batch schedule that resume relies on.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TextTokenizer } from '../../../src/engine/tokenizer.ts';
import { TrainDataError } from '../../../src/errors.ts';
import { renderChat, specialTokensOf } from '../../../src/model/chat.ts';
import {
  BatchSchedule,
  type DataTokenizer,
  detectFormat,
  MAX_DATA_BYTES,
  makeBatch,
  parseTrainData,
  seededPermutation,
  splitExamples,
  targetCount,
  utf8Length,
} from '../../../src/train/data.ts';
import { MODEL_DIR } from '../../helpers/fixtures.ts';

const tokCfg = JSON.parse(readFileSync(join(MODEL_DIR, 'tokenizer_config.json'), 'utf8'));
const text = TextTokenizer.fromJSON(
  JSON.parse(readFileSync(join(MODEL_DIR, 'tokenizer.json'), 'utf8')),
  tokCfg,
);
const tok: DataTokenizer = {
  encode: (s) => text.encode(s),
  eosTokenId: text.eosTokenId,
  chatTemplate: text.chatTemplate,
  specialTokens: specialTokensOf(tokCfg),
};
const EOS = text.eosTokenId;

function dataError(f: () => unknown): TrainDataError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(TrainDataError);
    return e as TrainDataError;
  }
  throw new Error('expected a TrainDataError');
}

/** The ids whose target flag is set. */
const targetIds = (ex: { ids: Int32Array; target: Uint8Array }) =>
  Array.from(ex.ids).filter((_, i) => ex.target[i]);

describe('formats', () => {
  it('plain text: one tokenization cut into seqLen windows, every token (but position 0) a target', () => {
    const data = 'ROMEO:\nBut soft, what light through yonder window breaks?\n'.repeat(3);
    const all = text.encode(data);
    const { format, examples } = parseTrainData(data, 'auto', tok, 16);
    expect(format).toBe('text');
    expect(examples.length).toBe(Math.ceil(all.length / 16) - (all.length % 16 === 1 ? 1 : 0));
    expect(Array.from(examples[0]!.ids)).toEqual(all.slice(0, 16));
    expect(Array.from(examples[1]!.ids)).toEqual(all.slice(16, 32));
    expect(examples[0]!.target[0]).toBe(0);
    expect(Array.from(examples[0]!.target.subarray(1)).every((t) => t === 1)).toBe(true);
  });

  it('prompt/completion: loss only on the completion, eos appended; cut at seqLen', () => {
    const data =
      '{"prompt": "romeo king\\n", "completion": "ROMEO\\nKING"}\n\n{"prompt":"a","completion":"b"}\n';
    const { format, examples } = parseTrainData(data, 'auto', tok, 64);
    expect(format).toBe('jsonl');
    expect(examples).toHaveLength(2);
    const p = text.encode('romeo king\n');
    const c = text.encode('ROMEO\nKING');
    expect(Array.from(examples[0]!.ids)).toEqual([...p, ...c, EOS]);
    expect(targetIds(examples[0]!)).toEqual([...c, EOS]);
    expect(Array.from(examples[0]!.target.subarray(0, p.length)).every((t) => t === 0)).toBe(true);
    const cut = parseTrainData(data, 'jsonl', tok, p.length + 1).examples[0]!;
    expect(cut.ids.length).toBe(p.length + 1);
    expect(targetIds(cut)).toEqual([c[0]]);
  });

  it('chat messages: the model template, loss only on assistant content (found by rendering prefixes)', () => {
    const messages = [
      { role: 'user', content: 'Who art thou?' },
      { role: 'assistant', content: 'A poor player.' },
      { role: 'user', content: 'And then?' },
      { role: 'assistant', content: 'Heard no more.' },
    ];
    const { examples } = parseTrainData(JSON.stringify({ messages }), 'jsonl', tok, 256);
    const ex = examples[0]!;
    const full = renderChat(tok.chatTemplate, messages, { addGenerationPrompt: false });
    expect(text.decode(ex.ids, { skipSpecialTokens: true })).toBe(full);
    expect(ex.ids[ex.ids.length - 1]).toBe(EOS);
    // Target text = both assistant contents with the template's turn terminator, plus eos.
    const targetText = text.decode(targetIds(ex), { skipSpecialTokens: true });
    expect(targetText).toBe('A poor player.\n\nHeard no more.\n\n');
    expect(text.decode(targetIds(ex), { skipSpecialTokens: false })).toContain('<|endoftext|>');
    expect(targetText).not.toContain('ASSISTANT');
    expect(targetText).not.toContain('USER');
    // The context before an assistant turn is tokenized as generate would tokenize the rendered prompt.
    const prompt = renderChat(tok.chatTemplate, messages.slice(0, 1), { addGenerationPrompt: true });
    expect(Array.from(ex.ids.subarray(0, text.encode(prompt).length))).toEqual(text.encode(prompt));
  });

  it('auto: JSONL when the first non-empty line is a JSON object, so a broken later line is an error', () => {
    expect(detectFormat('\n{"a":1}\n\n{"b":2}')).toBe('jsonl');
    expect(detectFormat('KING:\n{"a":1}')).toBe('text');
    expect(detectFormat('{braces} in prose')).toBe('text');
    expect(detectFormat('[1, 2]')).toBe('text');
    const e = dataError(() =>
      parseTrainData('{"prompt":"a","completion":"b"}\n{"prompt": "x", ', 'auto', tok, 32),
    );
    expect(e.data).toMatchObject({ reason: 'malformed-json', line: 2 });
  });
});

describe('typed errors', () => {
  it('empty data', () => {
    expect(dataError(() => parseTrainData('  \n\n', 'auto', tok, 32)).data.reason).toBe('empty');
  });

  it('oversized data is refused before anything is tokenized', () => {
    let encoded = 0;
    const counting: DataTokenizer = {
      ...tok,
      encode: (s) => {
        encoded++;
        return tok.encode(s);
      },
    };
    const big = 'a'.repeat(MAX_DATA_BYTES + 1);
    const e = dataError(() => parseTrainData(big, 'text', counting, 32));
    expect(e.data).toMatchObject({ reason: 'too-large', maxBytes: MAX_DATA_BYTES });
    expect(encoded).toBe(0);
    // Multi-byte text counts UTF-8 bytes, not UTF-16 units.
    expect(utf8Length('é✓😀')).toBe(new TextEncoder().encode('é✓😀').length);
    const wide = '✓'.repeat(Math.ceil(MAX_DATA_BYTES / 3) + 1);
    expect(dataError(() => parseTrainData(wide, 'text', counting, 32)).data.reason).toBe('too-large');
    expect(encoded).toBe(0);
  });

  it('malformed JSON names its 1-based line', () => {
    const data = '{"prompt":"a","completion":"b"}\n\n{"prompt": "a", "completion": }\n';
    const e = dataError(() => parseTrainData(data, 'jsonl', tok, 32));
    expect(e.data).toMatchObject({ reason: 'malformed-json', line: 3 });
    expect(e.message).toMatch(/^line 3:/);
  });

  it('a line that is not an object, or lacks the fields', () => {
    expect(
      dataError(() => parseTrainData('{"prompt":"a","completion":"b"}\n[1,2]', 'jsonl', tok, 32)).data,
    ).toMatchObject({
      reason: 'not-object',
      line: 2,
    });
    const e = dataError(() =>
      parseTrainData('{"prompt":"a","completion":"b"}\n{"prompt":"x"}', 'jsonl', tok, 32),
    );
    expect(e.data).toMatchObject({ reason: 'missing-fields', line: 2, keys: ['prompt'] });
    const m = dataError(() => parseTrainData('{"messages":[{"role":"user"}]}', 'jsonl', tok, 32));
    expect(m.data).toMatchObject({ reason: 'missing-fields', line: 1, index: 0 });
  });

  it('an example with no target tokens after truncation (or no assistant turn)', () => {
    const long = JSON.stringify({ prompt: 'word '.repeat(40), completion: 'KING' });
    const e = dataError(() => parseTrainData(`{"prompt":"a","completion":"b"}\n${long}`, 'jsonl', tok, 16));
    expect(e.data).toMatchObject({ reason: 'no-targets', line: 2, seqLen: 16 });
    const chat = JSON.stringify({ messages: [{ role: 'user', content: 'hi' }] });
    expect(dataError(() => parseTrainData(chat, 'jsonl', tok, 64)).data).toMatchObject({
      reason: 'no-targets',
      line: 1,
    });
  });

  it('chat data on a model without a chat template', () => {
    const chat = JSON.stringify({
      messages: [
        { role: 'user', content: 'hi' },
        { role: 'assistant', content: 'yo' },
      ],
    });
    const e = dataError(() => parseTrainData(chat, 'jsonl', { ...tok, chatTemplate: null }, 64));
    expect(e.data).toMatchObject({ reason: 'no-chat-template', line: 1 });
  });
});

describe('order, split and batches', () => {
  const examples = parseTrainData(
    Array.from({ length: 23 }, (_, i) =>
      JSON.stringify({ prompt: `n${i} `, completion: 'x'.repeat(1 + (i % 5)) }),
    ).join('\n'),
    'jsonl',
    tok,
    32,
  ).examples;

  it('a seeded permutation is deterministic and a permutation', () => {
    const a = seededPermutation(50, 7);
    expect(Array.from(a)).toEqual(Array.from(seededPermutation(50, 7)));
    expect(Array.from(a)).not.toEqual(Array.from(seededPermutation(50, 8)));
    expect([...a].sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i));
  });

  it('eval split: deterministic, disjoint, at least one eval and one train example', () => {
    const s1 = splitExamples(examples, 0.2, 3);
    const s2 = splitExamples(examples, 0.2, 3);
    expect(s1.eval.length).toBe(5);
    expect(s1.train.length).toBe(18);
    expect(s1.eval).toEqual(s2.eval);
    for (const e of s1.eval) expect(s1.train).not.toContain(e);
    expect(splitExamples(examples, 0.2, 4).eval).not.toEqual(s1.eval);
    expect(splitExamples(examples, 0, 3).eval).toHaveLength(0);
    expect(splitExamples(examples.slice(0, 3), 0.01, 3).eval).toHaveLength(1);
    expect(splitExamples(examples.slice(0, 1), 0.5, 3).train).toHaveLength(1);
  });

  it('the batch schedule is a pure function of (seed, micro-batch index); each epoch covers every example', () => {
    const a = new BatchSchedule(examples, 4, 11, EOS);
    const b = new BatchSchedule(examples, 4, 11, EOS);
    expect(a.perEpoch).toBe(6);
    const epoch0 = Array.from({ length: 6 }, (_, k) => a.indices(k)).flat();
    expect([...epoch0].sort((x, y) => x - y)).toEqual(Array.from({ length: 23 }, (_, i) => i));
    const epoch1 = Array.from({ length: 6 }, (_, k) => a.indices(6 + k)).flat();
    expect(epoch1).not.toEqual(epoch0);
    // Random access (as after a resume) gives the same batches as walking from the start.
    expect(b.indices(9)).toEqual(a.indices(9));
    expect(b.batch(2)).toEqual(a.batch(2));
  });

  it('right padding: masks, positions and pad ids', () => {
    const batch = makeBatch([examples[0]!, examples[4]!], EOS);
    const [e0, e4] = [examples[0]!, examples[4]!];
    expect(batch.T).toBe(Math.max(e0.ids.length, e4.ids.length));
    const T = batch.T;
    for (const [b, e] of [
      [0, e0],
      [1, e4],
    ] as const) {
      for (let t = 0; t < T; t++) {
        const real = t < e.ids.length;
        expect(batch.attentionMask![b * T + t]).toBe(real ? 1 : 0);
        expect(batch.labelMask![b * T + t]).toBe(real ? e.target[t] : 0);
        expect(batch.tokens[b * T + t]).toBe(real ? e.ids[t] : EOS);
        expect(batch.positions![b * T + t]).toBe(t);
      }
    }
    const nTargets = [e0, e4].reduce((n, e) => n + e.target.reduce((a, x) => a + x, 0), 0);
    expect(targetCount(batch)).toBe(nTargets);
  });
});
