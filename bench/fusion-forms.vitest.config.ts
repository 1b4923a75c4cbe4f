// `npx vitest run -c bench/fusion-forms.vitest.config.ts`: bench/fusion-forms.test.ts (the decoder
// fusion's attention forms, prefill and decode, in Chromium) with the browser test project's settings;
// not part of `npm test` (its include stays tests/browser).
import { resolve } from 'node:path';
import { defineConfig } from 'vitest/config';
import base from '../vitest.config.ts';

const browser = base.test?.projects?.[1];
if (!browser || typeof browser !== 'object' || !('test' in browser)) {
  throw new Error('vitest.config.ts: the browser project is expected second');
}
export default defineConfig({
  ...browser,
  root: resolve(import.meta.dirname, '..'),
  test: { ...browser.test, name: 'bench-fusion-forms', include: ['bench/fusion-forms.test.ts'] },
});
