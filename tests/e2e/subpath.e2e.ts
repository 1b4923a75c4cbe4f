/**
 * Sub-path deploy: the site built with WEBLORA_BASE=/some/base/ and served only under that path loads,
 * generates (wasm, no COOP/COEP headers: single-threaded), and requests nothing outside the base.
 */
import { expect, it } from 'vitest';
import { collectPageErrors, generateIn, useE2eServerAndBrowser, waitForModel } from './helpers.ts';
import { SUBPATH } from './paths.ts';

const env = useE2eServerAndBrowser();

it(`loads and generates under ${SUBPATH}`, async () => {
  const { browser, server } = env;
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = collectPageErrors(page);
  const outside: string[] = [];
  const track = (url: string): void => {
    const u = new URL(url);
    if (u.origin === server.origin && !u.pathname.startsWith(SUBPATH)) outside.push(u.pathname);
  };
  page.on('request', (r) => track(r.url()));
  context.on('request', (r) => track(r.url()));

  await page.goto(`${server.origin}${SUBPATH}examples/embed.html?backend=wasm`);
  if (!server.adapters.examples) {
    // The test adapters live outside the base; generate with the base model instead.
    await page.evaluate(() => document.querySelector('#shout')!.removeAttribute('adapter'));
  }
  const report = await waitForModel(page, '#shout');
  expect(report.backend).toBe('wasm');
  const r = await generateIn(page, '#shout', 'ROMEO:\n');
  expect(r.error, errors.join('\n')).toBeNull();
  expect(r.tokenEvents).toBeGreaterThan(0);
  expect(await page.evaluate(() => crossOriginIsolated)).toBe(false);

  // The demo page and its PWA wiring under the base.
  await page.goto(`${server.origin}${SUBPATH}`);
  expect(await page.title()).toMatch(/weblora/);
  const manifest = await page.evaluate(
    () => (document.querySelector('link[rel="manifest"]') as HTMLLinkElement | null)?.href,
  );
  expect(manifest).toBe(`${server.origin}${SUBPATH}manifest.webmanifest`);
  const scope = await page.evaluate(async () => (await navigator.serviceWorker.ready).scope);
  expect(scope).toBe(`${server.origin}${SUBPATH}`);
  expect(outside, 'requests outside the base path').toEqual([]);
  await context.close();
});
