/**
 * Update prompt: when a new service worker is installed and waiting, a small banner offers to reload
 * into the new version now or later. Focus is not stolen; the banner is announced (role="alert").
 * `data-waiting-reports` on the banner counts workbox-window's reports of a waiting version.
 */
import { h } from '../ui/dom.ts';
import type { Mounted } from './offline-indicator.ts';
import type { PwaRegistration } from './register.ts';

/** After this long without the reload, the banner says why it is still waiting. */
export const UPDATE_STALL_MS = 8000;

const OFFER = 'A new version of weblora is available. ';
const UPDATING = 'Updating… ';
const STALLED =
  'The new version takes over as soon as the old one has finished its work (at the latest the next time weblora opens). ';

export function mountUpdatePrompt(container: HTMLElement, pwa: PwaRegistration): Mounted {
  const message = h('span', { class: 'weblora-pwa-update-message' }, OFFER);
  const reload = h('button', { type: 'button', class: 'weblora-pwa-reload' }, 'Reload to update');
  const later = h('button', { type: 'button', class: 'weblora-pwa-later' }, 'Later');
  const root = h(
    'div',
    { class: 'weblora-pwa-update', role: 'alert', hidden: true },
    message,
    reload,
    ' ',
    later,
  );
  let stallTimer: ReturnType<typeof setTimeout> | undefined;
  reload.addEventListener('click', () => {
    void pwa.update();
  });
  later.addEventListener('click', () => pwa.dismissUpdate());
  container.append(root);
  const unsubscribe = pwa.subscribe((s) => {
    root.hidden = !s.needRefresh;
    // For tests: the e2e update test waits for workbox-window's second report (see register.ts).
    root.dataset.waitingReports = String(s.waitingReports);
    reload.disabled = s.updating;
    if (!s.updating) {
      message.textContent = OFFER;
      return;
    }
    if (stallTimer !== undefined) return;
    message.textContent = UPDATING;
    stallTimer = setTimeout(() => {
      message.textContent = STALLED;
    }, UPDATE_STALL_MS);
  });
  return {
    dispose() {
      clearTimeout(stallTimer);
      unsubscribe();
      root.remove();
    },
  };
}
