// The storage-changed signal (src/ui/events.ts) on a stand-in `window` (an EventTarget): every listener
// hears a notification until it stops listening; without a window, notifying is a no-op.
import { afterEach, describe, expect, it } from 'vitest';
import { notifyStorageChanged, onStorageChanged, STORAGE_CHANGED } from '../../../src/ui/events.ts';

const g = globalThis as { window?: EventTarget };
afterEach(() => {
  delete g.window;
});

describe('storage-changed events', () => {
  it('reach every listener until it stops listening', () => {
    g.window = new EventTarget();
    const heard: string[] = [];
    const stopA = onStorageChanged(() => heard.push('a'));
    onStorageChanged(() => heard.push('b'));
    notifyStorageChanged();
    stopA();
    notifyStorageChanged();
    expect(heard).toEqual(['a', 'b', 'b']);
  });

  it('is a plain window event other code can listen to by name', () => {
    g.window = new EventTarget();
    let n = 0;
    g.window.addEventListener(STORAGE_CHANGED, () => n++);
    notifyStorageChanged();
    expect(STORAGE_CHANGED).toBe('weblora:storage-changed');
    expect(n).toBe(1);
  });

  it('without a window (a worker, Node), notifying does nothing', () => {
    expect(g.window).toBeUndefined();
    expect(() => notifyStorageChanged()).not.toThrow();
  });
});
