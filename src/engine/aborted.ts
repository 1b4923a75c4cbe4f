import type { GenerateResult } from './types.ts';

/**
 * The result of a request aborted before it started (no tokens, finishReason 'abort'): what the engine
 * returns for a request cancelled in the queue and what `<weblora-chat>` shows for a prompt stopped
 * while its model was still loading. Its own module so the element can use it without the decode code.
 */
export function abortedResult(): GenerateResult {
  return {
    text: '',
    tokenIds: [],
    finishReason: 'abort',
    timings: { prefillMs: 0, decodeMs: 0, tokensPerSecond: 0, promptTokens: 0 },
  };
}
