// fetchModelFiles in real Chromium against the default model package served from our own origin
// (publicDir → /models/weblora-shakespeare/), with real Cache Storage: streamed progress, bytes equal to
// a direct fetch, the second load served from the cache with zero network requests (counted by an
// injected fetch, and with a fetch that always fails = offline), verification before caching (sha256,
// size), HTTP errors, abort mid-download, listing/deleting cached models, and user-picked local files.
import { beforeAll, describe, expect, it } from 'vitest';
import { localFilesSource } from '../../src/engine/local-files.ts';
import {
  deleteCachedModel,
  fetchModelFiles,
  listCachedModels,
  type ModelFileProgress,
  type ModelFileSpec,
  sha256Hex,
} from '../../src/engine/model-files.ts';
import { AbortError, FetchError, ModelPackageError } from '../../src/errors.ts';

const BASE = '/models/weblora-shakespeare/';
const ABS_BASE = new URL(BASE, location.href).href;
const CACHE = 'weblora-test-model-files';
const REAL: ModelFileSpec[] = [
  { path: 'config.json' },
  { path: 'tokenizer.json' },
  { path: 'onnx/model.onnx' },
];
const MISSING_OPTIONAL: ModelFileSpec = { path: 'onnx/not_there.onnx', optional: true };

const direct = new Map<string, Uint8Array>();

/** A fetch that records every URL it is asked for, then does the real fetch. */
function countingFetch(): { fetch: typeof fetch; urls: string[] } {
  const urls: string[] = [];
  return {
    urls,
    fetch: (input, init) => {
      urls.push(String(input));
      return fetch(input, init);
    },
  };
}

/** A fetch that always fails like a browser offline does (TypeError). */
const offlineFetch: typeof fetch = () => Promise.reject(new TypeError('Failed to fetch'));

/** Byte equality without vitest's element-by-element deep equal (slow on a 20 MB array). */
function sameBytes(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  if (!a || !b || a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

async function cachedUrls(name: string): Promise<string[]> {
  const c = await caches.open(name);
  return (await c.keys()).map((r) => r.url).sort();
}

async function errorOf(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection');
}

beforeAll(async () => {
  for (const name of await caches.keys()) if (name.startsWith('weblora-test-')) await caches.delete(name);
  for (const { path } of REAL) {
    const r = await fetch(BASE + path);
    expect(r.ok, path).toBe(true);
    direct.set(path, new Uint8Array(await r.arrayBuffer()));
  }
});

describe('fetchModelFiles with Cache Storage', () => {
  it('first load streams with monotonic progress ending at the file sizes, and caches every file', async () => {
    const events: ModelFileProgress[] = [];
    const net = countingFetch();
    const got = await fetchModelFiles(BASE, [...REAL, MISSING_OPTIONAL], {
      cacheName: CACHE,
      fetch: net.fetch,
      onProgress: (p) => events.push(p),
    });
    expect(net.urls.length).toBe(4);
    expect([...got.keys()]).toEqual(REAL.map((s) => s.path)); // the missing optional file is left out
    let lastOverall = 0;
    for (const { path } of REAL) {
      const want = direct.get(path)!;
      expect(sameBytes(got.get(path), want), path).toBe(true);
      const mine = events.filter((e) => e.file === path);
      for (let j = 1; j < mine.length; j++)
        expect(mine[j]!.loaded).toBeGreaterThanOrEqual(mine[j - 1]!.loaded);
      expect(mine[0]!.loaded).toBe(0);
      expect(mine.at(-1)!.loaded).toBe(want.byteLength);
      expect(mine.every((e) => e.total === want.byteLength && !e.fromCache)).toBe(true);
    }
    for (const e of events) {
      expect(e.overallLoaded).toBeGreaterThanOrEqual(lastOverall);
      lastOverall = e.overallLoaded;
    }
    const sum = REAL.reduce((a, s) => a + direct.get(s.path)!.byteLength, 0);
    expect(lastOverall).toBe(sum);
    // The 20 MB graph really streamed: progress in between 0 and the end.
    const onnx = events.filter((e) => e.file === 'onnx/model.onnx');
    expect(onnx.some((e) => e.loaded > 0 && e.loaded < e.total!)).toBe(true);
    expect(await cachedUrls(CACHE)).toEqual(REAL.map((s) => ABS_BASE + s.path).sort());
  });

  it('second load is served from Cache Storage: no network request, progress from the cache', async () => {
    const net = countingFetch();
    const events: ModelFileProgress[] = [];
    const got = await fetchModelFiles(BASE, REAL, {
      cacheName: CACHE,
      fetch: net.fetch,
      onProgress: (p) => events.push(p),
    });
    expect(net.urls).toEqual([]);
    const sum = REAL.reduce((a, s) => a + direct.get(s.path)!.byteLength, 0);
    expect(events.length).toBeGreaterThan(0);
    expect(events.every((e) => e.fromCache && e.overallTotal === sum)).toBe(true);
    expect(events.at(-1)!.overallLoaded).toBe(sum);
    for (const { path } of REAL) expect(sameBytes(got.get(path), direct.get(path)), path).toBe(true);
  });

  it('works offline once cached (an optional file that was never cached is just absent)', async () => {
    const got = await fetchModelFiles(BASE, [...REAL, MISSING_OPTIONAL], {
      cacheName: CACHE,
      fetch: offlineFetch,
    });
    expect([...got.keys()]).toEqual(REAL.map((s) => s.path));
    const err = await errorOf(
      fetchModelFiles(BASE, [{ path: 'generation_config.json' }], { cacheName: CACHE, fetch: offlineFetch }),
    );
    expect(err).toBeInstanceOf(FetchError);
  });

  it('lists cached models with sizes and deletes them', async () => {
    const models = await listCachedModels(CACHE);
    expect(models.map((m) => m.baseUrl)).toEqual([ABS_BASE]);
    const files = models[0]!.files;
    expect(files.map((f) => f.path)).toEqual(REAL.map((s) => s.path).sort());
    for (const f of files) expect(f.size).toBe(direct.get(f.path)!.byteLength);
    expect(models[0]!.size).toBe(files.reduce((a, f) => a + f.size!, 0));

    const removed = await deleteCachedModel(BASE, CACHE);
    expect(removed.map((f) => f.path).sort()).toEqual(REAL.map((s) => s.path).sort());
    expect(await listCachedModels(CACHE)).toEqual([]);
    expect(await cachedUrls(CACHE)).toEqual([]);
    expect(await listCachedModels('weblora-test-never-created')).toEqual([]);
  });
});

describe('verification before caching', () => {
  it('a wrong sha256 → FetchError naming file, expected and actual; nothing cached', async () => {
    const name = 'weblora-test-sha';
    const actual = await sha256Hex(direct.get('config.json') as Uint8Array<ArrayBuffer>);
    const wrong = '0'.repeat(64);
    const err = await errorOf(
      fetchModelFiles(BASE, [{ path: 'config.json', sha256: wrong }], { cacheName: name }),
    );
    expect(err).toBeInstanceOf(FetchError);
    expect((err as FetchError).data).toMatchObject({
      file: 'config.json',
      check: 'sha256',
      expected: wrong,
      actual,
    });
    expect((err as Error).message).toContain('config.json');
    expect(await cachedUrls(name)).toEqual([]);

    // The right hash passes and is remembered with the entry; a spec with another hash ignores it.
    await fetchModelFiles(BASE, [{ path: 'config.json', sha256: actual.toUpperCase() }], { cacheName: name });
    expect(await cachedUrls(name)).toEqual([`${ABS_BASE}config.json`]);
    const net = countingFetch();
    await fetchModelFiles(BASE, [{ path: 'config.json', sha256: actual }], {
      cacheName: name,
      fetch: net.fetch,
    });
    expect(net.urls).toEqual([]);
    const stale = await errorOf(
      fetchModelFiles(BASE, [{ path: 'config.json', sha256: wrong }], { cacheName: name, fetch: net.fetch }),
    );
    expect(stale).toBeInstanceOf(FetchError);
    expect(net.urls).toEqual([`${ABS_BASE}config.json`]);
    expect(await cachedUrls(name)).toEqual([]);
  });

  it('a wrong size → FetchError with expected and actual; nothing cached', async () => {
    const name = 'weblora-test-size';
    const size = direct.get('tokenizer.json')!.byteLength;
    const err = await errorOf(
      fetchModelFiles(BASE, [{ path: 'tokenizer.json', size: size + 1 }], { cacheName: name }),
    );
    expect(err).toBeInstanceOf(FetchError);
    expect((err as FetchError).data).toMatchObject({
      file: 'tokenizer.json',
      expected: size + 1,
      actual: size,
    });
    expect(await cachedUrls(name)).toEqual([]);
  });
});

describe('errors', () => {
  it('a missing required file → FetchError with the status and URL', async () => {
    const name = 'weblora-test-404';
    const err = await errorOf(fetchModelFiles(BASE, [{ path: 'onnx/not_there.onnx' }], { cacheName: name }));
    expect(err).toBeInstanceOf(FetchError);
    const data = (err as FetchError).data;
    expect(data.url).toBe(`${ABS_BASE}onnx/not_there.onnx`);
    // Vite's dev server (this test's origin) answers a miss under publicDir with index.html (200): that
    // counts as missing too. A real 404 is the next test's.
    expect(data.status).toBe(200);
    expect(data.htmlFallback).toBe(true);
    expect(await cachedUrls(name)).toEqual([]);
  });

  it('HTTP 404 and 500 from the server → FetchError with that status', async () => {
    for (const status of [404, 500]) {
      const f: typeof fetch = async () => new Response('no', { status });
      const err = await errorOf(
        fetchModelFiles(BASE, [{ path: 'config.json' }], { useCache: false, fetch: f }),
      );
      expect(err).toBeInstanceOf(FetchError);
      expect((err as FetchError).data).toMatchObject({ status, url: `${ABS_BASE}config.json` });
      expect((err as FetchError).data.htmlFallback).toBeUndefined();
      expect((err as Error).message).toContain(String(status));
    }
    // 500 on an optional file is still an error (only absence is tolerated).
    const f500: typeof fetch = async () => new Response('no', { status: 500 });
    const err = await errorOf(
      fetchModelFiles(BASE, [{ path: 'x.bin', optional: true }], { useCache: false, fetch: f500 }),
    );
    expect(err).toBeInstanceOf(FetchError);
  });

  it('abort mid-download → AbortError and no cache entry for the interrupted file', async () => {
    const name = 'weblora-test-abort';
    const ctrl = new AbortController();
    let abortedAt: ModelFileProgress | undefined;
    const err = await errorOf(
      fetchModelFiles(BASE, REAL, {
        cacheName: name,
        signal: ctrl.signal,
        onProgress: (p) => {
          if (p.file === 'onnx/model.onnx' && p.loaded > 0 && !abortedAt) {
            abortedAt = p;
            ctrl.abort();
          }
        },
      }),
    );
    expect(err).toBeInstanceOf(AbortError);
    expect(abortedAt!.loaded).toBeLessThan(abortedAt!.total!);
    // Files finished before the abort were verified and may stay; the interrupted one must not exist.
    expect(await cachedUrls(name)).toEqual([`${ABS_BASE}config.json`, `${ABS_BASE}tokenizer.json`]);

    const pre = new AbortController();
    pre.abort();
    expect(
      await errorOf(fetchModelFiles(BASE, REAL, { cacheName: name, signal: pre.signal })),
    ).toBeInstanceOf(AbortError);
  });

  it('a path escaping the folder → ModelPackageError', async () => {
    const err = await errorOf(fetchModelFiles(BASE, [{ path: '../x.json' }], { useCache: false }));
    expect(err).toBeInstanceOf(ModelPackageError);
  });
});

describe('localFilesSource', () => {
  function picked(rel: string, bytes: Uint8Array): File {
    const f = new File([bytes as Uint8Array<ArrayBuffer>], rel.split('/').at(-1)!);
    Object.defineProperty(f, 'webkitRelativePath', { value: rel });
    return f;
  }

  it('turns a picked folder into the same path → bytes map', async () => {
    const files = REAL.map((s) => picked(`weblora-shakespeare/${s.path}`, direct.get(s.path)!));
    const all = await localFilesSource(files);
    expect([...all.keys()].sort()).toEqual(REAL.map((s) => s.path).sort());
    const wanted = await localFilesSource(files, [
      { path: 'onnx/model.onnx', size: direct.get('onnx/model.onnx')!.byteLength },
      { path: 'onnx/model_q4.onnx', optional: true },
    ]);
    expect([...wanted.keys()]).toEqual(['onnx/model.onnx']);
    expect(sameBytes(wanted.get('onnx/model.onnx'), direct.get('onnx/model.onnx'))).toBe(true);
  });

  it('reports missing files and failed checks as ModelPackageError', async () => {
    const files = [picked('m/config.json', direct.get('config.json')!)];
    expect(await errorOf(localFilesSource(files, [{ path: 'tokenizer.json' }]))).toBeInstanceOf(
      ModelPackageError,
    );
    const bad = await errorOf(localFilesSource(files, [{ path: 'config.json', size: 1 }]));
    expect(bad).toBeInstanceOf(ModelPackageError);
    expect((bad as ModelPackageError).data).toMatchObject({ file: 'config.json', expected: 1 });
  });
});
