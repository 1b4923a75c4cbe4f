/**
 * Adapters panel: import a PEFT LoRA adapter from picked files, a picked folder, a drop (files or a
 * folder) or a URL, with stage progress and the engine's typed error shown as "Name: message"; and the
 * stored list (with the example adapters' descriptions) with rename, delete (second click confirms)
 * and export (one `<name>.zip` holding the PEFT folder `<name>/`, files byte-identical to what was
 * imported). Loose picked files are named from their config (looseFilesName), never all "adapter". Validation and storage are the engine's (src/adapters); this
 * file only gathers input and shows results.
 */
import { zipStore } from '../adapters/zip.ts';
import type { AdapterImportInput, AdapterImportProgress, AdapterInfo } from '../engine/types.ts';
import { h } from '../ui/dom.ts';
import { formatBytes } from '../ui/format.ts';
import { compressButton, mountMergeForm } from './derive-actions.ts';
import { byId, download, errorText, setMessage } from './dom.ts';
import { mountRankPlot } from './rank-plot.ts';
import type { AppState } from './state.ts';

const STAGES: AdapterImportProgress['stage'][] = ['read', 'validate', 'store', 'done'];
const STAGE_TEXT: Record<AdapterImportProgress['stage'], string> = {
  read: 'Reading files…',
  validate: 'Checking against the loaded model…',
  store: 'Storing…',
  done: 'Imported',
};

// ------------------------------------------------------------------ drop: files and folders

function readEntries(dir: FileSystemDirectoryEntry): Promise<FileSystemEntry[]> {
  const reader = dir.createReader();
  const all: FileSystemEntry[] = [];
  return new Promise((resolve, reject) => {
    const next = (): void =>
      reader.readEntries((batch) => {
        if (batch.length === 0) resolve(all);
        else {
          all.push(...batch);
          next();
        }
      }, reject);
    next();
  });
}

function entryFile(e: FileSystemFileEntry): Promise<File> {
  return new Promise((resolve, reject) => e.file(resolve, reject));
}

/** The dropped files; a dropped folder contributes its top-level files and its name. */
async function droppedFiles(dt: DataTransfer): Promise<{ files: File[]; folder: string | null }> {
  const entries = [...dt.items].filter((i) => i.kind === 'file').map((i) => i.webkitGetAsEntry?.() ?? null);
  const dir = entries.find((e): e is FileSystemDirectoryEntry => e?.isDirectory === true);
  if (dir) {
    const children = await readEntries(dir);
    const files = await Promise.all(
      children.filter((c): c is FileSystemFileEntry => c.isFile).map((c) => entryFile(c)),
    );
    return { files, folder: dir.name };
  }
  return { files: [...dt.files], folder: null };
}

/** The last path segment of a model id or URL ("org/weblora-shakespeare" → "weblora-shakespeare"). */
function lastSegment(s: string): string {
  return (
    s
      .split(/[\\/]+/)
      .filter(Boolean)
      .pop() ?? ''
  );
}

/**
 * A name for loose PEFT files picked without their folder (`adapter_model.safetensors` +
 * `adapter_config.json`: the browser hides the folder's name), from which the engine cannot derive
 * one: from the config, "<base model>-r<rank>" (e.g. "weblora-shakespeare-r4"; "-2", … when taken),
 * else "lora-adapter". Null when the engine can name it: a folder path, or a `.safetensors` with its
 * own name (`shout.safetensors` → "shout", an export's `shout.adapter_model.safetensors` → "shout").
 */
async function looseFilesName(files: File[], taken: readonly string[]): Promise<string | null> {
  if (files.some((f) => f.webkitRelativePath.includes('/'))) return null;
  const st = files.filter((f) => f.name.toLowerCase().endsWith('.safetensors'));
  if (st.length === 1 && st[0]!.name !== 'adapter_model.safetensors') return null;
  let stem = 'lora-adapter';
  const json = files.find((f) => f.name.toLowerCase().endsWith('.json'));
  try {
    const c = json ? (JSON.parse(await json.text()) as Record<string, unknown>) : null;
    const base = typeof c?.base_model_name_or_path === 'string' ? lastSegment(c.base_model_name_or_path) : '';
    const rank = typeof c?.r === 'number' ? `-r${c.r}` : '';
    const safe = `${base}${rank}`.replace(/[^\w.-]+/g, '-');
    if (base) stem = safe;
  } catch {
    // an unreadable config: the import reports it; the name does not matter then
  }
  let name = stem;
  for (let i = 2; taken.includes(name); i++) name = `${stem}-${i}`;
  return name;
}

// ------------------------------------------------------------------ panel

export function mountAdaptersPanel(state: AppState): { importUrl(url: string): Promise<void> } {
  const drop = byId('drop-zone');
  const filesInput = byId<HTMLInputElement>('import-files');
  const folderInput = byId<HTMLInputElement>('import-folder');
  const urlForm = byId<HTMLFormElement>('import-url-form');
  const urlInput = byId<HTMLInputElement>('import-url');
  const nameInput = byId<HTMLInputElement>('import-name');
  const overwrite = byId<HTMLInputElement>('import-overwrite');
  const mismatch = byId<HTMLInputElement>('import-mismatch');
  const status = byId('import-status');
  const bar = byId<HTMLProgressElement>('import-progress');
  const stage = byId('import-stage');
  const error = byId('import-error');
  const list = byId('adapter-list');
  const listError = byId('adapter-list-error');
  const importControls = [filesInput, folderInput, urlInput, byId<HTMLButtonElement>('import-url-button')];
  let importing = false;

  const sync = (): void => {
    for (const c of importControls) c.disabled = importing || !state.ready;
    drop.setAttribute('aria-disabled', String(importing || !state.ready));
  };
  state.onModel(sync);

  async function runImport(input: AdapterImportInput, fallbackName: string | null): Promise<void> {
    if (importing) return;
    if (!state.ready) {
      setMessage(
        error,
        'The model is still loading: adapters are checked against it, try again when it is ready.',
      );
      return;
    }
    importing = true;
    sync();
    setMessage(error, '');
    status.hidden = false;
    status.dataset.status = 'running';
    bar.value = 0;
    stage.textContent = 'Starting…';
    const name = nameInput.value.trim() || fallbackName || undefined;
    try {
      const info = await state.engine.importAdapter(input, {
        ...(name ? { name } : {}),
        overwrite: overwrite.checked,
        allowBaseModelMismatch: mismatch.checked,
        // The worker protocol delivers every progress event before the result (engine/protocol.ts).
        onProgress: (p) => {
          bar.value = STAGES.indexOf(p.stage) + 1;
          stage.textContent = `${STAGE_TEXT[p.stage]} ${p.name}`;
        },
      });
      bar.value = STAGES.length;
      stage.textContent = `Imported “${info.name}” (rank ${info.rank}, ${info.moduleCount} modules, ${formatBytes(info.bytes)})`;
      status.dataset.status = 'done';
      nameInput.value = '';
      await state.refreshAdapters();
    } catch (e) {
      status.hidden = true;
      status.dataset.status = 'error';
      setMessage(error, errorText(e));
    } finally {
      importing = false;
      sync();
    }
  }

  filesInput.addEventListener('change', () => {
    const files = [...(filesInput.files ?? [])];
    filesInput.value = '';
    const taken = state.adapters.map((a) => a.name);
    if (files.length) void looseFilesName(files, taken).then((name) => runImport({ files }, name));
  });
  folderInput.addEventListener('change', () => {
    // Only the folder's top-level files (a PEFT output folder may hold checkpoint sub-folders).
    const files = [...(folderInput.files ?? [])].filter((f) => f.webkitRelativePath.split('/').length <= 2);
    folderInput.value = '';
    if (files.length) void runImport({ files }, null);
  });
  urlForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const url = urlInput.value.trim();
    if (!url) {
      setMessage(error, 'Type the URL of an adapter folder or .safetensors file first.');
      return;
    }
    void runImport({ url }, null);
  });

  drop.addEventListener('dragover', (ev) => {
    ev.preventDefault();
    drop.classList.add('dragging');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('dragging'));
  drop.addEventListener('drop', async (ev) => {
    ev.preventDefault();
    drop.classList.remove('dragging');
    if (!ev.dataTransfer) return;
    try {
      const { files, folder } = await droppedFiles(ev.dataTransfer);
      const taken = state.adapters.map((a) => a.name);
      if (files.length) await runImport({ files }, folder ?? (await looseFilesName(files, taken)));
    } catch (e) {
      setMessage(error, errorText(e));
    }
  });
  drop.addEventListener('keydown', (ev) => {
    if (ev.target === drop && (ev.key === 'Enter' || ev.key === ' ')) {
      ev.preventDefault();
      filesInput.click();
    }
  });

  // ---------------------------------------------------------------- stored list

  async function act(what: string, f: () => Promise<unknown>): Promise<void> {
    setMessage(listError, '');
    try {
      await f();
    } catch (e) {
      setMessage(listError, `${what} failed: ${errorText(e)}`);
    }
    await state.refreshAdapters();
  }

  function item(a: AdapterInfo): HTMLLIElement {
    const li = h('li', { 'data-adapter': a.name });
    const title = h('span', { class: 'adapter-name' }, a.name);
    const about = state.describe(a.name);
    const base = a.baseModel ? `${a.baseModel}${a.baseModelMatched ? '' : ' (not matched)'}` : 'unknown base';
    const meta = h(
      'small',
      {},
      `rank ${a.rank} · α ${a.loraAlpha}${a.useRslora ? ' · rsLoRA' : ''} · ${a.moduleCount} modules (${a.modules.join(', ')}) · ${formatBytes(a.bytes)} · ${base}`,
    );
    const rename = h('button', { type: 'button', 'aria-label': `Rename ${a.name}` }, 'Rename');
    const exp = h(
      'button',
      {
        type: 'button',
        'aria-label': `Export ${a.name}`,
        title: `Downloads ${a.name}.zip: the PEFT folder ${a.name}/ (adapter_config.json + adapter_model.safetensors)`,
      },
      'Export',
    );
    const del = h('button', { type: 'button', class: 'danger', 'aria-label': `Delete ${a.name}` }, 'Delete');
    const actions = h('div', { class: 'actions' }, rename, compressButton(state, a, act), exp, del);
    li.append(
      h('div', { class: 'adapter-head' }, title, actions),
      ...(about ? [h('p', { class: 'adapter-desc' }, about)] : []),
      meta,
    );

    rename.addEventListener('click', () => {
      const input = h('input', { type: 'text', value: a.name, 'aria-label': `New name for ${a.name}` });
      const save = h('button', { type: 'submit' }, 'Save');
      const cancel = h('button', { type: 'button' }, 'Cancel');
      const form = h('form', { class: 'rename-form' }, input, save, cancel);
      form.addEventListener('submit', (ev) => {
        ev.preventDefault();
        const to = input.value.trim();
        if (to && to !== a.name) void act('Rename', () => state.engine.renameAdapter(a.name, to));
        else form.replaceWith(actions);
      });
      cancel.addEventListener('click', () => form.replaceWith(actions));
      actions.replaceWith(form);
      input.select();
    });
    exp.addEventListener('click', () =>
      act('Export', async () => {
        // One download named after the adapter (two exports never collide in Downloads): a ZIP of the
        // PEFT folder, loadable by PeftModel.from_pretrained once unzipped and re-importable here.
        const files = await state.engine.exportAdapter(a.name);
        const folder = a.name.replace(/[\\/:*?"<>|]+/g, '_');
        const zip = zipStore([
          { name: `${folder}/adapter_config.json`, bytes: files['adapter_config.json'] },
          { name: `${folder}/adapter_model.safetensors`, bytes: files['adapter_model.safetensors'] },
        ]);
        download(zip, `${folder}.zip`, 'application/zip');
      }),
    );
    let armed = false;
    del.addEventListener('click', () => {
      if (!armed) {
        armed = true;
        del.textContent = 'Confirm delete';
        setTimeout(() => {
          armed = false;
          del.textContent = 'Delete';
        }, 4000);
        return;
      }
      void act('Delete', () => state.engine.deleteAdapter(a.name));
    });
    return li;
  }

  mountMergeForm(state, list, act);
  mountRankPlot(state, list);
  state.onAdapters((adapters) => {
    list.replaceChildren(
      ...(adapters.length ? adapters.map(item) : [h('li', { class: 'empty' }, 'No adapters stored yet.')]),
    );
  });

  return { importUrl: (url) => runImport({ url }, null) };
}
