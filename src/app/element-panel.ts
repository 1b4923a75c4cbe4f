/**
 * The demo's "Embedded <weblora-chat>" panel: the web component inside the demo page, on the demo's own
 * engine (engine-sharing.ts). Opening the panel (or `?element` in the URL, which opens it at load)
 * creates one `<weblora-chat>` whose `model` / `modelFiles`, `backend` and `dtype` follow the model the
 * demo loads, so its key matches the demo's and it never starts a second worker: its prompts and the
 * demo's decode in one batch (each result's `timings.batchRows` says how many shared a step; the
 * Generate panel shows it). The element is created only when asked for; closing the panel keeps it
 * (and its conversation).
 */
import { defineWebLoraChat, type WebLoraChat } from '../element/weblora-chat.ts';
import { byId } from './dom.ts';
import type { DemoModel, EngineSharing } from './engine-sharing.ts';

/** Sets the attributes that make `el`'s model key the demo's (only those that changed). */
function follow(el: WebLoraChat, { choice, backend }: DemoModel, before: DemoModel | null): void {
  const src = choice.source;
  if (!before || before.choice.source !== src) {
    if (typeof src === 'string') el.setAttribute('model', src);
    else {
      el.removeAttribute('model');
      // The same File[] object gives the same local model id as the demo's.
      if (src || el.modelFiles) el.modelFiles = src ?? null;
    }
  }
  el.setAttribute('backend', backend);
  if (choice.dtype) el.setAttribute('dtype', choice.dtype);
  else el.removeAttribute('dtype');
}

export function mountElementPanel(sharing: EngineSharing): void {
  const details = byId<HTMLDetailsElement>('element-details');
  const mount = byId('element-mount');
  let el: WebLoraChat | null = null;
  let shown: DemoModel | null = null;

  const sync = (m: DemoModel | null): void => {
    if (!el || !m || m === shown) return;
    follow(el, m, shown);
    shown = m;
  };
  sharing.onChange(sync);
  details.addEventListener('toggle', () => {
    if (!details.open || el) return;
    defineWebLoraChat();
    el = document.createElement('weblora-chat') as WebLoraChat;
    el.id = 'embedded-chat';
    sync(sharing.current); // before it is connected: its first load already uses the demo's key
    mount.append(el);
  });
  if (new URLSearchParams(location.search).has('element')) details.open = true;
}
