/**
 * Makes the README's screenshot of the demo (docs/demo.png): serves a built site (default the e2e
 * build, WEBLORA_E2E_OUT/dist; or argv[2]) with the e2e static server, opens it in Debian's Chromium
 * at 1400×1000, generates once with the weblora-shout adapter and saves the page. Run:
 * `npx tsx scripts/readme-screenshot.ts [dist-folder] [out.png]` after a build. Not part of CI.
 */
import { resolve } from 'node:path';
import { launchChromium, waitForDemoReady } from '../tests/e2e/helpers.ts';
import { E2E_DIST, ROOT } from '../tests/e2e/paths.ts';
import { startStaticServer } from '../tests/e2e/server.ts';

const dist = resolve(process.argv[2] ?? E2E_DIST);
const out = resolve(process.argv[3] ?? resolve(ROOT, 'docs/demo.png'));
const server = await startStaticServer([{ prefix: '/', dir: dist }]);
const browser = await launchChromium();
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  await page.goto(`${server.origin}/?mode=completion`);
  await waitForDemoReady(page);
  await page.waitForFunction(() => document.body.dataset.preinstall === 'done', null, { timeout: 60_000 });
  await page.fill('#max-tokens', '60');
  await page.check('#adapter-mode-one');
  await page.selectOption('#adapter-one', 'weblora-shout');
  await page.click('#generate');
  await waitForDemoReady(page);
  await page.screenshot({ path: out });
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
  await server.close();
}
