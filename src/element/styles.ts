/**
 * Shadow-DOM styles of `<weblora-chat>`. Theme through the custom properties below (they inherit through
 * the shadow boundary) or style the exported parts (`::part(output)` etc., listed in weblora-chat.ts).
 * Focus is always visible (`:focus-visible` ring in --weblora-focus).
 */
export const STYLES = `
:host {
  --weblora-bg: Canvas;
  --weblora-fg: CanvasText;
  --weblora-muted: GrayText;
  --weblora-accent: #5b3cc4;
  --weblora-accent-fg: #fff;
  --weblora-border: color-mix(in srgb, currentColor 25%, transparent);
  --weblora-focus: #1a73e8;
  --weblora-radius: 8px;
  --weblora-font: system-ui, sans-serif;
  --weblora-mono: ui-monospace, SFMono-Regular, Menlo, monospace;
  --weblora-output-height: 16rem;
  display: block;
  font-family: var(--weblora-font);
  color: var(--weblora-fg);
  background: var(--weblora-bg);
  border: 1px solid var(--weblora-border);
  border-radius: var(--weblora-radius);
  padding: 0.75rem;
}
:host([hidden]) { display: none; }
* { box-sizing: border-box; }
.output {
  min-height: 4rem;
  max-height: var(--weblora-output-height);
  overflow: auto;
  white-space: pre-wrap;
  font-family: var(--weblora-mono);
  font-size: 0.9rem;
  margin: 0 0 0.5rem;
  padding: 0.5rem;
  border: 1px solid var(--weblora-border);
  border-radius: calc(var(--weblora-radius) / 2);
}
.output:empty::before { content: attr(data-placeholder); color: var(--weblora-muted); }
.turn + .turn { margin-top: 0.75rem; }
.prompt { color: var(--weblora-muted); }
/* Chat: the message and the reply each on their own line. */
.turn.chat .prompt, .turn.chat .response { display: block; }
.turn.chat .response { margin-top: 0.25rem; }
.status { font-size: 0.8rem; color: var(--weblora-muted); min-height: 1.2em; margin: 0.25rem 0; }
.error { color: #b3261e; font-size: 0.85rem; margin: 0.25rem 0; }
.error:empty { display: none; }
label { display: block; font-size: 0.85rem; margin-bottom: 0.25rem; }
textarea {
  width: 100%;
  resize: vertical;
  font: inherit;
  color: inherit;
  background: transparent;
  border: 1px solid var(--weblora-border);
  border-radius: calc(var(--weblora-radius) / 2);
  padding: 0.4rem;
}
.row { display: flex; gap: 0.5rem; margin-top: 0.5rem; align-items: center; }
.hint { font-size: 0.75rem; color: var(--weblora-muted); margin-left: auto; }
button {
  font: inherit;
  padding: 0.35rem 0.9rem;
  border-radius: calc(var(--weblora-radius) / 2);
  border: 1px solid var(--weblora-accent);
  background: var(--weblora-accent);
  color: var(--weblora-accent-fg);
  cursor: pointer;
}
button.secondary { background: transparent; color: var(--weblora-accent); }
button:disabled { opacity: 0.5; cursor: default; }
:focus-visible { outline: 3px solid var(--weblora-focus); outline-offset: 2px; }
progress { width: 100%; height: 0.4rem; }
progress[hidden] { display: none; }
.picker-row { display: flex; gap: 0.5rem; margin-bottom: 0.5rem; }
.picker-row[hidden] { display: none; }
`;
