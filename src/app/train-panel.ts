/**
 * The Train panel: paste or upload data (or fill the example, train-example.ts), set rank / targets /
 * layers / steps / learning rate (+ advanced), and train a LoRA adapter through the engine
 * (`engine.train`, in the worker) with Start / Pause / Resume / Cancel on one trainId. While it runs: a
 * progress bar with step/total, ETA, tokens/s and the device, and the live loss curve (loss-chart.ts).
 * Before training a sample prompt is generated with the base model; once done, with the new adapter,
 * next to the initial and final eval loss; the adapter list is re-read so the picker and Compare show
 * it at once. Checkpoints left by a pause or a closed tab are listed with Resume / Delete (also offered
 * by the storage view, which calls `resume`). Form problems are named in words (train-form.ts); the
 * engine's errors as "TypedName: message" (TrainDataError names the line). Automation hooks:
 * `#train-panel[data-phase]` ('idle' | 'sampling' | 'running' | 'pausing' | 'paused' | 'cancelling' |
 * 'done' | 'cancelled' | 'error') and `[data-step]`.
 */
import type { TrainCheckpointInfo, TrainProgress, TrainResult } from '../engine/types.ts';
import { h } from '../ui/dom.ts';
import { notifyStorageChanged, onStorageChanged } from '../ui/events.ts';
import { formatBytes } from '../ui/format.ts';
import { byId, errorText, setMessage } from './dom.ts';
import { createLossChart } from './loss-chart.ts';
import { type AppState, newRequestId } from './state.ts';
import { upperCaseExample } from './train-example.ts';
import {
  formatEta,
  freeName,
  readTrainForm,
  samplePromptOf,
  TARGETS,
  TRAIN_DEFAULTS,
  type TrainField,
  type TrainFormValues,
} from './train-form.ts';

type Phase =
  | 'idle'
  | 'sampling'
  | 'running'
  | 'pausing'
  | 'paused'
  | 'cancelling'
  | 'done'
  | 'cancelled'
  | 'error';

export interface TrainPanel {
  /** Continues a stored checkpoint's run here (e.g. from the storage view), scrolling the panel into view. */
  resume(trainId: string): Promise<void>;
}

const SAMPLE_TOKENS = 12;
/** Fields inside the "Advanced" details (opened when one of them has a problem). */
const ADVANCED: readonly TrainField[] = [
  'alpha',
  'warmup',
  'weightDecay',
  'evalSplit',
  'seed',
  'device',
  'recompute',
];
const STAGE_TEXT: Record<TrainProgress['stage'], string> = {
  prepare: 'preparing',
  train: 'training',
  eval: 'eval loss',
  checkpoint: 'checkpoint saved',
  save: 'saving the adapter',
  done: 'done',
};

export function mountTrainPanel(state: AppState): TrainPanel {
  const panel = byId('train-panel');
  const form = byId<HTMLFormElement>('train-form');
  const input = <T extends HTMLElement = HTMLInputElement>(id: string): T => byId<T>(id);
  const fields: Record<
    Exclude<TrainField, 'targets'>,
    HTMLInputElement | HTMLTextAreaElement | HTMLSelectElement
  > = {
    name: input('train-name'),
    data: input<HTMLTextAreaElement>('train-data'),
    format: input<HTMLSelectElement>('train-format'),
    rank: input('train-rank'),
    layers: input('train-layers'),
    steps: input('train-steps'),
    lr: input('train-lr'),
    batchSize: input('train-batch'),
    seqLen: input('train-seqlen'),
    alpha: input('train-alpha'),
    warmup: input('train-warmup'),
    weightDecay: input('train-wd'),
    evalSplit: input('train-eval-split'),
    seed: input('train-seed'),
    device: input<HTMLSelectElement>('train-device'),
    recompute: input<HTMLSelectElement>('train-recompute'),
  };
  const targetsBox = byId<HTMLFieldSetElement>('train-targets');
  const file = input('train-file');
  const example = byId<HTMLButtonElement>('train-example');
  const dataInfo = byId('train-data-info');
  const sample = input<HTMLTextAreaElement>('train-sample');
  const problemsList = byId('train-form-problems');
  const start = byId<HTMLButtonElement>('train-start');
  const pauseBtn = byId<HTMLButtonElement>('train-pause');
  const resumeBtn = byId<HTMLButtonElement>('train-resume');
  const cancelBtn = byId<HTMLButtonElement>('train-cancel');
  const bar = byId<HTMLProgressElement>('train-progress');
  const progressText = byId('train-progress-text');
  const results = byId('train-results');
  const before = byId('train-before');
  const after = byId('train-after');
  const afterName = byId('train-after-name');
  const evalSummary = byId('train-eval-summary');
  const error = byId('train-error');
  const unfinished = byId('train-unfinished');
  const ckptList = byId('train-checkpoints');
  const chart = createLossChart(byId('train-chart'));

  const targetBoxes = TARGETS.map((t) => {
    const box = h('input', { type: 'checkbox', value: t, id: `train-target-${t}` });
    box.checked = true;
    targetsBox.append(h('label', { class: 'check', for: box.id }, box, ` ${t}`));
    return box;
  });
  const list = h('div', { class: 'choice-list' });
  list.append(...targetsBox.querySelectorAll('label'));
  targetsBox.append(list);

  for (const [k, el] of Object.entries(TRAIN_DEFAULTS)) {
    if (k !== 'targets') fields[k as Exclude<TrainField, 'targets'>].value = el as string;
  }
  let nameTouched = false;
  fields.name.addEventListener('input', () => {
    nameTouched = true;
  });
  const suggestName = (): void => {
    if (!nameTouched)
      fields.name.value = freeName(
        'trained',
        state.adapters.map((a) => a.name),
      );
  };

  let phase: Phase = 'idle';
  /** The run this panel drives (started here or resumed from a checkpoint). */
  let run: { trainId: string; name: string; prompt: string; beforeText: string | null } | null = null;
  let checkpoints: TrainCheckpointInfo[] = [];

  const setPhase = (p: Phase): void => {
    phase = p;
    panel.dataset.phase = p;
    state.training = p === 'running' || p === 'pausing' || p === 'cancelling';
    sync();
  };
  const busy = (): boolean => ['sampling', 'running', 'pausing', 'cancelling'].includes(phase);

  function sync(): void {
    const b = busy();
    start.disabled = !state.ready || b || phase === 'paused';
    pauseBtn.disabled = phase !== 'running';
    resumeBtn.disabled = phase !== 'paused' || !state.ready;
    cancelBtn.disabled = !(phase === 'running' || phase === 'pausing' || phase === 'paused');
    example.disabled = b;
    for (const el of Object.values(fields)) el.disabled = b;
    for (const box of targetBoxes) box.disabled = b;
    file.disabled = b;
    renderCheckpoints();
  }

  // ------------------------------------------------------------------ form

  const values = (): TrainFormValues => ({
    ...(Object.fromEntries(Object.entries(fields).map(([k, el]) => [k, el.value])) as Omit<
      TrainFormValues,
      'targets'
    >),
    targets: targetBoxes.filter((b) => b.checked).map((b) => b.value),
  });

  function showProblems(problems: { field: TrainField; message: string }[]): void {
    for (const el of [...Object.values(fields), targetsBox]) el.removeAttribute('aria-invalid');
    problemsList.replaceChildren(...problems.map((p) => h('li', { 'data-field': p.field }, p.message)));
    problemsList.hidden = problems.length === 0;
    for (const p of problems) {
      (p.field === 'targets' ? targetsBox : fields[p.field]).setAttribute('aria-invalid', 'true');
    }
    if (problems.some((p) => ADVANCED.includes(p.field)))
      byId<HTMLDetailsElement>('train-advanced').open = true;
    const first = problems[0];
    if (first) (first.field === 'targets' ? targetBoxes[0]! : fields[first.field]).focus();
  }

  function describeData(): void {
    const text = fields.data.value;
    if (text.trim() === '') {
      dataInfo.textContent = '';
      return;
    }
    const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '').length;
    const json = text.trimStart().startsWith('{');
    dataInfo.textContent = `${lines} line${lines === 1 ? '' : 's'}, ${formatBytes(new TextEncoder().encode(text).length)}${json ? ', looks like JSONL' : ''}.`;
  }
  fields.data.addEventListener('input', describeData);

  file.addEventListener('change', async () => {
    const f = (file as HTMLInputElement).files?.[0];
    if (!f) return;
    fields.data.value = await f.text();
    const ext = f.name.toLowerCase();
    fields.format.value = ext.endsWith('.jsonl') ? 'jsonl' : ext.endsWith('.txt') ? 'text' : 'auto';
    if (!sample.value.trim()) sample.value = samplePromptOf(fields.data.value);
    describeData();
    dataInfo.textContent = `${f.name}: ${dataInfo.textContent}`;
    (file as HTMLInputElement).value = '';
  });

  example.addEventListener('click', () => {
    const ex = upperCaseExample();
    fields.data.value = ex.data;
    for (const [k, v] of Object.entries(ex.settings)) {
      if (k === 'name') continue;
      fields[k as Exclude<TrainField, 'targets'>].value = v as string;
    }
    for (const b of targetBoxes) b.checked = true;
    if (!nameTouched)
      fields.name.value = freeName(
        ex.settings.name ?? 'trained',
        state.adapters.map((a) => a.name),
      );
    sample.value = ex.samplePrompt;
    describeData();
    showProblems([]);
  });

  // ------------------------------------------------------------------ progress

  function onProgress(p: TrainProgress): void {
    bar.max = Math.max(1, p.totalSteps);
    bar.value = p.step;
    panel.dataset.step = String(p.step);
    const parts = [
      `Step ${p.step} / ${p.totalSteps}`,
      STAGE_TEXT[p.stage],
      `ETA ${formatEta(p.etaMs)}`,
      `${p.tokensPerSecond > 0 ? p.tokensPerSecond.toFixed(0) : '—'} tokens/s`,
      p.device === 'webgpu' ? 'WebGPU' : 'CPU',
    ];
    if (phase === 'pausing') parts.push('pausing after this step…');
    progressText.textContent = parts.join(' · ');
    if (p.stage === 'train') chart.add(p.step, p.loss, null);
    if (p.stage === 'eval') chart.add(p.step, null, p.evalLoss);
  }

  async function generateSample(adapter: string | null): Promise<string> {
    const r = await state.engine.generate({ prompt: run!.prompt, adapter, maxNewTokens: SAMPLE_TOKENS });
    return r.text;
  }

  const fmtLoss = (l: number | null): string => (l === null ? '—' : l.toFixed(3));

  async function finish(r: TrainResult): Promise<void> {
    if (r.status === 'paused') {
      setPhase('paused');
      progressText.textContent = `Paused at step ${r.steps}: the checkpoint is stored; Resume continues (also after a reload).`;
      notifyStorageChanged();
      return;
    }
    if (r.status === 'cancelled') {
      setPhase('cancelled');
      progressText.textContent = 'Cancelled: nothing was stored.';
      run = null;
      notifyStorageChanged();
      return;
    }
    const name = r.adapter?.name ?? run!.name;
    bar.value = bar.max;
    progressText.textContent = `Done: ${r.steps} steps in ${(r.ms / 1000).toFixed(1)} s on ${r.device === 'webgpu' ? 'WebGPU' : 'CPU'}; “${name}” is stored and in the adapter picker.`;
    await state.refreshAdapters(); // picker, Compare, Adapters panel and the storage view
    results.hidden = false;
    evalSummary.textContent =
      r.initialEvalLoss === null && r.finalEvalLoss === null
        ? `Final train loss ${fmtLoss(r.finalLoss)} (no eval split).`
        : `Eval loss ${fmtLoss(r.initialEvalLoss)} → ${fmtLoss(r.finalEvalLoss)} · final train loss ${fmtLoss(r.finalLoss)}`;
    afterName.textContent = `(${name})`;
    if (run?.prompt) {
      after.textContent = 'Generating…';
      try {
        after.textContent = await generateSample(name);
      } catch (e) {
        after.textContent = errorText(e);
      }
    } else {
      after.textContent = '(no sample prompt)';
      if (!before.textContent) before.textContent = '(no sample prompt)';
    }
    nameTouched = false;
    suggestName();
    run = null;
    setPhase('done');
  }

  async function drive(p: Promise<TrainResult>): Promise<void> {
    setPhase('running');
    try {
      await finish(await p);
    } catch (e) {
      setMessage(error, errorText(e));
      progressText.textContent = 'Stopped by an error (see below).';
      run = null;
      setPhase('error');
      notifyStorageChanged();
    }
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (busy() || phase === 'paused' || !state.ready) return;
    setMessage(error, '');
    const report = state.report;
    const parsed = readTrainForm(values(), {
      numLayers: report?.config.numLayers ?? null,
      maxPositions: report?.config.maxPositionEmbeddings ?? null,
      adapterNames: state.adapters.map((a) => a.name),
    });
    if (!parsed.ok) {
      showProblems(parsed.problems);
      return;
    }
    showProblems([]);
    const trainId = newRequestId('train');
    run = { trainId, name: parsed.options.name, prompt: sample.value, beforeText: null };
    chart.reset();
    bar.value = 0;
    panel.dataset.step = '0';
    results.hidden = true;
    before.textContent = '';
    after.textContent = '';
    setPhase('sampling');
    if (run.prompt) {
      progressText.textContent = 'Generating the “before” sample with the base model…';
      try {
        run.beforeText = await generateSample(null);
      } catch (e) {
        run.beforeText = errorText(e);
      }
      before.textContent = run.beforeText;
    }
    progressText.textContent = 'Starting…';
    await drive(state.engine.train({ ...parsed.options, trainId }, onProgress));
  });

  pauseBtn.addEventListener('click', () => {
    if (!run || phase !== 'running') return;
    setPhase('pausing');
    progressText.textContent += ' · pausing after this step…';
    void state.engine.pauseTraining(run.trainId);
  });

  resumeBtn.addEventListener('click', () => {
    if (!run || phase !== 'paused') return;
    setMessage(error, '');
    void drive(state.engine.resumeTraining(run.trainId, onProgress));
  });

  cancelBtn.addEventListener('click', async () => {
    if (!run) return;
    const wasPaused = phase === 'paused';
    setPhase('cancelling');
    try {
      await state.engine.cancelTraining(run.trainId);
    } catch (e) {
      setMessage(error, errorText(e));
    }
    if (wasPaused) await finish({ status: 'cancelled' } as TrainResult);
    // a running run: its train() promise resolves 'cancelled' at its next step (drive → finish)
  });

  // ------------------------------------------------------------------ checkpoints (resume after a reload)

  function renderCheckpoints(): void {
    const shown = checkpoints.filter((c) => !(run && c.trainId === run.trainId));
    unfinished.hidden = shown.length === 0;
    ckptList.replaceChildren(
      ...shown.map((c) => {
        const resume = h('button', { type: 'button', 'aria-label': `Resume ${c.name}` }, 'Resume');
        resume.disabled = !state.ready || busy() || phase === 'paused';
        resume.addEventListener('click', () => void api.resume(c.trainId));
        const del = h(
          'button',
          { type: 'button', 'aria-label': `Delete the checkpoint of ${c.name}` },
          'Delete',
        );
        let armed = false;
        del.addEventListener('click', async () => {
          if (!armed) {
            armed = true;
            del.textContent = 'Confirm delete';
            setTimeout(() => {
              armed = false;
              del.textContent = 'Delete';
            }, 4000);
            return;
          }
          del.disabled = true;
          try {
            await state.engine.deleteCheckpoint(c.trainId);
          } catch (e) {
            setMessage(error, errorText(e));
          }
          notifyStorageChanged();
        });
        return h(
          'li',
          { 'data-train-id': c.trainId },
          h(
            'div',
            { class: 'adapter-head' },
            h('span', { class: 'adapter-name' }, c.name),
            h('span', {}, resume, ' ', del),
          ),
          h(
            'small',
            {},
            `step ${c.step} of ${c.totalSteps} · ${formatBytes(c.bytes)} · saved ${new Date(c.savedAt).toLocaleString()}`,
          ),
        );
      }),
    );
  }

  async function refreshCheckpoints(): Promise<void> {
    try {
      checkpoints = await state.engine.listCheckpoints();
    } catch (e) {
      console.warn('listCheckpoints failed', e);
      checkpoints = [];
    }
    // The paused run's checkpoint was deleted elsewhere (storage view): nothing is left to resume.
    if (phase === 'paused' && run && !checkpoints.some((c) => c.trainId === run!.trainId)) {
      run = null;
      progressText.textContent = 'The paused run’s checkpoint was deleted.';
      setPhase('cancelled');
    }
    renderCheckpoints();
  }

  const api: TrainPanel = {
    async resume(trainId) {
      panel.scrollIntoView({ block: 'start' });
      setMessage(error, '');
      if (busy() || (phase === 'paused' && run?.trainId !== trainId)) {
        setMessage(error, 'Finish, pause or cancel the current run first.', 'info');
        return;
      }
      if (!state.ready) {
        setMessage(error, 'Wait for the model to load, then resume.', 'info');
        return;
      }
      if (run?.trainId !== trainId) {
        const c = checkpoints.find((x) => x.trainId === trainId);
        run = { trainId, name: c?.name ?? trainId, prompt: sample.value, beforeText: null };
        chart.reset();
        results.hidden = true;
        before.textContent = '(not sampled: this run started earlier)';
        after.textContent = '';
      }
      progressText.textContent = 'Resuming from the checkpoint…';
      resumeBtn.focus();
      await drive(state.engine.resumeTraining(trainId, onProgress));
    },
  };

  state.onAdapters(() => suggestName());
  state.onModel(() => {
    sync();
    if (state.ready) void refreshCheckpoints();
  });
  onStorageChanged(() => void refreshCheckpoints());
  void refreshCheckpoints();
  setPhase('idle');
  return api;
}
