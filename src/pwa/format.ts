/** Byte counts for people: 1.2 MB, 350 kB, 12 B (decimal units, like the browser's storage UI). */
export function formatBytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return 'unknown size';
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${Math.round(n / 1e3)} kB`;
  return `${n} B`;
}

/** Creates an element with attributes and children (text or nodes). */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | boolean> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false) continue;
    el.setAttribute(k, v === true ? '' : v);
  }
  el.append(...children);
  return el;
}

/** Window event other modules dispatch after they changed stored data (model cached, adapter imported). */
export const STORAGE_CHANGED = 'weblora:storage-changed';

export function notifyStorageChanged(): void {
  if (typeof window !== 'undefined') window.dispatchEvent(new Event(STORAGE_CHANGED));
}
