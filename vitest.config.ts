// Two test projects: `unit` runs in Node (no GPU; onnxruntime-web resolves to its Node/wasm build),
// `browser` runs in Debian's Chromium through Playwright with WebGPU on SwiftShader
// (flags verified in ../shared/docs/environment.md).
import { playwright } from '@vitest/browser-playwright';
import { resolve } from 'node:path';
import { defineConfig } from 'vitest/config';
import { ORT_APP_MOUNT, ORT_RESOLVE_CONDITIONS, serveOrtFiles } from './vite.config.ts';

// transformers.js (test-only) brings its own onnxruntime-web build; serve its runtime too (no CDN).
const ORT_TRANSFORMERS_MOUNT = {
  url: 'ort-transformers/',
  dir: resolve(import.meta.dirname, 'node_modules/@huggingface/transformers/node_modules/onnxruntime-web/dist'),
};

export const CHROMIUM_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--enable-unsafe-webgpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['tests/unit/**/*.test.ts'],
          environment: 'node',
          testTimeout: 120_000,
          hookTimeout: 120_000,
        },
      },
      {
        publicDir: 'public',
        plugins: [serveOrtFiles([ORT_APP_MOUNT, ORT_TRANSFORMERS_MOUNT])],
        resolve: { conditions: ORT_RESOLVE_CONDITIONS },
        optimizeDeps: {
          exclude: ['onnxruntime-web'],
          include: ['@huggingface/transformers', '@huggingface/jinja', '@huggingface/tokenizers', 'onnx-proto', 'comlink', 'idb-keyval'],
        },
        test: {
          name: 'browser',
          include: ['tests/browser/**/*.test.ts'],
          testTimeout: 300_000,
          hookTimeout: 300_000,
          fileParallelism: false,
          browser: {
            enabled: true,
            headless: true,
            screenshotFailures: false,
            instances: [{ browser: 'chromium' }],
            provider: playwright({
              launchOptions: { executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium', args: CHROMIUM_ARGS },
            }),
          },
        },
      },
    ],
  },
});
