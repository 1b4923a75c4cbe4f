// `npx vitest run -c bench/batch-forms.vitest.config.ts`: bench/batch-forms-webgpu.test.ts (the batch feed
// forms on WebGPU in Chromium, SwiftShader here) with the browser test project's settings; not part of
// `npm test` (its include stays tests/browser).
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
  test: { ...browser.test, name: 'bench-batch-forms', include: ['bench/batch-forms-webgpu.test.ts'] },
});
