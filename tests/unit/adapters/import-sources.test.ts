// Adapter URLs (src/adapters/import-sources.ts) with an injected fetch: a host's HTML fallback page and a
// 404 are "nothing at this URL" (NothingAtUrlError), bytes that are not safetensors are
// NotSafetensorsError (import.ts), and Hugging Face repo page URLs fetch their /resolve/<rev>/ files.
import { describe, expect, it } from 'vitest';
import { importPeftAdapter, looksLikeSafetensors } from '../../../src/adapters/import.ts';
import { defaultAdapterName, inputFromUrl, resolveHubUrl } from '../../../src/adapters/import-sources.ts';
import { FetchError, NothingAtUrlError, NotSafetensorsError, SafetensorsError } from '../../../src/errors.ts';
import { errorOf } from '../../helpers/errors.ts';
import { loadPeftFixture } from '../../helpers/fixtures.ts';
import { MODEL } from './model-targets.ts';

const fx = loadPeftFixture('peft-adapter');
const rejection = (p: Promise<unknown>): Promise<Error & { data: Record<string, unknown> }> =>
  p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e as Error & { data: Record<string, unknown> },
  );
const INDEX_HTML = '<!doctype html>\n<html lang="en"><head><title>app</title></head><body></body></html>';

/** A fetch serving `files` by absolute URL; anything else is 404, or the HTML page when `spa`. */
function host(files: Record<string, Uint8Array | string>, opts: { spa?: boolean; htmlType?: boolean } = {}) {
  const asked: string[] = [];
  const f = (async (u: string) => {
    asked.push(u);
    const body = files[u];
    if (body !== undefined) return new Response(body as BodyInit);
    if (opts.spa) {
      const headers: Record<string, string> =
        opts.htmlType === false ? {} : { 'Content-Type': 'text/html; charset=utf-8' };
      return new Response(INDEX_HTML, { status: 200, headers });
    }
    return new Response('not found', { status: 404 });
  }) as unknown as typeof fetch;
  return { f, asked };
}

describe('inputFromUrl: nothing at the URL', () => {
  it('an HTML fallback page (status 200, text/html) is NothingAtUrlError, not a safetensors error', async () => {
    const { f } = host({}, { spa: true });
    const e = await rejection(inputFromUrl('https://app.example/adapters/typo/', f));
    expect(e).toBeInstanceOf(NothingAtUrlError);
    expect(e).toBeInstanceOf(FetchError);
    expect(e.name).toBe('NothingAtUrlError');
    expect(e.message).toMatch(
      /^nothing at https:\/\/app\.example\/adapters\/typo\/adapter_model\.safetensors: .*HTML page/,
    );
    expect(e.data).toMatchObject({ status: 200, htmlFallback: true });
  });

  it('an HTML page without a Content-Type is recognised by its markup', async () => {
    const { f } = host({}, { spa: true, htmlType: false });
    await expect(inputFromUrl('https://app.example/x.safetensors', f)).rejects.toBeInstanceOf(
      NothingAtUrlError,
    );
  });

  it('404 is NothingAtUrlError with the status', async () => {
    const { f } = host({});
    const e = await rejection(inputFromUrl('https://h/none/', f));
    expect(e).toBeInstanceOf(NothingAtUrlError);
    expect(e.message).toMatch(/HTTP 404/);
  });

  it('weights present but the config answered with HTML: a single-file import (config absent)', async () => {
    const { f } = host({ 'https://h/a/adapter_model.safetensors': fx.bytes }, { spa: true });
    const inp = await inputFromUrl('https://h/a/', f);
    expect(inp.config).toBeUndefined();
    expect(inp.weights).toEqual(fx.bytes);
  });
});

describe('not a safetensors file', () => {
  it('text, HTML-like or random bytes are NotSafetensorsError (a SafetensorsError), with the reason', async () => {
    const { f } = host({ 'https://h/j/adapter_model.safetensors': 'this is not a safetensors file' });
    const inp = await inputFromUrl('https://h/j/', f);
    const e = errorOf(() => importPeftAdapter(inp, MODEL));
    expect(e).toBeInstanceOf(NotSafetensorsError);
    expect(e).toBeInstanceOf(SafetensorsError);
    expect(e.message).toMatch(/^not a safetensors file: its first bytes "this is not a sa"/);
    const junk = new Uint8Array(64).map((_, i) => (i * 37 + 200) % 256);
    expect(looksLikeSafetensors(junk)).toBe(false);
    expect(errorOf(() => importPeftAdapter({ weights: junk }, MODEL))).toBeInstanceOf(NotSafetensorsError);
  });

  it('real safetensors, even damaged ones, still look like safetensors', () => {
    expect(looksLikeSafetensors(fx.bytes)).toBe(true);
    const badLength = fx.bytes.slice();
    new DataView(badLength.buffer).setBigUint64(0, 2n ** 40n, true); // header '{' still in place
    expect(looksLikeSafetensors(badLength)).toBe(true);
    expect(looksLikeSafetensors(fx.bytes.slice(0, 5))).toBe(true); // reported as truncated
  });
});

describe('Hugging Face repo URLs', () => {
  it('resolveHubUrl maps repo, tree and blob pages to resolve/ URLs', () => {
    expect(resolveHubUrl('https://huggingface.co/me/my-lora')).toBe(
      'https://huggingface.co/me/my-lora/resolve/main/',
    );
    expect(resolveHubUrl('https://huggingface.co/me/my-lora/')).toBe(
      'https://huggingface.co/me/my-lora/resolve/main/',
    );
    expect(resolveHubUrl('https://huggingface.co/me/loras/tree/v2/shout')).toBe(
      'https://huggingface.co/me/loras/resolve/v2/shout/',
    );
    expect(resolveHubUrl('https://huggingface.co/me/loras/tree/main')).toBe(
      'https://huggingface.co/me/loras/resolve/main/',
    );
    expect(resolveHubUrl('https://huggingface.co/me/l/blob/main/x/adapter_model.safetensors')).toBe(
      'https://huggingface.co/me/l/resolve/main/x/adapter_model.safetensors',
    );
    const resolved = 'https://huggingface.co/me/l/resolve/main/';
    expect(resolveHubUrl(resolved)).toBe(resolved);
    expect(resolveHubUrl('https://example.com/me/l')).toBe('https://example.com/me/l');
    expect(resolveHubUrl('adapters/weblora-shout/')).toBe('adapters/weblora-shout/');
  });

  it('inputFromUrl fetches the repo files from resolve/<rev>/, and the name is the repo or sub-folder', async () => {
    const { f, asked } = host({
      'https://huggingface.co/me/my-lora/resolve/main/adapter_model.safetensors': fx.bytes,
      'https://huggingface.co/me/my-lora/resolve/main/adapter_config.json': fx.configJson,
    });
    const inp = await inputFromUrl('https://huggingface.co/me/my-lora', f);
    expect(inp.weights).toEqual(fx.bytes);
    expect(new TextDecoder().decode(inp.config as Uint8Array)).toBe(fx.configJson);
    expect(asked.sort()).toEqual([
      'https://huggingface.co/me/my-lora/resolve/main/adapter_config.json',
      'https://huggingface.co/me/my-lora/resolve/main/adapter_model.safetensors',
    ]);
    expect(defaultAdapterName({ url: 'https://huggingface.co/me/my-lora' })).toBe('my-lora');
    expect(defaultAdapterName({ url: 'https://huggingface.co/me/loras/tree/v2/shout' })).toBe('shout');
    expect(defaultAdapterName({ url: 'https://huggingface.co/me/loras/tree/v2' })).toBe('loras');
    expect(defaultAdapterName({ url: 'https://huggingface.co/me/my-lora/resolve/main/' })).toBe('my-lora');
  });
});
