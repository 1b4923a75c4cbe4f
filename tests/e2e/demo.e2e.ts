/**
 * The demo app (index.html, src/app/) on the built site in real Chromium, driven through its UI with
 * `?backend=wasm&mode=completion` (SwiftShader WebGPU is far too slow for a test; chat mode and auto are
 * first-run.e2e.ts's): the model loads, a greedy
 * continuation streams into the output, Stop ends a long one mid-stream, the compare view makes one
 * column per selected adapter and decodes them together in one batch, a broken file shows the typed import
 * error, and stored adapters can be exported, renamed and deleted. Adapters: the example adapters
 * when the build ships them (preinstalled by the app), else test adapters imported through the URL
 * field (helpers.ts). A screenshot goes to $WEBLORA_DEMO_SHOT (default /tmp/weblora-demo.png).
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeDemo, openDemo, type startE2eServer, waitForDemoReady } from './helpers.ts';
import { ROOT } from './paths.ts';

let browser: Browser;
let server: Awaited<ReturnType<typeof startE2eServer>>;
let context: BrowserContext;
let page: Page;
let errors: string[];
/** The two adapter names the tests use. */
let names: [string, string];

const state = (p: Page): Promise<string | undefined> => p.evaluate(() => document.body.dataset.state);

/** Counts how often the continuation text changes while the next request runs (streaming). */
function watchOutput(p: Page, selector: string): Promise<void> {
  return p.evaluate((sel) => {
    const w = window as unknown as { __updates: number };
    w.__updates = 0;
    const target = document.querySelector(sel)!;
    new MutationObserver(() => {
      w.__updates++;
    }).observe(target, { subtree: true, childList: true, characterData: true });
  }, selector);
}

async function importUrl(p: Page, url: string, name: string): Promise<void> {
  await p.fill('#import-url', url);
  if (!(await p.isVisible('#import-name'))) await p.click('.import-options summary');
  await p.fill('#import-name', name);
  await p.click('#import-url-button');
  await p.waitForFunction(() => document.getElementById('import-status')?.dataset.status !== 'running');
  expect(await p.textContent('#import-error')).toBe('');
}

beforeAll(async () => {
  const demo = await openDemo({ examples: ['weblora-romeo', 'weblora-shout'], acceptDownloads: true });
  ({ server, browser, context, page, errors } = demo);
  names = demo.names as [string, string];
});

afterAll(() => closeDemo({ server, browser, context }));

describe('demo app', () => {
  it('loads the default model on wasm and preinstalls the listed adapters', async () => {
    expect(await page.evaluate(() => document.body.dataset.backend)).toBe('wasm');
    expect(await page.textContent('#backend')).toBe('wasm');
    expect(await page.inputValue('#backend-select')).toBe('wasm');
    expect(await page.textContent('#model-bytes')).toMatch(/MB/);
    const listed = await page.$$eval('#adapter-list li[data-adapter]', (li) =>
      li.map((l) => l.dataset.adapter),
    );
    expect(listed).toEqual(expect.arrayContaining(names));
    expect(await page.locator('#file-progress li').count()).toBeGreaterThan(0);
  });

  it('imports an adapter through the URL field', async () => {
    await importUrl(page, server.adapters.a, 'from-url');
    expect(await page.textContent('#import-stage')).toMatch(/^Imported “from-url” \(rank \d+, \d+ modules/);
    await page.waitForSelector('#adapter-list li[data-adapter="from-url"]');
    // Same name again without "replace": the typed conflict error.
    await page.fill('#import-name', 'from-url');
    await page.click('#import-url-button');
    await page.waitForSelector('#import-error:not([hidden])');
    expect(await page.textContent('#import-error')).toMatch(/^AdapterNameConflictError: /);
  });

  it('streams a short greedy continuation into the output', async () => {
    await page.fill('#temperature', '0');
    await page.fill('#max-tokens', '8');
    await watchOutput(page, '#output');
    await page.click('#generate');
    await waitForDemoReady(page);
    const text = await page.textContent('#output .continuation');
    expect(text?.length, errors.join('\n')).toBeGreaterThan(0);
    expect(await page.textContent('#output .prompt')).toBe('ROMEO:\nBut soft,');
    expect(await page.textContent('#stats')).toMatch(/^8 tokens \(length\)/);
    expect(await page.textContent('#gen-error')).toBe('');
    // One DOM update per non-empty delta: more than one means it streamed.
    expect(await page.evaluate(() => (window as unknown as { __updates: number }).__updates)).toBeGreaterThan(
      2,
    );
    // Greedy is deterministic: a second run gives the same text.
    await page.click('#generate');
    await waitForDemoReady(page);
    expect(await page.textContent('#output .continuation')).toBe(text);
  });

  it('Stop ends a long generation mid-stream', async () => {
    await page.fill('#max-tokens', '400');
    await page.click('#generate');
    await page.waitForFunction(
      () => (document.querySelector('#output .continuation')?.textContent?.length ?? 0) > 5,
    );
    expect(await state(page)).toBe('generating');
    await page.click('#stop');
    await waitForDemoReady(page, 30_000);
    expect(await page.getAttribute('#output', 'data-status')).toBe('abort');
    const stats = (await page.textContent('#stats')) ?? '';
    const n = Number(/^(\d+) tokens? \(abort\)/.exec(stats)?.[1]);
    expect(n, stats).toBeGreaterThan(0);
    expect(n).toBeLessThan(400);
    expect(await page.isDisabled('#stop')).toBe(true);
  });

  it('generates with one adapter and with a weighted mix', async () => {
    await page.fill('#max-tokens', '8');
    await page.check('#adapter-mode-one');
    await page.selectOption('#adapter-one', names[1]);
    await page.click('#generate');
    await waitForDemoReady(page);
    expect(await page.textContent('#gen-error')).toBe('');
    expect(await page.textContent('#stats')).toContain(names[1]);
    await page.check('#adapter-mode-mix');
    await page.evaluate((ns) => {
      for (const [i, n] of ns.entries()) {
        const slider = document.querySelector<HTMLInputElement>(`input[type=range][data-adapter="${n}"]`)!;
        slider.value = i === 0 ? '0.5' : '1';
        slider.dispatchEvent(new Event('input', { bubbles: true }));
      }
    }, names);
    await page.click('#generate');
    await waitForDemoReady(page);
    expect(await page.textContent('#gen-error')).toBe('');
    expect(await page.textContent('#stats')).toContain(`${names[0]} ×0.5 + ${names[1]} ×1`);
    expect(await page.textContent('#adapter-bytes')).toMatch(
      / for \d+ adapters? or mix(es)? ready in memory · reused \d+×, loaded \d+×$/,
    );
    await page.check('#adapter-mode-none');
  });

  it('compare: one column per selected adapter, decoded together in one batch, each streaming', async () => {
    await page.fill('#max-tokens', '10');
    // Base model + the two adapters; any other stored adapter unchecked.
    const keys = ['', ...names];
    for (const box of await page.$$('#compare-choices input[type=checkbox]')) {
      const key = (await box.getAttribute('data-adapter')) ?? '';
      if (keys.includes(key)) await box.check();
      else await box.uncheck();
    }
    // Record every column status change, in order.
    await page.evaluate(() => {
      const w = window as unknown as { __log: string[] };
      w.__log = [];
      new MutationObserver((records) => {
        for (const r of records) {
          const el = r.target as HTMLElement;
          if (r.type === 'attributes' && el.classList.contains('column'))
            w.__log.push(`${el.dataset.adapter}:${el.dataset.status}`);
        }
      }).observe(document.getElementById('compare-columns')!, {
        subtree: true,
        attributes: true,
        attributeFilter: ['data-status'],
      });
    });
    await page.click('#compare-run');
    await waitForDemoReady(page);
    const cols = await page.$$eval('#compare-columns .column', (els) =>
      els.map((e) => ({
        key: e.getAttribute('data-adapter'),
        status: e.getAttribute('data-status'),
        text: e.querySelector('pre')?.textContent ?? '',
        title: e.querySelector('h3')?.textContent,
      })),
    );
    expect(cols.map((c) => c.key)).toEqual(keys);
    expect(cols.map((c) => c.title)).toEqual(['Base model', ...names]);
    // Greedy (temperature 0, set by the first generate test) with the committed model and example adapters:
    // every column writes its 10 tokens of visible text without meeting eos.
    for (const c of cols) {
      expect(c.status, JSON.stringify(c)).toBe('length');
      expect(c.text.length, JSON.stringify(c)).toBeGreaterThan(0);
    }
    // One batch (src/engine/batch.ts): every column starts streaming before any column ends.
    const log = await page.evaluate(() => (window as unknown as { __log: string[] }).__log);
    const started = keys.map((k) => log.indexOf(`${k}:streaming`));
    const ended = keys.map((k) => log.findIndex((e) => e.startsWith(`${k}:`) && !e.endsWith(':streaming')));
    expect(
      started.every((i) => i >= 0),
      log.join(' '),
    ).toBe(true);
    expect(
      ended.every((i) => i >= 0),
      log.join(' '),
    ).toBe(true);
    expect(Math.max(...started), log.join(' ')).toBeLessThan(Math.min(...ended));
    // The base column equals the plain greedy run of the same prompt and length.
    await page.fill('#max-tokens', '10');
    await page.click('#generate');
    await waitForDemoReady(page);
    expect(cols[0]!.text).toBe(await page.textContent('#output .continuation'));
  });

  it('shows the typed error of a broken adapter file', async () => {
    await page.fill('#import-name', ''); // (the previous test left a name there)
    await page.setInputFiles('#import-files', {
      name: 'broken.safetensors',
      mimeType: 'application/octet-stream',
      buffer: Buffer.from('this is not a safetensors file'),
    });
    // (the previous test left a conflict error shown; the new import replaces it)
    await page.waitForFunction(() =>
      /^NotSafetensors/.test(document.getElementById('import-error')!.textContent!),
    );
    const msg = (await page.textContent('#import-error')) ?? '';
    expect(msg).toMatch(/^NotSafetensorsError: not a safetensors file/);
    // A config that is not JSON (loose files, so the app names the adapter itself): AdapterConfigError.
    await page.setInputFiles('#import-files', [
      { name: 'adapter_config.json', mimeType: 'application/json', buffer: Buffer.from('{ nope') },
      {
        name: 'adapter_model.safetensors',
        mimeType: 'application/octet-stream',
        buffer: readFileSync(resolve(ROOT, 'tests/fixtures/peft-adapter/adapter_model.safetensors')),
      },
    ]);
    // (the app clears the old error first: wait for the new one, not merely for a change)
    await page.waitForFunction(() =>
      /^AdapterConfigError: \S/.test(document.getElementById('import-error')?.textContent ?? ''),
    );
    // The store is unchanged.
    const listed = await page.$$eval('#adapter-list li[data-adapter]', (li) =>
      li.map((l) => l.dataset.adapter),
    );
    expect(listed).not.toContain('broken');
    expect(listed).not.toContain('weblora-shakespeare-r4');

    // The same file picker with a good pair imports it, named from its config ("<base model>-r<rank>":
    // loose files picked without their folder carry no name).
    const dir = resolve(ROOT, 'tests/fixtures/peft-adapter');
    const config = JSON.parse(readFileSync(resolve(dir, 'adapter_config.json'), 'utf8')) as object;
    await page.setInputFiles('#import-files', [
      {
        name: 'adapter_config.json',
        mimeType: 'application/json',
        buffer: Buffer.from(JSON.stringify({ ...config, base_model_name_or_path: 'weblora-shakespeare' })),
      },
      {
        name: 'adapter_model.safetensors',
        mimeType: 'application/octet-stream',
        buffer: readFileSync(resolve(dir, 'adapter_model.safetensors')),
      },
    ]);
    await page.waitForSelector('#adapter-list li[data-adapter="weblora-shakespeare-r4"]');
    expect(await page.isHidden('#import-error')).toBe(true);
    expect(await page.textContent('#import-stage')).toMatch(
      /^Imported “weblora-shakespeare-r4” \(rank 4, 42 modules/,
    );
  });

  it('exports, renames and deletes a stored adapter', async () => {
    const item = (n: string): string => `#adapter-list li[data-adapter="${n}"]`;
    const downloads: string[] = [];
    page.on('download', (d) => downloads.push(d.suggestedFilename()));
    await page.click(`${item(names[0])} button:text("Export")`);
    await expect.poll(() => downloads.length, { timeout: 10_000 }).toBe(1);
    expect(downloads).toEqual([`${names[0]}.zip`]); // one bundle named after the adapter

    await page.click(`${item(names[0])} button:text("Rename")`);
    await page.fill(`${item(names[0])} .rename-form input`, 'renamed-e2e');
    await page.click(`${item(names[0])} .rename-form button[type=submit]`);
    await page.waitForSelector(item('renamed-e2e'));
    expect(await page.$(item(names[0]))).toBeNull();

    await page.click(`${item('renamed-e2e')} button.danger`);
    await page.click(`${item('renamed-e2e')} button.danger`); // second click confirms
    await page.waitForSelector(item('renamed-e2e'), { state: 'detached' });
    expect(await page.textContent('#adapter-list-error')).toBe('');

    const shot = process.env.WEBLORA_DEMO_SHOT ?? '/tmp/weblora-demo.png';
    await page.screenshot({ path: shot, fullPage: true });
    expect(
      errors.filter((e) => !/favicon|Failed to load resource/.test(e)),
      errors.join('\n'),
    ).toEqual([]);
  });
});
