/**
 * PWA update flow on the built demo: after a first visit installed the service worker, the server starts
 * answering /sw.js with a new version (the built file plus a marker that answers a 'version?' message).
 * The new worker installs and waits (registerType 'prompt', skipWaiting false): the update banner
 * appears; "Later" hides it; a reload shows it again (the worker is still waiting); "Reload to update"
 * activates the new worker and reloads the page, which is then controlled by the new version and shows
 * no banner.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Page } from 'playwright';
import { expect, it } from 'vitest';
import { collectPageErrors, useE2eServerAndBrowser, waitForDemoReady } from './helpers.ts';
import { E2E_DIST } from './paths.ts';

const env = useE2eServerAndBrowser();

/** What the controlling service worker answers to 'version?' (null: no answer within 2 s, i.e. the original build). */
function controllerVersion(page: Page): Promise<string | null> {
  return page.evaluate(
    () =>
      new Promise<string | null>((done) => {
        const sw = navigator.serviceWorker.controller;
        if (!sw) return done('no controller');
        const ch = new MessageChannel();
        const timer = setTimeout(() => done(null), 2000);
        ch.port1.onmessage = (e) => {
          clearTimeout(timer);
          done(String(e.data));
        };
        sw.postMessage('version?', [ch.port2]);
      }),
  );
}

const bannerVisible = (page: Page): Promise<boolean> =>
  page.evaluate(() => {
    const el = document.querySelector<HTMLElement>('.weblora-pwa-update');
    return el !== null && !el.hidden;
  });

it('a new service worker waits behind the update banner; Later hides it, Reload activates it', async () => {
  const { browser, server } = env;
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = collectPageErrors(page);

  await page.goto(`${server.origin}/?backend=wasm`);
  await page.waitForFunction(() => navigator.serviceWorker.controller !== null, null, { timeout: 120_000 });
  await page.waitForSelector('.weblora-pwa-update', { state: 'attached' });
  expect(await bannerVisible(page)).toBe(false);
  expect(await controllerVersion(page)).toBeNull(); // the built worker has no 'version?' handler

  // A new deploy: same precache, different sw.js bytes.
  const built = readFileSync(resolve(E2E_DIST, 'sw.js'), 'utf8');
  server.files.set('/sw.js', {
    body: `${built}
self.addEventListener('message', (e) => { if (e.data === 'version?') e.ports[0]?.postMessage('e2e-v2'); });
`,
  });
  try {
    // workbox-window reports the new waiting worker twice: 'installed', then 'waiting' 200 ms later
    // (src/pwa/register.ts counts the reports in the banner's data-waiting-reports). "Later" must hold
    // through the second report, so it is clicked from inside the page in the task that shows the
    // banner, certainly before that report, with the count at that moment recorded.
    await page.evaluate(() => {
      const banner = document.querySelector<HTMLElement>('.weblora-pwa-update')!;
      (window as unknown as { __laterClicked: Promise<string | undefined> }).__laterClicked = new Promise(
        (done) => {
          const observer = new MutationObserver(() => {
            if (banner.hidden) return;
            observer.disconnect();
            const reports = banner.dataset.waitingReports;
            banner.querySelector<HTMLButtonElement>('.weblora-pwa-later')!.click();
            done(reports);
          });
          observer.observe(banner, { attributes: true, attributeFilter: ['hidden'] });
        },
      );
    });
    expect(await page.getAttribute('.weblora-pwa-update', 'data-waiting-reports')).toBe('0');
    await page.evaluate(async () => {
      const reg = await navigator.serviceWorker.getRegistration();
      await reg?.update();
    });
    const reportsAtClick = await page.evaluate(
      () => (window as unknown as { __laterClicked: Promise<string | undefined> }).__laterClicked,
    );
    expect(reportsAtClick, 'Later was clicked after the first report').toBe('1');
    expect(await page.textContent('.weblora-pwa-update')).toMatch(/new version of weblora is available/);
    expect(await bannerVisible(page)).toBe(false);
    await page.waitForSelector('.weblora-pwa-update[data-waiting-reports="2"]', {
      state: 'attached',
      timeout: 10_000,
    });
    expect(await bannerVisible(page)).toBe(false); // "Later" held through the second report
    expect(await controllerVersion(page)).toBeNull(); // still the old worker

    // The new worker is still waiting: the next visit offers it again.
    await page.reload();
    await page.waitForSelector('.weblora-pwa-update:not([hidden])', { timeout: 60_000 });

    // Reload to update: skipWaiting → controllerchange → the page reloads under the new worker. Clicked
    // once the demo has started, as a person would: Chromium retires the old worker only when it is
    // idle, and a fetch that restarts it just after skipWaiting (the engine loading its runtime) makes
    // the hand-over wait for the old worker's idle timeout — 5 minutes with DevTools (Playwright)
    // attached. The banner then says it is waiting (src/pwa/update-prompt.ts).
    await waitForDemoReady(page);
    await page.waitForSelector('body[data-preinstall="done"]', { timeout: 60_000 });
    const reloaded = page.waitForEvent('load', { timeout: 60_000 });
    await page.click('.weblora-pwa-reload');
    await reloaded;
    await page.waitForFunction(() => navigator.serviceWorker.controller !== null);
    expect(await controllerVersion(page)).toBe('e2e-v2');
    await page.waitForSelector('.weblora-pwa-update', { state: 'attached' });
    expect(await bannerVisible(page)).toBe(false);
    const waiting = await page.evaluate(
      async () => (await navigator.serviceWorker.getRegistration())?.waiting,
    );
    expect(waiting ?? null).toBeNull();
    expect(errors.filter((e) => !/favicon|Failed to load resource/.test(e))).toEqual([]);
  } finally {
    server.files.delete('/sw.js');
    await context.close();
  }
});
