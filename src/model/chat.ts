/**
 * Chat messages → prompt text through the model's own `chat_template` (tokenizer_config.json), rendered
 * with @huggingface/jinja exactly as transformers' `apply_chat_template(..., tokenize=False)` does:
 * variables `messages`, `add_generation_prompt` and the special tokens (`bos_token`, `eos_token`,
 * `pad_token`, `unk_token`) as strings. A model without a template cannot take messages: that is a
 * ModelPackageError, never a silent fallback format. It deliberately does not tokenize, truncate,
 * or support tools/documents.
 */
import { Template } from '@huggingface/jinja';
import { InvalidOptionError, ModelPackageError } from '../errors.ts';

const SPECIAL_TOKEN_KEYS = ['bos_token', 'eos_token', 'pad_token', 'unk_token'] as const;

function tokenText(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as { content?: unknown }).content === 'string') {
    return (v as { content: string }).content;
  }
  return null;
}

/** The special-token strings of tokenizer_config.json that templates may reference. */
export function specialTokensOf(tokenizerConfig: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of SPECIAL_TOKEN_KEYS) {
    const t = tokenText(tokenizerConfig[k]);
    if (t !== null) out[k] = t;
  }
  return out;
}

const compiled = new Map<string, Template>();

function compile(template: string): Template {
  let t = compiled.get(template);
  if (!t) {
    try {
      t = new Template(template);
    } catch (e) {
      throw new ModelPackageError(`tokenizer_config.json: chat_template does not parse: ${String(e)}`, {
        file: 'tokenizer_config.json',
        field: 'chat_template',
      });
    }
    if (compiled.size > 8) compiled.clear();
    compiled.set(template, t);
  }
  return t;
}

function checkMessages(messages: readonly ChatMessage[]): void {
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new InvalidOptionError('messages must be a non-empty array of { role, content }', {
      option: 'messages',
    });
  }
  messages.forEach((m, i) => {
    if (typeof m?.role !== 'string' || typeof m?.content !== 'string') {
      throw new InvalidOptionError(`messages[${i}] must be { role: string, content: string }`, {
        option: 'messages',
        index: i,
      });
    }
  });
}

export interface RenderChatOptions {
  /** Append the template's assistant-turn opener (default true, as for generation). */
  addGenerationPrompt?: boolean;
  /** Special tokens as strings (see specialTokensOf). */
  specialTokens?: Record<string, string>;
}

/**
 * Renders `messages` with `template`. Throws ModelPackageError when `template` is null (the model has
 * no chat_template: pass a raw `prompt` instead) or does not parse/render, InvalidOptionError for
 * malformed messages.
 */
export function renderChat(
  template: string | null,
  messages: readonly ChatMessage[],
  opts: RenderChatOptions = {},
): string {
  if (template === null) {
    throw new ModelPackageError(
      'this model has no chat_template in tokenizer_config.json, so it cannot take chat messages; ' +
        'pass a raw `prompt` string instead',
      { file: 'tokenizer_config.json', field: 'chat_template' },
    );
  }
  checkMessages(messages);
  const t = compile(template);
  try {
    return t.render({
      ...opts.specialTokens,
      messages: messages.map((m) => ({ role: m.role, content: m.content })),
      add_generation_prompt: opts.addGenerationPrompt ?? true,
    });
  } catch (e) {
    throw new ModelPackageError(`chat_template failed to render these messages: ${String(e)}`, {
      file: 'tokenizer_config.json',
      field: 'chat_template',
    });
  }
}

export interface ChatMessage {
  role: string;
  content: string;
}
