/**
 * Model status panel: download progress (overall bar plus one bar per file, from the engine's
 * `LoadProgress` events; cached files fill at once), the load stages after the download (LoRA graph
 * pass, ORT session), and the loaded model's facts — backend and why (LoadReport.backendReason), GPU adapter vendor/architecture, dtype,
 * model bytes and the bytes adapters hold in the feed cache (`adapterStats`). Also the top status pill.
 * Loading itself is main.ts's job; this file only shows what it is told.
 */
import type { AdapterStats, GpuAdapterSummary, LoadProgress } from '../engine/types.ts';
import type { Capabilities } from '../env.ts';
import { h } from '../ui/dom.ts';
import { formatBytes } from '../ui/format.ts';
import { byId } from './dom.ts';
import type { AppState } from './state.ts';

function pct(loaded: number, total: number | null | undefined): string {
  return total ? `${Math.min(100, (100 * loaded) / total).toFixed(0)}%` : formatBytes(loaded);
}

export interface ProgressView {
  onProgress(p: LoadProgress): void;
  reset(): void;
  /** The load failed: the bars stop (the error itself is shown by main.ts). */
  failed(): void;
}

export function mountProgress(): ProgressView {
  const bar = byId<HTMLProgressElement>('progress');
  const text = byId('progress-text');
  const list = byId('file-progress');
  const rows = new Map<string, { bar: HTMLProgressElement; text: HTMLElement }>();

  function row(file: string): { bar: HTMLProgressElement; text: HTMLElement } {
    let r = rows.get(file);
    if (!r) {
      const id = `file-${rows.size}`;
      r = { bar: h('progress', { id, max: 1, value: 0 }), text: h('span', { class: 'mono' }) };
      list.append(h('li', {}, h('label', { for: id, class: 'mono file-name' }, file), r.bar, r.text));
      rows.set(file, r);
    }
    return r;
  }

  return {
    reset() {
      rows.clear();
      list.replaceChildren();
      bar.removeAttribute('value');
      text.textContent = 'starting…';
    },
    failed() {
      bar.max = 1;
      bar.value = 0;
      text.textContent = 'load failed';
      for (const r of rows.values()) if (!r.bar.hasAttribute('value')) r.bar.value = 0;
    },
    onProgress(p) {
      if (p.stage === 'download') {
        if (p.total) {
          bar.max = p.total;
          bar.value = p.loaded;
        } else bar.removeAttribute('value');
        text.textContent = p.total
          ? `${formatBytes(p.loaded)} / ${formatBytes(p.total)}`
          : `${formatBytes(p.loaded)}`;
        if (p.file) {
          const r = row(p.file);
          const loaded = p.fileLoaded ?? 0;
          if (p.fileTotal) {
            r.bar.max = p.fileTotal;
            r.bar.value = loaded;
          } else r.bar.removeAttribute('value');
          r.text.textContent = pct(loaded, p.fileTotal);
        }
      } else if (p.stage === 'prepare') {
        text.textContent = 'preparing LoRA inputs…';
      } else if (p.stage === 'session') {
        text.textContent = 'creating inference session…';
      } else if (p.stage === 'ready') {
        bar.max = 1;
        bar.value = 1;
        text.textContent = p.total ? `${formatBytes(p.total)} loaded` : 'loaded';
        for (const r of rows.values()) {
          r.bar.max = 1;
          r.bar.value = 1;
          r.text.textContent = '100%';
        }
      }
    },
  };
}

const PILL: Record<string, string> = {
  loading: 'Loading model…',
  ready: 'Ready',
  generating: 'Generating…',
  error: 'Model failed to load',
};

function describeGpu(a: GpuAdapterSummary | Capabilities['adapterInfo']): string {
  if (!a) return 'none';
  const main = [a.vendor, a.architecture].filter(Boolean).join(' / ') || 'unknown vendor';
  const extra = [a.device, a.description].filter(Boolean).join(', ');
  return extra ? `${main} (${extra})` : main;
}

export function mountModelStatus(state: AppState, caps: Promise<Readonly<Capabilities>>): void {
  const pill = byId('state-pill');
  const set = (id: string, text: string): void => {
    byId(id).textContent = text;
  };
  const syncPill = (): void => {
    const s = document.body.dataset.state ?? 'loading';
    pill.textContent = s === 'ready' && state.report ? `Ready · ${state.report.backend}` : (PILL[s] ?? s);
    pill.dataset.state = s;
  };
  // body[data-state] changes on model phase and on every generation start/end.
  new MutationObserver(syncPill).observe(document.body, {
    attributes: true,
    attributeFilter: ['data-state'],
  });

  void caps.then((c) => {
    if (!state.report)
      set('adapter', c.adapterInfo ? describeGpu(c.adapterInfo) : 'none (WebGPU unavailable)');
  });

  state.onModel(() => {
    syncPill();
    const r = state.report;
    if (!r) {
      for (const id of [
        'backend',
        'backend-reason',
        'dtype',
        'model-name',
        'model-layout',
        'model-bytes',
        'adapter-bytes',
        'targets',
        'load-time',
      ]) {
        set(id, state.phase === 'loading' ? '…' : '—');
      }
      return;
    }
    set('backend', r.backend);
    set('backend-reason', r.backendReason);
    if (r.adapterInfo) set('adapter', describeGpu(r.adapterInfo));
    else
      void caps.then((c) =>
        set(
          'adapter',
          c.adapterInfo ? `${describeGpu(c.adapterInfo)} — not used (wasm)` : 'none (WebGPU unavailable)',
        ),
      );
    set('dtype', r.dtype);
    set('model-name', r.modelId);
    const l = r.layout;
    set(
      'model-layout',
      l
        ? `${l.family}${l.packedQkv ? ', packed qkv' : ''}, ${l.weights} weights, KV ${l.kvDtype ?? '—'}` +
            (r.externalDataChunks
              ? `, ${r.externalDataChunks} external-data chunk${r.externalDataChunks === 1 ? '' : 's'}`
              : '')
        : '—',
    );
    set('model-bytes', formatBytes(r.modelBytes));
    set('targets', `${r.targetCount} projections`);
    set('load-time', `${(r.loadMs / 1000).toFixed(1)} s`);
    void state.refreshStats();
  });

  state.onStats((s: AdapterStats | null) => {
    if (!s) return;
    // Plain words: each entry is one adapter (or mix) whose weights are ready in memory for requests.
    byId('adapter-bytes').textContent =
      `${formatBytes(s.bytesHeld)} for ${s.entries} adapter${s.entries === 1 ? '' : 's'} or mix${s.entries === 1 ? '' : 'es'} ready in memory · reused ${s.hits}×, loaded ${s.misses}×`;
  });
}
