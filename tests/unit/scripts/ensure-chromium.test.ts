// scripts/ensure-chromium.sh: the version check against stand-in `chromium` binaries (CHROMIUM_PATH,
// which the script checks but never installs), and the install path with a stand-in `apt-get` first on
// PATH, so no test ever installs, upgrades or removes the real browser.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../helpers/fixtures.ts';

const SCRIPT = join(REPO_ROOT, 'scripts/ensure-chromium.sh');
const dir = mkdtempSync(join(tmpdir(), 'weblora-ensure-chromium-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function executable(name: string, body: string): string {
  const path = join(dir, name);
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
}

/** A stand-in for Debian's wrapper: its --version line, plus the shell noise the real one prints. */
const fakeChromium = (version: string) =>
  executable(
    `chromium-${version}`,
    `echo "/usr/bin/chromium: 9: [: 1: unexpected operator" >&2\n` +
      `echo "Chromium ${version} built on Debian GNU/Linux 12 (bookworm)"`,
  );

function run(env: Record<string, string | undefined>) {
  const merged: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, ...env })) if (v !== undefined) merged[k] = v;
  const r = spawnSync('bash', [SCRIPT], { env: merged, encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const MIN = Number(/^MIN_CHROMIUM_MAJOR=(\d+)$/m.exec(readFileSync(SCRIPT, 'utf8'))?.[1]);

describe('scripts/ensure-chromium.sh', () => {
  it('states the minimum once: 156, the version the suite is known to pass on', () => {
    expect(MIN).toBe(156);
  });

  it('accepts a Chromium at the minimum major version and prints the version it uses', () => {
    const bin = fakeChromium('156.0.8078.108');
    const r = run({ CHROMIUM_PATH: bin, WEBLORA_MIN_CHROMIUM: undefined });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`ensure-chromium: using Chromium 156.0.8078.108 at ${bin} (minimum 156)\n`);
    expect(r.status).toBe(0);
  });

  it('rejects an older one (150: the offline e2e test fails there), naming both versions', () => {
    const r = run({ CHROMIUM_PATH: fakeChromium('150.0.7000.1'), WEBLORA_MIN_CHROMIUM: undefined });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('Chromium 150.0.7000.1 at');
    expect(r.stderr).toContain('need Chromium 156 or newer');
    expect(r.stdout).toBe('');
  });

  it('compares major versions as numbers; WEBLORA_MIN_CHROMIUM overrides the minimum', () => {
    const bin = fakeChromium('1000.0.0.1');
    expect(run({ CHROMIUM_PATH: bin, WEBLORA_MIN_CHROMIUM: undefined }).status).toBe(0);
    expect(run({ CHROMIUM_PATH: bin, WEBLORA_MIN_CHROMIUM: '999' }).status).toBe(0);
    const r = run({ CHROMIUM_PATH: bin, WEBLORA_MIN_CHROMIUM: '1001' });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('need Chromium 1001 or newer');
  });

  it('fails clearly when CHROMIUM_PATH names nothing, or a binary without a version', () => {
    const missing = run({ CHROMIUM_PATH: join(dir, 'no-such-chromium') });
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain(`no Chromium at ${join(dir, 'no-such-chromium')}`);
    const mute = run({ CHROMIUM_PATH: executable('mute', 'exit 3') });
    expect(mute.status).toBe(1);
    expect(mute.stderr).toContain('no Chromium at');
  });

  // Debian's /usr/bin/chromium below an impossible minimum: the script must try apt-get (here a stand-in
  // that only records its arguments) when root, and only explain otherwise.
  const root = process.getuid?.() === 0;
  it.runIf(root)(
    'as root: runs apt-get update, then installs chromium, then fails naming both versions',
    () => {
      const log = join(dir, 'apt.log');
      const bin = join(dir, 'bin');
      mkdirSync(bin);
      executable('bin/apt-get', `echo "apt-get $*" >> ${log}`);
      const r = run({
        CHROMIUM_PATH: undefined,
        WEBLORA_MIN_CHROMIUM: '9999',
        PATH: `${bin}:${process.env.PATH}`,
      });
      expect(r.status).toBe(1);
      expect(readFileSync(log, 'utf8')).toBe('apt-get update -qq\napt-get install -y -qq chromium\n');
      expect(r.stderr).toContain('need Chromium 9999 or newer');
      expect(r.stderr).toContain('did not give 9999+');
    },
  );

  it.runIf(!root)('not root: explains how to install, runs no apt-get', () => {
    const r = run({ CHROMIUM_PATH: undefined, WEBLORA_MIN_CHROMIUM: '9999' });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('need Chromium 9999 or newer');
    expect(r.stderr).toContain('sudo apt-get update && sudo apt-get install -y chromium');
    expect(existsSync(join(dir, 'apt.log'))).toBe(false);
  });
});
