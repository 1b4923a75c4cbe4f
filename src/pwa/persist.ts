/**
 * Persistent storage: browsers may evict a site's caches (our model files, adapters) under storage
 * pressure unless the site holds the "persistent" permission. Shows the current state and a button
 * that calls `navigator.storage.persist()` (Chromium grants or denies without a prompt, by engagement;
 * Firefox asks the user).
 */
import { h } from '../ui/dom.ts';
import type { Mounted } from './offline-indicator.ts';

export async function requestPersistentStorage(): Promise<boolean> {
  if (!navigator.storage?.persist) return false;
  try {
    return await navigator.storage.persist();
  } catch {
    return false;
  }
}

export function mountPersistControl(container: HTMLElement): Mounted {
  const text = h('span', {});
  const button = h('button', { type: 'button', class: 'weblora-pwa-persist' }, 'Keep data on this device');
  const root = h('p', { class: 'weblora-pwa-persistence', 'data-persisted': 'false' }, text, ' ', button);
  container.append(root);
  const render = (persisted: boolean | null): void => {
    root.dataset.persisted = String(persisted === true);
    button.hidden = persisted !== false;
    text.textContent =
      persisted === null
        ? 'Persistent storage is not available in this browser.'
        : persisted
          ? 'Stored data is persistent (the browser will not evict it).'
          : 'Stored data may be evicted by the browser when space runs low.';
  };
  const check = async (): Promise<void> => {
    if (!navigator.storage?.persisted) return render(null);
    render(await navigator.storage.persisted().catch(() => false));
  };
  button.addEventListener('click', async () => {
    button.disabled = true;
    const ok = await requestPersistentStorage();
    button.disabled = false;
    render(ok);
    if (!ok)
      text.textContent =
        'The browser declined persistent storage for now (try again after using the app more).';
  });
  void check();
  return { dispose: () => root.remove() };
}
