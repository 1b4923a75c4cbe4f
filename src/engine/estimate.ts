/**
 * What a model load would download, before it downloads (`estimateDownload`: config.json read, every other
 * file sized by HEAD or from the picked files), and the light package helpers load-files.ts shares with
 * it: the JSON file list, the external-data chunk list from config.json, dtype availability probes and
 * the DtypeUnavailableError listing what there is. It imports no ONNX code, so the demo's main thread can
 * use it without the graph libraries. It deliberately downloads no model file.
 */
import { DtypeUnavailableError, FetchError, ModelPackageError } from '../errors.ts';
import {
  externalDataChunksOf,
  externalDataFileNames,
  MODEL_DTYPES,
  type ModelDtype,
  modelFileName,
  normalizeModelUrl,
} from '../model/package.ts';
import {
  DEFAULT_MODEL_CACHE,
  fetchModelFiles,
  type ModelFileSpec,
  probeFileSize,
  resolveModelBase,
} from './model-files.ts';
import type { ModelSource } from './types.ts';

export const JSON_FILES: ModelFileSpec[] = [
  { path: 'config.json' },
  { path: 'tokenizer.json' },
  { path: 'tokenizer_config.json' },
  { path: 'generation_config.json', optional: true },
];

/**
 * The external-data chunk paths to fetch for `modelFile`: config.json's count
 * (`transformers.js_config.use_external_data_format`), or null when it does not say.
 */
export function configChunks(configJson: unknown, modelFile: string): string[] | null {
  const n = externalDataChunksOf(configJson, modelFile);
  return n === null ? null : externalDataFileNames(modelFile, n);
}

export function dtypeUnavailable(
  dtype: ModelDtype,
  file: string,
  available: ModelDtype[],
  where: string,
): DtypeUnavailableError {
  const list = available.length
    ? `it has ${available.map((d) => `${d} (${modelFileName(d)})`).join(', ')}`
    : `it has none of ${MODEL_DTYPES.map(modelFileName).join(', ')}`;
  return new DtypeUnavailableError(`the model at ${where} has no ${dtype} file (${file}); ${list}`, {
    dtype,
    file,
    available,
  });
}

/** What a probe found about one package file. */
export interface Availability {
  /** The file is there (cached, or the server answered 2xx with a non-HTML file; unknown counts as there). */
  ok: boolean;
  /** Its size when known (Content-Length of the HEAD answer, or of the cached copy). */
  size: number | null;
  /** It is complete in Cache Storage (nothing to download). */
  cached: boolean;
}

/**
 * Whether the package has `path`: a complete cached copy, else a HEAD request that finds a non-HTML file
 * (a server that refuses HEAD, 405/501, counts as "there, size unknown"). An unreachable host →
 * FetchError (offline or blocked by CORS), never "missing".
 */
export async function availability(
  base: string,
  path: string,
  cacheName: string,
  doFetch: typeof fetch,
  useCache: boolean | undefined,
): Promise<Availability> {
  const url = new URL(path, resolveModelBase(base)).href;
  if (useCache !== false && typeof caches !== 'undefined') {
    try {
      const hit = await (await caches.open(cacheName)).match(url);
      if (hit) {
        await hit.body?.cancel();
        const n = Number(hit.headers.get('Content-Length'));
        return { ok: true, size: Number.isFinite(n) ? n : null, cached: true };
      }
    } catch {
      // no Cache Storage here: ask the server
    }
  }
  let p: Awaited<ReturnType<typeof probeFileSize>>;
  try {
    p = await probeFileSize(url, { fetch: doFetch });
  } catch (e) {
    throw new FetchError(`could not fetch ${url} (offline, or blocked by CORS?): ${String(e)}`, {
      url,
      file: path,
    });
  }
  if (p.status === 405 || p.status === 501) return { ok: true, size: null, cached: false };
  return { ok: p.status >= 200 && p.status < 300 && !p.htmlFallback, size: p.size, cached: false };
}

/** The dtypes whose ONNX file the package at `base` has (HEAD each, or the cache). */
export async function availableDtypes(
  base: string,
  cacheName: string,
  doFetch: typeof fetch,
  useCache: boolean | undefined,
): Promise<ModelDtype[]> {
  const out: ModelDtype[] = [];
  for (const d of MODEL_DTYPES) {
    if ((await availability(base, modelFileName(d), cacheName, doFetch, useCache)).ok) out.push(d);
  }
  return out;
}

export function parseJson(bytes: Uint8Array | undefined, file: string): unknown {
  if (!bytes) throw new ModelPackageError(`the model package lacks ${file}`, { file });
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new ModelPackageError(`${file} is not valid JSON: ${String(e)}`, { file });
  }
}

export interface DownloadEstimate {
  /** Files the load would read, with their sizes (null where the server did not say). */
  files: { path: string; size: number | null }[];
  /** Sum of the known sizes. */
  bytes: number;
  /** True when every size is known. */
  complete: boolean;
}

/**
 * What loading `source` with `dtype` would download, before downloading it: config.json is read (for
 * the external-data chunk count), every other file is sized with a HEAD request (or read from the
 * picked files). A missing dtype file → DtypeUnavailableError; an unreachable host → FetchError.
 */
export async function estimateDownload(
  source: ModelSource,
  dtype: ModelDtype,
  opts: { fetch?: typeof fetch } = {},
): Promise<DownloadEstimate> {
  const modelFile = modelFileName(dtype);
  if (typeof source !== 'string') {
    const byPath = new Map(
      source.map((f) => [f.webkitRelativePath.split('/').slice(1).join('/') || f.name, f]),
    );
    if (!byPath.has(modelFile)) {
      const available = MODEL_DTYPES.filter((d) => byPath.has(modelFileName(d)));
      throw dtypeUnavailable(dtype, modelFile, available, 'the picked folder');
    }
    const config = byPath.get('config.json');
    const chunks = config ? (configChunks(JSON.parse(await config.text()), modelFile) ?? []) : [];
    const files = [...JSON_FILES.map((s) => s.path), modelFile, ...chunks].flatMap((path) => {
      const f = byPath.get(path);
      return f ? [{ path, size: f.size }] : [];
    });
    return { files, bytes: files.reduce((n, f) => n + f.size, 0), complete: true };
  }
  const doFetch = opts.fetch ?? globalThis.fetch.bind(globalThis);
  const base = resolveModelBase(normalizeModelUrl(source));
  const configBytes = (
    await fetchModelFiles(base, [{ path: 'config.json' }], {
      fetch: doFetch,
      store: false,
      checkQuota: false,
    })
  ).get('config.json');
  const chunks = configChunks(parseJson(configBytes, 'config.json'), modelFile) ?? [];
  const files: DownloadEstimate['files'] = [{ path: 'config.json', size: configBytes?.byteLength ?? null }];
  for (const path of ['tokenizer.json', 'tokenizer_config.json', modelFile, ...chunks]) {
    const url = new URL(path, base).href;
    let p: Awaited<ReturnType<typeof probeFileSize>>;
    try {
      p = await probeFileSize(url, { fetch: doFetch });
    } catch (e) {
      throw new FetchError(`could not reach ${url} (offline, or blocked by CORS?): ${String(e)}`, {
        url,
        file: path,
      });
    }
    const missing = p.status === 404 || p.status === 410 || p.htmlFallback;
    if (missing && path === modelFile) {
      throw dtypeUnavailable(
        dtype,
        modelFile,
        await availableDtypes(base, DEFAULT_MODEL_CACHE, doFetch, false),
        base,
      );
    }
    if (p.status < 200 || p.status >= 300 || missing) {
      throw new FetchError(`could not fetch ${url}: HTTP ${p.status}`, { url, file: path, status: p.status });
    }
    files.push({ path, size: p.size });
  }
  return {
    files,
    bytes: files.reduce((n, f) => n + (f.size ?? 0), 0),
    complete: files.every((f) => f.size !== null),
  };
}
