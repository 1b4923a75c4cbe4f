/**
 * Table rows of the wasm 4-bit suite (types.ts WasmQ4Result): per file decode tok/s (median of
 * repetitions), the decode ratio against the fp32 file (median of paired lockstep steps; issue 12's target:
 * q4 ≥ fp32, i.e. ratio ≥ 1 in tok/s terms), prefill, session creation, greedy agreement. Pure: no I/O.
 */
import type { Row } from './report.ts';
import { median, pairedStepRatio } from './stats.ts';
import type { WasmQ4Result } from './types.ts';

const f = (x: number, d = 2): string => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const mb = (b: number): string => `${(b / 1e6).toFixed(1)} MB`;

export function rowsForWasmQ4(r: WasmQ4Result): Row[] {
  const rows: Row[] = [];
  const info = (metric: string, value: string): void => {
    rows.push({ metric, value, target: '', result: 'info' });
  };
  const [fp, ...rest] = r.configs;
  if (!fp) return rows;
  const o = r.options;
  info('setup', `${r.promptTokens}-token prompt, ${o.decodeTokens} decode tokens × ${o.reps} reps, lockstep`);
  const dq = r.dequantized;
  info(
    'dequantized at load',
    dq
      ? `${dq.nodes} MatMulNBits → fp32 MatMul, ${(dq.fp32Bytes / 2 ** 20).toFixed(0)} MiB f32, ${f(r.dequantizeMs, 0)} ms`
      : 'nothing (no MatMulNBits)',
  );
  for (const c of r.configs) {
    const s = c.series;
    info(
      `${c.name} (${mb(c.fileBytes)})`,
      `decode ${f(median(s.decodeTps))} tok/s, prefill ${f(median(s.prefillTps), 1)} tok/s, session ${f(c.createMs, 0)} ms`,
    );
  }
  for (const c of rest) {
    // this file's speed relative to fp32 (fp32 step ms / this step ms, per pair)
    const speed = pairedStepRatio(c.series.stepMs, fp.series.stepMs);
    const isEngine = c.name.includes('dequantized');
    rows.push({
      metric: `decode speed ${c.name} / fp32 (median of paired steps)`,
      value: f(speed, 3),
      target: isEngine ? '≥ 1 (noise ±10 %)' : '',
      result: isEngine ? (speed >= 0.9 ? 'PASS' : 'FAIL') : 'info',
    });
  }
  // The engine's graph must compute what MatMulNBits computes (4-bit values, fp32 arithmetic).
  const [nbits, engine] = rest;
  if (nbits && engine) {
    const same = engine.series.tokens.join() === nbits.series.tokens.join();
    rows.push({
      metric: 'greedy tokens: dequantized = MatMulNBits',
      value: String(same),
      target: 'true',
      result: same ? 'PASS' : 'FAIL',
    });
    info(
      'greedy tokens: q4 = fp32 (4-bit noise may change them)',
      String(nbits.series.tokens.join() === fp.series.tokens.join()),
    );
  }
  return rows;
}
