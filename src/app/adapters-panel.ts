/**
 * Adapters panel: import a PEFT LoRA adapter from picked files, a picked folder, a drop (files or a
 * folder) or a URL, with stage progress and the engine's typed error shown as "Name: message"; and the
 * stored list with rename, delete (second click confirms) and export (downloads the two PEFT files
 * byte-identical to what was imported). Validation and storage are the engine's (src/adapters); this
 * file only gathers input and shows results.
 */
import type { AdapterImportInput, AdapterImportProgress, AdapterInfo } from '../engine/types.ts';
import { h } from '../ui/dom.ts';
import { formatBytes } from '../ui/format.ts';
import { byId, download, errorText, setMessage } from './dom.ts';
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

/**
 * A name for loose PEFT files (`adapter_model.safetensors` picked without its folder), from which the
 * engine cannot derive one: "adapter", "adapter-2", … (free in the store). Null when the engine can
 * (a folder path, or a single file with its own name).
 */
function looseFilesName(files: File[], taken: readonly string[]): string | null {
  if (files.some((f) => f.webkitRelativePath.includes('/'))) return null;
  const st = files.filter((f) => f.name.toLowerCase().endsWith('.safetensors'));
  if (st.length === 1 && st[0]!.name !== 'adapter_model.safetensors') return null;
  let name = 'adapter';
  for (let i = 2; taken.includes(name); i++) name = `adapter-${i}`;
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
    if (files.length) void runImport({ files }, looseFilesName(files, taken));
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
      if (files.length) await runImport({ files }, folder ?? looseFilesName(files, taken));
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
        title: 'Downloads adapter_config.json and adapter_model.safetensors',
      },
      'Export',
    );
    const del = h('button', { type: 'button', class: 'danger', 'aria-label': `Delete ${a.name}` }, 'Delete');
    const actions = h('div', { class: 'actions' }, rename, exp, del);
    li.append(h('div', { class: 'adapter-head' }, title, actions), meta);

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
        const files = await state.engine.exportAdapter(a.name);
        download(files['adapter_config.json'], 'adapter_config.json', 'application/json');
        download(files['adapter_model.safetensors'], 'adapter_model.safetensors');
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

  state.onAdapters((adapters) => {
    list.replaceChildren(
      ...(adapters.length ? adapters.map(item) : [h('li', { class: 'empty' }, 'No adapters stored yet.')]),
    );
  });

  return { importUrl: (url) => runImport({ url }, null) };
}
