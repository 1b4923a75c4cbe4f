/**
 * `<weblora-chat>` from the library build in a plain HTML page: two elements with different adapters
 * share one worker and one model download (every model file requested once), both stream output;
 * adapter="auto" picks among the stored adapters and shows its choice in the status line;
 * a bad model URL fires `error` with a readable message and the typed error name; chat mode keeps the
 * conversation and clears the input while completion continues raw text; and the example page shipped
 * in dist-lib/ (index.html + adapters/) works as-is from a plain static server holding only that folder.
 */
import { readdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  collectPageErrors,
  EXAMPLE_ADAPTERS,
  generateIn,
  libPage,
  useE2eServerAndBrowser,
  waitForModel,
} from './helpers.ts';
import { E2E_DIST_LIB } from './paths.ts';
import { startStaticServer } from './server.ts';

const env = useE2eServerAndBrowser();

describe('embedding the library build', () => {
  it('ships one module, its declarations and exactly one worker chunk (no unused default worker)', () => {
    const top = readdirSync(E2E_DIST_LIB).sort();
    expect(top).toEqual(
      expect.arrayContaining([
        'assets',
        'index.html',
        'models',
        'ort',
        'weblora-chat.d.ts',
        'weblora-chat.js',
      ]),
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
      // Downloads only: the loader's HEAD size probes (dtype availability, quota check) fetch no bytes.
      if (path.includes('/models/') && r.method() === 'GET') {
        modelRequests.set(path, (modelRequests.get(path) ?? 0) + 1);
      }
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

  it('adapter="auto" picks among the stored adapters per prompt and shows its choice', async () => {
    const { browser, server } = env;
    const { a } = server.adapters;
    server.files.set('/__e2e__/auto.html', {
      body: libPage(`
<weblora-chat id="one" backend="wasm" adapter="${a}" max-tokens="2"></weblora-chat>
<weblora-chat id="auto" backend="wasm" adapter="auto" max-tokens="4"></weblora-chat>`),
    });
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors = collectPageErrors(page);
    await page.goto(`${server.origin}/__e2e__/auto.html`);
    await waitForModel(page, '#one');
    const first = await generateIn(page, '#one', 'ROMEO:\n'); // imports adapter a into the store
    expect(first.error, `${JSON.stringify(first.error)} ${errors.join('\n')}`).toBeNull();
    const routing = await page.evaluate(async () => {
      const el = document.querySelector('#auto') as HTMLElement & { generate(p: string): Promise<unknown> };
      const r = (await el.generate('ROMEO:\nO Juliet!\n')) as {
        routing?: { chosen: string[]; weights: number[] };
      };
      return {
        routing: r.routing ?? null,
        status: el.shadowRoot!.querySelector('[role=status]')?.textContent,
      };
    });
    expect(routing.routing?.chosen).toHaveLength(1);
    expect(routing.routing?.weights).toEqual([1]);
    expect(routing.status).toContain(`auto: ${routing.routing?.chosen[0]}`);
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

describe('chat and completion modes', () => {
  it('chat keeps history, clears the input and shows the reply on its own line; completion continues raw text', async () => {
    const { browser, server } = env;
    server.files.set('/__e2e__/modes.html', {
      body: libPage(`
<weblora-chat id="chat" backend="wasm" mode="chat" system="You are ROMEO." max-tokens="6"></weblora-chat>
<weblora-chat id="comp" backend="wasm" mode="completion" max-tokens="6"></weblora-chat>
<weblora-chat id="dflt" backend="wasm" max-tokens="6"></weblora-chat>`),
    });
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors = collectPageErrors(page);
    await page.goto(`${server.origin}/__e2e__/modes.html`);
    for (const id of ['#chat', '#comp', '#dflt']) await waitForModel(page, id);
    // No mode attribute: chat, because the default model has a chat template.
    expect(
      await page.evaluate(() => (document.querySelector('#dflt') as unknown as { mode: string }).mode),
    ).toBe('chat');

    // Chat through the UI: type, Enter.
    const firstDone = page.evaluate(
      () =>
        new Promise<number>((r) =>
          document
            .querySelector('#chat')!
            .addEventListener('done', (e) => r((e as CustomEvent).detail.timings.promptTokens), {
              once: true,
            }),
        ),
    );
    await page.click('#chat >> textarea');
    await page.keyboard.type('Who art thou?');
    await page.keyboard.press('Enter');
    const firstTokens = await firstDone;
    const ui = await page.evaluate(() => {
      const el = document.querySelector('#chat') as HTMLElement & { history: { role: string }[] };
      const root = el.shadowRoot!;
      const response = root.querySelector('.turn .response')!;
      return {
        input: root.querySelector('textarea')!.value,
        roles: el.history.map((m) => m.role),
        turnClass: root.querySelector('.turn')!.className,
        responseDisplay: getComputedStyle(response).display,
        reply: response.textContent ?? '',
      };
    });
    expect(ui.input).toBe(''); // cleared for the next message
    expect(ui.roles).toEqual(['user', 'assistant']);
    expect(ui.turnClass).toBe('turn chat');
    expect(ui.responseDisplay).toBe('block'); // the reply on its own line
    expect(ui.reply.length).toBeGreaterThan(0);

    // The second message carries the first turn.
    const second = await page.evaluate(async () => {
      const el = document.querySelector('#chat') as HTMLElement & {
        generate(p: string): Promise<{ timings: { promptTokens: number } }>;
        history: unknown[];
      };
      const r = await el.generate('Speak again.');
      return { promptTokens: r.timings.promptTokens, history: el.history.length };
    });
    expect(second.history).toBe(4);
    expect(second.promptTokens).toBeGreaterThan(firstTokens + 3);

    // Same text: chat wraps it in the template (and the system prompt), completion sends it raw.
    const both = await page.evaluate(async () => {
      type El = HTMLElement & {
        generate(p: string): Promise<{ timings: { promptTokens: number } }>;
        clear(): void;
        history: unknown[];
      };
      const chat = document.querySelector('#chat') as El;
      const comp = document.querySelector('#comp') as El;
      chat.clear();
      const c = await chat.generate('ROMEO:\nBut soft,');
      const p = await comp.generate('ROMEO:\nBut soft,');
      const r = comp.shadowRoot!.querySelector('.turn')!;
      return {
        chat: c.timings.promptTokens,
        completion: p.timings.promptTokens,
        compHistory: comp.history.length,
        compClass: r.className,
        compDisplay: getComputedStyle(r.querySelector('.response')!).display,
        chatTurns: chat.shadowRoot!.querySelectorAll('.turn').length,
      };
    });
    expect(both.completion).toBeLessThan(both.chat);
    expect(both.compHistory).toBe(0);
    expect(both.compClass).toBe('turn completion');
    expect(both.compDisplay).toBe('inline'); // prompt and continuation read as one text
    expect(both.chatTurns).toBe(1); // clear() emptied the output
    expect(errors).toEqual([]);
    await context.close();
  });
});

describe('the example page shipped in dist-lib', () => {
  it.skipIf(!EXAMPLE_ADAPTERS)(
    'works from a plain static server holding only dist-lib/: loads, says why its backend, generates with an adapter',
    async () => {
      // (skipped only when the build has no example adapters to ship)
      const { browser } = env;
      const plain = await startStaticServer([{ prefix: '/', dir: E2E_DIST_LIB }]);
      const context = await browser.newContext();
      const page = await context.newPage();
      const errors = collectPageErrors(page);
      const failed: string[] = [];
      page.on('response', (r) => {
        if (r.status() >= 400 && !r.url().endsWith('/favicon.ico')) failed.push(`${r.status()} ${r.url()}`);
      });
      try {
        await page.goto(`${plain.origin}/`); // index.html, exactly as shipped (auto backend)
        const report = (await waitForModel(page, '#shout')) as { backend: string; backendReason: string };
        expect(report.backend).toBe('wasm'); // SwiftShader: auto chose wasm
        const status = await page.evaluate(
          () => document.querySelector('#shout')!.shadowRoot!.querySelector('[part="status"]')!.textContent,
        );
        expect(status).toContain(report.backendReason);
        const r = await generateIn(page, '#shout', 'ROMEO:\nBut soft, what light');
        expect(r.error, `${JSON.stringify(r.error)} ${errors.join('\n')}`).toBeNull();
        expect(r.text.length).toBeGreaterThan(0);
        // The weblora-shout adapter (imported from adapters/weblora-shout/ next to the page) writes in capitals.
        const upper = r.text.replace(/[^A-Z]/g, '').length;
        const lower = r.text.replace(/[^a-z]/g, '').length;
        expect(upper, r.text).toBeGreaterThan(lower);
        const stored = await page.evaluate(async () => {
          const dbs = await indexedDB.databases();
          return dbs.length;
        });
        expect(stored).toBeGreaterThan(0);
        expect(failed).toEqual([]);
        expect(errors).toEqual([]);
      } finally {
        await context.close();
        await plain.close();
      }
    },
  );
});
