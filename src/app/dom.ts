/**
 * Tiny DOM helpers for the demo: a typed `byId`, messages, downloads, and the one way the demo shows
 * an error (`errorText`: the typed error's `name: message`, so a user sees e.g. "AdapterShapeError: …"
 * instead of a bare "Error"). The element builder and the byte formatter are shared with the PWA
 * controls and the web component: src/ui/. It deliberately has no templating or state.
 */
import { WebLoraError } from '../errors.ts';
import { h } from '../ui/dom.ts';

/** The demo's element `#id`; a WebLoraError (data `{ id }`) when index.html lacks it (a broken build). */
export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new WebLoraError(`demo markup is missing #${id}`, { id });
  return el as T;
}

/** "TypedErrorName: message" for Errors (the worker client revives weblora's typed errors). */
export function errorText(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return String(e);
}

/** Shows `text` in a role=alert/status element (hidden when empty). */
export function setMessage(el: HTMLElement, text: string, kind: 'error' | 'info' = 'error'): void {
  el.textContent = text;
  el.hidden = text === '';
  el.dataset.kind = kind;
}

/** A file download of `bytes` under `filename` (object URL, revoked after the click). */
export function download(bytes: Uint8Array, filename: string, type = 'application/octet-stream'): void {
  const url = URL.createObjectURL(new Blob([bytes as Uint8Array<ArrayBuffer>], { type }));
  const a = h('a', { href: url, download: filename, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
