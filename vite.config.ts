/**
 * Vite config for the demo (`npm start` = dev, `npm run build` + `vite preview`).
 * onnxruntime-web loads its wasm runtime (`ort-wasm-simd-threaded*.{mjs,wasm}`) at run time from
 * `ort.env.wasm.wasmPaths`; no CDN is reachable for our users' offline case, so `serveOrtFiles`
 * serves those files from our own origin under `/ort/`: from node_modules in dev (a middleware) and
 * copied into the build output (emitted assets) for `vite build`. The app sets
 * `ort.env.wasm.wasmPaths = BASE_URL + 'ort/'`. The resolve condition `onnxruntime-web-use-extern-wasm`
 * (ORT's own switch) picks its builds that load the runtime from wasmPaths instead of the `*.bundle`
 * builds, whose `new URL('*.wasm', import.meta.url)` would make Vite emit a second 27 MB copy.
 * The browser test project (vitest.config.ts) reuses `ORT_RESOLVE_CONDITIONS` and the plugin.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { defaultClientConditions, defineConfig, type Plugin } from 'vite';

const ORT_FILE = /^ort-wasm-simd-threaded(\.[a-z]+)?\.(wasm|mjs)$/;

export interface OrtMount {
  /** URL path under the base, e.g. 'ort/'. */
  url: string;
  /** Folder holding the files, e.g. node_modules/onnxruntime-web/dist. */
  dir: string;
  /** File names copied into a production build (dev serves every runtime file in `dir`). */
  buildFiles?: string[];
}

/** The runtime the app uses: `onnxruntime-web/webgpu` 1.30 loads the asyncify build (webgpu + wasm EPs). */
export const ORT_APP_MOUNT: OrtMount = {
  url: 'ort/',
  dir: resolve(import.meta.dirname, 'node_modules/onnxruntime-web/dist'),
  buildFiles: ['ort-wasm-simd-threaded.asyncify.mjs', 'ort-wasm-simd-threaded.asyncify.wasm'],
};

/** Client resolve conditions with ORT's extern-wasm switch first. */
export const ORT_RESOLVE_CONDITIONS = ['onnxruntime-web-use-extern-wasm', ...defaultClientConditions];

export function serveOrtFiles(mounts: OrtMount[]): Plugin {
  let base = '/';
  return {
    name: 'weblora:serve-ort-files',
    configResolved(c) {
      base = c.base;
    },
    configureServer(server) {
      server.middlewares.use((req, res, next) => {
        const path = (req.url ?? '').split('?')[0]!;
        for (const m of mounts) {
          const prefix = base + m.url;
          if (!path.startsWith(prefix)) continue;
          const name = path.slice(prefix.length);
          if (!ORT_FILE.test(name)) continue;
          let body: Buffer;
          try {
            body = readFileSync(join(m.dir, name));
          } catch {
            continue;
          }
          res.setHeader('Content-Type', name.endsWith('.wasm') ? 'application/wasm' : 'text/javascript');
          res.setHeader('Content-Length', body.byteLength);
          res.setHeader('Cache-Control', 'no-cache');
          res.end(body);
          return;
        }
        next();
      });
    },
    generateBundle() {
      for (const m of mounts) {
        const files = m.buildFiles ?? readdirSync(m.dir).filter((f) => ORT_FILE.test(f));
        for (const f of files) {
          this.emitFile({ type: 'asset', fileName: m.url + f, source: readFileSync(join(m.dir, f)) });
        }
      }
    },
  };
}

export default defineConfig({
  plugins: [serveOrtFiles([ORT_APP_MOUNT])],
  resolve: { conditions: ORT_RESOLVE_CONDITIONS },
  // Pre-bundling would rewrite ORT's import.meta.url-relative lookups; ORT ships ready-made ESM.
  optimizeDeps: { exclude: ['onnxruntime-web'] },
  build: { target: 'es2022', chunkSizeWarningLimit: 1024 },
  preview: { port: 4173 },
});
