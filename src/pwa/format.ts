/**
 * Kept only for src/element/registry.ts (owned by the engine-core work of issue 8 right now), which
 * imports notifyStorageChanged from here; that import makes element/ depend on pwa/ and closes the
 * folder loop pwa/ -> element/ -> pwa/. It should import from '../ui/events.ts'; delete this file then
 * (tests/unit/architecture.test.ts lists the edge as the one known exception).
 */
export { notifyStorageChanged } from '../ui/events.ts';
