/**
 * The demo's Train panel on the built site in real Chromium (`?backend=wasm`: training takes the CPU
 * path), driven through its UI with the example data and a tiny setting (layer 5, batch 4, a few steps)
 * so a run takes seconds: form problems are named in words; progress (step/total, ETA, tokens/s) and the
 * loss chart update; Pause stores a checkpoint the storage view lists, Resume finishes the run; the new
 * adapter is in the picker and Compare at once and generates; before/after samples and eval losses are
 * shown. Then a second run is paused and its checkpoint deleted from the storage view (two clicks).
 */
import type { Browser, BrowserContext, Page } from 'playwright';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeDemo, openDemo, type startE2eServer, waitForDemoReady } from './helpers.ts';

let browser: Browser;
let server: Awaited<ReturnType<typeof startE2eServer>>;
let context: BrowserContext;
let page: Page;
let errors: string[];

const phase = (p: Page): Promise<string | undefined> =>
  p.evaluate(() => document.getElementById('train-panel')?.dataset.phase);

async function waitPhase(p: Page, want: string, timeout = 120_000): Promise<void> {
  await p.waitForFunction(
    (want) => {
      const ph = document.getElementById('train-panel')?.dataset.phase;
      if (ph === 'error')
        throw new Error(`train error: ${document.getElementById('train-error')?.textContent}`);
      return ph === want;
    },
    want,
    { timeout, polling: 100 },
  );
}

async function waitStep(p: Page, atLeast: number): Promise<void> {
  await p.waitForFunction(
    (n) => Number(document.getElementById('train-panel')?.dataset.step ?? 0) >= n,
    atLeast,
    { timeout: 120_000, polling: 50 },
  );
}

/** The example data with a tiny setting: one layer, small batches, a small eval split, `steps` steps. */
async function fillTiny(p: Page, name: string, steps: number): Promise<void> {
  await p.click('#train-example');
  await p.fill('#train-name', name);
  await p.fill('#train-steps', String(steps));
  await p.fill('#train-layers', '5');
  await p.fill('#train-batch', '4');
  // A small eval split (6 examples): the eval after every step would otherwise cost more than the step.
  if (!(await p.isVisible('#train-eval-split'))) await p.click('#train-advanced summary');
  await p.fill('#train-eval-split', '0.03');
}

const checkpointRow = (name: string): string =>
  `#pwa-mount [data-source="Training checkpoints"] li:has(.weblora-pwa-item:text-matches("^${name} "))`;

beforeAll(async () => {
  const demo = await openDemo();
  ({ server, browser, context, page, errors } = demo);
});

afterAll(() => closeDemo({ server, browser, context }));

describe('Train panel', () => {
  it('names form problems in words and starts nothing', async () => {
    await page.fill('#train-data', '');
    await page.fill('#train-rank', '0');
    await page.click('#train-start');
    const problems = await page.locator('#train-form-problems li').allTextContents();
    expect(problems.join('\n')).toContain('Rank must be a whole number from 1 to 64');
    expect(problems.join('\n')).toContain('Paste or upload training data first');
    expect(await page.getAttribute('#train-rank', 'aria-invalid')).toBe('true');
    expect(await phase(page)).toBe('idle');
  });

  it("shows the engine's typed data error with its line number", async () => {
    await page.fill('#train-rank', '4');
    await page.fill('#train-name', 'e2e-bad');
    await page.fill('#train-data', '{"prompt": "a", "completion": "B"}\n{"prompt": "x", "completion": ');
    await page.fill('#train-sample', '');
    await page.click('#train-start');
    await page.waitForFunction(() => document.getElementById('train-panel')?.dataset.phase === 'error');
    expect(await page.textContent('#train-error')).toMatch(/^TrainDataError: line 2: not valid JSON/);
    expect(await page.isDisabled('#train-start')).toBe(false);
  });

  it('trains the example: progress, live chart, pause → resume, the adapter in picker and Compare', async () => {
    const t0 = Date.now();
    const name = 'e2e-trained';
    await fillTiny(page, name, 8);
    expect(await page.locator('#train-form-problems').isHidden()).toBe(true);
    await page.click('#train-start');
    await waitStep(page, 2);
    await page.click('#train-pause');
    await waitPhase(page, 'paused');
    const pausedAt = Number(await page.getAttribute('#train-panel', 'data-step'));
    expect(pausedAt).toBeGreaterThanOrEqual(2);
    expect(pausedAt).toBeLessThan(8);
    expect(await page.textContent('#train-progress-text')).toContain(`Paused at step ${pausedAt}`);
    expect(Number(await page.getAttribute('#train-chart', 'data-train-points'))).toBe(pausedAt);
    expect(Number(await page.getAttribute('#train-chart', 'data-eval-points'))).toBeGreaterThanOrEqual(1);
    expect(await page.textContent('#train-before')).not.toBe('');
    // The storage view lists the paused run's checkpoint.
    await page.waitForSelector(checkpointRow(name), { timeout: 10_000 });
    expect(await page.textContent(checkpointRow(name))).toContain(`step ${pausedAt} of 8`);

    // Resume: progress continues from the checkpoint while the text shows ETA and tokens/s.
    await page.click('#train-resume');
    await waitStep(page, pausedAt + 1);
    const live = (await page.textContent('#train-progress-text')) ?? '';
    expect(live).toMatch(/Step \d+ \/ 8/);
    expect(live).toMatch(/ETA (\d+:\d\d|—)/);
    expect(live).toMatch(/\d+ tokens\/s · CPU/);
    await waitPhase(page, 'done');
    expect(Number(await page.getAttribute('#train-chart', 'data-train-points'))).toBe(8);
    expect(await page.textContent('#train-progress-text')).toContain(`“${name}” is stored`);
    expect(await page.textContent('#train-eval-summary')).toMatch(/Eval loss \d+\.\d+ → \d+\.\d+/);
    await page.waitForFunction(() => {
      const t = document.getElementById('train-after')?.textContent ?? '';
      return t !== '' && t !== 'Generating…';
    });
    // The paused checkpoint is gone (the run finished) and the adapter is listed everywhere.
    await page.waitForSelector(checkpointRow(name), { state: 'detached', timeout: 10_000 });
    expect(await page.locator(`#compare-choices input[data-adapter="${name}"]`).count()).toBe(1);
    await page.click('#adapter-mode-one');
    const options = await page
      .locator('#adapter-one option')
      .evaluateAll((os) => os.map((o) => (o as HTMLOptionElement).value));
    expect(options).toContain(name);
    await page.selectOption('#adapter-one', name);
    await page.fill('#prompt', 'greet juliet\n');
    await page.click('#generate');
    await page.waitForFunction(
      () =>
        document.getElementById('output')?.dataset.status !== 'streaming' &&
        !!document.getElementById('output')?.dataset.status &&
        document.body.dataset.state === 'ready',
      null,
      { timeout: 60_000 },
    );
    expect(await page.textContent('#stats')).toContain(name);
    expect(await page.textContent('#gen-error')).toBe('');
    console.info(`[train.e2e] 8 steps with a pause in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  });

  it('the storage view lists a paused run and deletes its checkpoint in two clicks', async () => {
    const name = 'e2e-paused';
    await page.click('#adapter-mode-none');
    await fillTiny(page, name, 40);
    await page.fill('#train-sample', ''); // no before/after sample: straight to training
    await page.click('#train-start');
    await waitStep(page, 1);
    await page.click('#train-pause');
    await waitPhase(page, 'paused');
    const row = checkpointRow(name);
    await page.waitForSelector(row, { timeout: 10_000 });
    expect(await page.textContent(row)).toMatch(/step \d+ of 40, saved /);
    // The Train panel's own list leaves out the run it holds; the storage view offers Resume + Delete.
    expect(await page.locator(`${row} button`).allTextContents()).toEqual(['Resume', 'Delete']);
    const del = page.locator(`${row} button`, { hasText: 'Delete' });
    await del.click();
    expect(await page.textContent(row)).toContain('Confirm delete');
    await page.locator(`${row} button`, { hasText: 'Confirm delete' }).click();
    await page.waitForSelector(row, { state: 'detached', timeout: 10_000 });
    // The panel learns that the checkpoint it could resume is gone.
    await waitPhase(page, 'cancelled', 10_000);
    expect(await page.textContent('#train-progress-text')).toContain('checkpoint was deleted');
    expect(errors.filter((e) => !/favicon|Failed to load resource/.test(e))).toEqual([]);
  });

  it('a run paused before a reload is listed on load and resumes from the storage view', async () => {
    const name = 'e2e-reload';
    await fillTiny(page, name, 6);
    await page.fill('#train-sample', '');
    await page.click('#train-start');
    await waitStep(page, 1);
    await page.click('#train-pause');
    await waitPhase(page, 'paused');
    await page.reload();
    await waitForDemoReady(page);
    // The Train panel lists the unfinished run with Resume; the storage view too.
    const own = `#train-checkpoints li:has(.adapter-name:text-is("${name}"))`;
    await page.waitForSelector(own, { timeout: 10_000 });
    expect(await page.locator(`${own} button`).first().textContent()).toBe('Resume');
    await page.waitForSelector(checkpointRow(name), { timeout: 10_000 });
    await page.locator(`${checkpointRow(name)} button`, { hasText: 'Resume' }).click();
    // A prompt sent meanwhile waits in the engine's queue, and says so.
    await waitPhase(page, 'running');
    await page.click('#generate');
    expect(await page.textContent('#stats')).toContain('Queued: waiting for training to pause or finish');
    await waitPhase(page, 'done');
    await page.waitForFunction(() => document.body.dataset.state === 'ready', null, { timeout: 60_000 });
    expect(await page.textContent('#gen-error')).toBe('');
    expect(Number(await page.getAttribute('#train-panel', 'data-step'))).toBe(6);
    expect(await page.textContent('#train-before')).toContain('not sampled');
    await page.waitForSelector(own, { state: 'detached', timeout: 10_000 });
    expect(await page.locator(`#compare-choices input[data-adapter="${name}"]`).count()).toBe(1);
    const shot = process.env.WEBLORA_TRAIN_SHOT;
    if (shot) await page.locator('#train-panel').screenshot({ path: shot });
  });
});
