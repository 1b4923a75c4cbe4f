/**
 * `<weblora-chat>` with a local model folder (library build in a plain page): the default model's folder
 * (public/models/weblora-shakespeare) picked with an `<input webkitdirectory>` of the test page and
 * assigned to the element's `modelFiles` loads without fetching any model file and gives exactly the
 * reply (token ids) of the same model loaded by URL; an element with `model-picker` and no `model` waits
 * for its folder (no model request; a prompt fails with NoModelError) and its own "Open model folder…"
 * input loads the picked folder; a folder without config.json and a dtype the folder lacks fire the
 * typed `error` event (ModelPackageError, DtypeUnavailableError) with the same detail shape as a bad URL.
 */
import { copyFileSync, mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Page } from 'playwright';
import { beforeAll, describe, expect, it } from 'vitest';
import { collectPageErrors, libPage, useE2eServerAndBrowser, waitForModel } from './helpers.ts';
import { ROOT } from './paths.ts';

const env = useE2eServerAndBrowser();
const MODEL_DIR = resolve(ROOT, 'public/models/weblora-shakespeare');
const PROMPT = 'ROMEO:\nBut soft,';
let noConfigDir = '';

beforeAll(() => {
  // The model's folder without config.json (tokenizer files and the q4 graph only).
  noConfigDir = join(mkdtempSync(join(tmpdir(), 'weblora-elem-')), 'no-config');
  mkdirSync(join(noConfigDir, 'onnx'), { recursive: true });
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'onnx/model_q4.onnx'])
    copyFileSync(join(MODEL_DIR, f), join(noConfigDir, f));
});

type Detail = { name: string; message: string; data: Record<string, unknown> };

/** Resolves with the element's next `error` detail (as JSON) or its `ready` report's dtype. */
function nextOutcome(page: Page, selector: string): Promise<{ error: Detail | null; dtype: string | null }> {
  return page.evaluate(
    (sel) =>
      new Promise((resolve) => {
        const el = document.querySelector(sel)!;
        el.addEventListener(
          'error',
          (e) => {
            const { name, message, data } = (e as CustomEvent<Detail>).detail;
            resolve({ error: { name, message, data: JSON.parse(JSON.stringify(data)) }, dtype: null });
          },
          { once: true },
        );
        el.addEventListener(
          'ready',
          (e) => resolve({ error: null, dtype: (e as CustomEvent<{ dtype: string }>).detail.dtype }),
          { once: true },
        );
      }),
    selector,
  );
}

/** generate(PROMPT) on the element: its token ids and text (NULs shown as \0). */
function reply(page: Page, selector: string): Promise<{ ids: number[]; text: string }> {
  return page.evaluate(
    async ({ sel, prompt }) => {
      const el = document.querySelector(sel) as HTMLElement & {
        generate(p: string): Promise<{ tokenIds: number[]; text: string }>;
      };
      const r = await el.generate(prompt);
      return { ids: r.tokenIds, text: r.text.replaceAll('\0', '\\0') };
    },
    { sel: selector, prompt: PROMPT },
  );
}

describe('<weblora-chat> with local model files', () => {
  it('modelFiles from a folder input loads from the files alone; the reply equals the URL-loaded one', async () => {
    const { browser, server } = env;
    server.files.set('/__e2e__/local.html', {
      body: libPage(`
<input id="folder" type="file" webkitdirectory>
<weblora-chat id="local" model-picker backend="wasm" mode="completion" max-tokens="12"></weblora-chat>`),
    });
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors = collectPageErrors(page);
    const modelRequests: string[] = [];
    page.on('request', (r) => {
      if (new URL(r.url()).pathname.includes('/models/')) modelRequests.push(`${r.method()} ${r.url()}`);
    });
    const failed: string[] = [];
    page.on('response', (r) => {
      if (r.status() >= 400 && !r.url().endsWith('/favicon.ico')) failed.push(`${r.status()} ${r.url()}`);
    });
    await page.goto(`${server.origin}/__e2e__/local.html`);
    await page.evaluate(() => customElements.whenDefined('weblora-chat'));

    // model-picker without model: waits for a folder, shows its button, and a prompt says why it cannot run.
    const waiting = await page.evaluate(async () => {
      const el = document.querySelector('#local') as HTMLElement & { generate(p: string): Promise<unknown> };
      const root = el.shadowRoot!;
      const got = new Promise<string>((r) =>
        el.addEventListener('error', (e: Event) => r((e as CustomEvent<{ name: string }>).detail.name), {
          once: true,
        }),
      );
      const rejected = await el.generate('x').then(
        () => 'resolved',
        (e: Error) => e.name,
      );
      return {
        event: await got,
        rejected,
        status: root.querySelector('[part="status"]')!.textContent,
        picker: (root.querySelector('[part="picker"]') as HTMLElement).offsetParent !== null,
      };
    });
    expect(waiting).toEqual({
      event: 'NoModelError',
      rejected: 'NoModelError',
      status: '',
      picker: true,
    });
    expect(modelRequests).toEqual([]);

    await page.setInputFiles('#folder', MODEL_DIR);
    const outcome = nextOutcome(page, '#local');
    const assigned = await page.evaluate(() => {
      const el = document.querySelector('#local') as HTMLElement & { modelFiles: File[] | FileList | null };
      el.modelFiles = (document.getElementById('folder') as HTMLInputElement).files;
      return (el.modelFiles as unknown as File[]).map((f) => f.webkitRelativePath).sort();
    });
    expect(assigned).toContain('weblora-shakespeare/onnx/model_q4.onnx');
    expect(assigned).toContain('weblora-shakespeare/config.json');
    expect(await outcome).toEqual({ error: null, dtype: 'q4' });
    const local = await reply(page, '#local');
    expect(modelRequests).toEqual([]); // nothing of the model came from the network

    // The same model by URL (the library's bundled default): the same greedy reply, token for token.
    await page.evaluate(() => {
      const el = document.createElement('weblora-chat');
      el.id = 'url';
      for (const [k, v] of [
        ['backend', 'wasm'],
        ['mode', 'completion'],
        ['max-tokens', '12'],
      ] as const)
        el.setAttribute(k, v);
      document.body.append(el);
    });
    const report = (await waitForModel(page, '#url')) as { backend: string; dtype?: string };
    expect(report.dtype).toBe('q4');
    const byUrl = await reply(page, '#url');
    expect(modelRequests.length).toBeGreaterThan(0);
    expect(local.ids).toHaveLength(12);
    expect(local).toEqual(byUrl);
    // modelFiles = null: back to the `model` attribute — none here, so the picker element waits again.
    const cleared = await page.evaluate(async () => {
      const el = document.querySelector('#local') as HTMLElement & { modelFiles: unknown; report: unknown };
      el.modelFiles = null;
      await new Promise((r) => setTimeout(r, 0));
      const status = el.shadowRoot!.querySelector('[part="status"]')!.textContent;
      return { files: el.modelFiles, report: el.report, status };
    });
    expect(cleared).toEqual({ files: null, report: null, status: 'Open a model folder to start.' });
    expect(failed).toEqual([]);
    // The browser's own favicon request is the only 404 the console may show.
    expect(errors.filter((e) => !e.includes('404 (Not Found)'))).toEqual([]);
    await context.close();
  });

  it('bad folders fire the typed error event: no config.json (built-in picker), a missing dtype', async () => {
    const { browser, server } = env;
    server.files.set('/__e2e__/local-bad.html', {
      body: libPage(`
<input id="folder" type="file" webkitdirectory>
<weblora-chat id="picker" model-picker backend="wasm"></weblora-chat>
<weblora-chat id="fp16" model-picker backend="wasm" dtype="fp16"></weblora-chat>`),
    });
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${server.origin}/__e2e__/local-bad.html`);
    await page.evaluate(() => customElements.whenDefined('weblora-chat'));

    // The element's own "Open model folder…" input (in its shadow root), given a folder without config.json.
    const noConfig = nextOutcome(page, '#picker');
    await page.setInputFiles('#picker input[type="file"]', noConfigDir);
    const a = await noConfig;
    expect(a.error?.name).toBe('ModelPackageError');
    expect(a.error?.message).toBe('the picked files lack config.json');
    expect(a.error?.data.missing).toEqual(['config.json']);
    expect(
      await page.evaluate(
        () => document.querySelector('#picker')!.shadowRoot!.querySelector('[role="alert"]')!.textContent,
      ),
    ).toBe(`ModelPackageError: ${a.error?.message}`);

    // dtype="fp16" on a folder with only model.onnx (fp32) and model_q4.onnx.
    await page.setInputFiles('#folder', MODEL_DIR);
    const fp16 = nextOutcome(page, '#fp16');
    await page.evaluate(() => {
      const el = document.querySelector('#fp16') as HTMLElement & { modelFiles: FileList | null };
      el.modelFiles = (document.getElementById('folder') as HTMLInputElement).files;
    });
    const b = await fp16;
    expect(b.error?.name).toBe('DtypeUnavailableError');
    expect(b.error?.message).toBe(
      'the model at the picked folder has no fp16 file (onnx/model_fp16.onnx); it has fp32 (onnx/model.onnx), q4 (onnx/model_q4.onnx)',
    );
    expect(b.error?.data).toEqual({
      dtype: 'fp16',
      file: 'onnx/model_fp16.onnx',
      available: ['fp32', 'q4'],
    });
    await context.close();
  });
});
