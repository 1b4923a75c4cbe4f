// The layout rules of src/ (conventions 1 and 13), read from the sources' relative imports: src/ui/ is the
// bottom layer of the UI folders, top-level folders import each other without loops, internal modules
// never import the public barrel, and files stay small. Imports are found with regular expressions
// over the source with comments removed (static import/export, dynamic import(), and module workers'
// `new URL('./x.ts', import.meta.url)`), which is enough for this codebase's plain import style.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/fixtures.ts';

const SRC = join(REPO_ROOT, 'src');
const MAX_LINES = 500;

/**
 * Files allowed over MAX_LINES for now. Each entry must still be over the limit (a stale entry fails),
 * so the list only shrinks.
 */
const OVER_MAX_LINES: readonly string[] = [];

/** Imports allowed to close a folder loop for now (from → to, repo-relative). Each must still exist. */
const KNOWN_LOOP_IMPORTS: ReadonlyArray<readonly [string, string]> = [];

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}

/** Removes comments, keeping string literals (so '//' inside a URL string is not a comment). */
function stripComments(src: string): string {
  return src.replace(
    /('(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"|`(?:\\.|[^`\\])*`)|\/\*[\s\S]*?\*\/|\/\/[^\n]*/g,
    (_m, str: string | undefined) => str ?? ' ',
  );
}

const IMPORT_PATTERNS = [
  /\b(?:import|export)\s+(?:type\s+)?(?:[\w*${}\s,]+?\s+from\s+)?['"]([^'"]+)['"]/g,
  /\bimport\(\s*['"]([^'"]+)['"]\s*\)/g,
  /\bnew\s+URL\(\s*['"]([^'"]+)['"]\s*,\s*import\.meta\.url\s*\)/g,
];

/** Repo-relative paths of the files `file` imports by relative specifier (query suffixes dropped). */
function relativeImports(file: string): string[] {
  const code = stripComments(readFileSync(file, 'utf8'));
  const out = new Set<string>();
  for (const re of IMPORT_PATTERNS) {
    for (const m of code.matchAll(re)) {
      const spec = m[1]!;
      if (!spec.startsWith('./') && !spec.startsWith('../')) continue;
      out.add(repoPath(resolve(dirname(file), spec.replace(/\?.*$/, ''))));
    }
  }
  return [...out];
}

const repoPath = (abs: string): string => relative(REPO_ROOT, abs).split('\\').join('/');

/** The module's node in the folder graph: its top-level folder below src/, or the root file itself. */
function folderOf(path: string): string {
  const parts = path.split('/');
  if (parts[0] !== 'src') return path;
  return parts.length > 2 ? `src/${parts[1]}/` : path;
}

const files = walk(SRC).map(repoPath).sort();
const tsFiles = files.filter((f) => f.endsWith('.ts'));
const imports = new Map(tsFiles.map((f) => [f, relativeImports(join(REPO_ROOT, f))]));

describe('src/ architecture', () => {
  it('finds the sources and their imports (every relative import names an existing file)', () => {
    expect(tsFiles.length).toBeGreaterThan(40);
    expect(imports.get('src/app/main.ts')).toContain('src/pwa/index.ts');
    expect(imports.get('src/engine/client.ts')).toContain('src/engine/worker.ts'); // a module worker
    for (const [from, tos] of imports) {
      for (const to of tos) {
        // Outside src/ only the WGSL kernels (shaders/*.wgsl?raw) may be imported.
        if (to.startsWith('shaders/'))
          expect(existsSync(join(REPO_ROOT, to)), `${from} imports ${to}`).toBe(true);
        else expect(files, `${from} imports ${to}`).toContain(to);
      }
    }
  });

  it('src/ui/ imports nothing from app/, element/, pwa/ or engine/', () => {
    const ui = tsFiles.filter((f) => f.startsWith('src/ui/'));
    expect(ui).toEqual(['src/ui/dom.ts', 'src/ui/events.ts', 'src/ui/format.ts']);
    for (const f of ui) {
      const bad = imports.get(f)!.filter((to) => /^src\/(app|element|pwa|engine)\//.test(to));
      expect(bad, f).toEqual([]);
    }
  });

  it('no import loops between top-level folders of src/', () => {
    const known = new Set(KNOWN_LOOP_IMPORTS.map(([a, b]) => `${a} -> ${b}`));
    for (const [from, to] of KNOWN_LOOP_IMPORTS) {
      expect(
        imports.get(from) ?? [],
        `known loop import ${from} -> ${to} is gone: remove it from the list`,
      ).toContain(to);
    }
    // Folder graph: edge A -> B when a file in A imports a file in B; each edge remembers one import.
    const edges = new Map<string, Map<string, string>>();
    for (const [from, tos] of imports) {
      for (const to of tos) {
        const a = folderOf(from);
        const b = folderOf(to);
        if (a === b || known.has(`${from} -> ${to}`)) continue;
        if (!edges.has(a)) edges.set(a, new Map());
        if (!edges.get(a)!.has(b)) edges.get(a)!.set(b, `${from} -> ${to}`);
      }
    }
    // Depth-first search; a back edge closes a loop, reported with the imports along it.
    const loops: string[] = [];
    const state = new Map<string, 'open' | 'done'>();
    const stack: string[] = [];
    const visit = (n: string): void => {
      state.set(n, 'open');
      stack.push(n);
      for (const m of edges.get(n)?.keys() ?? []) {
        if (state.get(m) === 'open') {
          const cycle = [...stack.slice(stack.indexOf(m)), m];
          loops.push(
            cycle
              .slice(1)
              .map((b, i) => edges.get(cycle[i]!)!.get(b))
              .join(', '),
          );
        } else if (!state.has(m)) visit(m);
      }
      stack.pop();
      state.set(n, 'done');
    };
    for (const n of [...edges.keys()].sort()) if (!state.has(n)) visit(n);
    expect(loops).toEqual([]);
  });

  it('internal modules never import the public barrel src/index.ts', () => {
    const importers = [...imports].filter(([, tos]) => tos.includes('src/index.ts')).map(([f]) => f);
    expect(importers).toEqual([]);
  });

  it(`every src/ file has at most ${MAX_LINES} lines (a shrinking list of exceptions)`, () => {
    const lines = (f: string) => (readFileSync(join(REPO_ROOT, f), 'utf8').match(/\n/g) ?? []).length;
    const over = files.filter((f) => lines(f) > MAX_LINES).map((f) => `${f} (${lines(f)} lines)`);
    const allowed = OVER_MAX_LINES.map((f) => `${f} (${lines(f)} lines)`);
    expect(
      over.sort(),
      `files over ${MAX_LINES} lines vs OVER_MAX_LINES (split new ones; drop entries once split)`,
    ).toEqual(allowed.sort());
  });
});

describe('typed errors', () => {
  it('no src/ module throws a bare Error, RangeError or TypeError (public APIs throw errors.ts classes)', () => {
    const bare = /\bthrow\s+new\s+(Error|RangeError|TypeError)\s*\(/;
    const offenders = tsFiles.filter((f) =>
      bare.test(stripComments(readFileSync(join(REPO_ROOT, f), 'utf8'))),
    );
    expect(offenders).toEqual([]);
  });
});
