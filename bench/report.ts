/**
 * Turns suite results (types.ts) into the printed table: one block per backend, each row a metric
 * with its median (min–max over repetitions), the target when the issue sets one, and PASS/FAIL/info.
 * Ratios of our configurations are medians over paired decode steps (a, b, c ran in lockstep); ratios against
 * transformers.js are medians of per-repetition pairs (its generate runs interleaved with ours in one
 * page). Pure: no I/O.
 */
import { median, pairedRatio, pairedStepRatio, summarize } from './stats.ts';
import type { GatesResult, OursResult, TjsResult, TrainResult } from './types.ts';

export interface Row {
  metric: string;
  value: string;
  target: string;
  result: 'PASS' | 'FAIL' | 'info';
}

const f = (x: number, d = 2): string => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');

function range(xs: readonly number[], d = 2): string {
  const s = summarize(xs);
  if (s.n === 0) return 'n/a';
  return s.n === 1 ? f(s.median, d) : `${f(s.median, d)} (${f(s.min, d)}–${f(s.max, d)})`;
}

const kib = (b: number): string => `${(b / 1024).toFixed(1)} KiB`;

function agree(a: readonly number[], b: readonly number[]): string {
  const n = Math.min(a.length, b.length);
  let same = 0;
  while (same < n && a[same] === b[same]) same++;
  return `${same}/${n} leading tokens equal`;
}

function check(ok: boolean): 'PASS' | 'FAIL' {
  return ok ? 'PASS' : 'FAIL';
}

export function rowsFor(o: OursResult, t: TjsResult | null): Row[] {
  const rows: Row[] = [];
  const info = (metric: string, value: string): void => {
    rows.push({ metric, value, target: '', result: 'info' });
  };
  const { decodeTokens, reps } = o.options;
  info(
    'setup',
    `${o.modelFile}, ${o.targetCount} LoRA targets, ${o.promptTokens}-token prompt, ${decodeTokens} decode tokens × ${reps} reps`,
  );
  info('LoRA branch operator: engine (b, c) / comparison (d)', `${o.branchOp} / ${o.altBranchOp}`);
  const dq = o.dequantizedAtLoad;
  info(
    'engine load ms; 4-bit weights dequantized at load',
    `${f(o.loadMs, 0)}; ${dq ? `${dq.nodes} MatMulNBits → fp32 MatMul (${(dq.fp32Bytes / 2 ** 20).toFixed(0)} MiB f32)` : 'none'}`,
  );
  const fz = o.fused;
  info(
    'engine decoder fusion (LoadReport.fused); loops (a)–(e) fused alike, (f) not',
    fz === undefined
      ? 'not recorded'
      : fz === null
        ? 'off'
        : `${fz.norms} RMSNorm, ${fz.skipNorms} residual+RMSNorm, ${fz.rotary} rotary, ${fz.attention} attention, ${fz.scaleFolds ?? 0} score scales folded`,
  );
  if (o.base.stepMs.length === 0) {
    rowsWithoutBase(o, rows, info);
  } else {
    rowsWithBase(o, rows, info);
  }
  rowsForEngine(o, t, rows, info);
  return rows;
}

type Info = (metric: string, value: string) => void;

/** `--no-base-graph`: (b), (c), (d) only, the ratios against (b). */
function rowsWithoutBase(o: OursResult, rows: Row[], info: Info): void {
  info('decode tok/s (a) base graph', 'not measured (--no-base-graph)');
  info('decode tok/s (b) injected, no adapter', range(o.injectedNone.decodeTps));
  info('decode tok/s (c) injected, rank-8 on all 7 modules', range(o.injectedR8.decodeTps));
  info(`decode tok/s (d) as (c), ${o.altBranchOp} branch`, range(o.injectedR8Alt.decodeTps));
  info(
    'decode tok/s from median step: (b) / (c) / (d)',
    [o.injectedNone, o.injectedR8, o.injectedR8Alt].map((x) => f(median(x.medianStepTps))).join(' / '),
  );
  const steps = o.injectedNone.stepMs.reduce((n, x) => n + x.length, 0);
  info(
    `decode ratio (c)/(b), (d)/(b), median of ${steps} paired steps`,
    `${f(pairedStepRatio(o.injectedR8.stepMs, o.injectedNone.stepMs), 3)}, ${f(pairedStepRatio(o.injectedR8Alt.stepMs, o.injectedNone.stepMs), 3)}`,
  );
  info(
    `prefill tok/s (b) injected, no adapter, ${o.promptTokens} tokens`,
    range(o.injectedNone.prefillTps, 1),
  );
  info('prefill tok/s (c) injected, rank-8', range(o.injectedR8.prefillTps, 1));
  info(`prefill tok/s (d) rank-8, ${o.altBranchOp} branch`, range(o.injectedR8Alt.prefillTps, 1));
  info('TTFT ms (b) loop (prompt pass + argmax)', range(o.injectedNone.ttftMs, 1));
  greedyHeadRows(o, o.injectedNone, '(b)', rows, info);
  unfusedRows(o, o.injectedNone, '(b)', rows, info);
}

function rowsWithBase(o: OursResult, rows: Row[], info: Info): void {
  info('decode tok/s (a) base graph (not injected)', range(o.base.decodeTps));
  info('decode tok/s (b) injected, no adapter', range(o.injectedNone.decodeTps));
  info('decode tok/s (c) injected, rank-8 on all 7 modules', range(o.injectedR8.decodeTps));
  info(`decode tok/s (d) as (c), ${o.altBranchOp} branch`, range(o.injectedR8Alt.decodeTps));
  info(
    'decode tok/s from median step: (a) / (b) / (c) / (d)',
    [o.base, o.injectedNone, o.injectedR8, o.injectedR8Alt]
      .map((x) => f(median(x.medianStepTps)))
      .join(' / '),
  );
  const ba = pairedStepRatio(o.injectedNone.stepMs, o.base.stepMs);
  const ca = pairedStepRatio(o.injectedR8.stepMs, o.base.stepMs);
  const steps = o.base.stepMs.reduce((n, x) => n + x.length, 0);
  info(`decode ratio (b)/(a), median of ${steps} paired steps`, f(ba, 3));
  rows.push({
    metric: `decode ratio (c)/(a), median of ${steps} paired steps`,
    value: f(ca, 3),
    target: '≥ 0.85',
    result: check(ca >= 0.85),
  });
  info(
    `decode ratio (d)/(a), ${o.altBranchOp} branch, paired steps`,
    f(pairedStepRatio(o.injectedR8Alt.stepMs, o.base.stepMs), 3),
  );
  info(
    'decode ratio (b)/(a), (c)/(a): per-rep totals',
    `${f(pairedRatio(o.injectedNone.decodeTps, o.base.decodeTps), 3)}, ${f(pairedRatio(o.injectedR8.decodeTps, o.base.decodeTps), 3)}`,
  );
  const sameBase = o.injectedNone.tokens.join() === o.base.tokens.join();
  rows.push({
    metric: 'greedy tokens (b) = (a)',
    value: agree(o.injectedNone.tokens, o.base.tokens),
    target: 'equal',
    result: check(sameBase),
  });
  info(`prefill tok/s (a) base, ${o.promptTokens} tokens`, range(o.base.prefillTps, 1));
  info('prefill tok/s (b) injected, no adapter', range(o.injectedNone.prefillTps, 1));
  info('prefill tok/s (c) injected, rank-8', range(o.injectedR8.prefillTps, 1));
  info(`prefill tok/s (d) rank-8, ${o.altBranchOp} branch`, range(o.injectedR8Alt.prefillTps, 1));
  info(
    'prefill ratio (c)/(a), (d)/(a)',
    `${f(pairedRatio(o.injectedR8.prefillTps, o.base.prefillTps), 3)}, ${f(pairedRatio(o.injectedR8Alt.prefillTps, o.base.prefillTps), 3)}`,
  );
  info('TTFT ms (a) loop (prompt pass + argmax)', range(o.base.ttftMs, 1));
  greedyHeadRows(o, o.base, '(a)', rows, info);
  unfusedRows(o, o.base, '(a)', rows, info);
}

/** (e), the reference loop's graph with the greedy head, against that loop (paired steps). */
function greedyHeadRows(o: OursResult, ref: OursResult['base'], name: string, rows: Row[], info: Info): void {
  const e = o.greedyHead;
  if (!e || e.stepMs.length === 0) return;
  info(`decode tok/s (e) ${name} + greedy head (ArgMax id read back)`, range(e.decodeTps));
  const steps = ref.stepMs.reduce((n, x) => n + x.length, 0);
  info(
    `decode ratio (e)/${name}, median of ${steps} paired steps; per-rep totals`,
    `${f(pairedStepRatio(e.stepMs, ref.stepMs), 3)}; ${f(pairedRatio(e.decodeTps, ref.decodeTps), 3)}`,
  );
  info(
    `prefill tok/s (e); ratio (e)/${name} (per-rep pairs)`,
    `${range(e.prefillTps, 1)}; ${f(pairedRatio(e.prefillTps, ref.prefillTps), 3)}`,
  );
  rows.push({
    metric: `greedy tokens (e) = ${name}`,
    value: agree(e.tokens, ref.tokens),
    target: 'equal',
    result: check(e.tokens.join() === ref.tokens.join()),
  });
}

/** (f), the reference loop's graph without the decoder fusion: the fusion's effect, reference / (f) (paired steps). */
function unfusedRows(o: OursResult, ref: OursResult['base'], name: string, rows: Row[], info: Info): void {
  const u = o.unfused;
  if (!u || u.stepMs.length === 0) return;
  info(`decode tok/s (f) ${name} unfused (no decoder fusion)`, range(u.decodeTps));
  const steps = ref.stepMs.reduce((n, x) => n + x.length, 0);
  info(
    `decode ratio ${name}/(f), fusion's effect, median of ${steps} paired steps; per-rep totals`,
    `${f(pairedStepRatio(ref.stepMs, u.stepMs), 3)}; ${f(pairedRatio(ref.decodeTps, u.decodeTps), 3)}`,
  );
  info(
    `prefill tok/s (f); ratio ${name}/(f) (per-rep pairs)`,
    `${range(u.prefillTps, 1)}; ${f(pairedRatio(ref.prefillTps, u.prefillTps), 3)}`,
  );
  rows.push({
    metric: `greedy tokens (f) = ${name}`,
    value: agree(u.tokens, ref.tokens),
    target: 'equal',
    result: check(u.tokens.join() === ref.tokens.join()),
  });
}

function rowsForEngine(o: OursResult, t: TjsResult | null, rows: Row[], info: Info): void {
  info('engine.generate decode tok/s, no adapter (between token callbacks)', range(o.engineNone.decodeTps));
  info(
    'engine.generate timings.tokensPerSecond, no adapter (forward + sampling)',
    range(o.engineNone.forwardTps),
  );
  info('engine.generate decode tok/s, rank-8', range(o.engineR8.decodeTps));
  info(
    'engine.generate decode ratio rank-8/none (per-rep pairs)',
    f(pairedRatio(o.engineR8.decodeTps, o.engineNone.decodeTps), 3),
  );
  info('engine.generate TTFT ms, no adapter', range(o.engineNone.ttftMs, 1));
  info('engine.generate TTFT ms, rank-8 (hot)', range(o.engineR8.ttftMs, 1));
  const s = o.swap;
  rows.push({
    metric: `hot swap ms: feedsFor, cached (n=${s.hotFeedsForMs.n})`,
    value: `${f(s.hotFeedsForMs.median, 3)} (${f(s.hotFeedsForMs.min, 3)}–${f(s.hotFeedsForMs.max, 3)})`,
    target: '≤ 2 ms',
    result: check(s.hotFeedsForMs.median <= 2),
  });
  rows.push({
    metric: 'hot swap uploads (upload counter Δ)',
    value: String(s.hotUploads),
    target: '= 0',
    result: check(s.hotUploads === 0),
  });
  info('hot swap ms: cache acquire alone (mean of 1000)', f(s.hotAcquireMs, 4));
  rows.push({
    metric: `cold swap ms: IndexedDB → ${o.backend === 'webgpu' ? 'GPU' : 'CPU tensors'} (n=${s.coldMs.n})`,
    value: `${f(s.coldMs.median, 2)} (${f(s.coldMs.min, 2)}–${f(s.coldMs.max, 2)})`,
    target: '≤ 50 ms',
    result: check(s.coldMs.median <= 50),
  });
  rows.push({
    metric: 'cold swap uploads (upload counter Δ)',
    value: String(s.coldUploads),
    target: `= ${s.coldMs.n}`,
    result: check(s.coldUploads === s.coldMs.n),
  });
  info('bytes held per rank-8 adapter', `${kib(s.bytesPerAdapter)} (f32 factors: ${kib(s.expectedBytes)})`);
  if (t) {
    const files = t.files.filter((u) => u.endsWith('.onnx'));
    info(
      'transformers.js',
      `v${t.version}, onnxruntime-web ${t.ortVersion}, loaded ${files.join(', ') || '?'}`,
    );
    info('transformers.js decode tok/s', range(t.decodeTps));
    info('transformers.js prefill tok/s', range(t.prefillTps, 1));
    info('transformers.js TTFT ms', range(t.ttftMs, 1));
    const eng = pairedRatio(o.engineNone.decodeTps, t.decodeTps);
    // The target applies where the engine runs in this browser (WebGPU). On wasm both libraries run the
    // same onnxruntime kernels and the ratio sits at 1 minus the engine's per-step event-loop turn
    // (abort messages, painting), about 2% there; see bench/README.md.
    rows.push({
      metric: 'decode ours/transformers.js: engine, no adapter',
      value: f(eng, 3),
      target: o.backend === 'webgpu' ? '≥ 1.0' : '',
      result: o.backend === 'webgpu' ? check(eng >= 1) : 'info',
    });
    info('decode ours/transformers.js: engine, rank-8', f(pairedRatio(o.engineR8.decodeTps, t.decodeTps), 3));
    const [loop, ref] = o.base.stepMs.length > 0 ? ['(a)', o.base] : ['(b)', o.injectedNone];
    info(
      `decode ours/transformers.js: loop ${loop}, same graph (medians)`,
      f(median(ref.decodeTps) / median(t.decodeTps), 3),
    );
    info(`greedy tokens ${loop} vs transformers.js`, agree(ref.tokens, t.tokens));
    const sameIds = t.promptIds.join() === o.promptIds.join();
    rows.push({
      metric: 'same prompt ids fed to both',
      value: String(sameIds),
      target: 'true',
      result: check(sameIds),
    });
  }
}

export function renderTable(title: string, rows: readonly Row[]): string {
  const head: Row = { metric: 'Metric', value: 'Median (min–max)', target: 'Target', result: 'info' };
  const w = [0, 0, 0];
  for (const r of [head, ...rows]) {
    w[0] = Math.max(w[0]!, r.metric.length);
    w[1] = Math.max(w[1]!, r.value.length);
    w[2] = Math.max(w[2]!, r.target.length);
  }
  const line = (r: Row, res: string): string =>
    `| ${r.metric.padEnd(w[0]!)} | ${r.value.padEnd(w[1]!)} | ${r.target.padEnd(w[2]!)} | ${res.padEnd(6)} |`;
  const sep = `|${'-'.repeat(w[0]! + 2)}|${'-'.repeat(w[1]! + 2)}|${'-'.repeat(w[2]! + 2)}|--------|`;
  return [
    `### ${title}`,
    '',
    line(head, 'Result'),
    sep,
    ...rows.map((r) => line(r, r.result === 'info' ? '' : r.result)),
  ].join('\n');
}

const mib = (b: number): string => `${(b / 2 ** 20).toFixed(2)} MiB`;

/**
 * Rows of the training suite (types.ts TrainResult): per rank, ms/step and tokens/s (median over the
 * measured steps), the step / ORT-forward ratio (median of the paired samples; target ≤ 3), and on
 * webgpu the GPU bytes against the model file (target: everything but activations ≤ 1.5× the q4 file)
 * and the profile's dominant kernels.
 */
export function rowsForTrain(t: TrainResult): Row[] {
  const rows: Row[] = [];
  const info = (metric: string, value: string): void => {
    rows.push({ metric, value, target: '', result: 'info' });
  };
  const o = t.options;
  const N = o.batch * o.seqLen;
  const c = t.config;
  info(
    'setup',
    `${t.modelFile} (${mib(t.modelFileBytes)}; V ${c.V}, C ${c.C}, I ${c.I}, ${c.L} layers, ${c.H}/${c.Hkv} heads), B ${o.batch} × T ${o.seqLen} = ${N} tokens, all 7 targets × ${c.L} layers, alpha 2·rank, ${o.warmup} warm-up + ${o.steps} measured steps`,
  );
  info(
    'ORT forward (same file, same B×T tokens)',
    `createDecoderSession on '${t.ortBackend}', one session.run of [${o.batch}, ${o.seqLen}] ids, empty past, logits read back`,
  );
  for (const r of t.ranks) {
    const p = `rank ${r.rank}`;
    info(`${p}: LoRA targets / parameters`, `${r.targets} / ${r.params.toLocaleString('en-US')}`);
    info(`${p}: ms/step (accumulate + grad norm + AdamW)`, range(r.stepMs, 0));
    info(
      `${p}: training tokens/s`,
      range(
        r.stepMs.map((ms) => (N * 1000) / ms),
        1,
      ),
    );
    info(`${p}: ms accumulate (forward + loss + backward)`, range(r.accumulateMs, 0));
    info(`${p}: ms trainer forward only (evalLoss)`, range(r.evalMs, 0));
    info(`${p}: ms ORT forward (same rounds as the steps)`, range(r.ortForwardMs, 0));
    const ratio = pairedRatio(r.stepMs, r.ortForwardMs);
    rows.push({
      metric: `${p}: step / ORT forward (median of ${Math.min(r.stepMs.length, r.ortForwardMs.length)} pairs)`,
      value: `${f(ratio, 2)}×`,
      target: '≤ 3×',
      result: check(ratio <= 3),
    });
    info(
      `${p}: step / trainer's own forward (median of ${Math.min(r.stepMs.length, r.evalMs.length)} pairs)`,
      `${f(pairedRatio(r.stepMs, r.evalMs), 2)}×`,
    );
    info(
      `${p}: loss, first → last step (the same batch every step)`,
      `${f(r.losses[0] ?? Number.NaN, 4)} → ${f(r.losses.at(-1) ?? Number.NaN, 4)}`,
    );
    const b = r.gpuBytes;
    if (b) {
      const frozen = b.afterCreate - b.lora;
      info(
        `${p}: GPU bytes (gpuBytes) by part`,
        `frozen base ${mib(frozen)} + LoRA ${mib(b.lora)} + grads & AdamW ${mib(b.optimizer)} + activations ${mib(b.activations)} = ${mib(b.total)}`,
      );
      // LoRA A|B and the packed m|v are 4 bytes per LoRA parameter, the g16 gradients 2.
      const e = b.embeddingF16 ? 'f16' : 'f32';
      info(
        `${p}: frozen base, LoRA state by buffer`,
        `embedding (= tied lm_head, ${e}) ${mib(b.embedding)} + 4-bit projections, f16 scales, norms ${mib(frozen - b.embedding)}; LoRA A|B f32 ${mib(b.lora)} + grads g16 ${mib(b.grads)} + AdamW m|v packed f16 ${mib(b.lora)} + grad-norm scratch ${mib(b.optimizer - b.grads - b.lora)} (10 bytes per LoRA parameter: ${f((2 * b.lora + b.grads) / t.modelFileBytes, 2)}× the file)`,
      );
      const noAct = (b.total - b.activations) / t.modelFileBytes;
      const q4 = o.dtype === 'q4';
      rows.push({
        metric: `${p}: GPU bytes without activations / ${t.modelFile} bytes`,
        value: `${f(noAct, 2)}× (${mib(b.total - b.activations)})`,
        target: q4 ? '≤ 1.5×' : '',
        result: q4 ? check(noAct <= 1.5) : 'info',
      });
      info(
        `${p}: GPU bytes total / ${t.modelFile} bytes`,
        `${f(b.total / t.modelFileBytes, 2)}× (${mib(b.total)})`,
      );
    }
    if (r.profile && r.profile.kernels.length > 0) {
      const ks = r.profile.kernels;
      const total = ks.reduce((a, k) => a + k.ms, 0);
      const pct = (ms: number): string => `${((100 * ms) / total).toFixed(0)}%`;
      const top = ks[0]!;
      info(
        `${p}: dominant kernel (${r.profile.method}, one pass = ${f(total, 0)} ms)`,
        `${top.label} ${f(top.ms, 0)} ms = ${pct(top.ms)} (${top.count} dispatches)`,
      );
      info(
        `${p}: next kernels`,
        ks
          .slice(1, 5)
          .map((k) => `${k.label} ${pct(k.ms)}`)
          .join(', '),
      );
    }
  }
  return rows;
}

/** Rows of the gates suite: decode tok/s per configuration and the speed ratio to (a), median over paired steps. */
export function rowsForGates(g: GatesResult): Row[] {
  const rows: Row[] = [];
  const a = g.rows[0]!;
  for (const r of g.rows) {
    rows.push({
      metric: `decode tok/s ${r.label}`,
      value: range(r.series.decodeTps),
      target: '',
      result: 'info',
    });
    if (r !== a) {
      const ratio = f(pairedStepRatio(r.series.stepMs, a.series.stepMs), 3);
      rows.push({ metric: '  speed ratio to (a), paired steps', value: ratio, target: '', result: 'info' });
    }
  }
  const same = g.rows.map((r) => agree(r.series.tokens, a.series.tokens));
  rows.push({ metric: 'greedy tokens (a) vs (b)', value: same[1] ?? '', target: '', result: 'info' });
  return rows;
}
