/**
 * The demo's Merge and Compress actions (src/app/derive-actions.ts) on the built site, wasm: Compress
 * stores `<name>-r<k>` at rank k, the Merge form stores a rank-k merge of two picked adapters, and a
 * name already taken shows the engine's typed error under the list (ranks outside 1..64 the number
 * field itself refuses). Uses the preinstalled example adapters when the build ships them, else the
 * test adapters (as demo.e2e.ts does).
 */
import type { Browser, BrowserContext, Page } from 'playwright';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeDemo, openDemo, type startE2eServer } from './helpers.ts';

let browser: Browser;
let server: Awaited<ReturnType<typeof startE2eServer>>;
let context: BrowserContext;
let page: Page;
let errors: string[];
let names: [string, string];
const item = (n: string): string => `#adapter-list li[data-adapter="${n}"]`;

beforeAll(async () => {
  const demo = await openDemo({ examples: ['weblora-romeo', 'weblora-shout'] });
  ({ server, browser, context, page, errors } = demo);
  names = demo.names as [string, string];
});

afterAll(() => closeDemo({ server, browser, context }));

describe('demo: merge and compress', () => {
  it('Compress stores a lower-rank copy', async () => {
    const rank = Number((await page.textContent(`${item(names[0])} small`))?.match(/rank (\d+)/)?.[1]);
    const k = Math.max(1, Math.floor(rank / 2));
    await page.click(`${item(names[0])} button:text("Compress")`);
    await page.fill(`${item(names[0])} .compress-form input`, String(k));
    await page.click(`${item(names[0])} .compress-form button[type=submit]`);
    await page.waitForSelector(item(`${names[0]}-r${k}`));
    expect(await page.textContent(`${item(`${names[0]}-r${k}`)} small`)).toMatch(new RegExp(`^rank ${k} `));
  });

  it('Merge stores a rank-k merge of two picked adapters; the same name again shows the typed error', async () => {
    await page.click('.merge-adapters summary');
    for (const n of names) await page.check(`.merge-picks input[value="${n}"]`);
    await page.fill('.merge-form input[type=number]', '3');
    await page.fill('.merge-form input[type=text]', 'merged-e2e');
    await page.click('.merge-form button[type=submit]');
    await page.waitForSelector(item('merged-e2e'));
    expect(await page.textContent(`${item('merged-e2e')} small`)).toMatch(/^rank 3 /);
    expect(await page.textContent('#adapter-list-error')).toBe('');

    for (const n of names) await page.check(`.merge-picks input[value="${n}"]`);
    await page.click('.merge-form button[type=submit]'); // the same name again
    await page.waitForFunction(() =>
      /Merge failed: AdapterNameConflictError/.test(
        document.getElementById('adapter-list-error')?.textContent ?? '',
      ),
    );
    expect(await page.$$(item('merged-e2e'))).toHaveLength(1);
    expect(
      errors.filter((e) => !/favicon|Failed to load resource/.test(e)),
      errors.join('\n'),
    ).toEqual([]);
  });
});
