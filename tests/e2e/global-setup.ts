/**
 * Builds what the e2e tests serve, with the project's own configs, into node_modules/.weblora-e2e/ (so a
 * developer's dist/ and dist-lib/ are never overwritten): the static site (vite.config.ts, base '/'),
 * the same site for a sub-path deploy (WEBLORA_BASE=/some/base/) and the `<weblora-chat>` library
 * (vite.lib.config.ts). WEBLORA_E2E_SKIP_BUILD=1 reuses the previous builds (quick reruns).
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { E2E_DIST, E2E_DIST_LIB, E2E_DIST_SUBPATH, E2E_OUT, ROOT, SUBPATH } from './paths.ts';

function vite(args: string[], env: Record<string, string>): void {
  execFileSync(process.execPath, [`${ROOT}/node_modules/vite/bin/vite.js`, ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

export function setup(): void {
  const built = [E2E_DIST, E2E_DIST_SUBPATH, E2E_DIST_LIB].every((d) => existsSync(`${d}/`));
  if (process.env.WEBLORA_E2E_SKIP_BUILD === '1' && built) return;
  const t0 = Date.now();
  vite(['build', '--logLevel', 'warn', '--emptyOutDir'], { WEBLORA_OUT_DIR: E2E_DIST, WEBLORA_BASE: '/' });
  vite(['build', '--logLevel', 'warn', '--emptyOutDir'], {
    WEBLORA_OUT_DIR: E2E_DIST_SUBPATH,
    WEBLORA_BASE: SUBPATH,
  });
  vite(['build', '-c', 'vite.lib.config.ts', '--logLevel', 'warn'], { WEBLORA_LIB_OUT_DIR: E2E_DIST_LIB });
  console.log(
    `e2e: built site, sub-path site and library into ${E2E_OUT} in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
  );
}
