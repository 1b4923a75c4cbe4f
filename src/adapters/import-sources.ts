/**
 * Where an adapter to import comes from: picked files or a drop (`inputFromFiles`), URLs
 * (`inputFromUrl`: a PEFT folder, one `.safetensors`, or a Hugging Face repo URL), or bytes — turned into the `ImportInput` that
 * import.ts validates. Also the name an import gets when none is given (`defaultAdapterName`: the
 * adapter's folder or file name). It deliberately does no validation of the bytes: import.ts does.
 */
import { AdapterFormatError, FetchError, InvalidOptionError, NothingAtUrlError } from '../errors.ts';
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

/** What one adapter-file fetch found: bytes, or why nothing usable is there. */
type Fetched = { bytes: Uint8Array } | { missing: true; status: number; html: boolean };

const HTML_START = /^\s*<(?:!doctype\s+html|html[\s>]|head[\s>]|body[\s>])/i;

/**
 * True for an HTML page where an adapter file belongs: hosts that answer a missing path with the app's
 * index.html (Vite dev/preview, many SPA hosts) say `text/html` or at least start the body with markup.
 * No adapter file is HTML (safetensors starts with a binary length, the config with `{`).
 */
function isHtml(res: Response, bytes: Uint8Array): boolean {
  if ((res.headers.get('Content-Type') ?? '').toLowerCase().includes('text/html')) return true;
  return HTML_START.test(new TextDecoder().decode(bytes.subarray(0, 64)));
}

async function fetchBytes(url: string, f: typeof fetch): Promise<Fetched> {
  let res: Response;
  try {
    res = await f(url);
  } catch (e) {
    throw new FetchError(`could not fetch ${url} (offline, or blocked by CORS?): ${String(e)}`, { url });
  }
  if (res.status === 404 || res.status === 410) {
    await res.body?.cancel().catch(() => {});
    return { missing: true, status: res.status, html: false };
  }
  if (!res.ok)
    throw new FetchError(`could not fetch ${url}: HTTP ${res.status}`, { url, status: res.status });
  const bytes = new Uint8Array(await res.arrayBuffer());
  if (isHtml(res, bytes)) return { missing: true, status: res.status, html: true };
  return { bytes };
}

const WHAT_TO_GIVE =
  'give the URL of a folder holding adapter_model.safetensors (and adapter_config.json), of a ' +
  '.safetensors file, or of a Hugging Face repo (https://huggingface.co/<owner>/<repo>)';

/**
 * A Hugging Face Hub page URL as the URL its files download from: `https://huggingface.co/<owner>/<repo>`
 * → `…/<owner>/<repo>/resolve/main/`, `…/tree/<rev>/<subdir>` → `…/resolve/<rev>/<subdir>/`,
 * `…/blob/<rev>/<file>` → `…/resolve/<rev>/<file>`. Any other URL (and `resolve/` URLs) unchanged.
 */
export function resolveHubUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return url; // relative: not the Hub
  }
  if (!/^(?:www\.)?(?:huggingface\.co|hf\.co)$/i.test(u.hostname)) return url;
  const segs = u.pathname.split('/').filter(Boolean);
  const [owner, repo, kind, rev, ...rest] = segs;
  if (!owner || !repo || owner === 'datasets' || owner === 'spaces') return url;
  const root = `${u.origin}/${owner}/${repo}/resolve/`;
  if (kind === undefined) return `${root}main/`;
  if ((kind === 'tree' || kind === 'blob') && rev) {
    const path = rest.join('/');
    const isFile = kind === 'blob' || /\.(?:safetensors|json)$/i.test(path);
    return `${root}${rev}/${path}${path && !isFile ? '/' : ''}`;
  }
  return url;
}

/**
 * An adapter from URLs: a `.safetensors` URL (single-file adapter, or with `adapter_config.json` next to
 * it when that exists), a folder URL holding both PEFT files (a Hub `resolve/main/` URL works), or a
 * Hugging Face repo page URL (resolveHubUrl). Nothing there (404, or an HTML page: a host's fallback for a
 * missing path) is a NothingAtUrlError; a config that is missing or HTML counts as absent.
 */
export async function inputFromUrl(url: string, f: typeof fetch = fetch): Promise<ImportInput> {
  const resolved = resolveHubUrl(url);
  const isFile = /\.safetensors(?:[?#].*)?$/i.test(resolved);
  const base = isFile ? resolved.replace(/[^/]*$/, '') : resolved.endsWith('/') ? resolved : `${resolved}/`;
  const weightsUrl = isFile ? resolved : base + WEIGHTS_FILE;
  const [weights, config] = await Promise.all([fetchBytes(weightsUrl, f), fetchBytes(base + CONFIG_FILE, f)]);
  if ('missing' in weights) {
    const why = weights.html
      ? 'the server answered with an HTML page (what many sites send for a path they do not have), not an adapter file'
      : `HTTP ${weights.status}`;
    throw new NothingAtUrlError(`nothing at ${weightsUrl}: ${why}. Check the URL: ${WHAT_TO_GIVE}`, {
      url: weightsUrl,
      status: weights.status,
      ...(weights.html ? { htmlFallback: true } : {}),
    });
  }
  return 'bytes' in config ? { weights: weights.bytes, config: config.bytes } : { weights: weights.bytes };
}

/** Name for an import without `opts.name`: the adapter's folder (or single file) name. */
export function defaultAdapterName(input: AdapterImportInput): string {
  // `shout.adapter_model.safetensors` (an export's prefixed name) → "shout".
  const strip = (n: string): string => n.replace(/\.safetensors$/i, '').replace(/\.adapter_model$/i, '');
  const generic = (n: string): boolean => n === '' || n === 'adapter_model' || n === 'adapter_config.json';
  if ('files' in input && Array.isArray(input.files)) {
    const st = input.files.find((f) => f.name.toLowerCase().endsWith('.safetensors'));
    if (st) {
      const segs = (st.webkitRelativePath || '').split('/').filter(Boolean);
      if (segs.length >= 2) return segs[segs.length - 2]!;
      if (!generic(strip(st.name))) return strip(st.name);
    }
  } else if ('url' in input && typeof input.url === 'string') {
    // A Hub URL names the repo (or its sub-folder): drop `resolve/<revision>`.
    const all = resolveHubUrl(input.url)
      .replace(/[?#].*$/, '')
      .split('/')
      .filter(Boolean);
    const r = all.indexOf('resolve');
    const segs = (r >= 0 ? [...all.slice(0, r), ...all.slice(r + 2)] : all).filter((s) => s !== 'main');
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
