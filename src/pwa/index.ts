/**
 * PWA controls for the demo: `mountPwaControls(container, opts)` registers the service worker (once)
 * and mounts the update prompt, the "available offline" indicator, the persistent-storage request and
 * the storage view into `container`. Only one set is mounted per page: a new mount replaces the
 * previous one (so the demo's own mount replaces the automatic one from auto-mount.ts).
 */
import { type Mounted, mountOfflineIndicator } from './offline-indicator.ts';
import { mountPersistControl } from './persist.ts';
import { type PwaRegistration, registerPwa } from './register.ts';
import { mountStorageView, type StorageViewOptions } from './storage-view.ts';
import { mountUpdatePrompt } from './update-prompt.ts';

export { requestPersistentStorage } from './persist.ts';
export type { PwaRegistration, PwaState } from './register.ts';
export { registerPwa } from './register.ts';
export type { StorageEngine, StorageSource, StorageViewOptions, StoredItem } from './storage-view.ts';
export { checkpointSource } from './storage-view.ts';

export interface PwaControls extends Mounted {
  readonly pwa: PwaRegistration;
  /** Re-reads the storage view. */
  refresh(): Promise<void>;
  /** True when mounted by auto-mount.ts rather than by the app. */
  readonly auto: boolean;
}

const CSS = `
.weblora-pwa { font-size: 0.9rem; border-top: 1px solid color-mix(in srgb, currentColor 20%, transparent); margin-top: 1.5rem; padding-top: 0.75rem; }
.weblora-pwa h2 { font-size: 1rem; margin: 0.5rem 0; }
.weblora-pwa h3 { font-size: 0.9rem; margin: 0.5rem 0 0.25rem; }
.weblora-pwa ul { margin: 0; padding-left: 1.2rem; }
.weblora-pwa small { display: block; opacity: 0.7; }
.weblora-pwa-offline[data-offline-ready="true"]::before { content: "✓ "; }
.weblora-pwa-update { padding: 0.5rem; border: 1px solid currentColor; border-radius: 6px; }
.weblora-pwa button:focus-visible { outline: 3px solid #1a73e8; outline-offset: 2px; }
`;

let current: PwaControls | null = null;

function ensureStyle(): void {
  if (document.getElementById('weblora-pwa-style')) return;
  const style = document.createElement('style');
  style.id = 'weblora-pwa-style';
  style.textContent = CSS;
  document.head.append(style);
}

export interface MountPwaOptions extends StorageViewOptions {
  /** @internal set by auto-mount.ts */
  auto?: boolean;
}

export function mountPwaControls(container: HTMLElement, opts: MountPwaOptions = {}): PwaControls {
  current?.dispose();
  ensureStyle();
  const pwa = registerPwa();
  container.classList.add('weblora-pwa');
  container.dataset.wbPwa = 'mounted';
  const parts = [
    mountUpdatePrompt(container, pwa),
    mountOfflineIndicator(container, pwa),
    mountPersistControl(container),
  ];
  const storage = mountStorageView(container, opts);
  const controls: PwaControls = {
    pwa,
    auto: opts.auto === true,
    refresh: storage.refresh,
    dispose() {
      for (const p of parts) p.dispose();
      storage.dispose();
      delete container.dataset.wbPwa;
      container.classList.remove('weblora-pwa');
      if (controls.auto) container.remove();
      if (current === controls) current = null;
    },
  };
  current = controls;
  return controls;
}

/** The mounted controls, if any. */
export function currentPwaControls(): PwaControls | null {
  return current;
}
