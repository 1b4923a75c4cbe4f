// formatBytes (src/ui/format.ts), the one byte formatter of the demo, the PWA controls and the element.
import { describe, expect, it } from 'vitest';
import { formatBytes } from '../../../src/ui/format.ts';

describe('formatBytes', () => {
  it('uses decimal units: B as is, kB rounded, MB with 1 decimal, GB with 2', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(999)).toBe('999 B');
    expect(formatBytes(1000)).toBe('1 kB');
    expect(formatBytes(350_400)).toBe('350 kB');
    expect(formatBytes(999_499)).toBe('999 kB');
    expect(formatBytes(5_072_325)).toBe('5.1 MB');
    expect(formatBytes(19_995_838)).toBe('20.0 MB');
    expect(formatBytes(2_345_000_000)).toBe('2.35 GB');
  });

  it("unknown sizes read '—', or the caller's word", () => {
    for (const n of [null, undefined, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(formatBytes(n)).toBe('—');
      expect(formatBytes(n, 'unknown size')).toBe('unknown size');
    }
  });
});
