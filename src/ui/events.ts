/**
 * The page-wide "stored data changed" signal (a model cached or deleted, an adapter imported, renamed or
 * deleted): whoever changes storage dispatches it, every view that shows storage listens and re-reads.
 * It lives here, below app/, element/ and pwa/, so that none of them imports another just to talk.
 * A plain `Event` on `window`, so pages outside this code can listen too; no payload (listeners re-read).
 */

/** The window event's type. */
export const STORAGE_CHANGED = 'weblora:storage-changed';

/** Tells every listener that stored data changed (no-op outside a window, e.g. in a worker or Node). */
export function notifyStorageChanged(): void {
  if (typeof window !== 'undefined') window.dispatchEvent(new Event(STORAGE_CHANGED));
}

/** Calls `fn` on every storage change; returns the function that stops listening. */
export function onStorageChanged(fn: () => void): () => void {
  const listener = (): void => fn();
  window.addEventListener(STORAGE_CHANGED, listener);
  return () => window.removeEventListener(STORAGE_CHANGED, listener);
}
