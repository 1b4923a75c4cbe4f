/**
 * The HTTP and storage mechanics under model-files.ts: reading a body chunk by chunk (an interrupted body
 * keeps the bytes that arrived), `Content-Range` parsing, partial downloads kept in their own Cache
 * Storage bucket for HTTP Range resumption, HEAD size probes and the storage-quota check. It deliberately
 * makes no decision about which files to fetch or cache (model-files.ts does).
 */
import { AbortError, FetchError, QuotaError, UnsupportedError } from '../errors.ts';
import type { ModelFileSpec } from './model-files.ts';

export type Bytes = Uint8Array<ArrayBuffer>;

/** On partial entries: the full size and the ETag/Last-Modified the prefix belongs to. */
const H_TOTAL = 'X-WebLora-Total';
const H_VALIDATOR = 'X-WebLora-Validator';

export function abortError(what: string, url?: string): AbortError {
  return new AbortError(`${what} was aborted`, url ? { url } : {});
}

export function headerInt(res: Response, name: string): number | null {
  const v = res.headers.get(name);
  if (v === null || !/^\d+$/.test(v.trim())) return null;
  return Number(v);
}

/**
 * The dev server (and many SPA hosts) answer a missing file with index.html and status 200. No file of
 * a model folder is HTML, so an HTML answer for a non-.html path counts as missing.
 */
export function isHtmlFallback(res: Response, path: string): boolean {
  return (res.headers.get('Content-Type') ?? '').includes('text/html') && !/\.html?$/i.test(path);
}

/** A body that broke off mid-stream: the bytes that did arrive (a Range request can continue from them). */
export class Interrupted {
  constructor(
    readonly bytes: Bytes,
    readonly cause: unknown,
  ) {}
}

/**
 * Reads a body chunk by chunk into one buffer (preallocated when the size is known), after `prefix`
 * (bytes of an earlier, interrupted attempt). A connection that drops mid-body → `Interrupted` with
 * everything read so far, prefix included.
 */
export async function readBody(
  res: Response,
  sizeHint: number | null,
  signal: AbortSignal | undefined,
  url: string,
  onChunk: (loaded: number) => void,
  prefix: Bytes | null = null,
): Promise<Bytes> {
  const reader = res.body?.getReader();
  let n = prefix?.byteLength ?? 0;
  if (!reader) {
    const body = new Uint8Array(await res.arrayBuffer());
    const all: Bytes = new Uint8Array(n + body.byteLength);
    if (prefix) all.set(prefix);
    all.set(body, n);
    onChunk(all.byteLength);
    return all;
  }
  let buf: Bytes = new Uint8Array(Math.max(sizeHint ?? 1 << 20, n));
  if (prefix) buf.set(prefix);
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
    throw new Interrupted(buf.slice(0, n), e);
  } finally {
    reader.releaseLock();
  }
  return n === buf.byteLength ? buf : buf.slice(0, n);
}

/** `bytes N-M/T` → { start: N, total: T } (total null for `*`). */
export function contentRange(res: Response): { start: number; total: number | null } | null {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec((res.headers.get('Content-Range') ?? '').trim());
  if (!m) return null;
  return { start: Number(m[1]), total: m[3] === '*' ? null : Number(m[3]) };
}

/** What identifies the version of a file a partial download belongs to: its ETag, else Last-Modified. */
export function validatorOf(res: Response): string | null {
  return res.headers.get('ETag') ?? res.headers.get('Last-Modified');
}

/** Partial downloads live in their own bucket, so no lookup of complete files can ever return one. */
export function partialCacheName(cacheName: string): string {
  return `${cacheName}-partial`;
}

export interface PartialDownload {
  bytes: Bytes;
  /** Full file size the bytes are a prefix of. */
  total: number;
  validator: string | null;
}

export async function readPartial(cache: Cache | null, url: string): Promise<PartialDownload | null> {
  const hit = await cache?.match(url);
  if (!hit) return null;
  const total = headerInt(hit, H_TOTAL);
  const bytes: Bytes = new Uint8Array(await hit.arrayBuffer());
  if (total === null || bytes.byteLength === 0 || bytes.byteLength >= total) {
    await cache!.delete(url);
    return null;
  }
  return { bytes, total, validator: hit.headers.get(H_VALIDATOR) };
}

export async function writePartial(cache: Cache | null, url: string, p: PartialDownload): Promise<void> {
  if (!cache) return;
  const headers = new Headers({ 'Content-Type': 'application/octet-stream', [H_TOTAL]: String(p.total) });
  if (p.validator !== null) headers.set(H_VALIDATOR, p.validator);
  try {
    await cache.put(url, new Response(p.bytes, { status: 200, headers }));
  } catch {
    // No room for the partial bytes: the next attempt starts from zero.
  }
}

/** Size of a file from a HEAD request (Content-Length), or null when the server does not say. */
export async function probeFileSize(
  url: string,
  opts: { fetch?: typeof fetch; signal?: AbortSignal } = {},
): Promise<{ status: number; size: number | null; htmlFallback: boolean }> {
  const doFetch = opts.fetch ?? globalThis.fetch.bind(globalThis);
  const res = await doFetch(url, { method: 'HEAD', ...(opts.signal ? { signal: opts.signal } : {}) });
  await res.body?.cancel().catch(() => {});
  const path = new URL(url).pathname;
  const encoding = res.headers.get('Content-Encoding');
  return {
    status: res.status,
    size: encoding && encoding !== 'identity' ? null : headerInt(res, 'Content-Length'),
    htmlFallback: res.ok && isHtmlFallback(res, path),
  };
}

/** QuotaError when `needed` more bytes do not fit the origin's storage quota (skipped without the API). */
export async function checkQuota(needed: number, estimate?: () => Promise<StorageEstimate>): Promise<void> {
  if (needed <= 0) return;
  const est =
    estimate ??
    (typeof navigator !== 'undefined' && navigator.storage?.estimate
      ? () => navigator.storage.estimate()
      : null);
  if (!est) return;
  let e: StorageEstimate;
  try {
    e = await est();
  } catch {
    return; // no estimate: the cache write may still fail, which only costs the offline copy
  }
  if (e.quota === undefined) return;
  const usage = e.usage ?? 0;
  const available = Math.max(0, e.quota - usage);
  if (needed > available) {
    throw new QuotaError(
      `the model needs ${needed} bytes of browser storage but only ${available} are available ` +
        `(quota ${e.quota}, used ${usage}); free space (delete cached models) or choose a smaller dtype`,
      { needed, available, quota: e.quota, usage },
    );
  }
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

/** Size (spec and Content-Length: fewer bytes = truncated) and sha256 checks; FetchError naming what failed. */
export async function verify(
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
