/**
 * Demo placeholder: loads the default model package from our own origin with a byte progress bar,
 * picks WebGPU when an adapter exists (else wasm), reports the adapter, and runs greedy generation
 * on the main thread through DecoderSession. The real demo (worker engine, sampling, LoRA) replaces
 * this; it deliberately has no state beyond the one session.
 */
import * as ort from 'onnxruntime-web/webgpu';
import { DecoderSession } from '../engine/session.ts';
import { TextTokenizer } from '../engine/tokenizer.ts';
import { fetchModelPackage } from '../model/package.ts';
import './style.css';

const MODEL_URL = `${import.meta.env.BASE_URL}models/weblora-shakespeare/`;
// Served by our own server (vite.config.ts serveOrtFiles), never a CDN.
ort.env.wasm.wasmPaths = new URL(`${import.meta.env.BASE_URL}ort/`, location.href).href;

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const progress = $<HTMLProgressElement>('progress');
const progressText = $('progress-text');
const out = $('output');
const button = $<HTMLButtonElement>('generate');

function mb(n: number): string {
  return `${(n / 1e6).toFixed(1)} MB`;
}

function showError(e: unknown): void {
  const el = $('error');
  el.hidden = false;
  el.textContent = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  document.body.dataset.state = 'error';
}

async function detectGpu(): Promise<{ backend: 'webgpu' | 'wasm'; adapter: string }> {
  if (!('gpu' in navigator)) return { backend: 'wasm', adapter: 'none (navigator.gpu is absent)' };
  const a = await navigator.gpu.requestAdapter().catch(() => null);
  if (!a) return { backend: 'wasm', adapter: 'none (requestAdapter returned null)' };
  const i = a.info;
  const parts = [i.vendor, i.architecture, i.device, i.description].filter((s) => s);
  return { backend: 'webgpu', adapter: parts.join(' / ') || 'unknown' };
}

async function main(): Promise<void> {
  document.body.dataset.state = 'loading';
  const gpu = await detectGpu();
  $('adapter').textContent = gpu.adapter;

  const pkg = await fetchModelPackage(MODEL_URL, {
    onProgress: ({ loaded, total }) => {
      progress.max = total ?? loaded;
      progress.value = loaded;
      progressText.textContent = total ? `${mb(loaded)} / ${mb(total)}` : mb(loaded);
    },
  });
  const tok = TextTokenizer.fromJSON(pkg.tokenizerJson, pkg.tokenizerConfig, pkg.config.eosTokenIds[0]);

  let backend = gpu.backend;
  // Severity 3 (error): ORT otherwise warns that shape ops run on the CPU, which is by design.
  const sessionOptions = { logSeverityLevel: 3 as const };
  let session: DecoderSession;
  try {
    session = await DecoderSession.create(ort, pkg.model, pkg.config, {
      executionProviders: [backend],
      sessionOptions,
    });
  } catch (e) {
    if (backend !== 'webgpu') throw e;
    console.warn('WebGPU session failed, falling back to wasm', e);
    backend = 'wasm';
    session = await DecoderSession.create(ort, pkg.model, pkg.config, {
      executionProviders: ['wasm'],
      sessionOptions,
    });
  }
  $('backend').textContent = backend;
  document.body.dataset.backend = backend;
  progressText.textContent = `${mb(pkg.model.byteLength)} loaded`;

  $<HTMLFormElement>('gen-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    button.disabled = true;
    document.body.dataset.state = 'generating';
    const prompt = $<HTMLTextAreaElement>('prompt').value;
    const maxNew = Math.max(1, Math.min(256, Number($<HTMLInputElement>('max-tokens').value) || 48));
    const ids = tok.encode(prompt);
    const gen: number[] = [];
    out.replaceChildren(
      Object.assign(document.createElement('span'), { className: 'prompt', textContent: prompt }),
    );
    const cont = out.appendChild(document.createElement('span'));
    const t0 = performance.now();
    try {
      if (ids.length === 0) throw new Error('Type a prompt first.');
      await session.greedy(ids, maxNew, {
        onToken: (id) => {
          gen.push(id);
          cont.textContent = tok.decode(gen);
        },
      });
      const s = (performance.now() - t0) / 1000;
      $('stats').textContent =
        `${gen.length} tokens in ${s.toFixed(2)} s (${(gen.length / s).toFixed(1)} tok/s, ${backend})`;
      document.body.dataset.state = 'ready';
    } catch (e) {
      showError(e);
    } finally {
      button.disabled = false;
    }
  });
  button.disabled = false;
  document.body.dataset.state = 'ready';
}

main().catch(showError);
