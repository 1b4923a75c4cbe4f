/**
 * `createWorkerEngine()`: starts the engine's module worker (worker.ts) and wraps it as an `Engine`
 * (remote-engine.ts). This module deliberately imports no engine code (only types), so the
 * main-thread bundle stays free of onnxruntime-web.
 */
import { type WorkerEngine, wrapWorkerEngine } from './remote-engine.ts';

export { type WorkerEngine, wrapWorkerEngine } from './remote-engine.ts';

export interface WorkerEngineOptions {
  /** A worker running worker.ts (or an entry that calls `exposeEngine`); default: a new one. */
  worker?: Worker;
}

export function createWorkerEngine(opts: WorkerEngineOptions = {}): WorkerEngine {
  return wrapWorkerEngine(
    opts.worker ?? new Worker(new URL('./worker.ts', import.meta.url), { type: 'module' }),
  );
}
