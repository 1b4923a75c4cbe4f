/**
 * The demo's model chooser (src/app/model-chooser.ts) on the built site, with every request that leaves
 * the test server's origin blocked by Playwright routing (as offline as this machine is): a known hub model
 * shows its published size and memory estimate, then fails to load with a clear FetchError while the
 * bundled model stays loaded; a replica package served by the e2e server (tests/helpers/replica-package.ts:
 * builder layout, external data in 2 chunks declared in config.json, a byte-level tokenizer with a chat
 * template) is sized by HEAD requests, loaded through the URL field, reported (layout, chunks, dtype),
 * defaults the demo to chat mode and generates; the same package picked as a local folder (Playwright
 * setInputFiles of a directory on the `webkitdirectory` input) loads from the files alone — no request to
 * the server for it — and chats with the same greedy reply.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { replicaPackage } from '../helpers/replica-package.ts';
import { collectPageErrors, launchChromium, startE2eServer, waitForDemoReady } from './helpers.ts';
import { ROOT } from './paths.ts';

let browser: Browser;
let server: Awaited<ReturnType<typeof startE2eServer>>;
let context: BrowserContext;
let page: Page;
let errors: string[];
const blocked: string[] = [];
const REPLICA = '/__e2e__/models/tiny-replica/';
let replicaBytes = 0;
let localRoot = '';
let localDir = '';
let urlReply: string | null = null;
const requested: string[] = [];

beforeAll(async () => {
  server = await startE2eServer();
  const read = async (p: string) => new Uint8Array(readFileSync(resolve(ROOT, 'tests/fixtures/replicas', p)));
  const pkg = await replicaPackage(read, { files: { fp32: 'builder/model.onnx' }, chunks: 2 });
  for (const [path, body] of pkg) {
    server.files.set(REPLICA + path, { body });
    replicaBytes += body.byteLength;
  }
  replicaBytes -= pkg.get('generation_config.json')!.byteLength; // optional: not in the estimate
  // The same package on disk, as a user's folder (one external-data chunk, as the builder writes it).
  localRoot = mkdtempSync(join(tmpdir(), 'weblora-e2e-'));
  localDir = join(localRoot, 'tiny-local');
  for (const [path, body] of await replicaPackage(read, { files: { fp32: 'builder/model.onnx' } })) {
    mkdirSync(dirname(join(localDir, path)), { recursive: true });
    writeFileSync(join(localDir, path), body);
  }
  browser = await launchChromium();
  context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(server.origin)) {
      requested.push(url);
      return route.continue();
    }
    blocked.push(url);
    return route.abort('internetdisconnected');
  });
  page = await context.newPage();
  errors = collectPageErrors(page);
  await page.goto(`${server.origin}/?backend=wasm`);
  await waitForDemoReady(page);
});

afterAll(async () => {
  await context?.close();
  await browser?.close();
  await server?.close();
  if (localRoot) rmSync(localRoot, { recursive: true, force: true });
});

/** Type a prompt, generate, wait for the end; returns the output text (status checked by the caller). */
async function chat(prompt: string): Promise<{ status: string | null; text: string | null }> {
  await page.fill('#max-tokens', '6');
  await page.fill('#prompt', prompt);
  await page.click('#generate');
  await page.waitForFunction(
    () =>
      ['eos', 'length', 'stop', 'error'].includes(document.getElementById('output')?.dataset.status ?? ''),
    null,
    { timeout: 60_000 },
  );
  return {
    status: await page.getAttribute('#output', 'data-status'),
    text: await page.textContent('#output'),
  };
}

describe('model chooser', () => {
  it('a known hub model shows its published size, then fails offline with a FetchError; the bundled model stays', async () => {
    await page.selectOption('#model-select', 'smollm2-135m');
    await page.selectOption('#dtype-select', 'q4f16');
    await page.waitForFunction(
      () => document.getElementById('model-estimate')?.dataset.bytes === '134000000',
    );
    expect(await page.textContent('#model-estimate')).toMatch(/memory ≈ .*estimate/);
    await page.click('#model-load');
    await page.waitForFunction(() => !document.getElementById('load-error')?.hidden, null, {
      timeout: 60_000,
    });
    const message = await page.textContent('#load-error');
    expect(message).toContain('SmolLM2-135M-Instruct: FetchError');
    expect(message).toContain(
      'https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct/resolve/main/config.json',
    );
    expect(
      blocked.some((u) =>
        u.startsWith('https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct/resolve/main/'),
      ),
    ).toBe(true);
    expect(await page.textContent('#progress-text')).toBe('load failed');
    await waitForDemoReady(page);
    expect(await page.textContent('#model-name')).toBe('weblora-shakespeare');
  });

  it('a replica folder URL is sized by HEAD, loads (2 external-data chunks), defaults to chat and generates', async () => {
    await page.selectOption('#model-select', 'url');
    await page.selectOption('#dtype-select', 'fp32');
    await page.fill('#model-url', `${server.origin}${REPLICA}`);
    await page.dispatchEvent('#model-url', 'change');
    await page.waitForFunction(() => document.getElementById('model-estimate')?.dataset.bytes !== undefined);
    expect(Number(await page.getAttribute('#model-estimate', 'data-bytes'))).toBe(replicaBytes);
    await page.click('#model-load');
    // The load settles: ready with the new model, or the load error (shown in the assertion message).
    await page.waitForFunction(
      () =>
        document.getElementById('model-name')?.textContent === 'tiny-replica' ||
        (document.getElementById('load-error')?.textContent ?? '').includes('/__e2e__/'),
      null,
      { timeout: 90_000 },
    );
    const status = await page.evaluate(() => ({
      error: document.getElementById('load-error')?.hidden
        ? ''
        : document.getElementById('load-error')?.textContent,
      progress: document.getElementById('progress-text')?.textContent,
      state: document.body.dataset.state,
      model: document.getElementById('model-name')?.textContent,
    }));
    expect({ ...status, pageErrors: errors }).toMatchObject({
      error: '',
      model: 'tiny-replica',
      pageErrors: [],
    });
    await waitForDemoReady(page);
    expect(await page.textContent('#dtype')).toBe('fp32');
    expect(await page.textContent('#model-layout')).toBe(
      'builder, packed qkv, fp32 weights, KV float32, 2 external-data chunks',
    );
    expect(await page.evaluate(() => document.body.dataset.mode)).toBe('chat');
    const reply = await chat('hello');
    expect(reply.status).not.toBe('error');
    urlReply = reply.text;
    expect(errors.filter((e) => !/Failed to load resource|net::ERR_INTERNET_DISCONNECTED/.test(e))).toEqual(
      [],
    );
  });

  it('a local folder picked with the folder input loads from the files alone and chats (same reply)', async () => {
    await page.selectOption('#model-select', 'local');
    await page.selectOption('#dtype-select', 'fp32');
    await page.setInputFiles('#model-folder', localDir);
    const picked = await page.evaluate(() =>
      [...((document.getElementById('model-folder') as HTMLInputElement).files ?? [])]
        .map((f) => f.webkitRelativePath)
        .sort(),
    );
    expect(picked).toEqual([
      'tiny-local/config.json',
      'tiny-local/generation_config.json',
      'tiny-local/onnx/model.onnx',
      'tiny-local/onnx/model.onnx_data',
      'tiny-local/tokenizer.json',
      'tiny-local/tokenizer_config.json',
    ]);
    await page.waitForFunction(() => document.getElementById('model-estimate')?.dataset.bytes !== undefined);
    requested.length = 0;
    await page.click('#model-load');
    await page.waitForFunction(
      () =>
        document.getElementById('model-name')?.textContent === 'tiny-local' ||
        !document.getElementById('load-error')?.hidden,
      null,
      { timeout: 90_000 },
    );
    expect(await page.evaluate(() => document.getElementById('load-error')?.textContent ?? '')).toBe('');
    await waitForDemoReady(page);
    expect(await page.textContent('#model-name')).toBe('tiny-local');
    expect(await page.textContent('#model-layout')).toBe(
      'builder, packed qkv, fp32 weights, KV float32, 1 external-data chunk',
    );
    // Nothing of the model came from the network.
    expect(requested.filter((u) => /tiny-replica|tiny-local|onnx|tokenizer|config\.json/.test(u))).toEqual(
      [],
    );
    // The conversation carries over a model switch; a new chat gives the same context as the URL test's.
    await page.click('#chat-reset');
    const reply = await chat('hello');
    expect(reply.status).not.toBe('error');
    expect(urlReply).not.toBeNull();
    expect(reply.text).toBe(urlReply);
    expect(errors.filter((e) => !/Failed to load resource|net::ERR_INTERNET_DISCONNECTED/.test(e))).toEqual(
      [],
    );
  });
});
