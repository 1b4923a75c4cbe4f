/**
 * Where an adapter to import comes from: picked files or a drop (`inputFromFiles`), URLs
 * (`inputFromUrl`: a PEFT folder or one `.safetensors`), or bytes — turned into the `ImportInput` that
 * import.ts validates. Also the name an import gets when none is given (`defaultAdapterName`: the
 * adapter's folder or file name). It deliberately does no validation of the bytes: import.ts does.
 */
import { AdapterFormatError, FetchError, InvalidOptionError } from '../errors.ts';
import { CONFIG_FILE, type ImportInput, WEIGHTS_FILE } from './import.ts';
import type { AdapterImportInput } from './types.ts';

/** A File-like: Blob with a name (File, or `{ name, arrayBuffer }` in tests). */
export interface NamedBlob {
  name: string;
  arrayBuffer(): Promise<ArrayBuffer>;
}

/**
 * Picks the adapter from a set of files (an `<input type=file multiple>`'s FileList, or
 * `DataTransfer.files` from a drop): `adapter_config.json` (any `*.json` if that name is absent) and one
 * `.safetensors` file. A lone `.safetensors` is a single-file adapter.
 */
export async function inputFromFiles(
  files: Iterable<NamedBlob> | ArrayLike<NamedBlob>,
): Promise<ImportInput> {
  const list = Array.from(files as ArrayLike<NamedBlob>);
  const st = list.filter((f) => f.name.toLowerCase().endsWith('.safetensors'));
  const json =
    list.find((f) => f.name === CONFIG_FILE) ?? list.find((f) => f.name.toLowerCase().endsWith('.json'));
  if (st.length !== 1) {
    throw new AdapterFormatError(
      `expected exactly one .safetensors file among [${list.map((f) => f.name).join(', ')}], found ${st.length}`,
      { files: list.map((f) => f.name), reason: 'files' },
    );
  }
  const weights = new Uint8Array(await st[0]!.arrayBuffer());
  if (!json) return { weights };
  return { weights, config: new Uint8Array(await json.arrayBuffer()) };
}

/** The files of a drop event (`e.dataTransfer`). */
export function inputFromDataTransfer(dt: DataTransfer): Promise<ImportInput> {
  return inputFromFiles(dt.files);
}

async function fetchBytes(url: string, f: typeof fetch): Promise<Uint8Array | null> {
  let res: Response;
  try {
    res = await f(url);
  } catch (e) {
    throw new FetchError(`could not fetch ${url}: ${String(e)}`, { url });
  }
  if (res.status === 404) return null;
  if (!res.ok)
    throw new FetchError(`could not fetch ${url}: HTTP ${res.status}`, { url, status: res.status });
  return new Uint8Array(await res.arrayBuffer());
}

/**
 * An adapter from URLs: a `.safetensors` URL (single-file adapter, or with `adapter_config.json` next to
 * it when that exists), or a folder URL holding both PEFT files (a Hub `resolve/main/` URL works).
 */
export async function inputFromUrl(url: string, f: typeof fetch = fetch): Promise<ImportInput> {
  const isFile = /\.safetensors(?:[?#].*)?$/i.test(url);
  const base = isFile ? url.replace(/[^/]*$/, '') : url.endsWith('/') ? url : `${url}/`;
  const weightsUrl = isFile ? url : base + WEIGHTS_FILE;
  const [weights, config] = await Promise.all([fetchBytes(weightsUrl, f), fetchBytes(base + CONFIG_FILE, f)]);
  if (!weights)
    throw new FetchError(`could not fetch ${weightsUrl}: HTTP 404`, { url: weightsUrl, status: 404 });
  return config ? { weights, config } : { weights };
}

/** Name for an import without `opts.name`: the adapter's folder (or single file) name. */
export function defaultAdapterName(input: AdapterImportInput): string {
  const strip = (n: string): string => n.replace(/\.safetensors$/i, '');
  const generic = (n: string): boolean => n === '' || n === 'adapter_model' || n === 'adapter_config.json';
  if ('files' in input && Array.isArray(input.files)) {
    const st = input.files.find((f) => f.name.toLowerCase().endsWith('.safetensors'));
    if (st) {
      const segs = (st.webkitRelativePath || '').split('/').filter(Boolean);
      if (segs.length >= 2) return segs[segs.length - 2]!;
      if (!generic(strip(st.name))) return strip(st.name);
    }
  } else if ('url' in input && typeof input.url === 'string') {
    const segs = input.url
      .replace(/[?#].*$/, '')
      .split('/')
      .filter(Boolean)
      .filter((s) => !/^(resolve|main)$/.test(s));
    const last = segs[segs.length - 1] ?? '';
    if (/\.safetensors$/i.test(last)) {
      if (!generic(strip(last))) return strip(last);
      if (segs.length >= 2) return segs[segs.length - 2]!;
    } else if (last && !/^https?:$/.test(last)) return last;
  }
  throw new InvalidOptionError('give the adapter a name (opts.name): none can be derived from this input', {
    option: 'name',
  });
}

/** The bytes of an engine import input ({ files } | { url } | { config?, weights }). */
export async function readAdapterInput(input: AdapterImportInput): Promise<ImportInput> {
  if (input && 'files' in input && Array.isArray(input.files)) return inputFromFiles(input.files);
  if (input && 'url' in input && typeof input.url === 'string') return inputFromUrl(input.url);
  if (input && 'weights' in input && input.weights instanceof Uint8Array) {
    return input.config === undefined
      ? { weights: input.weights }
      : { config: input.config, weights: input.weights };
  }
  throw new InvalidOptionError(
    'adapter input must be { files }, { url } or { config?, weights: Uint8Array }',
    {
      option: 'input',
    },
  );
}
