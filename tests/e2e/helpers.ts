/**
 * Shared e2e plumbing: Debian's Chromium through the `playwright` library (flags as in
 * vitest.config.ts), the static server with the built folders mounted, the adapters to test with, and
 * in-page helpers that drive `<weblora-chat>` elements through their public API.
 * Adapters: the example adapters from public/adapters/ when the build has them; otherwise two test-only
 * adapters made from tests/fixtures/peft-adapter (same model shapes) with base_model_name_or_path set to
 * the default model and different lora_alpha, served from memory under /__e2e__/adapters/.
 */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright';
import { afterAll, beforeAll } from 'vitest';
import { CHROMIUM_ARGS } from '../../vitest.config.ts';
import { E2E_DIST, E2E_DIST_LIB, E2E_DIST_SUBPATH, ROOT, SUBPATH } from './paths.ts';
import { type StaticServer, startStaticServer } from './server.ts';

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: CHROMIUM_ARGS,
  });
}

export interface TestAdapters {
  /** URL paths of two different PEFT adapter folders (trailing slash). */
  a: string;
  b: string;
  /** True for the real example adapters shipped in public/adapters/. */
  examples: boolean;
}

export const EXAMPLE_ADAPTERS = existsSync(resolve(E2E_DIST, 'adapters/weblora-shout/adapter_config.json'));

export type E2eServer = StaticServer & { adapters: TestAdapters };

export async function startE2eServer(): Promise<E2eServer> {
  const server = await startStaticServer([
    { prefix: '/', dir: E2E_DIST },
    { prefix: SUBPATH, dir: E2E_DIST_SUBPATH },
    { prefix: '/lib/', dir: E2E_DIST_LIB },
  ]);
  let adapters: TestAdapters;
  if (EXAMPLE_ADAPTERS) {
    adapters = { a: '/adapters/weblora-shout/', b: '/adapters/weblora-romeo/', examples: true };
  } else {
    const dir = resolve(ROOT, 'tests/fixtures/peft-adapter');
    const config = JSON.parse(readFileSync(resolve(dir, 'adapter_config.json'), 'utf8')) as Record<
      string,
      unknown
    >;
    const weights = new Uint8Array(readFileSync(resolve(dir, 'adapter_model.safetensors')));
    for (const [name, alpha] of [
      ['fixture-a', 8],
      ['fixture-b', 96],
    ] as const) {
      const cfg = { ...config, base_model_name_or_path: 'weblora-shakespeare', lora_alpha: alpha };
      server.files.set(`/__e2e__/adapters/${name}/adapter_config.json`, { body: JSON.stringify(cfg) });
      server.files.set(`/__e2e__/adapters/${name}/adapter_model.safetensors`, { body: weights });
    }
    adapters = { a: '/__e2e__/adapters/fixture-a/', b: '/__e2e__/adapters/fixture-b/', examples: false };
  }
  return Object.assign(server, { adapters });
}

/**
 * Registers hooks that start the e2e server and Chromium before the file's tests and close both after
 * them. The returned object's fields are set once `beforeAll` has run (read them inside tests).
 */
export function useE2eServerAndBrowser(): { server: E2eServer; browser: Browser } {
  const env = {} as { server: E2eServer; browser: Browser };
  beforeAll(async () => {
    env.server = await startE2eServer();
    env.browser = await launchChromium();
  });
  afterAll(async () => {
    await env.browser?.close();
    await env.server?.close();
  });
  return env;
}

/** A plain HTML page that loads the library build from /lib/ and holds `body` markup. */
export function libPage(body: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>e2e</title>
<script type="module" src="/lib/weblora-chat.js"></script></head><body>${body}</body></html>`;
}

export interface GenOutcome {
  /** NUL characters (the tiny model can emit them) are shown as \\0: Playwright cuts strings at NUL. */
  text: string;
  /**
   * The streamed deltas concatenated equal the result text, checked in the page when the `done` event
   * fired: no `token` event may come after `done` (the worker protocol orders them).
   */
  streamedEqualsText: boolean;
  finishReason: string;
  tokenEvents: number;
  tokenText: string;
  error: { name: string; message: string } | null;
}

/** Calls `generate(prompt)` on the element matching `selector` and records its events. */
export function generateIn(page: Page, selector: string, prompt: string): Promise<GenOutcome> {
  return page.evaluate(
    async ({ selector, prompt }) => {
      await customElements.whenDefined('weblora-chat');
      const el = document.querySelector(selector) as HTMLElement & {
        generate(p: string): Promise<{ text: string; finishReason: string }>;
      };
      let tokenEvents = 0;
      let tokenText = '';
      let error: { name: string; message: string } | null = null;
      const onToken = (e: Event): void => {
        tokenEvents++;
        tokenText += (e as CustomEvent<{ text: string }>).detail.text;
      };
      const onError = (e: Event): void => {
        const d = (e as CustomEvent<{ name: string; message: string }>).detail;
        error = { name: d.name, message: d.message };
      };
      let textAtDone: string | null = null;
      const onDone = (): void => {
        textAtDone = tokenText;
      };
      el.addEventListener('token', onToken);
      el.addEventListener('error', onError);
      el.addEventListener('done', onDone);
      try {
        const r = await el.generate(prompt);
        const esc = (s: string): string => s.replaceAll('\0', '\\0');
        return {
          text: esc(r.text),
          streamedEqualsText: textAtDone === r.text && tokenText === r.text,
          finishReason: r.finishReason,
          tokenEvents,
          tokenText: esc(tokenText),
          error,
        };
      } catch (e) {
        const err = error ?? { name: (e as Error).name, message: (e as Error).message };
        return {
          text: '',
          streamedEqualsText: false,
          finishReason: 'error',
          tokenEvents,
          tokenText,
          error: err,
        };
      } finally {
        el.removeEventListener('token', onToken);
        el.removeEventListener('error', onError);
        el.removeEventListener('done', onDone);
      }
    },
    { selector, prompt },
  );
}

/** Waits until the element matching `selector` reports a loaded model (its `report` property). */
export async function waitForModel(
  page: Page,
  selector: string,
  timeoutMs = 120_000,
): Promise<{ backend: string }> {
  await page.waitForFunction(
    (sel) => {
      const el = document.querySelector(sel) as (HTMLElement & { report: unknown }) | null;
      const err = el?.shadowRoot?.querySelector('.error')?.textContent;
      if (err) throw new Error(`element error: ${err}`);
      return el?.report != null;
    },
    selector,
    { timeout: timeoutMs, polling: 250 },
  );
  return page.evaluate(
    (sel) => (document.querySelector(sel) as unknown as { report: { backend: string } }).report,
    selector,
  );
}

/** Console errors and page errors, for diagnostics in failure messages. */
export function collectPageErrors(page: Page): string[] {
  const out: string[] = [];
  page.on('pageerror', (e) => out.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') out.push(`console: ${m.text()}`);
  });
  return out;
}

/** The demo page (index.html) has loaded its model: `body[data-state=ready]`; a load error throws at once. */
export async function waitForDemoReady(p: Page, timeout = 120_000): Promise<void> {
  await p.waitForFunction(
    () => {
      const s = document.body.dataset.state;
      if (s === 'error') throw new Error(`demo error: ${document.getElementById('load-error')?.textContent}`);
      return s === 'ready';
    },
    null,
    { timeout, polling: 100 },
  );
}

/** The demo opened by `openDemo`: server, browser, page and the names of the stored adapters it lists. */
export interface DemoSession {
  server: E2eServer;
  browser: Browser;
  context: BrowserContext;
  page: Page;
  errors: string[];
  /** `examples` when the build ships the example adapters, else the two test adapters' names. */
  names: string[];
}

/**
 * Starts the e2e server and Chromium and opens the demo at `query` (default wasm, completion mode) once
 * its model is ready and its adapters are preinstalled. Without example adapters in the build, the two
 * test adapters are listed in an index.json the app preinstalls as fixture-a / fixture-b.
 */
export async function openDemo(
  opts: { examples?: readonly string[]; query?: string; acceptDownloads?: boolean } = {},
): Promise<DemoSession> {
  const server = await startE2eServer();
  const opened: Partial<DemoSession> = { server };
  try {
    return await openDemoOn(server, opened, opts);
  } catch (e) {
    await closeDemo(opened);
    throw e;
  }
}

async function openDemoOn(
  server: E2eServer,
  opened: Partial<DemoSession>,
  opts: { examples?: readonly string[]; query?: string; acceptDownloads?: boolean },
): Promise<DemoSession> {
  let names: string[] = [...(opts.examples ?? [])];
  if (opts.examples && !server.adapters.examples) {
    names = ['fixture-a', 'fixture-b'];
    const adapters = [
      { name: names[0], path: server.adapters.a.slice(1), description: 'test adapter a' },
      { name: names[1], path: server.adapters.b.slice(1), description: 'test adapter b' },
    ];
    server.files.set('/adapters/index.json', { body: JSON.stringify({ adapters }) });
  }
  const browser = await launchChromium();
  opened.browser = browser;
  const context = await browser.newContext({
    viewport: { width: 1400, height: 1000 },
    ...(opts.acceptDownloads ? { acceptDownloads: true } : {}),
  });
  opened.context = context;
  const page = await context.newPage();
  const errors = collectPageErrors(page);
  await page.goto(`${server.origin}/${opts.query ?? '?backend=wasm&mode=completion'}`);
  await waitForDemoReady(page);
  await page.waitForFunction(() => document.body.dataset.preinstall === 'done', null, { timeout: 60_000 });
  return { server, browser, context, page, errors, names };
}

/** Closes what `openDemo` opened (each part may be missing when the set-up failed half-way). */
export async function closeDemo(s: Partial<DemoSession>): Promise<void> {
  await s.context?.close();
  await s.browser?.close();
  await s.server?.close();
}
