/// <reference types="vite-plugin-pwa/vanillajs" />
/**
 * Service-worker registration (vite-plugin-pwa's `virtual:pwa-register`, built on workbox-window) as a
 * tiny observable: `offlineReady` once the app shell is precached (first install, or a controlling SW
 * on later visits), `needRefresh` while a new version waits, and `update()` to activate it and reload.
 * Idempotent: the first call registers, later calls return the same handle. It deliberately does not
 * decide how to present updates (update-prompt.ts does).
 */
import { registerSW } from 'virtual:pwa-register';

export interface PwaState {
  supported: boolean;
  /** The app shell is precached: the app starts offline. */
  offlineReady: boolean;
  /** A new version is installed and waiting. */
  needRefresh: boolean;
  /**
   * How many times workbox-window has reported a waiting version to this page, counting the reports
   * "Later" ignores. It reports an update found while the page is open twice ('installed', then
   * 'waiting' 200 ms later); tests wait for the second report instead of sleeping past it.
   */
  waitingReports: number;
  /** `update()` was called: the waiting version was asked to take over; the page reloads when it does. */
  updating: boolean;
  registration: ServiceWorkerRegistration | null;
  error: string | null;
}

export interface PwaRegistration {
  readonly state: Readonly<PwaState>;
  subscribe(fn: (s: Readonly<PwaState>) => void): () => void;
  /**
   * Asks the waiting service worker to take over; the page reloads once it controls the page. Chromium
   * hands over only when the old worker is idle: if the page is still fetching through it (the engine
   * loading its runtime at startup), the hand-over can wait for the old worker's idle timeout (about
   * 30 s). `state.updating` stays true meanwhile.
   */
  update(): Promise<void>;
  /** Hides the prompt until a newer version is found (or the next visit). */
  dismissUpdate(): void;
}

let handle: PwaRegistration | null = null;

export function registerPwa(): PwaRegistration {
  if (handle) return handle;
  const supported = typeof navigator !== 'undefined' && 'serviceWorker' in navigator;
  let state: PwaState = {
    supported,
    offlineReady: false,
    needRefresh: false,
    waitingReports: 0,
    updating: false,
    registration: null,
    error: null,
  };
  const listeners = new Set<(s: Readonly<PwaState>) => void>();
  const set = (patch: Partial<PwaState>): void => {
    state = { ...state, ...patch };
    for (const fn of listeners) fn(state);
  };
  let updateSW: (reload?: boolean) => Promise<void> = async () => {};
  // "Later" holds until a newer version is found: workbox-window can report the same waiting worker
  // twice ('installed', then 'waiting' 200 ms later), which must not bring the banner back.
  let dismissed = false;
  if (supported) {
    updateSW = registerSW({
      immediate: true,
      onOfflineReady: () => set({ offlineReady: true }),
      onNeedRefresh: () => {
        const waitingReports = state.waitingReports + 1;
        set(dismissed ? { waitingReports } : { waitingReports, needRefresh: true });
      },
      onRegisteredSW: (_url, registration) => {
        set({ registration: registration ?? null });
        registration?.addEventListener('updatefound', () => {
          dismissed = false;
        });
        // A later visit: an active worker that controls this page has its precache complete.
        if (registration?.active && navigator.serviceWorker.controller) set({ offlineReady: true });
      },
      onRegisterError: (e: unknown) => set({ error: e instanceof Error ? e.message : String(e) }),
    });
    navigator.serviceWorker.addEventListener('controllerchange', () => {
      if (state.registration?.active) set({ offlineReady: true });
    });
  }
  handle = {
    get state() {
      return state;
    },
    subscribe(fn) {
      listeners.add(fn);
      fn(state);
      return () => listeners.delete(fn);
    },
    update: async () => {
      set({ updating: true });
      await updateSW(true);
    },
    dismissUpdate: () => {
      dismissed = true;
      set({ needRefresh: false });
    },
  };
  return handle;
}
