/**
 * Per-phase wall-clock timings of one model load (LoadReport.phases): each phase's time is summed over
 * its calls (a webgpu → wasm fallback injects twice), and `other` is what the named phases leave of the
 * total (JSON and tokenizer parsing, backend detection, device setup). It measures; it decides nothing.
 */
import type { LoadPhases } from './types.ts';

type Phase = Exclude<keyof LoadPhases, 'other'>;

export interface PhaseClock {
  time<T>(phase: Phase, fn: () => T): T;
  timeAsync<T>(phase: Phase, fn: () => Promise<T>): Promise<T>;
  /** Adds `ms` measured elsewhere to `phase`. */
  add(phase: Phase, ms: number): void;
  /** The phases so far, `other` = elapsed since the clock started minus the named phases. */
  done(): LoadPhases;
}

export function phaseClock(now: () => number = () => performance.now()): PhaseClock {
  const start = now();
  const ms: LoadPhases = { files: 0, decode: 0, inject: 0, encode: 0, session: 0, baseSession: 0, other: 0 };
  return {
    time(phase, fn) {
      const t0 = now();
      try {
        return fn();
      } finally {
        ms[phase] += now() - t0;
      }
    },
    async timeAsync(phase, fn) {
      const t0 = now();
      try {
        return await fn();
      } finally {
        ms[phase] += now() - t0;
      }
    },
    add(phase, t) {
      ms[phase] += t;
    },
    done() {
      const named = ms.files + ms.decode + ms.inject + ms.encode + ms.session + ms.baseSession;
      return { ...ms, other: Math.max(0, now() - start - named) };
    },
  };
}
