/**
 * Downloads the files of a Hugging Face-layout model folder (config.json, tokenizer.json,
 * onnx/model_q4.onnx, ...) with byte progress, verifies them (size, sha256) and keeps them in Cache
 * Storage keyed by absolute URL, so the second load is served from the cache — offline too — and
 * reports progress from there. Also lists/deletes cached models and turns user-picked local files into
 * the same path → bytes map. Where Cache Storage is missing (Node, insecure contexts) it just fetches.
 * It deliberately does not parse the files (src/model/package.ts does), revalidate cached entries with
 * the server (use versioned URLs, e.g. an HF revision, or deleteCachedModel), or download in parallel.
 */
import { AbortError, FetchError, ModelPackageError, UnsupportedError } from '../errors.ts';

export interface ModelFileSpec {
  /** Path relative to the model folder, e.g. 'onnx/model_q4.onnx'. */
  path: string;
  /** Expected byte length; checked before caching, and used as the progress total. */
  size?: number;
  /** Expected lowercase-hex SHA-256 of the bytes; checked before caching (needs crypto.subtle). */
  sha256?: string;
  /** Absent (HTTP 404/410, or unreachable with no cached copy) → left out of the result, not an error. */
  optional?: boolean;
}

export interface ModelFileProgress {
  /** The spec path of the file being read. */
  file: string;
  /** Bytes of this file read so far. */
  loaded: number;
  /** This file's size from its spec, Content-Length or the cached entry; null when unknown. */
  total: number | null;
  /** Bytes read so far over all files (monotonic). */
  overallLoaded: number;
  /** Sum of every file's total; null while any is unknown. */
  overallTotal: number | null;
  /** True when this file is served from Cache Storage. */
  fromCache: boolean;
}

export interface FetchModelFilesOptions {
  onProgress?: (p: ModelFileProgress) => void;
  signal?: AbortSignal;
  /** Cache Storage bucket; default DEFAULT_MODEL_CACHE. */
  cacheName?: string;
  /** false: neither read nor write Cache Storage. Default true (where available). */
  useCache?: boolean;
  /** Injectable fetch (tests count requests with it); default globalThis.fetch. */
  fetch?: typeof fetch;
}

export const DEFAULT_MODEL_CACHE = 'weblora-models-v1';

/** Our metadata on each cached response (Cache Storage keeps a Response's headers). */
const H_BASE = 'X-WebLora-Base';
const H_PATH = 'X-WebLora-Path';
const H_SHA = 'X-WebLora-Sha256';

type Bytes = Uint8Array<ArrayBuffer>;

function abortError(what: string, url?: string): AbortError {
  return new AbortError(`${what} was aborted`, url ? { url } : {});
}

function throwIfAborted(signal: AbortSignal | undefined, what: string, url?: string): void {
  if (signal?.aborted) throw abortError(what, url);
}

/** Absolute folder URL with a trailing slash; relative inputs resolve against the page/worker location. */
export function resolveModelBase(baseUrl: string): string {
  const withSlash = baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`;
  const here = typeof location === 'undefined' ? undefined : location.href;
  try {
    return new URL(withSlash, here).href;
  } catch {
    throw new FetchError(
      `model base URL "${baseUrl}" is not absolute and there is no page location to resolve it against`,
      { url: baseUrl },
    );
  }
}

function fileUrl(base: string, path: string): string {
  const segments = path.split('/');
  if (path === '' || path.startsWith('/') || segments.some((s) => s === '' || s === '.' || s === '..')) {
    throw new ModelPackageError(`model file path "${path}" must be relative inside the model folder`, {
      file: path,
    });
  }
  return new URL(path, base).href;
}

async function openCache(name: string): Promise<Cache | null> {
  if (typeof caches === 'undefined') return null;
  try {
    return await caches.open(name);
  } catch {
    return null; // e.g. opaque origins, storage disabled: fall back to plain fetching
  }
}

function headerInt(res: Response, name: string): number | null {
  const v = res.headers.get(name);
  if (v === null || !/^\d+$/.test(v.trim())) return null;
  return Number(v);
}

export async function sha256Hex(bytes: Bytes): Promise<string> {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) {
    throw new UnsupportedError('SHA-256 checks need crypto.subtle (a secure context: https or localhost)', {
      feature: 'crypto.subtle',
    });
  }
  const digest = new Uint8Array(await subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** A cached entry fits a spec when its recorded size and hash agree with what the spec expects. */
function cachedEntryFits(res: Response, spec: ModelFileSpec): boolean {
  const size = headerInt(res, 'Content-Length');
  if (size === null) return false;
  if (spec.size !== undefined && size !== spec.size) return false;
  if (spec.sha256 !== undefined && res.headers.get(H_SHA) !== spec.sha256.toLowerCase()) return false;
  return true;
}

/**
 * The dev server (and many SPA hosts) answer a missing file with index.html and status 200. No file of
 * a model folder is HTML, so an HTML answer for a non-.html path counts as missing.
 */
function isHtmlFallback(res: Response, path: string): boolean {
  return (res.headers.get('Content-Type') ?? '').includes('text/html') && !/\.html?$/i.test(path);
}

/** Reads a body chunk by chunk into one buffer (preallocated when the size is known). */
async function readBody(
  res: Response,
  sizeHint: number | null,
  signal: AbortSignal | undefined,
  url: string,
  onChunk: (loaded: number) => void,
): Promise<Bytes> {
  const reader = res.body?.getReader();
  if (!reader) {
    const all = new Uint8Array(await res.arrayBuffer());
    onChunk(all.byteLength);
    return all;
  }
  let buf: Bytes = new Uint8Array(sizeHint ?? 1 << 20);
  let n = 0;
  try {
    for (;;) {
      if (signal?.aborted) {
        await reader.cancel().catch(() => {});
        throw abortError('model download', url);
      }
      const { done, value } = await reader.read();
      if (done) break;
      if (n + value.byteLength > buf.byteLength) {
        const grown: Bytes = new Uint8Array(Math.max(buf.byteLength * 2, n + value.byteLength));
        grown.set(buf.subarray(0, n));
        buf = grown;
      }
      buf.set(value, n);
      n += value.byteLength;
      onChunk(n);
    }
  } catch (e) {
    if (e instanceof AbortError) throw e;
    if (signal?.aborted) throw abortError('model download', url);
    throw new FetchError(`download of ${url} was interrupted after ${n} bytes: ${String(e)}`, {
      url,
      loaded: n,
    });
  } finally {
    reader.releaseLock();
  }
  return n === buf.byteLength ? buf : buf.slice(0, n);
}

async function verify(
  spec: ModelFileSpec,
  url: string,
  bytes: Bytes,
  contentLength: number | null,
): Promise<void> {
  const fail = (check: string, expected: unknown, actual: unknown): never => {
    throw new FetchError(
      `${spec.path} failed its ${check} check: expected ${String(expected)}, got ${String(actual)} (${url})`,
      { file: spec.path, url, check, expected, actual },
    );
  };
  if (spec.size !== undefined && bytes.byteLength !== spec.size) fail('size', spec.size, bytes.byteLength);
  // Fewer bytes than Content-Length = truncated. More is allowed: a compressed transfer whose
  // Content-Encoding a cross-origin response hides still reports the compressed length.
  if (contentLength !== null && bytes.byteLength < contentLength) {
    fail('Content-Length', contentLength, bytes.byteLength);
  }
  if (spec.sha256 !== undefined) {
    const got = await sha256Hex(bytes);
    if (got !== spec.sha256.toLowerCase()) fail('sha256', spec.sha256.toLowerCase(), got);
  }
}

/**
 * Fetches `files` from the folder at `baseUrl` (one after another) and returns path → bytes. Each file
 * comes from Cache Storage when a fitting entry exists, else from the network; network bytes are
 * verified (size, sha256, truncation) and only then cached. Errors: FetchError (HTTP status, network,
 * failed check; data names file/url/expected/actual), AbortError (signal; nothing is cached for the
 * interrupted file), ModelPackageError (a spec path escaping the folder).
 */
export async function fetchModelFiles(
  baseUrl: string,
  files: readonly ModelFileSpec[],
  opts: FetchModelFilesOptions = {},
): Promise<Map<string, Uint8Array>> {
  const { signal, onProgress } = opts;
  const doFetch = opts.fetch ?? globalThis.fetch.bind(globalThis);
  throwIfAborted(signal, 'model download');
  const base = resolveModelBase(baseUrl);
  const cache = opts.useCache === false ? null : await openCache(opts.cacheName ?? DEFAULT_MODEL_CACHE);

  // Look every file up in the cache first, so cached sizes count towards the overall total at once.
  const plan: { spec: ModelFileSpec; url: string; hit: Response | undefined }[] = [];
  for (const spec of files) {
    const url = fileUrl(base, spec.path);
    let hit = cache ? await cache.match(url) : undefined;
    if (hit && !cachedEntryFits(hit, spec)) {
      await hit.body?.cancel();
      await cache!.delete(url); // stale (the spec changed) or foreign: download again
      hit = undefined;
    }
    plan.push({ spec, url, hit });
  }
  const totals: (number | null)[] = plan.map(
    (p) => p.spec.size ?? (p.hit ? headerInt(p.hit, 'Content-Length') : null),
  );
  const overallTotal = (): number | null =>
    totals.every((t) => t !== null) ? totals.reduce<number>((a, t) => a + t!, 0) : null;
  let overallDone = 0;

  const out = new Map<string, Uint8Array>();
  for (let i = 0; i < plan.length; i++) {
    const { spec, url, hit } = plan[i]!;
    throwIfAborted(signal, 'model download', url);
    let res: Response;
    let contentLength: number | null = null;
    if (hit) {
      res = hit;
    } else {
      try {
        res = await doFetch(url, { signal });
      } catch (e) {
        if (signal?.aborted) throw abortError('model download', url);
        if (spec.optional) {
          totals[i] = 0; // unreachable and not cached: an optional file is simply unavailable
          continue;
        }
        throw new FetchError(`could not fetch ${url} (offline, or blocked by CORS?): ${String(e)}`, {
          file: spec.path,
          url,
        });
      }
      const missing = res.status === 404 || res.status === 410 || (res.ok && isHtmlFallback(res, spec.path));
      if (!res.ok || missing) {
        await res.body?.cancel().catch(() => {});
        if (missing && spec.optional) {
          totals[i] = 0;
          continue;
        }
        const htmlFallback = res.ok;
        throw new FetchError(
          `could not fetch ${url}: HTTP ${res.status}${htmlFallback ? ' with an HTML page (file missing)' : ''}`,
          { file: spec.path, url, status: res.status, ...(htmlFallback ? { htmlFallback } : {}) },
        );
      }
      const encoding = res.headers.get('Content-Encoding');
      contentLength = encoding && encoding !== 'identity' ? null : headerInt(res, 'Content-Length');
      totals[i] ??= contentLength;
    }

    const fromCache = hit !== undefined;
    const report = (loaded: number): void =>
      onProgress?.({
        file: spec.path,
        loaded,
        total: totals[i] ?? null,
        overallLoaded: overallDone + loaded,
        overallTotal: overallTotal(),
        fromCache,
      });
    report(0);
    const bytes = await readBody(res, totals[i] ?? null, signal, url, report);
    if (!fromCache) {
      await verify(spec, url, bytes, contentLength);
      if (cache) await storeInCache(cache, url, base, spec, res, bytes);
    }
    totals[i] = bytes.byteLength;
    overallDone += bytes.byteLength;
    out.set(spec.path, bytes);
  }
  return out;
}

async function storeInCache(
  cache: Cache,
  url: string,
  base: string,
  spec: ModelFileSpec,
  res: Response,
  bytes: Bytes,
): Promise<void> {
  const headers = new Headers({
    'Content-Type': res.headers.get('Content-Type') ?? 'application/octet-stream',
    'Content-Length': String(bytes.byteLength),
    [H_BASE]: base,
    [H_PATH]: spec.path,
  });
  if (spec.sha256 !== undefined) headers.set(H_SHA, spec.sha256.toLowerCase());
  try {
    await cache.put(url, new Response(bytes, { status: 200, headers }));
  } catch (e) {
    // Quota exceeded or a non-http(s) URL: the bytes are good, only the offline copy is missing.
    console.warn(`weblora: could not cache ${url}: ${String(e)}`);
  }
}

export interface CachedModelFile {
  url: string;
  /** Path inside the model folder. */
  path: string;
  /** Bytes (from the stored Content-Length); null for an entry without one. */
  size: number | null;
}

export interface CachedModel {
  baseUrl: string;
  files: CachedModelFile[];
  /** Sum of the known file sizes. */
  size: number;
}

async function cachedEntries(
  cacheName: string,
): Promise<{ cache: Cache; files: (CachedModelFile & { base: string })[] } | null> {
  if (typeof caches === 'undefined' || !(await caches.has(cacheName))) return null;
  const cache = await caches.open(cacheName);
  const files: (CachedModelFile & { base: string })[] = [];
  for (const req of await cache.keys()) {
    const res = await cache.match(req);
    if (!res) continue;
    await res.body?.cancel();
    const base = res.headers.get(H_BASE) ?? req.url.slice(0, req.url.lastIndexOf('/') + 1);
    const path = res.headers.get(H_PATH) ?? req.url.slice(base.length);
    files.push({ url: req.url, path, size: headerInt(res, 'Content-Length'), base });
  }
  return { cache, files };
}

/** Models in Cache Storage, grouped by folder URL, with per-file sizes (for a storage view). */
export async function listCachedModels(cacheName: string = DEFAULT_MODEL_CACHE): Promise<CachedModel[]> {
  const entries = await cachedEntries(cacheName);
  if (!entries) return [];
  const byBase = new Map<string, CachedModel>();
  for (const { base, ...file } of entries.files) {
    let m = byBase.get(base);
    if (!m) {
      m = { baseUrl: base, files: [], size: 0 };
      byBase.set(base, m);
    }
    m.files.push(file);
    m.size += file.size ?? 0;
  }
  const models = [...byBase.values()];
  for (const m of models) m.files.sort((a, b) => a.path.localeCompare(b.path));
  return models.sort((a, b) => a.baseUrl.localeCompare(b.baseUrl));
}

/** Deletes every cached file under `baseUrl`; returns what was removed (empty without Cache Storage). */
export async function deleteCachedModel(
  baseUrl: string,
  cacheName: string = DEFAULT_MODEL_CACHE,
): Promise<CachedModelFile[]> {
  const base = resolveModelBase(baseUrl);
  const entries = await cachedEntries(cacheName);
  if (!entries) return [];
  const removed: CachedModelFile[] = [];
  for (const { base: fileBase, ...file } of entries.files) {
    if (fileBase !== base && !file.url.startsWith(base)) continue;
    if (await entries.cache.delete(file.url)) removed.push(file);
  }
  return removed;
}

/** Path of a picked file inside the picked folder: webkitRelativePath ('folder/onnx/x.onnx') or name. */
function relativePath(f: File): string {
  return f.webkitRelativePath || f.name;
}

/**
 * User-picked files (`<input type=file webkitdirectory>` or a multi-file pick) → path → bytes, keyed
 * like fetchModelFiles. The picked folder's own name (the common first segment of every
 * webkitRelativePath) is stripped, so 'weblora-shakespeare/onnx/model_q4.onnx' becomes
 * 'onnx/model_q4.onnx'. With `specs`, returns only those files (a spec path may also match a unique
 * '/'-suffix, e.g. when a parent folder was picked) and checks size/sha256; a missing required file or
 * a failed check → ModelPackageError.
 */
export async function localFilesSource(
  files: readonly File[] | FileList,
  specs?: readonly ModelFileSpec[],
): Promise<Map<string, Uint8Array>> {
  const list = Array.from(files);
  const paths = list.map(relativePath);
  const first = paths[0]?.split('/')[0];
  const sharedTop = first !== undefined && paths.every((p) => p.includes('/') && p.split('/')[0] === first);
  const byPath = new Map<string, File>();
  list.forEach((f, i) => {
    byPath.set(sharedTop ? paths[i]!.slice(first!.length + 1) : paths[i]!, f);
  });

  const out = new Map<string, Uint8Array>();
  if (!specs) {
    for (const [path, f] of byPath) out.set(path, new Uint8Array(await f.arrayBuffer()));
    return out;
  }
  const missing: string[] = [];
  for (const spec of specs) {
    let f = byPath.get(spec.path);
    if (!f) {
      const hits = [...byPath.keys()].filter((p) => p.endsWith(`/${spec.path}`));
      if (hits.length === 1) f = byPath.get(hits[0]!);
    }
    if (!f) {
      if (!spec.optional) missing.push(spec.path);
      continue;
    }
    const bytes: Bytes = new Uint8Array(await f.arrayBuffer());
    try {
      await verify(spec, `file:${relativePath(f)}`, bytes, null);
    } catch (e) {
      if (e instanceof FetchError) throw new ModelPackageError(e.message, e.data);
      throw e;
    }
    out.set(spec.path, bytes);
  }
  if (missing.length > 0) {
    throw new ModelPackageError(`the picked files lack ${missing.join(', ')}`, {
      missing,
      picked: [...byPath.keys()],
    });
  }
  return out;
}
