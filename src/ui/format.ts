/**
 * The one byte formatter for people, used by the demo, the PWA controls and the web component:
 * decimal units like the browser's storage UI (1.2 MB, 350 kB, 12 B). No DOM; pure.
 */

/**
 * `n` bytes as text: GB with 2 decimals, MB with 1, kB rounded, bytes as is. Null, undefined and
 * non-finite counts give `unknown` ('—' by default; sentences pass e.g. 'unknown size').
 */
export function formatBytes(n: number | null | undefined, unknown = '—'): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return unknown;
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${Math.round(n / 1e3)} kB`;
  return `${n} B`;
}
