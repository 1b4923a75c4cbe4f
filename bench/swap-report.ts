/**
 * Table rows of the swap suite (swap.ts): cold swaps parsing the PEFT files against cold swaps from the
 * packed feeds (float32 and float16), hot swaps, uploads per swap and bytes held. Node side (run.ts).
 */
import type { Row } from './report.ts';
import { median, pairedRatio } from './stats.ts';
import type { SwapSuiteResult } from './swap.ts';
import { PHASES, type ProfileResult, WAYS } from './swap-phases.ts';
import type { SwapResult } from './types.ts';

const range = (s: { median: number; min: number; max: number }, d = 2): string =>
  `${s.median.toFixed(d)} (${s.min.toFixed(d)}–${s.max.toFixed(d)})`;

export function rowsForSwap(r: SwapSuiteResult): Row[] {
  const rows: Row[] = [
    {
      metric: 'adapter',
      value: `random rank 8 on all ${r.targetCount} targets, ${(r.adapterBytes / 2 ** 20).toFixed(1)} MiB safetensors`,
      target: '',
      result: 'info',
    },
  ];
  const variants: [string, SwapResult][] = [
    ['from PEFT files (parse + map)', r.files],
    ['from packed feeds, float32', r.packed],
    ['from packed feeds, float16', r.packedF16],
  ];
  for (const [label, s] of variants) {
    rows.push({
      metric: `cold swap ms, ${label}`,
      value: range(s.coldMs, 1),
      target: '≤ 50',
      result: s.coldMs.median <= 50 ? 'PASS' : 'FAIL',
    });
  }
  for (const [label, s] of variants) {
    rows.push({
      metric: `uploads per cold / hot swap, ${label}`,
      value: `${(s.coldUploads / Math.max(1, s.coldMs.n)).toFixed(2)} / ${s.hotUploads}`,
      target: '1 / 0',
      result: s.coldUploads === s.coldMs.n && s.hotUploads === 0 ? 'PASS' : 'FAIL',
    });
  }
  const hot = r.packed;
  rows.push({
    metric: 'hot swap ms (provider.feedsFor, incl. its IndexedDB metadata read)',
    value: range(hot.hotFeedsForMs),
    target: '≤ 1',
    result: hot.hotFeedsForMs.median <= 1 ? 'PASS' : 'FAIL',
  });
  rows.push({
    metric: 'hot cache acquire ms (batch of 1000)',
    value: hot.hotAcquireMs.toFixed(4),
    target: '',
    result: 'info',
  });
  rows.push({
    metric: 'bytes held per adapter / raw f32 factors',
    value: `${hot.bytesPerAdapter} / ${hot.expectedBytes}`,
    target: '',
    result: 'info',
  });
  if (r.reuse) {
    for (const [label, x] of [
      ['float32', r.reuse.packed],
      ['float16', r.reuse.packedF16],
    ] as const) {
      rows.push({
        metric: `cold swap ms, packed ${label}: buffers reused (engine) / created, paired`,
        value: `${median(x.reused).toFixed(1)} / ${median(x.created).toFixed(1)} (×${pairedRatio(x.reused, x.created).toFixed(2)})`,
        target: '',
        result: 'info',
      });
    }
  }
  if (r.profile) {
    for (const p of [r.profile.packed, r.profile.packedF16]) rows.push(...profileRows(p));
  }
  return rows;
}

/**
 * One row per way of uploading (swap-profile.ts): the median of each phase (ms), the median total and
 * its paired ratio to today's per-tensor writeBuffer way (same sample index: drift cancels).
 */
function profileRows(p: ProfileResult): Row[] {
  const base = p.samples['per-tensor writeBuffer'].total;
  return WAYS.map((way) => {
    const s = p.samples[way];
    const phases = PHASES.map((ph) => `${ph} ${median(s[ph]).toFixed(1)}`).join(', ');
    return {
      metric: `cold swap phases ms, ${p.dtype} pack, ${way}`,
      value: `total ${median(s.total).toFixed(1)} (×${pairedRatio(s.total, base).toFixed(2)}): ${phases}`,
      target: '',
      result: 'info',
    };
  });
}
