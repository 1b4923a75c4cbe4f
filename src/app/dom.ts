/**
 * Tiny DOM helpers for the demo: an element builder, a typed `byId`, byte formatting and the one way
 * the demo shows an error (`errorText`: the typed error's `name: message`, so a user sees e.g.
 * "AdapterShapeError: …" instead of a bare "Error"). It deliberately has no templating or state.
 */

type Child = Node | string | null | undefined | false;

/** Creates an element; attrs with `false`/`undefined` are skipped, `true` sets an empty attribute. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | number | boolean | undefined> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === undefined) continue;
    el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c) el.append(c);
  return el;
}

export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`demo markup is missing #${id}`);
  return el as T;
}

/** Decimal units, like the browser's storage UI: 1.2 MB, 350 kB, 12 B. */
export function formatBytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '—';
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} B`;
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
