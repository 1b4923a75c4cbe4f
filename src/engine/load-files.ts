/**
 * The files of a model package for load.ts: from a folder URL (HF hub URLs normalised to resolve URLs) or
 * picked local files; the dtype's ONNX file (default q4 when present, else fp32; a missing dtype →
 * DtypeUnavailableError listing the dtypes there are, probed with HEAD) and its external-data chunks
 * (count from config.json's `transformers.js_config.use_external_data_format`, else the graph's
 * external_data references), returned under the names the graph references. Quota, caching, resumption
 * and verification are model-files.ts's. It deliberately creates no session.
 */
import { InvalidOptionError, ModelPackageError } from '../errors.ts';
import { decodeModel, externalDataLocations, type ModelProto } from '../model/onnx-io.ts';
import { MODEL_DTYPES, type ModelDtype, modelFileName, normalizeModelUrl } from '../model/package.ts';
import {
  type Availability,
  availability,
  availableDtypes,
  configChunks,
  dtypeUnavailable,
  JSON_FILES,
  parseJson,
} from './estimate.ts';

/** A spec with the probed size as a hint for the quota check and progress (never verified against). */
function hinted(path: string, a: Availability): ModelFileSpec {
  return a.size !== null && !a.cached ? { path, sizeHint: a.size } : { path };
}

import type { PhaseClock } from './load-phases.ts';
import { localFilesSource, pickedPaths } from './local-files.ts';
import {
  DEFAULT_MODEL_CACHE,
  type FetchModelFilesOptions,
  fetchModelFiles,
  type ModelFileProgress,
  type ModelFileSpec,
} from './model-files.ts';
import type { LoadProgress, ModelSource } from './types.ts';

/** The files of one model package, its dtype and the external data its graph references. */
export interface FetchedFiles {
  files: Map<string, Uint8Array>;
  dtype: ModelDtype;
  /** Path of the ONNX file inside the package (modelFileName(dtype)). */
  modelFile: string;
  decoded: ModelProto;
  /** Under the names the graph references (what onnxruntime-web's `externalData` option wants). */
  externalData: { path: string; data: Uint8Array }[];
}

/** Folder of a package path with its trailing slash ('onnx/model.onnx' → 'onnx/'). */
function dirOf(path: string): string {
  return path.slice(0, path.lastIndexOf('/') + 1);
}

/** Pairs the fetched chunks with the names the graph references; fetches (`more`) what is still missing. */
async function externalDataFor(
  decoded: ModelProto,
  modelFile: string,
  files: Map<string, Uint8Array>,
  more: (paths: string[]) => Promise<Map<string, Uint8Array>>,
): Promise<{ path: string; data: Uint8Array }[]> {
  const dir = dirOf(modelFile);
  const refs = externalDataLocations(decoded);
  const missing = refs.map((r) => dir + r).filter((p) => !files.has(p));
  if (missing.length > 0) for (const [k, v] of await more(missing)) files.set(k, v);
  return refs.map((r) => {
    const data = files.get(dir + r);
    if (!data) {
      throw new ModelPackageError(`${modelFile} references external data "${r}" that the package lacks`, {
        file: dir + r,
      });
    }
    return { path: r, data };
  });
}

export async function fetchFiles(
  source: ModelSource,
  forced: ModelDtype | undefined,
  fileOptions: Pick<FetchModelFilesOptions, 'cacheName' | 'useCache' | 'fetch' | 'estimate'> | undefined,
  progress: (p: LoadProgress) => void,
  clock?: PhaseClock,
): Promise<FetchedFiles> {
  const t0 = performance.now();
  const got = await fetchAll(source, forced, fileOptions, progress);
  // files = everything but the decode (which fetchAll times into `decodeMs`).
  clock?.add('decode', got.decodeMs);
  clock?.add('files', performance.now() - t0 - got.decodeMs);
  const { decodeMs: _d, ...fetched } = got;
  return fetched;
}

async function fetchAll(
  source: ModelSource,
  forced: ModelDtype | undefined,
  fileOptions: Pick<FetchModelFilesOptions, 'cacheName' | 'useCache' | 'fetch' | 'estimate'> | undefined,
  progress: (p: LoadProgress) => void,
): Promise<FetchedFiles & { decodeMs: number }> {
  if (typeof source !== 'string') {
    if (!Array.isArray(source)) {
      throw new InvalidOptionError('model source must be a base URL or an array of Files', {
        option: 'source',
      });
    }
    return pickedFiles(source, forced, progress);
  }

  const base = normalizeModelUrl(source);
  const cacheName = fileOptions?.cacheName ?? DEFAULT_MODEL_CACHE;
  const doFetch = fileOptions?.fetch ?? globalThis.fetch.bind(globalThis);
  let offset = 0;
  const fetchSet = async (
    specs: ModelFileSpec[],
    extra: Partial<FetchModelFilesOptions> = {},
    report = true,
  ): Promise<Map<string, Uint8Array>> => {
    const start = offset;
    const got = await fetchModelFiles(base, specs, {
      ...fileOptions,
      ...extra,
      onProgress: (p: ModelFileProgress) =>
        report &&
        progress({
          stage: 'download',
          file: p.file,
          fileLoaded: p.loaded,
          fileTotal: p.total,
          loaded: start + p.overallLoaded,
          total: p.overallTotal !== null ? start + p.overallTotal : null,
          fromCache: p.fromCache,
        }),
    });
    for (const b of got.values()) offset += b.byteLength;
    return got;
  };

  // config.json first (from the cache, or downloaded but not stored yet): it says how many external-data
  // chunks there are. It is handed to the full fetch below (verified and cached there, not fetched twice)
  // and reported there, so the overall byte count stays monotonic.
  const configBytes = (
    await fetchSet([{ path: 'config.json' }], { checkQuota: false, store: false }, false)
  ).get('config.json')!;
  offset = 0; // counted again with the rest
  const configJson = parseJson(configBytes, 'config.json');

  // The model file is probed (HEAD, or the cache) before any download: the default dtype is q4 when the
  // package has it, a missing dtype fails here with what there is, and the sizes feed the quota check.
  const probe = (path: string) => availability(base, path, cacheName, doFetch, fileOptions?.useCache);
  let dtype: ModelDtype = forced ?? 'q4';
  let found = await probe(modelFileName(dtype));
  if (!found.ok && !forced) {
    dtype = 'fp32';
    found = await probe(modelFileName(dtype));
  }
  const modelFile = modelFileName(dtype);
  if (!found.ok) {
    throw dtypeUnavailable(
      dtype,
      modelFile,
      await availableDtypes(base, cacheName, doFetch, fileOptions?.useCache),
      base,
    );
  }
  const chunks = configChunks(configJson, modelFile) ?? [];
  const specs: ModelFileSpec[] = [...JSON_FILES, hinted(modelFile, found)];
  for (const path of chunks) specs.push(hinted(path, await probe(path)));
  const files = await fetchSet(specs, { prefetched: new Map([['config.json', configBytes]]) });
  const t0 = performance.now();
  const decoded = decodeModel(files.get(modelFile)!);
  const decodeMs = performance.now() - t0;
  const externalData = await externalDataFor(decoded, modelFile, files, (paths) =>
    fetchSet(paths.map((path) => ({ path }))),
  );
  return { files, dtype, modelFile, decoded, externalData, decodeMs };
}

/** The same for user-picked files (a folder through `<input webkitdirectory>`). */
async function pickedFiles(
  source: File[],
  forced: ModelDtype | undefined,
  progress: (p: LoadProgress) => void,
): Promise<FetchedFiles & { decodeMs: number }> {
  const all = pickedPaths(source); // names only: the dtypes there are, without reading every file
  const available = MODEL_DTYPES.filter((d) => hasPicked(all, modelFileName(d)));
  const dtype: ModelDtype = forced ?? (available.includes('q4') ? 'q4' : 'fp32');
  const modelFile = modelFileName(dtype);
  if (!available.includes(dtype)) throw dtypeUnavailable(dtype, modelFile, available, 'the picked folder');
  const json = await localFilesSource(source, JSON_FILES);
  const configJson = parseJson(json.get('config.json'), 'config.json');
  const chunks = configChunks(configJson, modelFile) ?? [];
  const files = await localFilesSource(source, [
    ...JSON_FILES,
    { path: modelFile },
    ...chunks.map((path) => ({ path })),
  ]);
  const t0 = performance.now();
  const decoded = decodeModel(files.get(modelFile)!);
  const decodeMs = performance.now() - t0;
  const externalData = await externalDataFor(decoded, modelFile, files, (paths) =>
    localFilesSource(
      source,
      paths.map((path) => ({ path })),
    ),
  );
  let loaded = 0;
  const total = [...files.values()].reduce((n, b) => n + b.byteLength, 0);
  for (const [path, bytes] of files) {
    loaded += bytes.byteLength;
    progress({
      stage: 'download',
      file: path,
      fileLoaded: bytes.byteLength,
      fileTotal: bytes.byteLength,
      loaded,
      total,
    });
  }
  return { files, dtype, modelFile, decoded, externalData, decodeMs };
}

/** A picked file at `path`, or at a unique path ending in `/path` (a parent folder was picked). */
function hasPicked(files: Map<string, unknown>, path: string): boolean {
  if (files.has(path)) return true;
  return [...files.keys()].filter((p) => p.endsWith(`/${path}`)).length === 1;
}

/**
 * Reads the ONNX file at `path` again, with the external-data chunks it references (`refs`, names as the
 * graph has them, next to the file): for training, after the loaded model dropped its bytes. Cache Storage
 * or the network for a URL source, the picked Files otherwise.
 */
export function modelFileReader(
  source: ModelSource,
  fileOptions: Pick<FetchModelFilesOptions, 'cacheName' | 'useCache' | 'fetch' | 'estimate'> | undefined,
  path: string,
  refs: readonly string[] = [],
): () => Promise<{ bytes: Uint8Array; externalData: { path: string; data: Uint8Array }[] }> {
  const dir = dirOf(path);
  const specs = [{ path }, ...refs.map((r) => ({ path: dir + r }))];
  const read = async (): Promise<Map<string, Uint8Array>> => {
    if (typeof source !== 'string') return localFilesSource([...source], specs);
    return fetchModelFiles(normalizeModelUrl(source), specs, { ...fileOptions, checkQuota: false });
  };
  return async () => {
    const files = await read();
    return {
      bytes: files.get(path)!,
      externalData: refs.map((r) => ({ path: r, data: files.get(dir + r)! })),
    };
  };
}
