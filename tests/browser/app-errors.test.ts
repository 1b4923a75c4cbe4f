// The demo's own failures are typed errors like the library's (src/errors.ts): a missing element of the
// demo markup, and an example-adapter index that cannot be fetched or read (src/app/preinstall.ts,
// whose caller logs and skips it). fetch is stubbed per test; nothing is stored.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { byId } from '../../src/app/dom.ts';
import { readExampleIndex } from '../../src/app/preinstall.ts';
import { FetchError, WebLoraError } from '../../src/errors.ts';

const INDEX = new URL('/adapters/index.json', location.href).href;

afterEach(() => {
  vi.unstubAllGlobals();
});

async function errorOf(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection');
}

describe('demo errors', () => {
  it('byId: a missing element is a WebLoraError naming the id', () => {
    const el = document.createElement('div');
    el.id = 'app-errors-present';
    document.body.append(el);
    expect(byId('app-errors-present')).toBe(el);
    el.remove();
    const err = (() => {
      try {
        byId('app-errors-missing');
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(WebLoraError);
    expect((err as WebLoraError).name).toBe('WebLoraError');
    expect((err as WebLoraError).data).toEqual({ id: 'app-errors-missing' });
    expect((err as Error).message).toContain('#app-errors-missing');
  });

  it('readExampleIndex: HTTP errors and network failures are FetchErrors with file, url (and status)', async () => {
    vi.stubGlobal('fetch', async () => new Response('no', { status: 404 }));
    const notFound = await errorOf(readExampleIndex());
    expect(notFound).toBeInstanceOf(FetchError);
    expect((notFound as FetchError).data).toEqual({ file: 'adapters/index.json', url: INDEX, status: 404 });

    vi.stubGlobal('fetch', () => Promise.reject(new TypeError('Failed to fetch')));
    const offline = await errorOf(readExampleIndex());
    expect(offline).toBeInstanceOf(FetchError);
    expect((offline as FetchError).data).toEqual({ file: 'adapters/index.json', url: INDEX });
    expect((offline as Error).message).toContain('Failed to fetch');
  });

  it('readExampleIndex: an index that is not JSON with an "adapters" array is a WebLoraError', async () => {
    for (const body of ['<!doctype html>', '{"examples": []}', 'null']) {
      vi.stubGlobal('fetch', async () => new Response(body, { status: 200 }));
      const err = await errorOf(readExampleIndex());
      expect(err, body).toBeInstanceOf(WebLoraError);
      expect(err, body).not.toBeInstanceOf(FetchError);
      expect((err as WebLoraError).data).toEqual({ file: 'adapters/index.json', url: INDEX });
    }
  });

  it('readExampleIndex: keeps the well-formed entries of a good index', async () => {
    const adapters = [{ name: 'a', path: 'adapters/a/' }, { name: 3 }, { name: 'b', path: 'adapters/b/' }];
    vi.stubGlobal('fetch', async () => Response.json({ adapters }));
    expect((await readExampleIndex()).map((a) => a.name)).toEqual(['a', 'b']);
  });
});
