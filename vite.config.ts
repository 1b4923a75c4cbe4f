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
 *
 * Static-site build (`npm run build` → dist/): pages index.html (demo) and examples/embed.html
 * (`<weblora-chat>` in plain HTML); base from env WEBLORA_BASE (default '/'; e.g. '/some/base/' for a
 * sub-path deploy), output folder from WEBLORA_OUT_DIR (default dist). No COOP/COEP needed: without
 * cross-origin isolation the engine runs single-threaded wasm. The PWA (vite-plugin-pwa, Workbox
 * generateSW) precaches the app shell, the ORT runtime and the example adapters; model files are
 * not precached (their only copy lives in the engine's own Cache Storage, model-files.ts), see
 * `pwaOptions`. `autoMountPwa` adds the PWA controls to index.html until the demo mounts them itself.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { defaultClientConditions, defineConfig, type Plugin } from 'vite';
import { VitePWA, type VitePWAOptions } from 'vite-plugin-pwa';

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

/** Deploy base: '/' by default, '/some/base/' for a sub-path (always with a trailing slash). */
export function deployBase(): string {
  const b = process.env.WEBLORA_BASE?.trim() || '/';
  return b.endsWith('/') ? b : `${b}/`;
}

/** Bytes Workbox may precache per file: the ORT wasm runtime is 27 MB. */
const MAX_PRECACHE_FILE = 40 * 1024 * 1024;

export const pwaOptions: Partial<VitePWAOptions> = {
  // Registration and the update prompt live in src/pwa/register.ts (virtual:pwa-register).
  injectRegister: false,
  registerType: 'prompt',
  manifestFilename: 'manifest.webmanifest',
  includeAssets: ['icons/apple-touch-icon-180.png'],
  manifest: {
    name: 'weblora — in-browser LLM with LoRA adapters',
    short_name: 'weblora',
    description: 'A small language model and per-prompt LoRA adapters, running entirely in your browser.',
    start_url: '.',
    scope: '.',
    display: 'standalone',
    background_color: '#ffffff',
    theme_color: '#5b3cc4',
    icons: [
      { src: 'icons/icon-192.png', sizes: '192x192', type: 'image/png' },
      { src: 'icons/icon-512.png', sizes: '512x512', type: 'image/png' },
      { src: 'icons/maskable-512.png', sizes: '512x512', type: 'image/png', purpose: 'maskable' },
    ],
  },
  workbox: {
    // App shell, ORT runtime (ort/*.mjs + *.wasm), icons, example adapters (small; index.json too).
    globPatterns: [
      '**/*.{html,js,mjs,css,wasm,png,svg,ico,webmanifest}',
      // (only when the example adapters exist, so Workbox does not warn about an empty pattern)
      ...(existsSync(resolve(import.meta.dirname, 'public/adapters')) ? ['adapters/**/*.{json,safetensors}'] : []),
    ],
    // Model files: the engine keeps its own verified copy in Cache Storage (weblora-models-v1), so a
    // second SW copy would only double 20+ MB; requests under models/ go to the network when not there.
    globIgnores: ['models/**', '**/node_modules/**'],
    maximumFileSizeToCacheInBytes: MAX_PRECACHE_FILE,
    // ?backend=wasm / ?mode=chat (demo, examples/embed.html) must still hit the precached page offline.
    ignoreURLParametersMatching: [/^utm_/, /^fbclid$/, /^backend$/, /^mode$/],
    navigateFallback: 'index.html',
    navigateFallbackDenylist: [/\/(models|adapters|ort|examples)\//],
    cleanupOutdatedCaches: true,
    // First install controls the open page at once; later versions wait for the user (update prompt).
    clientsClaim: true,
    skipWaiting: false,
  },
};

/**
 * Adds `src/pwa/auto-mount.ts` to the demo page (index.html only): it registers the service worker and
 * shows the PWA controls unless the page calls `mountPwaControls` itself (see src/pwa/index.ts).
 */
export function autoMountPwa(): Plugin {
  return {
    name: 'weblora:auto-mount-pwa',
    transformIndexHtml: {
      order: 'pre',
      handler(html, ctx) {
        if (!/(^|[\\/])index\.html$/.test(ctx.filename) || /examples[\\/]/.test(ctx.filename)) return html;
        return {
          html,
          tags: [{ tag: 'script', attrs: { type: 'module', src: '/src/pwa/auto-mount.ts' }, injectTo: 'body' }],
        };
      },
    },
  };
}

export default defineConfig({
  base: deployBase(),
  plugins: [serveOrtFiles([ORT_APP_MOUNT]), autoMountPwa(), VitePWA(pwaOptions)],
  resolve: { conditions: ORT_RESOLVE_CONDITIONS },
  // Pre-bundling would rewrite ORT's import.meta.url-relative lookups; ORT ships ready-made ESM.
  optimizeDeps: { exclude: ['onnxruntime-web'] },
  // Module workers (the engine) may code-split; the default 'iife' would not allow that.
  worker: { format: 'es', rolldownOptions: { output: { keepNames: true } } },
  build: {
    target: 'es2022',
    chunkSizeWarningLimit: 1024,
    outDir: process.env.WEBLORA_OUT_DIR || 'dist',
    rolldownOptions: {
      // Typed errors cross the worker boundary by class name (errors.ts): minified names would turn a
      // FetchError into an 'Hr'. keepNames preserves `Function.name` for classes and functions.
      output: { keepNames: true },
      input: {
        main: resolve(import.meta.dirname, 'index.html'),
        embed: resolve(import.meta.dirname, 'examples/embed.html'),
      },
    },
  },
  preview: { port: 4173 },
});
