/**
 * `<weblora-chat>` from the library build in a plain HTML page: two elements with different adapters
 * share one worker and one model download (every model file requested once), both stream output;
 * a bad model URL fires `error` with a readable message and the typed error name.
 */
import { readdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { collectPageErrors, generateIn, libPage, useE2eServerAndBrowser, waitForModel } from './helpers.ts';
import { E2E_DIST_LIB } from './paths.ts';

const env = useE2eServerAndBrowser();

describe('embedding the library build', () => {
  it('ships one module, its declarations and exactly one worker chunk (no unused default worker)', () => {
    const top = readdirSync(E2E_DIST_LIB).sort();
    expect(top).toEqual(
      expect.arrayContaining(['assets', 'models', 'ort', 'weblora-chat.d.ts', 'weblora-chat.js']),
    );
    const assets = readdirSync(resolve(E2E_DIST_LIB, 'assets'));
    expect(assets).toHaveLength(1);
    expect(assets[0]).toMatch(/^engine-worker-[\w-]+\.js$/);
  });

  it('two elements with different adapters share one worker and one model load, and both stream', async () => {
    const { browser, server } = env;
    const { a, b } = server.adapters;
    server.files.set('/__e2e__/two.html', {
      body: libPage(`
<weblora-chat id="a" backend="wasm" adapter="${a}" max-tokens="10"></weblora-chat>
<weblora-chat id="b" backend="wasm" adapter="${b}" max-tokens="10"></weblora-chat>`),
    });
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors = collectPageErrors(page);
    const modelRequests = new Map<string, number>();
    const swRequests: string[] = [];
    page.on('request', (r) => {
      const path = new URL(r.url()).pathname;
      if (path.includes('/models/')) modelRequests.set(path, (modelRequests.get(path) ?? 0) + 1);
    });
    context.on('request', (r) => {
      if (r.serviceWorker()) swRequests.push(r.url());
    });
    let workers = 0;
    page.on('worker', () => workers++);

    await page.goto(`${server.origin}/__e2e__/two.html`);
    const report = await waitForModel(page, '#a');
    await waitForModel(page, '#b');
    expect(report.backend).toBe('wasm');

    const [ra, rb] = await Promise.all([
      generateIn(page, '#a', 'ROMEO:\n'),
      generateIn(page, '#b', 'ROMEO:\n'),
    ]);
    expect(ra.error, `${JSON.stringify(ra.error)} ${errors.join('\n')}`).toBeNull();
    expect(rb.error, `${JSON.stringify(rb.error)} ${errors.join('\n')}`).toBeNull();
    for (const r of [ra, rb]) {
      expect(r.tokenEvents).toBeGreaterThan(0);
      expect(r.text.length).toBeGreaterThan(0);
      expect(r.streamedEqualsText).toBe(true); // the streamed deltas add up to the result
    }
    // Different adapters, same greedy prompt: different continuations.
    expect(ra.text).not.toBe(rb.text);
    // Shown in each element's output region.
    const shown = await page.evaluate(() =>
      ['#a', '#b'].map((s) =>
        document
          .querySelector(s)!
          .shadowRoot!.querySelector('.response')!
          .textContent!.replaceAll('\0', '\\0'),
      ),
    );
    expect(shown).toEqual([ra.text, rb.text]);

    expect(workers).toBe(1);
    expect(modelRequests.size).toBeGreaterThan(0);
    const repeated = [...modelRequests].filter(([, n]) => n !== 1);
    expect(repeated, `model files fetched more than once: ${JSON.stringify(repeated)}`).toEqual([]);
    expect(swRequests).toEqual([]); // no service worker on this page: every fetch above went to the network
    await context.close();
  });

  it('fires error with a readable message and the typed error name for a bad model URL', async () => {
    const { browser, server } = env;
    server.files.set('/__e2e__/bad.html', { body: libPage('') });
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${server.origin}/__e2e__/bad.html`);
    const detail = await page.evaluate(async () => {
      await customElements.whenDefined('weblora-chat');
      const el = document.createElement('weblora-chat');
      el.setAttribute('model', '/no/such/model/');
      el.setAttribute('backend', 'wasm');
      const got = new Promise<{ name: string; message: string }>((resolve) =>
        el.addEventListener(
          'error',
          (e) => resolve((e as CustomEvent<{ name: string; message: string }>).detail),
          {
            once: true,
          },
        ),
      );
      document.body.append(el);
      const d = await got;
      return {
        name: d.name,
        message: d.message,
        shown: el.shadowRoot!.querySelector('[role="alert"]')!.textContent,
      };
    });
    expect(detail.name).toBe('FetchError');
    expect(detail.message).toMatch(/could not fetch .*\/no\/such\/model\/config\.json: HTTP 404/);
    expect(detail.shown).toContain(detail.message);
    await context.close();
  });
});
