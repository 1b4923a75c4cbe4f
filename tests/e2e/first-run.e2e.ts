/**
 * What a first-time user meets in the built demo (issue 9), on Chromium's SwiftShader WebGPU adapter
 * with the default settings (no `?backend=`): auto picks wasm and the model panel says why; the default
 * mode is chat (the model has a chat template), which keeps the conversation, shows each reply on its
 * own line and clears the input, and completion still continues raw text; a mistyped adapter URL
 * answered with the host's HTML page, a 404 and a non-safetensors file each get a typed error saying
 * so; the example adapters show their descriptions (list and picker) and export as one `<name>.zip`.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeDemo, EXAMPLE_ADAPTERS, openDemo, type startE2eServer, waitForDemoReady } from './helpers.ts';
import { ROOT } from './paths.ts';

let browser: Browser;
let server: Awaited<ReturnType<typeof startE2eServer>>;
let context: BrowserContext;
let page: Page;
let errors: string[];

const INDEX_HTML = '<!doctype html><html lang="en"><head><title>weblora</title></head><body></body></html>';

/** Prompt tokens from the stats line ("… · prompt N tokens in …"). */
async function promptTokens(p: Page): Promise<number> {
  const stats = (await p.textContent('#stats')) ?? '';
  const n = Number(/prompt (\d+) tokens/.exec(stats)?.[1]);
  expect(n, stats).toBeGreaterThan(0);
  return n;
}

async function importUrlError(p: Page, url: string): Promise<string> {
  await p.fill('#import-url', url);
  await p.click('#import-url-button');
  await p.waitForFunction(() => document.getElementById('import-status')?.dataset.status !== 'running');
  await p.waitForSelector('#import-error:not([hidden])');
  return (await p.textContent('#import-error')) ?? '';
}

beforeAll(async () => {
  const demo = await openDemo({ query: '', acceptDownloads: true }); // no ?backend: the engine's auto choice
  ({ server, browser, context, page, errors } = demo);
});

afterAll(() => closeDemo({ server, browser, context }));

describe('first run of the demo', () => {
  it('auto chooses wasm on the SwiftShader adapter and says why', async () => {
    expect(await page.evaluate(() => document.body.dataset.backend)).toBe('wasm');
    expect(await page.textContent('#backend')).toBe('wasm');
    expect(await page.textContent('#backend-reason')).toMatch(
      /^auto chose wasm: this browser's WebGPU adapter is SwiftShader \(google \/ swiftshader\), a software renderer/,
    );
    expect(await page.textContent('#adapter')).toMatch(/swiftshader.*not used \(wasm\)/);
    expect(await page.textContent('#state-pill')).toBe('Ready · wasm');
  });

  it('chat is the default mode: history kept, reply on its own line, input cleared', async () => {
    expect(await page.evaluate(() => document.body.dataset.mode)).toBe('chat');
    expect(await page.isChecked('#mode-chat')).toBe(true);
    expect(await page.isVisible('#system')).toBe(true);
    await page.fill('#max-tokens', '6');
    await page.fill('#prompt', 'Who art thou?');
    await page.click('#generate');
    await waitForDemoReady(page);
    expect(await page.textContent('#gen-error')).toBe('');
    expect(await page.inputValue('#prompt')).toBe('');
    const first = await promptTokens(page);
    const roles = (): Promise<string[]> =>
      page.$$eval('#output .msg', (els) => els.map((e) => (e as HTMLElement).dataset.role ?? ''));
    expect(await roles()).toEqual(['user', 'assistant']);
    expect(await page.textContent('#output .msg.user')).toBe('Who art thou?');
    const reply = await page.$eval('#output .msg.assistant', (e) => ({
      text: e.textContent ?? '',
      display: getComputedStyle(e).display,
    }));
    expect(reply.text.length).toBeGreaterThan(0);
    expect(reply.display).toBe('block'); // its own line

    // A second message carries the first turn: more prompt tokens, four messages shown.
    await page.fill('#prompt', 'Speak again.');
    await page.click('#generate');
    await waitForDemoReady(page);
    expect(await roles()).toEqual(['user', 'assistant', 'user', 'assistant']);
    expect(await promptTokens(page)).toBeGreaterThan(first + 3);

    await page.click('#chat-reset');
    expect(await page.$$('#output .msg')).toHaveLength(0);
  });

  it('completion mode continues the raw prompt (fewer prompt tokens than the same text as chat)', async () => {
    const text = 'ROMEO:\nBut soft,';
    await page.fill('#prompt', text);
    await page.click('#generate'); // chat
    await waitForDemoReady(page);
    const asChat = await promptTokens(page);
    await page.check('#mode-completion');
    expect(await page.evaluate(() => new URL(location.href).searchParams.get('mode'))).toBe('completion');
    expect(await page.isVisible('#system')).toBe(false);
    await page.fill('#prompt', text);
    await page.click('#generate');
    await waitForDemoReady(page);
    expect(await page.textContent('#output .prompt')).toBe(text);
    expect(((await page.textContent('#output .continuation')) ?? '').length).toBeGreaterThan(0);
    expect(await page.$$('#output .msg')).toHaveLength(0);
    expect(await page.inputValue('#prompt')).toBe(text); // kept for another try
    expect(await promptTokens(page)).toBeLessThan(asChat);
  });

  it("output: Copy, live token count and tok/s, Escape stops, a generate joins a running compare's batch, recent runs", async () => {
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: server.origin });
    expect(await page.isEnabled('#copy')).toBe(true); // the completion test left an output
    const shown =
      ((await page.textContent('#output .prompt')) ?? '') + (await page.textContent('#output .continuation'));
    await page.click('#copy');
    expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(shown);

    // A long run: the stats line counts while streaming; Escape stops it.
    await page.fill('#max-tokens', '400');
    await page.click('#generate');
    await page.waitForFunction(() =>
      / \d+ tokens · [\d.]+ tok\/s$/.test(document.getElementById('stats')!.textContent!),
    );
    await page.keyboard.press('Escape');
    await waitForDemoReady(page, 30_000);
    expect(await page.getAttribute('#output', 'data-status')).toBe('abort');

    // Generate while a compare runs: it is not queued behind it but joins its batch (one forward pass per
    // step for the compare's columns and this run) and streams at once. 48 tokens per run keep the
    // compare decoding long after the second click lands, so the overlap is certain, not a race.
    await page.fill('#max-tokens', '48');
    await page.click('#compare-run');
    await page.click('#generate');
    expect(await page.getAttribute('#output', 'data-status')).not.toBe('queued');
    await waitForDemoReady(page, 60_000);
    expect(['length', 'eos']).toContain(await page.getAttribute('#output', 'data-status'));
    expect(Number(await page.getAttribute('#output', 'data-batch-rows'))).toBeGreaterThanOrEqual(2);
    expect(await page.textContent('#stats')).toMatch(/batch of \d/);

    const runs = await page.$$eval('#run-history-list li', (els) => els.map((e) => e.textContent ?? ''));
    expect(runs.length).toBeGreaterThanOrEqual(3);
    expect(runs[0]).toMatch(/^base model · completion · /);
    expect(runs.some((r) => /\(abort\)/.test(r))).toBe(true);
  });

  it('a mistyped adapter URL says nothing is there; a non-safetensors file says so', async () => {
    // A host that answers every missing path with the app's page (Vite dev/preview, SPA hosts).
    for (const f of ['adapter_model.safetensors', 'adapter_config.json']) {
      server.files.set(`/__e2e__/spa/adapters/weblora-shuot/${f}`, {
        body: INDEX_HTML,
        type: 'text/html; charset=utf-8',
      });
    }
    const html = await importUrlError(page, `${server.origin}/__e2e__/spa/adapters/weblora-shuot/`);
    expect(html).toMatch(
      /^NothingAtUrlError: nothing at http:\/\/127\.0\.0\.1:\d+\/__e2e__\/spa\/adapters\/weblora-shuot\/adapter_model\.safetensors: the server answered with an HTML page/,
    );
    expect(html).not.toMatch(/header length/);

    const missing = await importUrlError(page, `${server.origin}/adapters/no-such-adapter/`);
    expect(missing).toMatch(
      /^NothingAtUrlError: nothing at .*\/adapters\/no-such-adapter\/adapter_model\.safetensors: HTTP 404/,
    );

    server.files.set('/__e2e__/junk/adapter_model.safetensors', {
      body: 'GIF89a this is an image, not weights',
    });
    const junk = await importUrlError(page, `${server.origin}/__e2e__/junk/`);
    expect(junk).toMatch(/^NotSafetensorsError: not a safetensors file: its first bytes "GIF89a this is /);
  });

  it.skipIf(!EXAMPLE_ADAPTERS)(
    'example adapters show their descriptions; export is one <name>.zip',
    async () => {
      // (skipped when the build ships no example adapters: then there are no descriptions to show)
      const desc = await page.$$eval('#adapter-list li[data-adapter]', (els) =>
        Object.fromEntries(
          els.map((e) => [
            (e as HTMLElement).dataset.adapter,
            e.querySelector('.adapter-desc')?.textContent ?? null,
          ]),
        ),
      );
      expect(desc).toMatchObject({
        'weblora-shout': 'Continues any text in UPPER CASE.',
        'weblora-romeo': "Every speech is ROMEO's.",
        'weblora-reverse': 'Writes each line with its word order reversed.',
      });
      await page.check('#adapter-mode-one');
      await page.selectOption('#adapter-one', 'weblora-shout');
      expect(await page.textContent('#adapter-one-desc')).toBe('Continues any text in UPPER CASE.');
      const options = await page.$$eval('#adapter-one option', (els) => els.map((e) => e.textContent));
      expect(options).toContain("weblora-romeo — Every speech is ROMEO's.");
      await page.check('#adapter-mode-none');

      const downloads: { name: string; path: string | null }[] = [];
      page.on('download', async (d) => downloads.push({ name: d.suggestedFilename(), path: await d.path() }));
      for (const n of ['weblora-shout', 'weblora-romeo']) {
        await page.click(`#adapter-list li[data-adapter="${n}"] button:text("Export")`);
      }
      await expect.poll(() => downloads.length, { timeout: 10_000 }).toBe(2);
      expect(downloads.map((d) => d.name).sort()).toEqual(['weblora-romeo.zip', 'weblora-shout.zip']);
      // The zip holds the PEFT folder: <name>/adapter_config.json + <name>/adapter_model.safetensors, the
      // weights stored byte-identical (entries are uncompressed).
      const zip = readFileSync(downloads.find((d) => d.name === 'weblora-shout.zip')!.path!);
      const weights = readFileSync(resolve(ROOT, 'public/adapters/weblora-shout/adapter_model.safetensors'));
      expect(zip.includes('weblora-shout/adapter_config.json')).toBe(true);
      expect(zip.includes('weblora-shout/adapter_model.safetensors')).toBe(true);
      expect(zip.includes(weights)).toBe(true);

      // A folder picked with "Choose folder…" is named after the folder.
      await page.setInputFiles('#import-folder', resolve(ROOT, 'tests/fixtures/peft-adapter'));
      await page.waitForSelector('#adapter-list li[data-adapter="peft-adapter"]');
      expect(await page.textContent('#import-stage')).toMatch(/^Imported “peft-adapter”/);
      expect(
        errors.filter((e) => !/favicon|Failed to load resource/.test(e)),
        errors.join('\n'),
      ).toEqual([]);
    },
  );

  it('compare: a mix column from the picker, one row of four, overall progress, "Cancelled" for queued columns', async () => {
    await page.fill('#max-tokens', '6');
    await page.check('#adapter-mode-mix');
    await page.evaluate(() => {
      const slider = document.querySelector<HTMLInputElement>(
        'input[type=range][data-adapter="weblora-shout"]',
      )!;
      slider.value = '0.5';
      slider.dispatchEvent(new Event('input', { bubbles: true }));
    });
    const want = ['', 'weblora-romeo', 'weblora-shout', 'picker'];
    for (const box of await page.$$('#compare-choices input[type=checkbox]')) {
      if (want.includes((await box.getAttribute('data-adapter')) ?? '')) await box.check();
      else await box.uncheck();
    }
    await page.click('#compare-run');
    expect(await page.textContent('#compare-progress')).toMatch(/^Running \d of 4…$/);
    await waitForDemoReady(page, 60_000);
    expect(await page.textContent('#compare-progress')).toBe('4 of 4 done');
    const cols = await page.$$eval('#compare-columns .column', (els) =>
      els.map((e) => ({
        key: e.getAttribute('data-adapter'),
        title: e.querySelector('h3')?.textContent,
        top: Math.round(e.getBoundingClientRect().top),
        status: e.getAttribute('data-status'),
      })),
    );
    expect(cols.map((c) => c.key)).toEqual(want);
    expect(cols[3]!.title).toBe('weblora-shout ×0.5');
    expect(new Set(cols.map((c) => c.top)).size, JSON.stringify(cols)).toBe(1); // one row (1400 px wide)
    expect(cols.every((c) => c.status === 'length')).toBe(true);

    // Stop while the columns stream (one batch: they stream together): streaming ones say "Stopped after
    // N tokens", any not yet started "Cancelled", never "0 tokens (abort)".
    await page.fill('#max-tokens', '300');
    await page.click('#compare-run');
    await page.waitForSelector('#compare-columns .column[data-status="streaming"]');
    await page.click('#compare-stop');
    await waitForDemoReady(page, 30_000);
    const statuses = await page.$$eval('#compare-columns .column-status', (els) =>
      els.map((e) => e.textContent),
    );
    expect(statuses[0]).toMatch(/^Stopped after \d+ tokens?$/);
    for (const s of statuses) expect(s).toMatch(/^(Stopped after \d+ tokens?|Cancelled)$/);
    expect(await page.textContent('#compare-progress')).toBe('Stopped: 0 of 4 done');
    await page.check('#adapter-mode-none');
  });

  it('settings: quick ones next to Generate, checked with their labels, capped by the context, kept across reloads', async () => {
    expect(await page.isVisible('#gen-form #max-tokens')).toBe(true);
    expect(await page.isVisible('#gen-form #temperature')).toBe(true);
    expect(await page.isVisible('#top-p')).toBe(false); // under "Advanced sampling", closed
    await page.fill('#temperature', '0');
    await page.click('#advanced-sampling summary');
    await page.fill('#top-p', '1.5');
    await page.click('#generate');
    await page.waitForSelector('#gen-error:not([hidden])');
    expect(await page.textContent('#gen-error')).toMatch(
      /^InvalidOptionError: Top-p must be more than 0 and at most 1 \(1 = off\) \(got "1.5"\)$/,
    );
    expect(await page.$eval('#top-p', (e) => (e as HTMLInputElement).validity.valid)).toBe(false);
    expect(await page.evaluate(() => document.body.dataset.state)).toBe('ready'); // nothing was sent
    await page.fill('#top-p', '1');
    await page.fill('#max-tokens', '900');
    expect(await page.textContent('#max-tokens-note')).toMatch(
      /^Capped at 512: the model's context holds 512 tokens/,
    );
    await page.fill('#temperature', '0.5');
    await page.reload();
    await waitForDemoReady(page);
    expect(await page.inputValue('#temperature')).toBe('0.5');
    expect(await page.inputValue('#max-tokens')).toBe('900');
    expect(await page.inputValue('#top-p')).toBe('1');
  });

  it.skipIf(!EXAMPLE_ADAPTERS)(
    'storage: two-click delete, restore example adapters, plain words, icons in the page',
    async () => {
      // (after the previous test's reload)
      expect(await page.getAttribute('meta[name="theme-color"]', 'content')).toBe('#5b3cc4');
      for (const sel of ['link[rel="icon"]', 'link[rel="apple-touch-icon"]']) {
        const href = await page.$eval(sel, (e) => (e as HTMLLinkElement).href);
        const res = await page.request.get(href);
        expect(res.status(), href).toBe(200);
        expect(res.headers()['content-type']).toBe('image/png');
      }
      expect(await page.textContent('#adapter-bytes')).not.toMatch(/feed set/);

      // The storage view's Delete arms first, like the adapters panel.
      await page.waitForSelector('.weblora-pwa-storage li button');
      const first = page.locator('.weblora-pwa-storage li button').first();
      const before = await page.locator('.weblora-pwa-storage li').count();
      await first.click();
      expect(await first.textContent()).toBe('Confirm delete');
      expect(await page.locator('.weblora-pwa-storage li').count()).toBe(before);

      // Delete an example adapter, then restore it.
      const item = '#adapter-list li[data-adapter="weblora-reverse"]';
      await page.click(`${item} button.danger`);
      await page.click(`${item} button.danger`);
      await page.waitForSelector(item, { state: 'detached' });
      await page.click('#restore-examples');
      await page.waitForFunction(() =>
        /^Restored /.test(document.getElementById('restore-status')!.textContent!),
      );
      expect(await page.textContent('#restore-status')).toBe('Restored weblora-reverse.');
      await page.waitForSelector(item);
      expect(
        errors.filter((e) => !/Failed to load resource/.test(e)),
        errors.join('\n'),
      ).toEqual([]);
    },
  );
});
