// The offline indicator (src/pwa/offline-indicator.ts) with a hand-made registration that never gets
// ready, as under the dev server (`npm start`: vite-plugin-pwa registers no service worker there). This
// test runs on Vite's dev server too (import.meta.env.DEV), so the indicator must say that offline use
// needs the built site instead of "Preparing offline use…" forever.
import { expect, it } from 'vitest';
import { mountOfflineIndicator } from '../../src/pwa/offline-indicator.ts';
import type { PwaRegistration, PwaState } from '../../src/pwa/register.ts';

it('under the dev server it says offline use needs the built site', async () => {
  expect(import.meta.env.DEV).toBe(true);
  const state: PwaState = {
    supported: true,
    offlineReady: false,
    needRefresh: false,
    waitingReports: 0,
    updating: false,
    registration: null,
    error: null,
  };
  const reg: PwaRegistration = {
    state,
    subscribe: () => () => {},
    update: async () => {},
    dismissUpdate: () => {},
  };
  const box = document.createElement('div');
  document.body.append(box);
  const mounted = mountOfflineIndicator(box, reg);
  await expect
    .poll(() => box.textContent)
    .toMatch(
      /^(You are offline\. )?Offline use needs the built site \(npm run build, then npx vite preview\)/,
    );
  expect(box.textContent).not.toMatch(/Preparing/);
  mounted.dispose();
  box.remove();
});
