/**
 * Storage view: what weblora keeps on this device, with sizes and delete buttons — model files (the
 * engine's Cache Storage, model-files.ts), adapters (the engine's IndexedDB store via listAdapters /
 * deleteAdapter), training checkpoints (listCheckpoints / deleteCheckpoint: name, step/total, size,
 * saved at; with Resume when the page passes `onResumeCheckpoint`, e.g. the demo's Train panel), and
 * any extra sources a caller plugs in. Deleting an item takes two clicks; "Clear all" asks for
 * a second click before deleting. The app shell (service-worker precache) is deliberately not offered
 * for deletion: it is what makes the app start offline; the browser evicts it with the site's data.
 */

import { storeEngine } from '../element/registry.ts';
import { deleteCachedModel, listCachedModels } from '../engine/model-files.ts';
import type { Engine } from '../engine/types.ts';
import { h } from '../ui/dom.ts';
import { notifyStorageChanged, onStorageChanged } from '../ui/events.ts';
import { formatBytes } from '../ui/format.ts';
import type { Mounted } from './offline-indicator.ts';

/** Sizes here sit inside sentences ("This site uses unknown size of …"), so not the default '—'. */
const UNKNOWN_SIZE = 'unknown size';

export interface StoredItem {
  /** Stable id passed back to `remove`. */
  id: string;
  label: string;
  bytes: number | null;
  detail?: string;
}

/** A kind of stored data the view lists (model files, adapters, checkpoints, a caller's own). */
export interface StorageSource {
  title: string;
  list(): Promise<StoredItem[]>;
  remove(id: string): Promise<void>;
  /** A second button per item next to Delete, e.g. "Resume" for a training checkpoint. */
  open?: { label: string; run(id: string): void };
}

/** What the view asks of an engine: its adapter store and its training checkpoints. */
export type StorageEngine = Pick<
  Engine,
  'listAdapters' | 'deleteAdapter' | 'listCheckpoints' | 'deleteCheckpoint'
>;

export interface StorageViewOptions {
  /** Engine for adapters and checkpoints; default: a shared element engine (or a model-less one). */
  engine?: StorageEngine;
  /** Resume button on checkpoint rows (e.g. the demo jumps to its Train panel); none when absent. */
  onResumeCheckpoint?: (trainId: string) => void;
  /** More sources. */
  extraSources?: StorageSource[];
}

function openButton(open: NonNullable<StorageSource['open']>, item: StoredItem): HTMLButtonElement {
  const b = h('button', { type: 'button', 'aria-label': `${open.label} ${item.label}` }, open.label);
  b.addEventListener('click', () => open.run(item.id));
  return b;
}

function shortUrl(url: string): string {
  try {
    const u = new URL(url);
    return u.origin === location.origin ? u.pathname : url;
  } catch {
    return url;
  }
}

export function modelSource(): StorageSource {
  return {
    title: 'Model files',
    async list() {
      const models = await listCachedModels();
      return models.map((m) => ({
        id: m.baseUrl,
        label: shortUrl(m.baseUrl),
        bytes: m.size,
        detail: m.files.map((f) => `${f.path} (${formatBytes(f.size, UNKNOWN_SIZE)})`).join(', '),
      }));
    },
    async remove(id) {
      await deleteCachedModel(id);
    },
  };
}

export function adapterSource(engine: () => Pick<Engine, 'listAdapters' | 'deleteAdapter'>): StorageSource {
  return {
    title: 'Adapters',
    async list() {
      const list = await engine().listAdapters();
      return list.map((a) => ({
        id: a.name,
        label: a.name,
        bytes: a.bytes,
        detail: `rank ${a.rank}, ${a.moduleCount} modules`,
      }));
    },
    async remove(id) {
      await engine().deleteAdapter(id);
    },
  };
}

/** Training checkpoints (a paused run, or one a closed tab left): name, step/total, size, saved at. */
export function checkpointSource(
  engine: () => Pick<Engine, 'listCheckpoints' | 'deleteCheckpoint'>,
  onResume?: (trainId: string) => void,
): StorageSource {
  return {
    title: 'Training checkpoints',
    async list() {
      const list = await engine().listCheckpoints();
      return list.map((c) => ({
        id: c.trainId,
        label: c.name,
        bytes: c.bytes,
        detail: `step ${c.step} of ${c.totalSteps}, saved ${new Date(c.savedAt).toLocaleString()}`,
      }));
    },
    async remove(id) {
      await engine().deleteCheckpoint(id);
    },
    ...(onResume ? { open: { label: 'Resume', run: onResume } } : {}),
  };
}

export function mountStorageView(
  container: HTMLElement,
  opts: StorageViewOptions = {},
): Mounted & { refresh(): Promise<void> } {
  const sources = [
    modelSource(),
    adapterSource(() => opts.engine ?? storeEngine()),
    checkpointSource(() => opts.engine ?? storeEngine(), opts.onResumeCheckpoint),
    ...(opts.extraSources ?? []),
  ];
  const body = h('div', { class: 'weblora-pwa-storage-body' });
  const usage = h('p', { class: 'weblora-pwa-usage' });
  const clear = h('button', { type: 'button', class: 'weblora-pwa-clear' }, 'Clear all stored data…');
  const confirmBtn = h(
    'button',
    { type: 'button', class: 'weblora-pwa-clear-confirm', hidden: true },
    'Yes, delete everything',
  );
  const cancel = h('button', { type: 'button', class: 'weblora-pwa-clear-cancel', hidden: true }, 'Cancel');
  const refreshBtn = h('button', { type: 'button', class: 'weblora-pwa-refresh' }, 'Refresh');
  const status = h('p', { class: 'weblora-pwa-storage-status', role: 'status' });
  const root = h(
    'section',
    { class: 'weblora-pwa-storage', 'aria-labelledby': 'weblora-pwa-storage-title' },
    h('h2', { id: 'weblora-pwa-storage-title' }, 'Stored on this device'),
    usage,
    body,
    h('div', { class: 'weblora-pwa-actions' }, refreshBtn, ' ', clear, ' ', confirmBtn, ' ', cancel),
    status,
  );
  container.append(root);
  let disposed = false;
  let items: { source: StorageSource; items: StoredItem[] }[] = [];

  const setConfirming = (on: boolean): void => {
    clear.hidden = on;
    confirmBtn.hidden = !on;
    cancel.hidden = !on;
    (on ? cancel : clear).focus();
  };

  async function refresh(): Promise<void> {
    const next: typeof items = [];
    const sections: HTMLElement[] = [];
    for (const source of sources) {
      let list: StoredItem[] = [];
      let error: string | null = null;
      try {
        list = await source.list();
      } catch (e) {
        error = e instanceof Error ? e.message : String(e);
      }
      next.push({ source, items: list });
      const total = list.reduce((a, i) => a + (i.bytes ?? 0), 0);
      const ul = h('ul', {});
      for (const item of list) {
        const del = h('button', { type: 'button', 'aria-label': `Delete ${item.label}` }, 'Delete');
        // Two clicks, like the adapters panel: the first arms ("Confirm delete"), the second deletes.
        let armed = false;
        del.addEventListener('click', async () => {
          if (!armed) {
            armed = true;
            del.textContent = 'Confirm delete';
            del.classList.add('armed');
            setTimeout(() => {
              armed = false;
              del.textContent = 'Delete';
              del.classList.remove('armed');
            }, 4000);
            return;
          }
          del.disabled = true;
          try {
            await source.remove(item.id);
            status.textContent = `Deleted ${item.label}.`;
          } catch (e) {
            status.textContent = `Could not delete ${item.label}: ${e instanceof Error ? e.message : String(e)}`;
          }
          notifyStorageChanged();
        });
        ul.append(
          h(
            'li',
            { 'data-id': item.id },
            h(
              'span',
              { class: 'weblora-pwa-item' },
              `${item.label} — ${formatBytes(item.bytes, UNKNOWN_SIZE)}`,
            ),
            ' ',
            ...(source.open ? [openButton(source.open, item), ' '] : []),
            del,
            ...(item.detail ? [h('small', { class: 'weblora-pwa-detail' }, item.detail)] : []),
          ),
        );
      }
      sections.push(
        h(
          'div',
          { class: 'weblora-pwa-source', 'data-source': source.title },
          h('h3', {}, `${source.title} (${list.length}, ${formatBytes(total, UNKNOWN_SIZE)})`),
          error
            ? h('p', { class: 'weblora-pwa-error' }, error)
            : list.length
              ? ul
              : h('p', {}, 'None stored.'),
        ),
      );
    }
    if (disposed) return;
    items = next;
    body.replaceChildren(...sections);
    const est = await navigator.storage?.estimate?.().catch(() => null);
    usage.textContent = est
      ? `This site uses ${formatBytes(est.usage ?? null, UNKNOWN_SIZE)} of ${formatBytes(est.quota ?? null, UNKNOWN_SIZE)} available (including the offline app).`
      : '';
  }

  clear.addEventListener('click', () => setConfirming(true));
  cancel.addEventListener('click', () => setConfirming(false));
  refreshBtn.addEventListener('click', () => void refresh());
  confirmBtn.addEventListener('click', async () => {
    let n = 0;
    for (const { source, items: list } of items) {
      for (const item of list) {
        try {
          await source.remove(item.id);
          n++;
        } catch {
          // listed but gone meanwhile
        }
      }
    }
    status.textContent = `Deleted ${n} item${n === 1 ? '' : 's'}.`;
    setConfirming(false);
    notifyStorageChanged();
  });
  const stopListening = onStorageChanged(() => void refresh());
  void refresh();
  return {
    refresh,
    dispose() {
      disposed = true;
      stopListening();
      root.remove();
    },
  };
}
