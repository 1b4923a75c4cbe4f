/**
 * Where the e2e builds live (see global-setup.ts) and the sub-path the deploy test uses.
 * WEBLORA_E2E_OUT moves the builds elsewhere: a worktree whose node_modules is a link to another
 * checkout's would otherwise build into (and reuse) that checkout's folder.
 */
import { resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname, '../..');
export const E2E_OUT = resolve(ROOT, process.env.WEBLORA_E2E_OUT ?? 'node_modules/.weblora-e2e');
export const E2E_DIST = resolve(E2E_OUT, 'dist');
export const E2E_DIST_SUBPATH = resolve(E2E_OUT, 'dist-subpath');
export const E2E_DIST_LIB = resolve(E2E_OUT, 'dist-lib');
export const SUBPATH = '/some/base/';
