// The update banner (src/pwa/update-prompt.ts) in real Chromium DOM, driven by a hand-made registration
// object instead of a service worker: the real flow (a new sw.js waiting, Reload activating it) is the
// e2e test tests/e2e/pwa-update.e2e.ts, but the "still waiting" state only shows when Chromium delays
// the hand-over (see register.ts), which a test cannot provoke reliably. Fake timers drive the delay.
import { afterEach, beforeEach, expect, it, vi } from 'vitest';
import type { PwaRegistration, PwaState } from '../../src/pwa/register.ts';
import { mountUpdatePrompt, UPDATE_STALL_MS } from '../../src/pwa/update-prompt.ts';

function fakeRegistration(): PwaRegistration & { set(patch: Partial<PwaState>): void; updates: number } {
  let state: PwaState = {
    supported: true,
    offlineReady: true,
    needRefresh: false,
    waitingReports: 0,
    updating: false,
    registration: null,
    error: null,
  };
  const listeners = new Set<(s: Readonly<PwaState>) => void>();
  const reg = {
    updates: 0,
    get state() {
      return state;
    },
    set(patch: Partial<PwaState>) {
      state = { ...state, ...patch };
      for (const fn of listeners) fn(state);
    },
    subscribe(fn: (s: Readonly<PwaState>) => void) {
      listeners.add(fn);
      fn(state);
      return () => listeners.delete(fn);
    },
    async update() {
      reg.updates++;
      reg.set({ updating: true });
    },
    dismissUpdate() {
      reg.set({ needRefresh: false });
    },
  };
  return reg;
}

let container: HTMLElement;
beforeEach(() => {
  container = document.createElement('div');
  document.body.append(container);
});
afterEach(() => {
  vi.useRealTimers();
  container.remove();
});

const banner = () => container.querySelector<HTMLElement>('.weblora-pwa-update')!;
const button = () => container.querySelector<HTMLButtonElement>('.weblora-pwa-reload')!;
const message = () => container.querySelector('.weblora-pwa-update-message')!.textContent;

it('is hidden until a new version waits, and Later hides it again', () => {
  const reg = fakeRegistration();
  const mounted = mountUpdatePrompt(container, reg);
  expect(banner().hidden).toBe(true);
  expect(banner().dataset.waitingReports).toBe('0');
  reg.set({ needRefresh: true, waitingReports: 1 });
  expect(banner().hidden).toBe(false);
  expect(banner().dataset.waitingReports).toBe('1');
  expect(banner().getAttribute('role')).toBe('alert');
  expect(message()).toBe('A new version of weblora is available. ');
  container.querySelector<HTMLButtonElement>('.weblora-pwa-later')!.click();
  expect(banner().hidden).toBe(true);
  expect(reg.updates).toBe(0);
  mounted.dispose();
  expect(container.querySelector('.weblora-pwa-update')).toBeNull();
});

it('Reload asks for the update once, then says it is updating and, after a delay, why it still waits', () => {
  vi.useFakeTimers();
  const reg = fakeRegistration();
  const mounted = mountUpdatePrompt(container, reg);
  reg.set({ needRefresh: true });
  button().click();
  expect(reg.updates).toBe(1);
  expect(button().disabled).toBe(true);
  button().click(); // disabled: no second request
  expect(reg.updates).toBe(1);
  expect(message()).toBe('Updating… ');
  vi.advanceTimersByTime(UPDATE_STALL_MS - 1);
  expect(message()).toBe('Updating… ');
  vi.advanceTimersByTime(1);
  expect(message()).toMatch(/^The new version takes over as soon as the old one has finished its work/);
  expect(banner().hidden).toBe(false);
  mounted.dispose();
});

it('dispose during the wait cancels the timer', () => {
  vi.useFakeTimers();
  const reg = fakeRegistration();
  const mounted = mountUpdatePrompt(container, reg);
  reg.set({ needRefresh: true });
  button().click();
  mounted.dispose();
  expect(vi.getTimerCount()).toBe(0);
});
