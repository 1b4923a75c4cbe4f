/**
 * Text <-> token ids for a model package, on @huggingface/tokenizers (the same tokenizer code
 * transformers.js uses, so ids match it exactly). Encoding never adds special tokens: our models are
 * prompted with raw text (chat templates, when used, put special tokens in the text themselves).
 * This file deliberately does not render chat templates or stream-decode partial UTF-8.
 */
import { Tokenizer } from '@huggingface/tokenizers';
import { ModelPackageError } from '../errors.ts';

function tokenContent(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as { content?: unknown }).content === 'string') {
    return (v as { content: string }).content;
  }
  return null;
}

export class TextTokenizer {
  readonly eosTokenId: number;
  readonly chatTemplate: string | null;
  private readonly tok: Tokenizer;

  private constructor(tok: Tokenizer, eosTokenId: number, chatTemplate: string | null) {
    this.tok = tok;
    this.eosTokenId = eosTokenId;
    this.chatTemplate = chatTemplate;
  }

  /**
   * Builds from parsed tokenizer.json and tokenizer_config.json. The eos id comes from
   * tokenizer_config's `eos_token`; `fallbackEosId` (e.g. config.json's eos_token_id) is used when
   * the config names none. Throws ModelPackageError when neither resolves to a vocabulary entry.
   */
  static fromJSON(tokenizerJson: unknown, tokenizerConfig: unknown, fallbackEosId?: number): TextTokenizer {
    if (typeof tokenizerJson !== 'object' || tokenizerJson === null) {
      throw new ModelPackageError('tokenizer.json must hold a JSON object', { file: 'tokenizer.json' });
    }
    const cfg = (
      typeof tokenizerConfig === 'object' && tokenizerConfig !== null ? tokenizerConfig : {}
    ) as Record<string, unknown>;
    let tok: Tokenizer;
    try {
      tok = new Tokenizer(tokenizerJson, cfg);
    } catch (e) {
      throw new ModelPackageError(`tokenizer.json could not be loaded: ${String(e)}`, {
        file: 'tokenizer.json',
      });
    }
    const eosText = tokenContent(cfg.eos_token);
    const eos = (eosText !== null ? tok.token_to_id(eosText) : undefined) ?? fallbackEosId;
    if (eos === undefined) {
      throw new ModelPackageError('no eos token: tokenizer_config.json has no eos_token in the vocabulary', {
        file: 'tokenizer_config.json',
        field: 'eos_token',
        value: eosText,
      });
    }
    const tmpl = cfg.chat_template;
    return new TextTokenizer(tok, eos, typeof tmpl === 'string' ? tmpl : null);
  }

  /** Token ids of `text`, with no special tokens added. */
  encode(text: string): number[] {
    return this.tok.encode(text, { add_special_tokens: false }).ids;
  }

  /** Text of `ids`; special tokens (eos) are dropped unless `skipSpecialTokens` is false. */
  decode(ids: ArrayLike<number>, { skipSpecialTokens = true }: { skipSpecialTokens?: boolean } = {}): string {
    return this.tok.decode(Array.from(ids), { skip_special_tokens: skipSpecialTokens });
  }

  /** Number of entries including added tokens. */
  get vocabSize(): number {
    return this.tok.get_vocab(true).size;
  }
}
