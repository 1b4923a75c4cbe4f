/**
 * `npm run bench -- --model <folder>`: serves a model package that lives outside the repo (e.g. the 135M
 * replica of scripts/py/replica_135m.py, ~1 GB) at `/models/<folder name>/` from the bench's Vite dev server,
 * streamed from disk (never read whole into Node's memory). A missing file answers 404 (the loader probes
 * for optional files such as external data), never Vite's HTML fallback. GET and HEAD only; no ranges.
 */
import { createReadStream, existsSync, statSync } from 'node:fs';
import { basename, join, normalize, resolve, sep } from 'node:path';
import type { Plugin } from 'vite';
import type { BenchModel } from './types.ts';

export interface ModelMount {
  model: BenchModel;
  plugin: Plugin;
}

/** Checks the folder and makes the plugin; `fail` reports a bad folder (the driver exits). */
export function mountModelFolder(folder: string, fail: (msg: string) => never): ModelMount {
  const dir = resolve(folder);
  if (!existsSync(join(dir, 'config.json'))) fail(`--model ${folder}: no config.json in ${dir}`);
  const name = basename(dir);
  const prefix = `/models/${name}/`;
  const plugin: Plugin = {
    name: 'weblora-bench:model-folder',
    configureServer(server) {
      server.middlewares.use((req, res, next) => {
        const path = decodeURIComponent((req.url ?? '').split('?')[0]!);
        if (!path.startsWith(prefix)) return next();
        const file = normalize(join(dir, path.slice(prefix.length)));
        const st = file.startsWith(dir + sep) && existsSync(file) ? statSync(file) : null;
        if (!st?.isFile()) {
          res.statusCode = 404;
          res.end();
          return;
        }
        res.setHeader('Content-Length', st.size);
        res.setHeader(
          'Content-Type',
          file.endsWith('.json') ? 'application/json' : 'application/octet-stream',
        );
        res.setHeader('Cache-Control', 'no-cache');
        if (req.method === 'HEAD') {
          res.end();
          return;
        }
        createReadStream(file).pipe(res);
      });
    },
  };
  return { model: { name, base: prefix }, plugin };
}
