/**
 * The one DOM element builder shared by the demo (src/app), the PWA controls (src/pwa) and the web
 * component (src/element): `h(tag, attrs, ...children)`. It deliberately has no templating, diffing or
 * state; callers keep references to the elements they update.
 */

/** A child to append; `null`, `undefined`, `false` and '' are skipped (handy for `cond && node`). */
export type Child = Node | string | null | undefined | false;

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
