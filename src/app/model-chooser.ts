/**
 * The model chooser in the demo's Model panel: the bundled default model, a short list of known hub models
 * (with their dtypes and, where published, download sizes), any pasted folder URL (Hugging Face repo, tree
 * and resolve URLs are normalised to resolve URLs) or a local folder (`<input webkitdirectory>`), plus the
 * dtype. Before anything is downloaded it shows the download size — the known list's published sizes, or
 * HEAD sizes (engine/estimate.ts) — and a memory estimate (≈ bytes × 1.2, stated as an estimate). Offline,
 * a hub model fails here with the FetchError the probe met, and the loaded model stays. Loading itself is
 * main.ts's job (the `onLoad` callback); this file only builds the choice.
 */
import { estimateDownload } from '../engine/estimate.ts';
import type { ModelDtype, ModelSource } from '../engine/types.ts';
import { h } from '../ui/dom.ts';
import { formatBytes } from '../ui/format.ts';
import { byId, errorText, setMessage } from './dom.ts';

export interface KnownModel {
  id: string;
  label: string;
  /** Folder URL (a hub repo URL is fine). */
  url: string;
  dtypes: readonly ModelDtype[];
  /** Published ONNX file sizes per dtype (bytes); absent = sized by HEAD when chosen. */
  sizes?: Partial<Record<ModelDtype, number>>;
  instruct: boolean;
}

const MB = 1e6;
/**
 * Hub models known to be in the transformers.js ONNX layout. SmolLM2-135M-Instruct sizes are the hub's
 * file listing of its onnx/ folder (model.onnx 654 MB, model_fp16 327 MB, model_q4 200 MB, model_q4f16
 * 134 MB); for the others no size was at hand offline, so the chooser asks the hub (HEAD) when chosen.
 */
export const KNOWN_MODELS: readonly KnownModel[] = [
  {
    id: 'smollm2-135m',
    label: 'SmolLM2-135M-Instruct',
    url: 'https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct',
    dtypes: ['q4f16', 'q4', 'fp16', 'fp32'],
    sizes: { fp32: 654 * MB, fp16: 327 * MB, q4: 200 * MB, q4f16: 134 * MB },
    instruct: true,
  },
  {
    id: 'smollm2-360m',
    label: 'SmolLM2-360M-Instruct',
    url: 'https://huggingface.co/HuggingFaceTB/SmolLM2-360M-Instruct',
    dtypes: ['q4f16', 'q4', 'fp16', 'fp32'],
    instruct: true,
  },
  {
    id: 'qwen2.5-0.5b',
    label: 'Qwen2.5-0.5B-Instruct',
    url: 'https://huggingface.co/onnx-community/Qwen2.5-0.5B-Instruct',
    dtypes: ['q4f16', 'q4', 'fp16', 'fp32'],
    instruct: true,
  },
];

/** Memory a loaded model takes, roughly: its bytes plus ~20 % for the runtime (an estimate, not measured). */
export const MEMORY_FACTOR = 1.2;

export interface ModelChoice {
  /** undefined = the bundled default model. */
  source: ModelSource | undefined;
  dtype: ModelDtype | undefined;
  label: string;
}

export interface ModelChooser {
  /** The chooser's controls are disabled while a load runs. */
  setBusy(busy: boolean): void;
}

const DTYPES: readonly ModelDtype[] = ['fp32', 'fp16', 'q4', 'q4f16'];

export function mountModelChooser(onLoad: (choice: ModelChoice) => Promise<void>): ModelChooser {
  const select = byId<HTMLSelectElement>('model-select');
  const dtypeSel = byId<HTMLSelectElement>('dtype-select');
  const urlRow = byId('model-url-row');
  const url = byId<HTMLInputElement>('model-url');
  const folderRow = byId('model-folder-row');
  const folder = byId<HTMLInputElement>('model-folder');
  const estimate = byId('model-estimate');
  const error = byId('model-choice-error');
  const load = byId<HTMLButtonElement>('model-load');

  select.replaceChildren(
    h('option', { value: 'default' }, 'weblora-shakespeare (bundled, 4.7M parameters)'),
    ...KNOWN_MODELS.map((m) => h('option', { value: m.id }, `${m.label} (${m.dtypes.join(', ')})`)),
    h('option', { value: 'url' }, 'Folder URL…'),
    h('option', { value: 'local' }, 'Local folder…'),
  );
  dtypeSel.replaceChildren(
    h('option', { value: '' }, 'auto (q4 when present, else fp32)'),
    ...DTYPES.map((d) => h('option', { value: d }, d)),
  );

  const known = (): KnownModel | undefined => KNOWN_MODELS.find((m) => m.id === select.value);
  const dtype = (): ModelDtype | undefined => (dtypeSel.value || undefined) as ModelDtype | undefined;

  function choice(): ModelChoice | null {
    const k = known();
    if (select.value === 'default')
      return { source: undefined, dtype: dtype(), label: 'weblora-shakespeare' };
    if (k) return { source: k.url, dtype: dtype() ?? k.dtypes[0]!, label: k.label };
    if (select.value === 'url') {
      const u = url.value.trim();
      return u ? { source: u, dtype: dtype(), label: u } : null;
    }
    const files = [...(folder.files ?? [])];
    return files.length
      ? { source: files, dtype: dtype(), label: files[0]!.webkitRelativePath.split('/')[0] ?? 'local' }
      : null;
  }

  let seq = 0;
  let shown = '';
  async function refresh(): Promise<void> {
    // The URL field fires 'change' again on blur — e.g. on the mousedown of a Load click; re-estimating then
    // would move the button away from under the pointer. Only a different choice is estimated again.
    const key = [select.value, dtypeSel.value, url.value.trim(), folder.files?.length ?? 0].join('|');
    if (key === shown) return;
    shown = key;
    const my = ++seq;
    urlRow.hidden = select.value !== 'url';
    folderRow.hidden = select.value !== 'local';
    setMessage(error, '');
    const c = choice();
    const k = known();
    const show = (bytes: number, how: string): void => {
      estimate.textContent = `Download ${formatBytes(bytes)} (${how}); memory ≈ ${formatBytes(bytes * MEMORY_FACTOR)} (estimate: bytes × ${MEMORY_FACTOR}).`;
      estimate.dataset.bytes = String(bytes);
    };
    delete estimate.dataset.bytes;
    if (!c || c.source === undefined) {
      estimate.textContent = c ? 'Bundled with this site (already cached after the first visit).' : '';
      return;
    }
    const published = k?.sizes?.[c.dtype ?? 'q4'];
    if (published !== undefined) {
      show(published, `published size of ${c.dtype} ONNX file`);
      return;
    }
    estimate.textContent = 'Checking sizes…';
    try {
      const est = await estimateDownload(c.source, c.dtype ?? 'fp32');
      if (my !== seq) return;
      show(
        est.bytes,
        est.complete ? `${est.files.length} files` : `${est.files.length} files, some sizes unknown`,
      );
    } catch (e) {
      if (my !== seq) return;
      estimate.textContent = '';
      setMessage(error, errorText(e));
    }
  }

  for (const el of [select, dtypeSel, folder]) el.addEventListener('change', () => void refresh());
  url.addEventListener('change', () => void refresh());
  load.addEventListener('click', async () => {
    const c = choice();
    if (!c) {
      setMessage(
        error,
        select.value === 'url' ? 'Paste a model folder URL first.' : 'Pick a model folder first.',
      );
      return;
    }
    setMessage(error, '');
    await onLoad(c);
  });
  void refresh();

  return {
    setBusy(busy) {
      for (const el of [select, dtypeSel, url, folder, load]) el.disabled = busy;
    },
  };
}
