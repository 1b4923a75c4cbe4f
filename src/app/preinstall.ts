/**
 * First-run install of the example adapters listed in `BASE_URL + adapters/index.json`
 * ({ adapters: [{ name, path, description }] }, paths relative to the site base): each one not yet stored is imported from its folder
 * URL. Runs once per browser profile (a localStorage flag), so adapters the user deleted stay deleted
 * until the user asks for them back ("Restore example adapters", `force`);
 * a missing or broken index, or one adapter that fails, is logged and skipped. Sets
 * `document.body.dataset.preinstall` = 'running' | 'done' for automation.
 */
import { FetchError, WebLoraError } from '../errors.ts';
import type { AppState } from './state.ts';

export interface ExampleAdapter {
  name: string;
  path: string;
  description?: string;
}

const FLAG = 'weblora-demo:examples-installed';

/** The site root (deploys may live under a sub-path); index.json paths are relative to it. */
function siteBase(): URL {
  return new URL(import.meta.env.BASE_URL, location.href);
}

function indexUrl(): URL {
  return new URL('adapters/index.json', siteBase());
}

/**
 * The example index. FetchError (data `{ file, url, status? }`, like the model files') when it cannot
 * be fetched; WebLoraError (data `{ file, url }`) when it is not JSON with an "adapters" array.
 */
export async function readExampleIndex(): Promise<ExampleAdapter[]> {
  const url = indexUrl();
  const file = 'adapters/index.json';
  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new FetchError(`could not fetch ${url.href}: ${String(e)}`, { file, url: url.href });
  }
  if (!res.ok) {
    throw new FetchError(`could not fetch ${url.href}: HTTP ${res.status}`, {
      file,
      url: url.href,
      status: res.status,
    });
  }
  let json: { adapters?: unknown };
  try {
    json = (await res.json()) as { adapters?: unknown };
  } catch (e) {
    throw new WebLoraError(`${url.pathname} is not JSON: ${String(e)}`, { file, url: url.href });
  }
  if (!Array.isArray(json?.adapters)) {
    throw new WebLoraError(`${url.pathname}: no "adapters" array`, { file, url: url.href });
  }
  return json.adapters.filter(
    (a): a is ExampleAdapter =>
      typeof a === 'object' && a !== null && typeof a.name === 'string' && typeof a.path === 'string',
  );
}

function flagSet(): boolean {
  try {
    return localStorage.getItem(FLAG) === '1';
  } catch {
    return false;
  }
}

/**
 * Imports the example adapters that are missing (first run only, unless `force`: the "Restore example
 * adapters" button). Never throws; resolves to the names installed now and those that failed.
 */
export async function preinstallExamples(
  state: AppState,
  opts: { force?: boolean } = {},
): Promise<{ installed: string[]; failed: string[] }> {
  const installed: string[] = [];
  const failed: string[] = [];
  if (flagSet() && !opts.force) {
    document.body.dataset.preinstall = 'done';
    return { installed, failed };
  }
  document.body.dataset.preinstall = 'running';
  try {
    let examples: ExampleAdapter[];
    try {
      examples = await readExampleIndex();
    } catch (e) {
      console.info('weblora demo: no example adapters to install', e);
      return { installed, failed };
    }
    const have = new Set((await state.engine.listAdapters()).map((a) => a.name));
    let ok = true;
    for (const ex of examples) {
      if (have.has(ex.name)) continue;
      try {
        await state.engine.importAdapter({ url: new URL(ex.path, siteBase()).href }, { name: ex.name });
        installed.push(ex.name);
      } catch (e) {
        ok = false;
        failed.push(ex.name);
        console.warn(`weblora demo: could not install example adapter ${ex.name}`, e);
      }
    }
    if (ok) {
      try {
        localStorage.setItem(FLAG, '1');
      } catch {
        // private mode: install again next time
      }
    }
    await state.refreshAdapters();
    return { installed, failed };
  } finally {
    document.body.dataset.preinstall = 'done';
  }
}
