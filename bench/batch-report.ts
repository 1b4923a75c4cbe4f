/**
 * The batching suite's JSON shapes and table (bench/batch.ts runs it in the page); Node-safe (the driver
 * imports it), so no src/ imports.
 */
import type { Row } from './report.ts';
import { median, pairedRatio } from './stats.ts';
import type { BenchBackend, BenchDtype } from './types.ts';

export interface BatchSuiteOptions {
  backend: BenchBackend;
  dtype: BenchDtype;
  sizes: number[];
  tokens: number;
  reps: number;
}

export interface BatchSizeResult {
  columns: number;
  sequentialMs: number[];
  batchedMs: number[];
  /** Generated tokens per run (same for both orders when outputs agree). */
  tokens: number;
  /** Columns whose batched tokens equal their sequential run, of `columns`. */
  equalColumns: number;
}

export interface BatchResult {
  kind: 'batch';
  backend: BenchBackend;
  dtype: BenchDtype;
  tokensPerColumn: number;
  sizes: BatchSizeResult[];
}

/** Table rows: per size the medians, the paired ratio (target ≤ 0.5 at 4 columns) and aggregate tok/s. */
export function rowsForBatch(r: BatchResult): Row[] {
  const rows: Row[] = [];
  const f = (x: number, d = 0): string => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
  for (const s of r.sizes) {
    const ratio = pairedRatio(s.batchedMs, s.sequentialMs);
    const seqMs = median(s.sequentialMs);
    const batMs = median(s.batchedMs);
    rows.push({
      metric: `Compare ${s.columns} columns × ${r.tokensPerColumn} tokens: sequential / batched (ms)`,
      value: `${f(seqMs)} / ${f(batMs)}`,
      target: '',
      result: 'info',
    });
    const pass = ratio <= 0.5;
    rows.push({
      metric: `${s.columns} columns: batched / sequential (median of paired reps)`,
      value: f(ratio, 2),
      target: s.columns === 4 ? '≤ 0.50' : '',
      result: s.columns === 4 ? (pass ? 'PASS' : 'FAIL') : 'info',
    });
    rows.push({
      metric: `${s.columns} columns: aggregate tok/s, sequential → batched`,
      value: `${f((s.tokens * 1000) / seqMs, 1)} → ${f((s.tokens * 1000) / batMs, 1)}`,
      target: '',
      result: 'info',
    });
    rows.push({
      metric: `${s.columns} columns: batched columns with the sequential run's tokens`,
      value: `${s.equalColumns}/${s.columns}`,
      target: `${s.columns}/${s.columns}`,
      result: s.equalColumns === s.columns ? 'PASS' : 'FAIL',
    });
  }
  return rows;
}
