// End-to-end tests (tests/e2e): Playwright (the library) drives Debian's Chromium against the BUILT
// site, sub-path site and `<weblora-chat>` library, served by a local static server on 127.0.0.1.
// global-setup.ts builds them first. Runs in Node; one file at a time (2-core machines).
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    name: 'e2e',
    include: ['tests/e2e/**/*.e2e.ts'],
    environment: 'node',
    globalSetup: ['tests/e2e/global-setup.ts'],
    testTimeout: 180_000,
    hookTimeout: 180_000,
    fileParallelism: false,
  },
});
