/**
 * Update prompt: when a new service worker is installed and waiting, a small banner offers to reload
 * into the new version now or later. Focus is not stolen; the banner is announced (role="alert").
 */
import { h } from './format.ts';
import type { Mounted } from './offline-indicator.ts';
import type { PwaRegistration } from './register.ts';

export function mountUpdatePrompt(container: HTMLElement, pwa: PwaRegistration): Mounted {
  const reload = h('button', { type: 'button', class: 'weblora-pwa-reload' }, 'Reload to update');
  const later = h('button', { type: 'button', class: 'weblora-pwa-later' }, 'Later');
  const root = h(
    'div',
    { class: 'weblora-pwa-update', role: 'alert', hidden: true },
    h('span', {}, 'A new version of weblora is available. '),
    reload,
    ' ',
    later,
  );
  reload.addEventListener('click', () => {
    reload.disabled = true;
    void pwa.update();
  });
  later.addEventListener('click', () => pwa.dismissUpdate());
  container.append(root);
  const unsubscribe = pwa.subscribe((s) => {
    root.hidden = !s.needRefresh;
  });
  return {
    dispose() {
      unsubscribe();
      root.remove();
    },
  };
}
