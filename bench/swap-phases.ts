/**
 * Names shared by the page-side phase profile (swap-profile.ts) and the Node-side report
 * (swap-report.ts): kept apart so the report does not import browser code (WGSL, GPU constants).
 */
export const PHASES = [
  'IndexedDB read',
  'f16→f32 on CPU',
  'createBuffer',
  'writeBuffer',
  'encode + submit',
  'onSubmittedWorkDone',
] as const;
export type Phase = (typeof PHASES)[number];

export const WAYS = [
  'per-tensor writeBuffer',
  'per-tensor writeBuffer, pooled buffers (engine)',
  'per-tensor mappedAtCreation',
  'one write + copies',
  'one write + copies, f16 widened on CPU',
] as const;
export type Way = (typeof WAYS)[number];

export interface ProfileResult {
  /** The pack's dtype (the store's feedPrecision decides it). */
  dtype: 'float32' | 'float16';
  /** way → phase → samples (ms); `total` is read to done. */
  samples: Record<Way, Record<Phase | 'total', number[]>>;
}
