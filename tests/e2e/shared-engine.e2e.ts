/**
 * The demo page and a `<weblora-chat>` element share one engine (src/app/engine-sharing.ts,
 * src/element/registry.ts adoptEngine): the demo opened with `?element` holds the embedded element,
 * which asks for the demo's model, so the page runs ONE engine worker (Playwright's page.workers()),
 * and a demo Generate and an element prompt sent in the same task decode in one batch — both results
 * report `timings.batchRows` 2 (the demo's in `#output[data-batch-rows]` and its stats line) — each
 * with exactly its solo greedy reply (temperature 0; the element's token ids, the demo's text). When
 * the demo reloads its model (backend auto), or fails to load another one, the element follows it onto
 * the same worker again; an element asking for another dtype does start a worker of its own (the count
 * sees it). Built site,
 * real Chromium, real worker, wasm, default q4 model.
 */
import type { Page } from 'playwright';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeDemo, type DemoSession, openDemo, waitForDemoReady, waitForModel } from './helpers.ts';

const MAX_TOKENS = 12;
const DEMO_PROMPT = 'ROMEO:\nBut soft, what light';
const ELEMENT_PROMPT = 'JULIET:\nO Romeo, Romeo';
const EL = '#embedded-chat';

interface Run {
  demo: { status: string; batchRows: string; text: string; stats: string } | null;
  element: {
    tokenIds: number[];
    text: string;
    batchRows: number;
    finishReason: string;
    /** Its status line (tokens, tok/s, backend, "batch of N"). */
    status: string;
  } | null;
}

/** Sends the demo's Generate and/or the element's prompt in one task; waits for both to finish. */
function run(page: Page, which: { demo: boolean; element: boolean }): Promise<Run> {
  return page.evaluate(
    async ({ which, demoPrompt, elementPrompt }) => {
      const out = document.getElementById('output')!;
      const el = document.querySelector('#embedded-chat') as HTMLElement & {
        generate(p: string): Promise<{
          tokenIds: number[];
          text: string;
          finishReason: string;
          timings: { batchRows?: number };
        }>;
      };
      (document.getElementById('prompt') as HTMLTextAreaElement).value = demoPrompt;
      if (which.demo) {
        (document.getElementById('gen-form') as HTMLFormElement).requestSubmit();
        if (out.dataset.status !== 'streaming') throw new Error(`demo did not start: ${out.dataset.status}`);
      }
      const pending = which.element ? el.generate(elementPrompt) : null;
      let demo: Run['demo'] = null;
      if (which.demo) {
        while (out.dataset.status === 'streaming' || out.dataset.status === 'queued')
          await new Promise((r) => setTimeout(r, 20));
        demo = {
          status: out.dataset.status ?? '',
          batchRows: out.dataset.batchRows ?? '',
          text: out.querySelector('.continuation')?.textContent ?? '',
          stats: document.getElementById('stats')?.textContent ?? '',
        };
      }
      const r = pending ? await pending : null;
      const element = r && {
        tokenIds: r.tokenIds,
        text: r.text.replaceAll('\0', '\\0'), // Playwright cuts strings at NUL
        batchRows: r.timings.batchRows ?? 0,
        finishReason: r.finishReason,
        status: el.shadowRoot?.querySelector('.status')?.textContent ?? '',
      };
      return { demo, element };
    },
    { which, demoPrompt: DEMO_PROMPT, elementPrompt: ELEMENT_PROMPT },
  );
}

/** What must equal between runs: the element's reply and batch size, not its status line's speed. */
const reply = (e: Run['element']) =>
  e && { tokenIds: e.tokenIds, text: e.text, finishReason: e.finishReason, batchRows: e.batchRows };

let s: DemoSession;

beforeAll(async () => {
  s = await openDemo({ query: '?backend=wasm&mode=completion&element' });
  await waitForModel(s.page, EL);
  await s.page.fill('#max-tokens', String(MAX_TOKENS));
  await s.page.fill('#temperature', '0');
  await s.page.evaluate(
    ({ sel, max }) => {
      const el = document.querySelector(sel)!;
      el.setAttribute('mode', 'completion');
      el.setAttribute('temperature', '0');
      el.setAttribute('max-tokens', String(max));
    },
    { sel: EL, max: MAX_TOKENS },
  );
});

afterAll(async () => {
  await closeDemo(s ?? {});
});

describe('the demo and an embedded <weblora-chat> share one engine', () => {
  let solo: Run;

  it('the element in the demo (?element) follows the demo model and starts no worker', async () => {
    const attrs = await s.page.evaluate((sel) => {
      const el = document.querySelector(sel)!;
      return { backend: el.getAttribute('backend'), model: el.getAttribute('model') };
    }, EL);
    expect(attrs).toEqual({ backend: 'wasm', model: null });
    expect(s.page.workers()).toHaveLength(1);
  });

  it('a demo Generate and an element prompt sent together decode in one batch, each with its solo reply', async () => {
    const demo = await run(s.page, { demo: true, element: false });
    const element = await run(s.page, { demo: false, element: true });
    solo = { demo: demo.demo, element: element.element };
    expect(solo.demo).toMatchObject({ status: 'length', batchRows: '1' });
    expect(solo.element).toMatchObject({ finishReason: 'length', batchRows: 1 });
    expect(solo.element!.tokenIds).toHaveLength(MAX_TOKENS);
    expect(solo.demo!.text.length).toBeGreaterThan(0);

    const together = await run(s.page, { demo: true, element: true });
    expect(together.demo!.batchRows).toBe('2');
    expect(together.demo!.stats).toContain('decoded in a batch of 2');
    expect(together.element!.batchRows).toBe(2);
    expect(together.element!.status).toContain('(wasm, batch of 2)'); // the element's status line
    expect(together.demo!.text).toBe(solo.demo!.text);
    expect(reply(together.element)).toEqual({ ...reply(solo.element), batchRows: 2 });
    expect(s.page.workers()).toHaveLength(1);
    expect(s.errors).toEqual([]);
  });

  it('after the demo reloads its model (backend auto) the element follows onto the same worker', async () => {
    await s.page.selectOption('#backend-select', 'auto');
    await s.page.waitForFunction(
      (sel) => document.querySelector(sel)?.getAttribute('backend') === 'auto',
      EL,
    );
    await waitForDemoReady(s.page);
    await waitForModel(s.page, EL);
    expect(s.page.workers()).toHaveLength(1);
    const together = await run(s.page, { demo: true, element: true });
    // auto skips SwiftShader's software WebGPU adapter: wasm again, so the same replies.
    expect(await s.page.evaluate(() => document.body.dataset.backend)).toBe('wasm');
    expect(together.demo).toMatchObject({ batchRows: '2', text: solo.demo!.text });
    expect(reply(together.element)).toEqual({ ...reply(solo.element), batchRows: 2 });
    expect(s.page.workers()).toHaveLength(1);
  });

  it('a failed demo load leaves the bundled model shared: the element comes back to the same worker', async () => {
    await s.page.selectOption('#model-select', 'url');
    await s.page.fill('#model-url', `${s.server.origin}/__e2e__/no-such-model/`);
    await s.page.dispatchEvent('#model-url', 'change');
    await s.page.click('#model-load');
    await s.page.waitForFunction(() => !document.getElementById('load-error')?.hidden, null, {
      timeout: 60_000,
    });
    expect(await s.page.textContent('#load-error')).toContain('FetchError');
    await waitForDemoReady(s.page);
    // The element followed the demo to the missing model, then back to the one still loaded.
    await s.page.waitForFunction((sel) => !document.querySelector(sel)?.hasAttribute('model'), EL);
    // Its error line still shows the failed load (as the demo's does), so wait for its report alone.
    await s.page.waitForFunction(
      (sel) => (document.querySelector(sel) as unknown as { report: unknown }).report != null,
      EL,
    );
    const elementError = await s.page.evaluate(
      (sel) => document.querySelector(sel)?.shadowRoot?.querySelector('.error')?.textContent,
      EL,
    );
    expect(elementError).toContain('FetchError'); // it did follow the demo to the missing model
    const together = await run(s.page, { demo: true, element: true });
    expect(together.demo).toMatchObject({ batchRows: '2', text: solo.demo!.text });
    expect(reply(together.element)).toEqual({ ...reply(solo.element), batchRows: 2 });
    expect(s.page.workers()).toHaveLength(1);
    expect(s.errors.filter((e) => e.startsWith('pageerror'))).toEqual([]);
  });

  it('an element asking for another dtype starts a worker of its own (the count sees it)', async () => {
    await s.page.evaluate(() => {
      const el = document.createElement('weblora-chat');
      el.id = 'other';
      el.setAttribute('backend', 'auto');
      el.setAttribute('dtype', 'fp32');
      document.body.append(el);
    });
    await waitForModel(s.page, '#other');
    expect(s.page.workers()).toHaveLength(2);
  });
});
