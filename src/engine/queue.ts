/**
 * A strictly serial task queue: the engine has one session and one KV cache, so generate (and
 * load/dispose) calls run one after another in arrival order, never interleaved. A task whose signal
 * aborts while it still waits is removed from the queue at once and its promise rejects with
 * AbortError (the engine turns that into finishReason 'abort'); a running task sees the same signal
 * and decides itself how fast to stop. It deliberately has no priorities, timeouts or concurrency > 1.
 */
import { AbortError } from '../errors.ts';

interface Entry {
  run: () => void;
  cancel: (reason: AbortError) => void;
}

export class SerialQueue {
  private readonly waiting: Entry[] = [];
  private running = false;
  private count = 0;

  /** Tasks waiting to start (the running one excluded). */
  get pending(): number {
    return this.waiting.length;
  }

  /** Tasks enqueued so far (a serial number: equal twice means nothing was enqueued in between). */
  get enqueued(): number {
    return this.count;
  }

  /** True while a task runs. */
  get busy(): boolean {
    return this.running;
  }

  /**
   * Runs `task` after every task enqueued before it has settled. Rejects with AbortError (data
   * `{ queued: true }`) without ever calling `task` when `signal` aborts first.
   */
  enqueue<T>(task: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    this.count++;
    return new Promise<T>((resolve, reject) => {
      if (signal?.aborted) {
        reject(new AbortError('request aborted before it started', { queued: true }));
        return;
      }
      const onAbort = (): void => {
        const i = this.waiting.indexOf(entry);
        if (i < 0) return; // already started: the task itself watches the signal
        this.waiting.splice(i, 1);
        entry.cancel(new AbortError('request aborted while queued', { queued: true }));
      };
      const entry: Entry = {
        run: () => {
          signal?.removeEventListener('abort', onAbort);
          let p: Promise<T>;
          try {
            p = task();
          } catch (e) {
            p = Promise.reject(e);
          }
          p.then(resolve, reject).finally(() => {
            this.running = false;
            this.pump();
          });
        },
        cancel: (reason) => {
          signal?.removeEventListener('abort', onAbort);
          reject(reason);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiting.push(entry);
      this.pump();
    });
  }

  /** Rejects every waiting task with AbortError (the running one is left to its signal). */
  cancelWaiting(message = 'queue cleared'): void {
    const all = this.waiting.splice(0);
    for (const e of all) e.cancel(new AbortError(message, { queued: true }));
  }

  private pump(): void {
    if (this.running) return;
    const next = this.waiting.shift();
    if (!next) return;
    this.running = true;
    next.run();
  }
}
