// Chat template rendering with @huggingface/jinja: the default model's own chat_template gives the exact
// text transformers' apply_chat_template(tokenize=False) would, special tokens are visible to templates,
// and a model without a template (or malformed messages) fails with a typed error.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InvalidOptionError, ModelPackageError } from '../../../src/errors.ts';
import { renderChat, specialTokensOf } from '../../../src/model/chat.ts';

const cfg = JSON.parse(
  readFileSync(
    resolve(import.meta.dirname, '../../../public/models/weblora-shakespeare/tokenizer_config.json'),
    'utf8',
  ),
) as Record<string, unknown>;
const template = cfg.chat_template as string;

describe('renderChat', () => {
  it('renders the default model template exactly (with generation prompt)', () => {
    const text = renderChat(template, [
      { role: 'system', content: 'You speak in verse.' },
      { role: 'user', content: 'Who art thou?' },
      { role: 'assistant', content: 'A humble player.' },
      { role: 'user', content: 'Speak on.' },
    ]);
    expect(text).toBe(
      'SYSTEM:\nYou speak in verse.\n\nUSER:\nWho art thou?\n\nASSISTANT:\nA humble player.\n\nUSER:\nSpeak on.\n\nASSISTANT:\n',
    );
  });

  it('omits the generation prompt when asked', () => {
    expect(renderChat(template, [{ role: 'user', content: 'Hi' }], { addGenerationPrompt: false })).toBe(
      'USER:\nHi\n\n',
    );
  });

  it('passes special tokens from tokenizer_config.json to the template', () => {
    const special = specialTokensOf(cfg);
    expect(special).toEqual({
      bos_token: '<|endoftext|>',
      eos_token: '<|endoftext|>',
      pad_token: '<|endoftext|>',
    });
    const t = '{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}';
    expect(renderChat(t, [{ role: 'user', content: 'x' }], { specialTokens: special })).toBe(
      '<|endoftext|>x<|endoftext|>',
    );
    expect(specialTokensOf({ eos_token: { content: '</s>', lstrip: false } })).toEqual({ eos_token: '</s>' });
  });

  it('a model without a chat_template cannot take messages: ModelPackageError naming the field', () => {
    const err = (() => {
      try {
        renderChat(null, [{ role: 'user', content: 'Hi' }]);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(ModelPackageError);
    expect((err as ModelPackageError).data).toMatchObject({ field: 'chat_template' });
  });

  it('rejects malformed messages and templates with typed errors', () => {
    expect(() => renderChat(template, [])).toThrow(InvalidOptionError);
    expect(() => renderChat(template, [{ role: 'user' } as never])).toThrow(InvalidOptionError);
    expect(() => renderChat('{% for %}', [{ role: 'user', content: 'x' }])).toThrow(ModelPackageError);
  });
});
