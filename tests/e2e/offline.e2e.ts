/**
 * Offline PWA on the built site: first visit (online) installs the service worker, which precaches the
 * app shell and ORT runtime, while the engine caches the model files and imports the adapter; then the
 * network goes away (context offline AND the server stopped), the page reloads from the service worker
 * and the element generates with the default model and an adapter; the demo page starts offline and
 * shows "Available offline".
 */
import { expect, it } from 'vitest';
import { collectPageErrors, generateIn, useE2eServerAndBrowser, waitForModel } from './helpers.ts';

const env = useE2eServerAndBrowser();

it('loads once, then starts and generates offline', async () => {
  const { browser, server } = env;
  const { adapters } = server;
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = collectPageErrors(page);
  const origin = server.origin;

  await page.goto(`${origin}/examples/embed.html?backend=wasm`);
  // With the example adapters the page's own attributes are used; otherwise a test adapter (imported
  // into IndexedDB while online, so it is available offline as well).
  if (!adapters.examples) {
    await page.evaluate((a) => document.querySelector('#shout')!.setAttribute('adapter', a), adapters.a);
  }
  await page.waitForFunction(() => navigator.serviceWorker.controller !== null, null, { timeout: 120_000 });
  await waitForModel(page, '#shout');
  const online = await generateIn(page, '#shout', 'ROMEO:\n');
  expect(online.error, errors.join('\n')).toBeNull();
  expect(online.tokenEvents).toBeGreaterThan(0);

  const cached = await page.evaluate(async () => {
    const names = await caches.keys();
    const urls: string[] = [];
    for (const n of names)
      for (const r of await (await caches.open(n)).keys()) urls.push(new URL(r.url).pathname);
    return { names, urls };
  });
  expect(cached.names).toContain('weblora-models-v1');
  expect(cached.urls).toContain('/ort/ort-wasm-simd-threaded.asyncify.wasm');
  expect(cached.urls).toContain('/examples/embed.html');
  expect(cached.urls).toContain('/models/weblora-shakespeare/config.json');
  expect(cached.urls.some((u) => u.startsWith('/models/weblora-shakespeare/onnx/'))).toBe(true);

  // Offline for real: the browser context and the server.
  await context.setOffline(true);
  await server.close();

  await page.reload();
  expect(await page.evaluate(() => navigator.onLine)).toBe(false);
  await waitForModel(page, '#shout');
  if (!adapters.examples) {
    await page.evaluate((a) => document.querySelector('#shout')!.setAttribute('adapter', a), adapters.a);
  }
  const offline = await generateIn(page, '#shout', 'ROMEO:\n');
  expect(offline.error, errors.join('\n')).toBeNull();
  expect(offline.tokenEvents).toBeGreaterThan(0);
  expect(offline.text).toBe(online.text); // same greedy prompt, same model and adapter

  // The demo app starts offline, and its PWA controls say so.
  await page.goto(`${origin}/?backend=wasm`);
  expect(await page.title()).toMatch(/weblora/);
  // The demo preinstalls the example adapters once the model is ready; let that finish before clearing.
  await page.waitForSelector('body[data-preinstall="done"]', { timeout: 60_000 });
  await page.waitForSelector('.weblora-pwa-offline[data-offline-ready="true"]', { timeout: 30_000 });
  const text = await page.textContent('.weblora-pwa-offline');
  expect(text).toMatch(/Everything needed is stored on this device|Available offline/);
  // The storage view lists the cached model (it fills in asynchronously).
  await page.waitForFunction(() =>
    document
      .querySelector('.weblora-pwa-storage [data-source="Model files"]')
      ?.textContent?.includes('/models/weblora-shakespeare/'),
  );

  // The storage view clears models and adapters (two clicks), and the indicator notices.
  await page.click('.weblora-pwa-clear');
  await page.click('.weblora-pwa-clear-confirm');
  await page.waitForSelector('.weblora-pwa-offline[data-offline-ready="false"]', { timeout: 30_000 });
  await page.waitForFunction(() =>
    [...document.querySelectorAll('.weblora-pwa-source')].every((s) =>
      s.textContent?.includes('None stored.'),
    ),
  );
  expect(
    await page.evaluate(async () => (await caches.open('weblora-models-v1')).keys().then((k) => k.length)),
  ).toBe(0);
  await context.close();
});
