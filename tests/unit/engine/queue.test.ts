// SerialQueue: strict arrival order with no overlap, failures do not block later tasks, and an abort
// removes a waiting task without ever running it (AbortError with data.queued) while a running task is
// left to its own signal.
import { describe, expect, it } from 'vitest';
import { SerialQueue } from '../../../src/engine/queue.ts';
import { AbortError } from '../../../src/errors.ts';

function deferred<T = void>(): {
  promise: Promise<T>;
  resolve: (v: T) => void;
  reject: (e: unknown) => void;
} {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const tick = () => new Promise((r) => setTimeout(r, 0));

describe('SerialQueue', () => {
  it('runs tasks one at a time in arrival order', async () => {
    const q = new SerialQueue();
    const log: string[] = [];
    let active = 0;
    const task = (name: string, ms: number) => async () => {
      active++;
      expect(active).toBe(1);
      log.push(`start ${name}`);
      await new Promise((r) => setTimeout(r, ms));
      log.push(`end ${name}`);
      active--;
      return name;
    };
    const results = await Promise.all([
      q.enqueue(task('a', 15)),
      q.enqueue(task('b', 1)),
      q.enqueue(task('c', 5)),
    ]);
    expect(results).toEqual(['a', 'b', 'c']);
    expect(log).toEqual(['start a', 'end a', 'start b', 'end b', 'start c', 'end c']);
    expect(q.busy).toBe(false);
    expect(q.pending).toBe(0);
  });

  it('a failing (or synchronously throwing) task rejects only its own promise', async () => {
    const q = new SerialQueue();
    const a = q.enqueue(async () => {
      throw new Error('boom');
    });
    const b = q.enqueue((() => {
      throw new Error('sync');
    }) as () => Promise<never>);
    const c = q.enqueue(async () => 3);
    await expect(a).rejects.toThrow('boom');
    await expect(b).rejects.toThrow('sync');
    await expect(c).resolves.toBe(3);
  });

  it('aborting a queued task removes it: it never runs and rejects with AbortError{queued}', async () => {
    const q = new SerialQueue();
    const gate = deferred();
    const ran: string[] = [];
    const first = q.enqueue(async () => {
      ran.push('first');
      await gate.promise;
    });
    const ac = new AbortController();
    const second = q.enqueue(async () => {
      ran.push('second');
    }, ac.signal);
    const third = q.enqueue(async () => {
      ran.push('third');
    });
    await tick();
    expect(q.pending).toBe(2);
    ac.abort();
    expect(q.pending).toBe(1);
    const err = await second.catch((e) => e);
    expect(err).toBeInstanceOf(AbortError);
    expect((err as AbortError).data.queued).toBe(true);
    gate.resolve();
    await Promise.all([first, third]);
    expect(ran).toEqual(['first', 'third']);
  });

  it('an already-aborted signal rejects at once without queueing', async () => {
    const q = new SerialQueue();
    let ran = false;
    const p = q.enqueue(async () => {
      ran = true;
    }, AbortSignal.abort());
    await expect(p).rejects.toBeInstanceOf(AbortError);
    expect(q.pending).toBe(0);
    expect(ran).toBe(false);
  });

  it('aborting a running task does not cancel it (the task watches its signal)', async () => {
    const q = new SerialQueue();
    const ac = new AbortController();
    const gate = deferred();
    const running = q.enqueue(async () => {
      await gate.promise;
      return ac.signal.aborted ? 'stopped early' : 'done';
    }, ac.signal);
    await tick();
    expect(q.busy).toBe(true);
    ac.abort();
    gate.resolve();
    await expect(running).resolves.toBe('stopped early');
  });

  it('cancelWaiting rejects every waiting task and leaves the running one', async () => {
    const q = new SerialQueue();
    const gate = deferred();
    const running = q.enqueue(async () => {
      await gate.promise;
      return 'ran';
    });
    const w1 = q.enqueue(async () => 1);
    const w2 = q.enqueue(async () => 2);
    await tick();
    q.cancelWaiting('disposed');
    await expect(w1).rejects.toThrow('disposed');
    await expect(w2).rejects.toBeInstanceOf(AbortError);
    gate.resolve();
    await expect(running).resolves.toBe('ran');
    await expect(q.enqueue(async () => 'after')).resolves.toBe('after');
  });
});
