/**
 * Keyboard-only use of `<weblora-chat>` (library build): Tab reaches the labelled textarea, Shift+Enter
 * adds a newline, Enter sends and the reply streams into the aria-live output, Escape stops a long
 * generation (finishReason 'abort'), and focus on the buttons is visible.
 */
import { expect, it } from 'vitest';
import { libPage, useE2eServerAndBrowser, waitForModel } from './helpers.ts';

const env = useE2eServerAndBrowser();

it('works with the keyboard alone', async () => {
  const { browser, server } = env;
  server.files.set('/__e2e__/keyboard.html', {
    body: libPage(
      '<h1>Keyboard</h1><weblora-chat id="c" backend="wasm" mode="completion" max-tokens="6"></weblora-chat>',
    ),
  });
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${server.origin}/__e2e__/keyboard.html`);
  await waitForModel(page, '#c');
  await page.evaluate(() => {
    const el = document.querySelector('#c')!;
    (window as unknown as { events: unknown[] }).events = [];
    for (const t of ['token', 'done', 'error']) {
      el.addEventListener(t, (e) =>
        (window as unknown as { events: unknown[] }).events.push({
          type: t,
          finishReason: (e as CustomEvent<{ finishReason?: string }>).detail.finishReason,
        }),
      );
    }
  });
  const focused = () =>
    page.evaluate(() => {
      const a = document.activeElement;
      const inner = a?.shadowRoot?.activeElement ?? null;
      return {
        host: a?.id ?? a?.tagName,
        inner: inner?.tagName ?? null,
        part: inner?.getAttribute('part') ?? null,
      };
    });

  // Tab: output region (scrollable, focusable) → textarea.
  await page.keyboard.press('Tab');
  await page.keyboard.press('Tab');
  expect(await focused()).toEqual({ host: 'c', inner: 'TEXTAREA', part: 'input' });
  // The textarea has an accessible name from its <label>.
  const label = await page.evaluate(() => {
    const ta = document.querySelector('#c')!.shadowRoot!.querySelector('textarea')!;
    return ta.labels?.[0]?.textContent ?? null;
  });
  expect(label).toBe('Prompt');

  await page.keyboard.type('ROMEO:');
  await page.keyboard.press('Shift+Enter');
  await page.keyboard.type('But soft');
  const value = await page.evaluate(
    () => document.querySelector('#c')!.shadowRoot!.querySelector('textarea')!.value,
  );
  expect(value).toBe('ROMEO:\nBut soft');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() =>
    (window as unknown as { events: { type: string }[] }).events.some(
      (e) => e.type === 'done' || e.type === 'error',
    ),
  );
  const events1 = await page.evaluate(
    () => (window as unknown as { events: { type: string; finishReason?: string }[] }).events,
  );
  expect(events1.filter((e) => e.type === 'error')).toEqual([]);
  expect(events1.filter((e) => e.type === 'token').length).toBeGreaterThan(0);
  const out = await page.evaluate(() => {
    const o = document.querySelector('#c')!.shadowRoot!.querySelector('[part="output"]')!;
    return {
      live: o.getAttribute('aria-live'),
      prompt: o.querySelector('.prompt')?.textContent,
      reply: o.querySelector('.response')?.textContent,
    };
  });
  expect(out.live).toBe('polite');
  expect(out.prompt).toBe('ROMEO:\nBut soft');
  expect(out.reply?.length).toBeGreaterThan(0);

  // A long generation, stopped with Escape.
  await page.evaluate(() => {
    document.querySelector('#c')!.setAttribute('max-tokens', '400');
    (window as unknown as { events: unknown[] }).events = [];
  });
  await page.keyboard.press('Enter'); // the textarea still holds the prompt and has focus
  await page.waitForFunction(() =>
    (window as unknown as { events: { type: string }[] }).events.some((e) => e.type === 'token'),
  );
  await page.keyboard.press('Escape');
  await page.waitForFunction(
    () => (window as unknown as { events: { type: string }[] }).events.some((e) => e.type === 'done'),
    null,
    {
      timeout: 20_000,
    },
  );
  const events2 = await page.evaluate(
    () => (window as unknown as { events: { type: string; finishReason?: string }[] }).events,
  );
  expect(events2.find((e) => e.type === 'done')?.finishReason).toBe('abort');
  expect(events2.filter((e) => e.type === 'token').length).toBeLessThan(400);

  // Tab to the Send button: focus is visible (an outline drawn by :focus-visible).
  await page.keyboard.press('Tab');
  expect((await focused()).part).toBe('send');
  const outline = await page.evaluate(() => {
    const b = document.querySelector('#c')!.shadowRoot!.activeElement as HTMLElement;
    const cs = getComputedStyle(b);
    return { style: cs.outlineStyle, width: Number.parseFloat(cs.outlineWidth) };
  });
  expect(outline.style).not.toBe('none');
  expect(outline.width).toBeGreaterThan(0);
  await context.close();
});
