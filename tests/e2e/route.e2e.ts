/**
 * The demo's Auto adapter choice and Behaviour-vs-rank panel on the built site, wasm: with "Auto (per
 * prompt)" picked, a generation reports which stored adapter it chose, with weights and every adapter's
 * prompt loss (src/app/generate.ts describeRouting); the rank panel measures a stored adapter and draws
 * its uPlot chart with the numbers in data-* attributes (src/app/rank-plot.ts). Uses the preinstalled
 * example adapters when the build ships them, else the test adapters (as derive.e2e.ts does).
 */
import type { Browser, BrowserContext, Page } from 'playwright';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeDemo, openDemo, type startE2eServer } from './helpers.ts';

let browser: Browser;
let server: Awaited<ReturnType<typeof startE2eServer>>;
let context: BrowserContext;
let page: Page;
let errors: string[];
let names: string[];

beforeAll(async () => {
  const demo = await openDemo({ examples: ['weblora-reverse', 'weblora-romeo', 'weblora-shout'] });
  ({ server, browser, context, page, errors } = demo);
  names = demo.names;
});

afterAll(() => closeDemo({ server, browser, context }));

describe('demo: auto adapter choice and behaviour vs rank', () => {
  it('Auto picks a stored adapter per prompt and shows the choice, weights and losses', async () => {
    await page.check('#adapter-mode-auto');
    await page.fill('#prompt', 'ROMEO:\nO sweet Juliet, the night doth weep for love of thee!\n');
    await page.click('#generate');
    await page.waitForFunction(
      () => /auto chose/.test(document.getElementById('stats')?.textContent ?? ''),
      null,
      {
        timeout: 120_000,
      },
    );
    const stats = (await page.textContent('#stats')) ?? '';
    const chosen = stats.match(/auto chose (\S+) ×1\.00/)?.[1];
    expect(names).toContain(chosen);
    if (names.includes('weblora-romeo')) expect(chosen).toBe('weblora-romeo');
    for (const n of names) expect(stats).toMatch(new RegExp(`${n} \\d+\\.\\d\\d`));
  }, 150_000);

  it('Behaviour vs rank draws the chart for a stored adapter', async () => {
    await page.click('.rank-plot-box summary');
    await page.selectOption('.rank-form select', names[1]!);
    await page.click('.rank-form button[type=submit]');
    await page.waitForSelector('.rank-plot[data-nll] canvas', { timeout: 120_000 });
    const ranks = await page.getAttribute('.rank-plot', 'data-ranks');
    const nll = ((await page.getAttribute('.rank-plot', 'data-nll')) ?? '').split(',').map(Number);
    expect(ranks?.split(',').at(-1)).toMatch(/^\d+$/);
    expect(nll.length).toBe(ranks?.split(',').length);
    expect(nll.every(Number.isFinite)).toBe(true);
    expect(await page.$$('#adapter-list li[data-adapter*="~plot-"]')).toHaveLength(0);
    expect(
      errors.filter((e) => !/favicon|Failed to load resource/.test(e)),
      errors.join('\n'),
    ).toEqual([]);
  }, 150_000);
});
