/**
 * "Available offline" indicator: offline-capable when the service worker has precached the app shell
 * AND the default model's files are in the engine's Cache Storage (model-files.ts). Also shows when
 * the browser is offline right now. The root carries `data-offline-ready="true|false"` for styling and
 * tests. Under the dev server (no service worker) it says that offline use needs the built site. It
 * deliberately checks only the default model: other models are listed in the storage view.
 */

import { getWebLoraConfig } from '../config.ts';
import { listCachedModels } from '../engine/model-files.ts';
import { h } from '../ui/dom.ts';
import { onStorageChanged } from '../ui/events.ts';
import type { PwaRegistration } from './register.ts';

export interface Mounted {
  dispose(): void;
}

async function defaultModelCached(): Promise<boolean> {
  const base = getWebLoraConfig().defaultModel;
  const models = await listCachedModels().catch(() => []);
  const m = models.find((x) => x.baseUrl === base);
  if (!m) return false;
  const paths = new Set(m.files.map((f) => f.path));
  return (
    paths.has('config.json') && paths.has('tokenizer.json') && [...paths].some((p) => p.endsWith('.onnx'))
  );
}

export function mountOfflineIndicator(container: HTMLElement, pwa: PwaRegistration): Mounted {
  const text = h('span', { class: 'weblora-pwa-offline-text' });
  const root = h('p', { class: 'weblora-pwa-offline', role: 'status', 'data-offline-ready': 'false' }, text);
  container.append(root);
  let modelCached = false;

  const render = (): void => {
    const s = pwa.state;
    const ready = s.offlineReady && modelCached;
    root.dataset.offlineReady = String(ready);
    root.dataset.online = String(navigator.onLine);
    let msg: string;
    if (!s.supported) msg = 'Offline use needs service workers (not available here).';
    else if (ready) msg = 'Available offline.';
    else if (s.offlineReady) msg = 'App available offline; the model is downloaded on first use.';
    else if (s.error) msg = `Offline support failed: ${s.error}`;
    else if (import.meta.env?.DEV)
      // vite-plugin-pwa registers no service worker under the dev server: it would never get ready.
      msg =
        'Offline use needs the built site (npm run build, then npx vite preview): the dev server (npm start) has no service worker.';
    else msg = 'Preparing offline use…';
    if (!navigator.onLine)
      msg = `You are offline. ${ready ? 'Everything needed is stored on this device.' : msg}`;
    text.textContent = msg;
  };
  const check = async (): Promise<void> => {
    modelCached = await defaultModelCached();
    render();
  };
  const unsubscribe = pwa.subscribe(render);
  const onChange = (): void => void check();
  window.addEventListener('online', render);
  window.addEventListener('offline', render);
  const stopListening = onStorageChanged(onChange);
  void check();
  return {
    dispose() {
      unsubscribe();
      window.removeEventListener('online', render);
      window.removeEventListener('offline', render);
      stopListening();
      root.remove();
    },
  };
}
