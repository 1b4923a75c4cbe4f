/**
 * The demo page: one worker engine (src/engine/client.ts; inference never blocks this thread) shared
 * by the panels — prompt with per-prompt adapter picker, compare view, train panel (train-panel.ts),
 * model status, sampling, adapters, storage/offline (src/pwa, which lists training checkpoints too).
 * Loads the default model from this origin with the backend from `?backend=auto|webgpu|wasm` (default
 * auto = the engine's choice; `?mode=chat|completion`, mode.ts), reloads it when the backend selector
 * changes, then installs the example adapters on first run. Automation hooks: `body[data-state]`
 * ('loading' | 'ready' | 'generating' | 'error'), `body[data-backend]`, `body[data-preinstall]`,
 * `body[data-mode]`, `#train-panel[data-phase]`. The engine is lent to `<weblora-chat>` elements on the
 * page that ask for the same model (engine-sharing.ts; `?element` opens the panel holding one), so their
 * prompts batch with the demo's on one worker.
 */
import { createWorkerEngine } from '../engine/client.ts';
import type { BackendPreference, LoadProgress } from '../engine/types.ts';
import { detectCapabilities } from '../env.ts';
import { mountPwaControls } from '../pwa/index.ts';
import { mountAdapterPicker } from './adapter-picker.ts';
import { mountAdaptersPanel } from './adapters-panel.ts';
import { mountCompare } from './compare.ts';
import { byId, errorText, setMessage } from './dom.ts';
import { mountElementPanel } from './element-panel.ts';
import { EngineSharing } from './engine-sharing.ts';
import { mountGenerate } from './generate.ts';
import { mountMode } from './mode.ts';
import { type ModelChoice, mountModelChooser } from './model-chooser.ts';
import { preinstallExamples, readExampleIndex } from './preinstall.ts';
import { mountSampling } from './sampling.ts';
import { AppState } from './state.ts';
import { mountModelStatus, mountProgress } from './status.ts';
import { mountTrainPanel } from './train-panel.ts';
import './style.css';
import './panels.css';

const BACKENDS: readonly BackendPreference[] = ['auto', 'webgpu', 'wasm'];

function backendFromUrl(): BackendPreference {
  const b = new URLSearchParams(location.search).get('backend');
  return BACKENDS.includes(b as BackendPreference) ? (b as BackendPreference) : 'auto';
}

const engine = createWorkerEngine();
const state = new AppState(engine);
const sharing = new EngineSharing(engine);
const caps = detectCapabilities();

// Storage / offline panel: the PWA controls (service worker, offline status, stored data).
// Its checkpoint rows' Resume continues the run in the Train panel (mounted below).
const pwa = mountPwaControls(byId('pwa-mount'), {
  engine,
  onResumeCheckpoint: (trainId) => void train.resume(trainId),
});

mountModelStatus(state, caps);
const progress = mountProgress();
const picker = mountAdapterPicker(
  byId<HTMLFieldSetElement>('adapter-picker'),
  (cb) => state.onAdapters(cb),
  (name) => state.describe(name),
);
const mode = mountMode(state);
const sampling = mountSampling();
state.onModel(() => sampling.setContext(state.report?.config.maxPositionEmbeddings ?? null));
mountGenerate(state, picker, mode, sampling);
mountCompare(state, mode, picker);
mountAdaptersPanel(state);
const train = mountTrainPanel(state);
mountElementPanel(sharing);

const loadError = byId('load-error');
const backendSelect = byId<HTMLSelectElement>('backend-select');
let loadSeq = 0;

/** The model the next load uses (the chooser sets it; the backend selector reloads it). */
let current: ModelChoice = { source: undefined, dtype: undefined, label: 'weblora-shakespeare' };
const chooser = mountModelChooser(async (choice) => {
  await load(backendSelect.value as BackendPreference, choice);
  if (state.ready && current === choice && choice.source === undefined) await preinstallExamples(state);
});

async function load(backend: BackendPreference, choice: ModelChoice = current): Promise<void> {
  const seq = ++loadSeq;
  state.setModel('loading', null);
  setMessage(loadError, '');
  progress.reset();
  backendSelect.disabled = true;
  chooser.setBusy(true);
  document.body.dataset.model = choice.label;
  try {
    let share: (p: LoadProgress) => void = () => {};
    const loading = engine.loadModel(choice.source, {
      backend,
      ...(choice.dtype ? { dtype: choice.dtype } : {}),
      onProgress: (p) => {
        share(p);
        if (seq === loadSeq) progress.onProgress(p);
      },
      onDeviceLost: (info) => {
        setMessage(loadError, `DeviceLostError: ${info.message} — choose a backend to load the model again.`);
        state.setModel('error');
      },
    });
    // Elements asking for this model use this engine from now on (engine-sharing.ts).
    share = sharing.loading({ choice, backend }, loading);
    const report = await loading;
    if (seq !== loadSeq) return;
    current = choice;
    state.setModel('ready', report);
    void pwa.refresh();
  } catch (e) {
    if (seq !== loadSeq) return;
    progress.failed();
    setMessage(loadError, `${choice.label}: ${errorText(e)}`);
    // A failed download leaves the previous model loaded (engine.loadModel frees it only once the new
    // package is valid): keep serving it.
    const still = await engine.info().catch(() => null);
    if (seq !== loadSeq) return;
    sharing.failed(still);
    document.body.dataset.model = current.label;
    if (still) state.setModel('ready', still);
    else state.setModel('error');
  } finally {
    if (seq === loadSeq) {
      backendSelect.disabled = false;
      chooser.setBusy(false);
    }
  }
}

backendSelect.value = backendFromUrl();
backendSelect.addEventListener('change', () => {
  const b = backendSelect.value as BackendPreference;
  const url = new URL(location.href);
  if (b === 'auto') url.searchParams.delete('backend');
  else url.searchParams.set('backend', b);
  history.replaceState(null, '', url);
  void load(b);
});

// Storage panel: bring back example adapters the user deleted.
const restore = byId<HTMLButtonElement>('restore-examples');
const restoreStatus = byId('restore-status');
state.onModel(() => {
  restore.disabled = !state.ready;
});
restore.addEventListener('click', async () => {
  restore.disabled = true;
  restoreStatus.textContent = 'Restoring…';
  const { installed, failed } = await preinstallExamples(state, { force: true });
  restoreStatus.textContent =
    (installed.length ? `Restored ${installed.join(', ')}.` : 'All example adapters are already stored.') +
    (failed.length ? ` Could not restore ${failed.join(', ')} (see the console).` : '');
  restore.disabled = !state.ready;
});

void state.refreshAdapters({ notify: false });
// The example adapters' descriptions (adapters/index.json), shown next to their names.
void readExampleIndex().then(
  (list) =>
    state.setDescriptions(new Map(list.flatMap((a) => (a.description ? [[a.name, a.description]] : [])))),
  () => {},
);
void (async () => {
  await load(backendSelect.value as BackendPreference);
  if (state.ready) await preinstallExamples(state);
})();
