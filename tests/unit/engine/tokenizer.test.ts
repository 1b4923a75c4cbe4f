// The JS tokenizer (@huggingface/tokenizers on our tokenizer.json) must give exactly the ids the model
// was trained on: expected ids below come from scripts/py/bpe.py (the trainer's own encoder) with the
// training merges, /tmp/wl-train/merges.json.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { TextTokenizer } from '../../../src/engine/tokenizer.ts';
import { ModelPackageError } from '../../../src/errors.ts';

const PKG = fileURLToPath(new URL('../../../public/models/weblora-shakespeare/', import.meta.url));
const CORPUS = fileURLToPath(new URL('../../../data/tinyshakespeare.txt', import.meta.url));
const readJson = (f: string): unknown => JSON.parse(readFileSync(PKG + f, 'utf8'));

const tok = TextTokenizer.fromJSON(readJson('tokenizer.json'), readJson('tokenizer_config.json'));

// /usr/bin/python3 -c "import bpe; t=bpe.Tokenizer(bpe.load_merges('/tmp/wl-train/merges.json')); print(t.encode(s))"
const KNOWN: Array<[string, number[]]> = [
  [
    'ROMEO:\nBut soft, what light through yonder window breaks?',
    [
      813, 58, 10, 449, 365, 102, 116, 44, 435, 357, 350, 284, 114, 763, 282, 500, 272, 263, 508, 299, 755,
      572, 115, 63,
    ],
  ],
  [
    'First Citizen:\nBefore we proceed any further, hear me speak.',
    [640, 417, 890, 58, 10, 769, 555, 331, 581, 306, 315, 806, 271, 361, 701, 44, 677, 320, 621, 46],
  ],
  [
    "KING RICHARD III:\n'Tis now the winter of our discontent.",
    [445, 664, 903, 58, 10, 39, 1011, 497, 266, 263, 262, 404, 296, 409, 607, 99, 1007, 340, 46],
  ],
];

describe('TextTokenizer', () => {
  it('encodes fixed strings to the ids the trainer produced', () => {
    for (const [text, ids] of KNOWN) expect(tok.encode(text), text).toEqual(ids);
  });

  it('exposes eos id 1023 (<|endoftext|>) and the chat template', () => {
    expect(tok.eosTokenId).toBe(1023);
    expect(tok.vocabSize).toBe(1024);
    expect(tok.chatTemplate).toContain('ASSISTANT');
  });

  it('adds no special tokens and drops eos on decode by default', () => {
    const ids = tok.encode('Hello');
    expect(ids).not.toContain(1023);
    expect(tok.decode([...ids, 1023])).toBe('Hello');
    expect(tok.decode([...ids, 1023], { skipSpecialTokens: false })).toBe('Hello<|endoftext|>');
  });

  it('round-trips the first 5000 chars of tinyshakespeare', () => {
    const text = readFileSync(CORPUS, 'utf8').slice(0, 5000);
    const ids = tok.encode(text);
    // Same checksums as bpe.py on this text: len 2014, sum 671153, position-weighted sum mod 1e9+7.
    expect(ids.length).toBe(2014);
    expect(ids.reduce((a, b) => a + b, 0)).toBe(671153);
    expect(ids.reduce((a, b, k) => (a + b * (k + 1)) % 1_000_000_007, 0)).toBe(666009899);
    expect(tok.decode(ids)).toBe(text);
  });

  it('round-trips non-ASCII text through byte-level BPE', () => {
    const s = 'Café — naïve “quotes” 日本語 🎭';
    expect(tok.decode(tok.encode(s))).toBe(s);
  });

  it('rejects a malformed tokenizer.json with ModelPackageError', () => {
    expect(() => TextTokenizer.fromJSON(null, {})).toThrow(ModelPackageError);
    expect(() => TextTokenizer.fromJSON(readJson('tokenizer.json'), { eos_token: '<|nope|>' })).toThrow(
      ModelPackageError,
    );
  });
});
