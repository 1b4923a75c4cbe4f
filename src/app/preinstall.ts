/**
 * First-run install of the example adapters listed in `BASE_URL + adapters/index.json`
 * ({ adapters: [{ name, path, description }] }, paths relative to the site base): each one not yet stored is imported from its folder
 * URL. Runs once per browser profile (a localStorage flag), so adapters the user deleted stay deleted;
 * a missing or broken index, or one adapter that fails, is logged and skipped. Sets
 * `document.body.dataset.preinstall` = 'running' | 'done' for automation.
 */
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

export async function readExampleIndex(): Promise<ExampleAdapter[]> {
  const url = indexUrl();
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url.pathname}: HTTP ${res.status}`);
  const json = (await res.json()) as { adapters?: unknown };
  if (!Array.isArray(json.adapters)) throw new Error(`${url.pathname}: no "adapters" array`);
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

/** Imports the example adapters that are missing (first run only). Never throws. */
export async function preinstallExamples(state: AppState): Promise<void> {
  if (flagSet()) {
    document.body.dataset.preinstall = 'done';
    return;
  }
  document.body.dataset.preinstall = 'running';
  try {
    let examples: ExampleAdapter[];
    try {
      examples = await readExampleIndex();
    } catch (e) {
      console.info('weblora demo: no example adapters to install', e);
      return;
    }
    const have = new Set((await state.engine.listAdapters()).map((a) => a.name));
    let ok = true;
    for (const ex of examples) {
      if (have.has(ex.name)) continue;
      try {
        await state.engine.importAdapter({ url: new URL(ex.path, siteBase()).href }, { name: ex.name });
      } catch (e) {
        ok = false;
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
  } finally {
    document.body.dataset.preinstall = 'done';
  }
}
