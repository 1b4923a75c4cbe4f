/**
 * The `error` event's detail of `<weblora-chat>`: the typed error's class name, message and structured
 * data (errors.ts; they survive the worker boundary), plus the error itself. Kept apart from the element
 * so its file stays small.
 */

export interface WebLoraErrorDetail {
  /** Typed error class name ('FetchError', 'AdapterFormatError', …) or 'Error'. */
  name: string;
  message: string;
  data: Record<string, unknown>;
  error: unknown;
}

export function errorDetail(e: unknown): WebLoraErrorDetail {
  if (e instanceof Error) {
    const data = (e as { data?: unknown }).data;
    return {
      name: e.name || 'Error',
      message: e.message || String(e),
      data: data && typeof data === 'object' ? (data as Record<string, unknown>) : {},
      error: e,
    };
  }
  return { name: 'Error', message: String(e), data: {}, error: e };
}
