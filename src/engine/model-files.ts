/**
 * Downloads the files of a Hugging Face-layout model folder (config.json, tokenizer.json,
 * onnx/model_q4.onnx, ...) with byte progress, verifies them (size, sha256) and keeps them in Cache
 * Storage keyed by absolute URL, so the second load is served from the cache — offline too — and
 * reports progress from there. Also lists/deletes cached models (user-picked local files: local-files.ts).
 * Where Cache Storage is missing (Node, insecure contexts) it just fetches.
 * It deliberately does not parse the files (src/model/package.ts does), revalidate cached entries with
 * the server (use versioned URLs, e.g. an HF revision, or deleteCachedModel), or download in parallel.
 */
import { FetchError, ModelPackageError } from '../errors.ts';
import {
  abortError,
  checkQuota,
  contentRange,
  headerInt,
  Interrupted,
  isHtmlFallback,
  type PartialDownload,
  partialCacheName,
  probeFileSize,
  readBody,
  readPartial,
  sha256Hex,
  validatorOf,
  verify,
  writePartial,
} from './download.ts';

export { checkQuota, probeFileSize, sha256Hex };

export interface ModelFileSpec {
  /** Path relative to the model folder, e.g. 'onnx/model_q4.onnx'. */
  path: string;
  /** Expected byte length; checked before caching, and used as the progress total. */
  size?: number;
  /** Expected lowercase-hex SHA-256 of the bytes; checked before caching (needs crypto.subtle). */
  sha256?: string;
  /** Absent (HTTP 404/410, or unreachable with no cached copy) → left out of the result, not an error. */
  optional?: boolean;
  /** Expected size from a probe (HEAD): counted by the quota check and progress total, never verified. */
  sizeHint?: number;
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
  /** false: read cached files but do not store downloaded ones. Default true. */
  store?: boolean;
  /** Injectable fetch (tests count requests with it); default globalThis.fetch. */
  fetch?: typeof fetch;
  /** Resumed attempts (Range requests) after a connection drops mid-file, per file. Default 2. */
  retries?: number;
  /** HEAD every file whose size is not known, so the quota check and progress total cover it. */
  probeSizes?: boolean;
  /** false: skip the storage-quota check. Default true (where Cache Storage and an estimate exist). */
  checkQuota?: boolean;
  /** Bytes already fetched for some paths (e.g. config.json read ahead): used instead of the network, verified and cached like a download. */
  prefetched?: ReadonlyMap<string, Uint8Array>;
  /** Injectable `navigator.storage.estimate` (tests). */
  estimate?: () => Promise<StorageEstimate>;
}

export const DEFAULT_MODEL_CACHE = 'weblora-models-v1';

/** Our metadata on each cached response (Cache Storage keeps a Response's headers). */
const H_BASE = 'X-WebLora-Base';
const H_PATH = 'X-WebLora-Path';
const H_SHA = 'X-WebLora-Sha256';

type Bytes = Uint8Array<ArrayBuffer>;

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

/** A cached entry fits a spec when its recorded size and hash agree with what the spec expects. */
function cachedEntryFits(res: Response, spec: ModelFileSpec): boolean {
  const size = headerInt(res, 'Content-Length');
  if (size === null) return false;
  if (spec.size !== undefined && size !== spec.size) return false;
  if (spec.sha256 !== undefined && res.headers.get(H_SHA) !== spec.sha256.toLowerCase()) return false;
  return true;
}

/**
 * Fetches `files` from the folder at `baseUrl` (one after another) and returns path → bytes. Each file
 * comes from Cache Storage when a fitting entry exists, else from the network; network bytes are
 * verified (size, sha256, truncation) and only then cached. Before any download it checks
 * `navigator.storage.estimate()` against the bytes still to fetch (spec sizes, or HEAD sizes with
 * `probeSizes`) and throws QuotaError when they cannot fit. A connection that drops mid-file is resumed
 * with `Range: bytes=N-` (`If-Range` with the ETag/Last-Modified): the bytes so far are kept in a
 * separate Cache Storage bucket (`<cacheName>-partial`, keyed by URL, with the total size and validator)
 * for the retries of this call (`retries`, default 2) and for a later call; a 200 answer or another
 * validator starts the file over. Errors: FetchError (HTTP status, network, failed check; data names
 * file/url/expected/actual), QuotaError, AbortError (signal; nothing complete is cached for the
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
  const cacheName = opts.cacheName ?? DEFAULT_MODEL_CACHE;
  const cache = opts.useCache === false ? null : await openCache(cacheName);
  const partials = cache ? await openCache(partialCacheName(cacheName)) : null;
  const retries = opts.retries ?? 2;

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
  // Sizes for the quota check and the progress total (HEAD), only for what must still be downloaded.
  const probed: (number | null)[] = totals.map((t, i) => t ?? plan[i]!.spec.sizeHint ?? null);
  if (opts.probeSizes) {
    for (let i = 0; i < plan.length; i++) {
      if (probed[i] !== null || plan[i]!.hit) continue;
      try {
        const p = await probeFileSize(plan[i]!.url, { fetch: doFetch, ...(signal ? { signal } : {}) });
        probed[i] = p.status >= 200 && p.status < 300 && !p.htmlFallback ? p.size : null;
      } catch {
        probed[i] = null; // the GET reports the real failure
      }
    }
  }
  if (cache && opts.checkQuota !== false) {
    let needed = 0;
    for (let i = 0; i < plan.length; i++) if (!plan[i]!.hit) needed += probed[i] ?? 0;
    await checkQuota(needed, opts.estimate);
  }
  const overallTotal = (): number | null =>
    totals.every((t) => t !== null) ? totals.reduce<number>((a, t) => a + t!, 0) : null;
  let overallDone = 0;

  const out = new Map<string, Uint8Array>();
  for (let i = 0; i < plan.length; i++) {
    const { spec, url, hit } = plan[i]!;
    throwIfAborted(signal, 'model download', url);
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
    let bytes: Bytes;
    if (hit) {
      report(0);
      bytes = await readBody(hit, totals[i] ?? null, signal, url, report);
    } else {
      const got = await download(spec, url, i);
      if (!got) continue; // an optional file that is not there
      bytes = got;
      if (cache && opts.store !== false) await storeInCache(cache, url, base, spec, bytes);
    }
    totals[i] = bytes.byteLength;
    overallDone += bytes.byteLength;
    out.set(spec.path, bytes);
  }
  return out;

  /** One file from the network, resuming after interruptions; null = optional and absent. */
  async function download(spec: ModelFileSpec, url: string, i: number): Promise<Bytes | null> {
    const pre = opts.prefetched?.get(spec.path);
    if (pre) {
      const bytes: Bytes = new Uint8Array(pre);
      totals[i] ??= bytes.byteLength;
      await verify(spec, url, bytes, null);
      report0(i, spec, bytes.byteLength);
      return bytes;
    }
    let partial: PartialDownload | null = await readPartial(partials, url);
    for (let attempt = 0; ; attempt++) {
      throwIfAborted(signal, 'model download', url);
      const headers: Record<string, string> = {};
      if (partial) {
        headers.Range = `bytes=${partial.bytes.byteLength}-`;
        if (partial.validator !== null) headers['If-Range'] = partial.validator;
      }
      let res: Response;
      try {
        res = await doFetch(url, {
          ...(signal ? { signal } : {}),
          ...(partial ? { headers } : {}),
        });
      } catch (e) {
        if (signal?.aborted) throw abortError('model download', url);
        if (spec.optional && !partial) {
          totals[i] = 0; // unreachable and not cached: an optional file is simply unavailable
          return null;
        }
        throw new FetchError(`could not fetch ${url} (offline, or blocked by CORS?): ${String(e)}`, {
          file: spec.path,
          url,
        });
      }
      const missing = res.status === 404 || res.status === 410 || (res.ok && isHtmlFallback(res, spec.path));
      if (res.status === 416 && partial) {
        // The server no longer has those bytes (file changed/shrunk): start over.
        await res.body?.cancel().catch(() => {});
        await partials?.delete(url);
        partial = null;
        continue;
      }
      if (!res.ok || missing) {
        await res.body?.cancel().catch(() => {});
        if (missing && spec.optional) {
          totals[i] = 0;
          return null;
        }
        const htmlFallback = res.ok;
        throw new FetchError(
          `could not fetch ${url}: HTTP ${res.status}${htmlFallback ? ' with an HTML page (file missing)' : ''}`,
          { file: spec.path, url, status: res.status, ...(htmlFallback ? { htmlFallback } : {}) },
        );
      }
      const encoding = res.headers.get('Content-Encoding');
      const identity = !encoding || encoding === 'identity';
      let prefix: Bytes | null = null;
      let full: number | null;
      const range = res.status === 206 ? contentRange(res) : null;
      if (partial && range && range.start === partial.bytes.byteLength && range.total === partial.total) {
        prefix = partial.bytes; // the server continues where we stopped
        full = range.total;
      } else {
        if (res.status === 206) {
          // A range we did not ask for: drop it and start over without Range.
          await res.body?.cancel().catch(() => {});
          await partials?.delete(url);
          partial = null;
          if (attempt >= retries)
            throw new FetchError(`${url}: the server answered an unexpected byte range`, { url });
          continue;
        }
        if (partial) await partials?.delete(url); // 200: a fresh copy (new version or no Range support)
        partial = null;
        full = identity ? headerInt(res, 'Content-Length') : null;
      }
      totals[i] ??= full;
      const validator = validatorOf(res);
      report0(i, spec, prefix?.byteLength ?? 0);
      try {
        const bytes = await readBody(res, totals[i] ?? full, signal, url, (n) => report0(i, spec, n), prefix);
        await verify(spec, url, bytes, full);
        await partials?.delete(url);
        return bytes;
      } catch (e) {
        if (!(e instanceof Interrupted)) throw e;
        const n = e.bytes.byteLength;
        const resumable = full !== null && n > 0 && n < full;
        partial = resumable ? { bytes: e.bytes, total: full!, validator } : null;
        if (partial) await writePartial(partials, url, partial);
        if (attempt >= retries) {
          throw new FetchError(`download of ${url} was interrupted after ${n} bytes: ${String(e.cause)}`, {
            file: spec.path,
            url,
            loaded: n,
            resumable,
          });
        }
      }
    }
  }

  function report0(i: number, spec: ModelFileSpec, loaded: number): void {
    onProgress?.({
      file: spec.path,
      loaded,
      total: totals[i] ?? null,
      overallLoaded: overallDone + loaded,
      overallTotal: overallTotal(),
      fromCache: false,
    });
  }
}

async function storeInCache(
  cache: Cache,
  url: string,
  base: string,
  spec: ModelFileSpec,
  bytes: Bytes,
): Promise<void> {
  const headers = new Headers({
    'Content-Type': 'application/octet-stream',
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
  // Partial downloads of that folder too (they are never listed as files).
  if (await caches.has(partialCacheName(cacheName))) {
    const partials = await caches.open(partialCacheName(cacheName));
    for (const req of await partials.keys()) if (req.url.startsWith(base)) await partials.delete(req);
  }
  return removed;
}
