/**
 * Injected into index.html by vite.config.ts (`autoMountPwa`): registers the service worker and, unless
 * the page already mounted the PWA controls itself, appends them in a section at the end of <main>
 * (or <body>). A later `mountPwaControls` call from the app replaces this automatic set.
 */
import { currentPwaControls, mountPwaControls, registerPwa } from './index.ts';

registerPwa();
const mount = (): void => {
  if (currentPwaControls()) return;
  const section = document.createElement('section');
  section.id = 'weblora-pwa-controls';
  section.setAttribute('aria-label', 'Offline use and storage');
  (document.querySelector('main') ?? document.body).append(section);
  mountPwaControls(section, { auto: true });
};
// After the app's own module scripts had their chance to mount the controls.
if (document.readyState === 'complete') setTimeout(mount, 0);
else window.addEventListener('load', () => setTimeout(mount, 0), { once: true });
