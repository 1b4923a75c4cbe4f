/**
 * Library build of `<weblora-chat>`: `vite build -c vite.lib.config.ts` → dist-lib/
 *   weblora-chat.js        the ES module to import from a plain `<script type="module">` (defines the element)
 *   weblora-chat.d.ts      its types (hand-written: src/element/weblora-chat.lib.d.ts, checked by
 *                          src/element/lib-types.check.ts)
 *   assets/engine-worker-*.js  the engine's module worker, loaded by the module (relative to it)
 *   ort/                   onnxruntime-web's wasm runtime (27 MB), default `wasmPaths`
 *   models/weblora-shakespeare/  the default model, so the folder works as-is when served
 *   adapters/              the example PEFT adapters (public/adapters/: folders + index.json)
 *   index.html             a working example page (examples/lib/index.html) importing ./weblora-chat.js
 * Host the folder anywhere (same origin as the page, or with CORS); `configureWebLora({ wasmPaths,
 * defaultModel })` points elsewhere. The worker stays a separate file: a blob-URL worker would lose the
 * http(s) location the engine resolves URLs against.
 */
import { cpSync, existsSync, readdirSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { defineConfig, type Plugin } from 'vite';
import { ORT_APP_MOUNT, ORT_RESOLVE_CONDITIONS, serveOrtFiles } from './vite.config.ts';

const root = import.meta.dirname;
const outDir = resolve(root, process.env.WEBLORA_LIB_OUT_DIR || 'dist-lib');

/** Ships the hand-written declarations and the default model next to the module. */
function libExtras(): Plugin {
  return {
    name: 'weblora:lib-extras',
    generateBundle() {
      this.emitFile({
        type: 'asset',
        fileName: 'weblora-chat.d.ts',
        source: readFileSync(resolve(root, 'src/element/weblora-chat.lib.d.ts'), 'utf8'),
      });
    },
    closeBundle() {
      const model = resolve(root, 'public/models/weblora-shakespeare');
      if (existsSync(model)) cpSync(model, resolve(outDir, 'models/weblora-shakespeare'), { recursive: true });
      // The example adapters and a page that uses them: `npx serve dist-lib` → a working demo of the element.
      const adapters = resolve(root, 'public/adapters');
      if (existsSync(adapters)) {
        for (const entry of readdirSync(adapters, { withFileTypes: true })) {
          if (entry.isDirectory() || entry.name === 'index.json') {
            cpSync(resolve(adapters, entry.name), resolve(outDir, 'adapters', entry.name), { recursive: true });
          }
        }
      }
      cpSync(resolve(root, 'examples/lib/index.html'), resolve(outDir, 'index.html'));
    },
  };
}

export default defineConfig({
  // Relative: the module finds its worker chunk next to itself wherever the folder is hosted.
  base: './',
  publicDir: false,
  define: { __WEBLORA_LIB__: 'true' },
  plugins: [serveOrtFiles([ORT_APP_MOUNT]), libExtras()],
  resolve: { conditions: ORT_RESOLVE_CONDITIONS },
  // keepNames: typed errors are revived by class name (errors.ts); minification must not rename them.
  worker: { format: 'es', rolldownOptions: { output: { keepNames: true } } },
  build: {
    rolldownOptions: { output: { keepNames: true } },
    target: 'es2022',
    outDir,
    emptyOutDir: true,
    copyPublicDir: false,
    chunkSizeWarningLimit: 2048,
    lib: {
      entry: resolve(root, 'src/element/index.ts'),
      formats: ['es'],
      fileName: () => 'weblora-chat.js',
    },
  },
});
