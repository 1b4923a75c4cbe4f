/**
 * The opt-in "Open model folder…" control of `<weblora-chat model-picker>`: a button (part `picker`) that
 * opens a hidden `<input type="file" webkitdirectory>` and hands the picked folder's files to the element
 * (which loads them through the same engine path as the demo's local-folder choice). It only picks; it
 * neither loads nor validates (a folder without config.json or the dtype's ONNX file fails in the loader,
 * reported as the element's typed `error` event). Shown while the element has the attribute.
 */
export const FOLDER_PICKER_HTML = `
        <div class="picker-row" hidden>
          <button part="picker" type="button" class="picker secondary">Open model folder…</button>
          <input class="folder" type="file" webkitdirectory multiple hidden aria-hidden="true" tabindex="-1">
        </div>`;

/**
 * Wires the markup above (already in `root`): a pick calls `onFiles` with the files, then forgets them.
 * Returns the row holding the button (hidden unless the element has `model-picker`).
 */
export function wireFolderPicker(root: ShadowRoot, onFiles: (files: File[]) => void): HTMLElement {
  const row = root.querySelector('.picker-row') as HTMLElement;
  const button = row.querySelector('button') as HTMLButtonElement;
  const input = row.querySelector('input') as HTMLInputElement;
  button.addEventListener('click', () => input.click());
  input.addEventListener('change', () => {
    const files = [...(input.files ?? [])];
    input.value = ''; // picking the same folder again loads it again
    if (files.length > 0) onFiles(files);
  });
  return row;
}
