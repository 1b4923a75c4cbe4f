// The model loader (engine/load.ts + engine/model-files.ts) in real Chromium against a Hugging Face-style
// host simulated by an injected fetch that serves packages built from the committed layout replicas
// (tests/helpers/replica-package.ts): external data split into 2 chunks (config says 2, and graph-only
// detection) loads on wasm and gives the PyTorch oracle's logits; a connection cut mid-file is resumed
// with `Range: bytes=N-` and the bytes are identical (the server counts what it sent); a quota too small
// → QuotaError before any byte is downloaded or cached; a missing dtype file → DtypeUnavailableError
// listing the dtypes the repo has; HTTP and CORS failures → FetchError. Real Cache Storage throughout.
import * as ort from 'onnxruntime-web';
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BASE_SESSION_MAX_BYTES, type LoadedModel, loadModel } from '../../src/engine/load.ts';
import { fetchModelFiles } from '../../src/engine/model-files.ts';
import { KvStepper } from '../../src/engine/session.ts';
import type { LoadProgress } from '../../src/engine/types.ts';
import { DtypeUnavailableError, FetchError, QuotaError, UnsupportedError } from '../../src/errors.ts';
import { expectClose } from '../helpers/expect-close.ts';
import { replicaPackage } from '../helpers/replica-package.ts';
import { loadReplicaSet, oracleLogits, type ReplicaSet } from '../helpers/replicas.ts';

ort.env.wasm.wasmPaths = new URL('/ort/', location.href).href;
ort.env.wasm.numThreads = 1;

const FIXTURES = '/tests/fixtures/replicas/';
const read = async (p: string) => {
  const r = await fetch(FIXTURES + p);
  if (!r.ok) throw new Error(`fetch ${p}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
};
const HUB = 'https://huggingface.co/weblora-test/tiny-replica';
const BASE = `${HUB}/resolve/main/`;
const CACHE = 'weblora-test-loader';

interface Served {
  method: string;
  path: string;
  range: string | null;
  ifRange: string | null;
  status: number;
  bytesSent: number;
}

/**
 * An HF-like static host as a fetch: GET/HEAD, ETag, `Range: bytes=N-` (206 + Content-Range, honouring
 * If-Range), 404 for unknown paths. `cut` drops the connection of the first GET of a path after N bytes.
 */
function host(files: Map<string, Uint8Array>, opts: { cut?: { path: string; at: number } } = {}) {
  const log: Served[] = [];
  let cutDone = false;
  const etag = (p: string) => `"${p.length}-${files.get(p)!.byteLength}"`;
  const fetchFn: typeof fetch = async (input, init) => {
    const url = String(input instanceof Request ? input.url : input);
    const method = init?.method ?? 'GET';
    const headers = new Headers(init?.headers);
    if (!url.startsWith(BASE)) throw new TypeError('Failed to fetch');
    const path = url.slice(BASE.length);
    const entry: Served = {
      method,
      path,
      range: headers.get('Range'),
      ifRange: headers.get('If-Range'),
      status: 200,
      bytesSent: 0,
    };
    log.push(entry);
    const body = files.get(path);
    if (!body) {
      entry.status = 404;
      return new Response('Entry not found', { status: 404, headers: { 'Content-Type': 'text/plain' } });
    }
    let start = 0;
    const m = /^bytes=(\d+)-$/.exec(entry.range ?? '');
    if (m && (entry.ifRange === null || entry.ifRange === etag(path))) start = Number(m[1]);
    const part = body.subarray(start);
    const h = new Headers({
      'Content-Type': 'application/octet-stream',
      'Content-Length': String(part.byteLength),
      ETag: etag(path),
      'Accept-Ranges': 'bytes',
    });
    if (start > 0) h.set('Content-Range', `bytes ${start}-${body.byteLength - 1}/${body.byteLength}`);
    entry.status = start > 0 ? 206 : 200;
    if (method === 'HEAD') return new Response(null, { status: entry.status, headers: h });
    const cutAt = opts.cut && opts.cut.path === path && !cutDone ? opts.cut.at : null;
    if (cutAt !== null) cutDone = true;
    // Pull-based, one 4 KiB chunk per read, so a cut happens after the reader has taken the bytes before it
    // (erroring a stream discards chunks still queued).
    const end = cutAt ?? part.byteLength;
    let o = 0;
    const stream = new ReadableStream<Uint8Array>(
      {
        pull(c) {
          if (o >= end) {
            if (cutAt !== null) c.error(new TypeError('network error: connection reset'));
            else c.close();
            return;
          }
          const chunk = part.slice(o, Math.min(end, o + 4096));
          o += chunk.byteLength;
          entry.bytesSent += chunk.byteLength;
          c.enqueue(chunk);
        },
      },
      { highWaterMark: 0 },
    );
    return new Response(stream, { status: entry.status, headers: h });
  };
  return { fetch: fetchFn, log };
}

async function load(
  fetchFn: typeof fetch,
  opts: {
    dtype?: 'fp32' | 'fp16' | 'q4' | 'q4f16';
    source?: string;
    estimate?: () => Promise<StorageEstimate>;
  } = {},
  progress: LoadProgress[] = [],
): Promise<LoadedModel> {
  return loadModel(
    ort,
    opts.source ?? HUB,
    { backend: 'wasm', ...(opts.dtype ? { dtype: opts.dtype } : {}) },
    {
      files: { fetch: fetchFn, cacheName: CACHE, ...(opts.estimate ? { estimate: opts.estimate } : {}) },
      beforeSessions: async () => {},
      onDeviceLost: () => {},
    },
    (p) => progress.push(p),
  );
}

async function cachedPaths(): Promise<string[]> {
  const out: string[] = [];
  for (const name of [CACHE, `${CACHE}-partial`]) {
    const c = await caches.open(name);
    for (const r of await c.keys())
      out.push(`${name === CACHE ? '' : 'partial:'}${r.url.slice(BASE.length)}`);
  }
  return out.sort();
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection');
}

function sameBytes(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  if (!a || !b || a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

let set: ReplicaSet;
let split: Map<string, Uint8Array>;
beforeAll(async () => {
  set = await loadReplicaSet(read);
  split = await replicaPackage(read, { files: { fp32: 'builder/model.onnx' }, chunks: 2 });
});
beforeEach(async () => {
  await caches.delete(CACHE);
  await caches.delete(`${CACHE}-partial`);
});

async function baseLogits(m: LoadedModel): Promise<Float32Array> {
  const stepper = new KvStepper(ort, m.graph, m.noAdapterFeeds);
  try {
    return await stepper.step(set.prompt, { allLogits: true });
  } finally {
    stepper.dispose();
  }
}

describe('external data in chunks', () => {
  it('config says 2: both chunks fetched, cached, passed under the graph names; oracle logits', async () => {
    expect([...split.keys()].filter((p) => p.includes('onnx_data'))).toEqual([
      'onnx/model.onnx_data',
      'onnx/model.onnx_data_1',
    ]);
    const server = host(split);
    const progress: LoadProgress[] = [];
    const m = await load(server.fetch, { dtype: 'fp32' }, progress);
    try {
      // Every file downloaded once (config.json read ahead is reused, not fetched again).
      const gets = server.log.filter((r) => r.method === 'GET').map((r) => r.path);
      expect(gets.sort()).toEqual([...split.keys()].sort());
      expect(m.report.externalDataChunks).toBe(2);
      expect(m.report.layout).toMatchObject({
        family: 'builder',
        weights: 'fp32',
        packedQkv: true,
        externalData: true,
      });
      expect(m.report.dtype).toBe('fp32');
      const chunkBytes =
        split.get('onnx/model.onnx_data')!.byteLength + split.get('onnx/model.onnx_data_1')!.byteLength;
      expect(m.report.externalDataBytes).toBe(chunkBytes);
      expect(m.report.modelBytes).toBe(split.get('onnx/model.onnx')!.byteLength + chunkBytes);
      expectClose(await baseLogits(m), oracleLogits(set, 'base'), { atol: 1e-4, rtol: 1e-4 });
      // Per-file and total progress: the last download event of each chunk is complete; totals known.
      const last = new Map<string, LoadProgress>();
      for (const p of progress) if (p.stage === 'download' && p.file) last.set(p.file, p);
      for (const f of ['onnx/model.onnx_data', 'onnx/model.onnx_data_1']) {
        expect(last.get(f)?.fileLoaded).toBe(split.get(f)!.byteLength);
      }
      const downloads = progress.filter((p) => p.stage === 'download');
      expect(downloads.at(-1)!.loaded).toBe(downloads.at(-1)!.total);
      expect(await cachedPaths()).toEqual([
        'config.json',
        'generation_config.json',
        'onnx/model.onnx',
        'onnx/model.onnx_data',
        'onnx/model.onnx_data_1',
        'tokenizer.json',
        'tokenizer_config.json',
      ]);
    } finally {
      await m.release();
    }
    // Second load: every file from Cache Storage, no GET at all.
    const again = host(split);
    const m2 = await load(again.fetch, { dtype: 'fp32' });
    try {
      expect(again.log.filter((r) => r.method === 'GET' && r.path !== 'config.json')).toEqual([]);
      expect(m2.report.externalDataChunks).toBe(2);
    } finally {
      await m2.release();
    }
  });

  it('config silent: the chunks come from the graph external_data references', async () => {
    const silent = await replicaPackage(read, {
      files: { fp32: 'builder/model.onnx' },
      chunks: 2,
      declareChunks: false,
    });
    const server = host(silent);
    const m = await load(server.fetch, { dtype: 'fp32' });
    try {
      expect(m.report.externalDataChunks).toBe(2);
      expect(server.log.filter((r) => r.method === 'GET').map((r) => r.path)).toContain(
        'onnx/model.onnx_data_1',
      );
      expectClose(await baseLogits(m), oracleLogits(set, 'base'), { atol: 1e-4, rtol: 1e-4 });
    } finally {
      await m.release();
    }
  });
});

describe('dtype default and picked folders', () => {
  it('no dtype: q4 when the repo has it (HEAD), else fp32', async () => {
    const both = host(
      await replicaPackage(read, { files: { fp32: 'optimum/model.onnx', q4: 'optimum/model_q4.onnx' } }),
    );
    const m = await load(both.fetch);
    try {
      expect(m.report.dtype).toBe('q4');
      expect(m.report.layout.weights).toBe('q4');
      expect(both.log.filter((r) => r.method === 'GET').map((r) => r.path)).not.toContain('onnx/model.onnx');
    } finally {
      await m.release();
    }
    await caches.delete(CACHE);
    const fp32 = host(await replicaPackage(read, { files: { fp32: 'optimum/model.onnx' } }));
    const m2 = await load(fp32.fetch);
    try {
      expect(m2.report.dtype).toBe('fp32');
      expect(fp32.log.find((r) => r.path === 'onnx/model_q4.onnx')).toMatchObject({
        method: 'HEAD',
        status: 404,
      });
    } finally {
      await m2.release();
    }
  });

  it('a picked folder with 2 external-data chunks loads and gives the oracle logits', async () => {
    const picked = [...split].map(([p, b]) => {
      const f = new File([b as Uint8Array<ArrayBuffer>], p.split('/').at(-1)!);
      Object.defineProperty(f, 'webkitRelativePath', { value: `tiny-replica/${p}` });
      return f;
    });
    const m = await loadModel(
      ort,
      picked,
      { backend: 'wasm' },
      { beforeSessions: async () => {}, onDeviceLost: () => {} },
      () => {},
    );
    try {
      expect(m.report).toMatchObject({ dtype: 'fp32', externalDataChunks: 2, modelId: 'tiny-replica' });
      expectClose(await baseLogits(m), oracleLogits(set, 'base'), { atol: 1e-4, rtol: 1e-4 });
    } finally {
      await m.release();
    }
  });
});

describe('resume after a cut download', () => {
  it('the retry sends Range: bytes=N- and the result is byte-identical', async () => {
    const path = 'onnx/model.onnx_data';
    const full = split.get(path)!;
    const at = 40_960;
    const server = host(split, { cut: { path, at } });
    const got = await fetchModelFiles(BASE, [{ path }], { fetch: server.fetch, cacheName: CACHE });
    expect(sameBytes(got.get(path), full)).toBe(true);
    const gets = server.log.filter((r) => r.method === 'GET' && r.path === path);
    expect(gets.map((r) => [r.range, r.status, r.bytesSent])).toEqual([
      [null, 200, at],
      [`bytes=${at}-`, 206, full.byteLength - at],
    ]);
    expect(gets[1]!.ifRange).toBe(`"${path.length}-${full.byteLength}"`);
    expect(await cachedPaths()).toEqual([path]); // complete copy cached, partial entry gone
  });

  it('without retries the call fails, keeps only a partial entry, and the next call resumes', async () => {
    const path = 'onnx/model.onnx_data';
    const full = split.get(path)!;
    const at = 8192;
    const server = host(split, { cut: { path, at } });
    const e = await rejection(
      fetchModelFiles(BASE, [{ path }], { fetch: server.fetch, cacheName: CACHE, retries: 0 }),
    );
    expect(e).toBeInstanceOf(FetchError);
    expect((e as FetchError).data).toMatchObject({ loaded: at, resumable: true });
    // Nothing half-cached is served as complete: only the partial bucket holds the bytes.
    expect(await cachedPaths()).toEqual([`partial:${path}`]);
    const got = await fetchModelFiles(BASE, [{ path }], {
      fetch: server.fetch,
      cacheName: CACHE,
      retries: 0,
    });
    expect(sameBytes(got.get(path), full)).toBe(true);
    const gets = server.log.filter((r) => r.method === 'GET');
    expect(gets.map((r) => r.range)).toEqual([null, `bytes=${at}-`]);
    expect(gets.reduce((n, r) => n + r.bytesSent, 0)).toBe(full.byteLength); // no byte sent twice
    expect(await cachedPaths()).toEqual([path]);
  });

  it('a changed file (other ETag) is downloaded from the start', async () => {
    const path = 'onnx/model.onnx_data';
    const server = host(split, { cut: { path, at: 4096 } });
    await rejection(fetchModelFiles(BASE, [{ path }], { fetch: server.fetch, cacheName: CACHE, retries: 0 }));
    const changed = new Map(split);
    changed.set(path, split.get('onnx/model.onnx_data_1')!); // new content, new length → new ETag
    const server2 = host(changed);
    const got = await fetchModelFiles(BASE, [{ path }], { fetch: server2.fetch, cacheName: CACHE });
    expect(sameBytes(got.get(path), changed.get(path))).toBe(true);
    expect(server2.log.filter((r) => r.method === 'GET').map((r) => r.status)).toEqual([200]);
  });
});

describe('typed failures', () => {
  it('quota too small → QuotaError (needed vs available) and nothing cached or downloaded', async () => {
    const server = host(split);
    const files = [...split.keys()].filter((p) => p.startsWith('onnx/')).map((path) => ({ path }));
    const e = await rejection(
      fetchModelFiles(BASE, files, {
        fetch: server.fetch,
        cacheName: CACHE,
        probeSizes: true,
        estimate: async () => ({ quota: 100_000, usage: 50_000 }),
      }),
    );
    expect(e).toBeInstanceOf(QuotaError);
    const needed = files.reduce((n, f) => n + split.get(f.path)!.byteLength, 0);
    expect((e as QuotaError).data).toMatchObject({ needed, available: 50_000 });
    expect(server.log.filter((r) => r.method === 'GET')).toEqual([]);
    expect(await cachedPaths()).toEqual([]);
  });

  it('loadModel with too small a quota → QuotaError before any model byte; nothing cached', async () => {
    const server = host(split);
    const e = await rejection(
      load(server.fetch, { dtype: 'fp32', estimate: async () => ({ quota: 200_000, usage: 190_000 }) }),
    );
    expect(e).toBeInstanceOf(QuotaError);
    const onnx = [...split.keys()].filter((p) => p.startsWith('onnx/'));
    const needed = onnx.reduce((n, p) => n + split.get(p)!.byteLength, 0);
    expect((e as QuotaError).data).toMatchObject({ needed, available: 10_000 });
    expect(server.log.filter((r) => r.method === 'GET').map((r) => r.path)).toEqual(['config.json']);
    expect(await cachedPaths()).toEqual([]);
  });

  it('missing dtype file → DtypeUnavailableError listing the dtypes the repo has', async () => {
    const pkg = await replicaPackage(read, {
      files: { fp32: 'optimum/model.onnx', q4: 'optimum/model_q4.onnx' },
    });
    const server = host(pkg);
    const e = await rejection(load(server.fetch, { dtype: 'q4f16' }));
    expect(e).toBeInstanceOf(DtypeUnavailableError);
    expect((e as DtypeUnavailableError).data).toMatchObject({
      dtype: 'q4f16',
      file: 'onnx/model_q4f16.onnx',
      available: ['fp32', 'q4'],
    });
    expect((e as Error).message).toContain('fp32 (onnx/model.onnx), q4 (onnx/model_q4.onnx)');
    // Found out with HEAD requests before anything was downloaded or cached.
    expect(server.log.filter((r) => r.method === 'GET').map((r) => r.path)).toEqual(['config.json']);
    expect(await cachedPaths()).toEqual([]);
  });

  it('picked files without the dtype → DtypeUnavailableError listing the picked dtypes', async () => {
    const pkg = await replicaPackage(read, { files: { fp16: 'optimum/model_fp16.onnx' } });
    const picked = [...pkg].map(([p, b]) => {
      const f = new File([b as Uint8Array<ArrayBuffer>], p.split('/').at(-1)!);
      Object.defineProperty(f, 'webkitRelativePath', { value: `tiny/${p}` });
      return f;
    });
    const e = await rejection(
      loadModel(
        ort,
        picked,
        { backend: 'wasm', dtype: 'q4' },
        { beforeSessions: async () => {}, onDeviceLost: () => {} },
        () => {},
      ),
    );
    expect(e).toBeInstanceOf(DtypeUnavailableError);
    expect((e as DtypeUnavailableError).data).toMatchObject({ dtype: 'q4', available: ['fp16'] });
    // The picked fp16 file loads (fp16 runs on wasm) with the default chosen from what was picked.
    const m = await loadModel(
      ort,
      picked,
      { backend: 'wasm', dtype: 'fp16' },
      { beforeSessions: async () => {}, onDeviceLost: () => {} },
      () => {},
    );
    try {
      expect(m.report.layout).toMatchObject({ family: 'optimum', weights: 'fp16', kvDtype: 'float16' });
    } finally {
      await m.release();
    }
  });

  it('HTTP 500 and a CORS-blocked host → FetchError with status / URL', async () => {
    const server = host(split);
    const failing: typeof fetch = async (input, init) => {
      if (String(input).endsWith('tokenizer.json')) return new Response('boom', { status: 500 });
      return server.fetch(input, init);
    };
    const e500 = await rejection(load(failing, { dtype: 'fp32' }));
    expect(e500).toBeInstanceOf(FetchError);
    expect((e500 as FetchError).data).toMatchObject({ status: 500, file: 'tokenizer.json' });
    const cors: typeof fetch = () => Promise.reject(new TypeError('Failed to fetch'));
    const eCors = await rejection(load(cors, { source: 'https://elsewhere.example/model/' }));
    expect(eCors).toBeInstanceOf(FetchError);
    expect((eCors as Error).message).toMatch(/CORS/);
    expect((eCors as FetchError).data.url).toBe('https://elsewhere.example/model/config.json');
  });
});

/** A package as a picked folder (File objects with webkitRelativePath), as the demo's folder input gives. */
function pickedFolder(pkg: Map<string, Uint8Array>, name = 'tiny-replica'): File[] {
  return [...pkg].map(([p, b]) => {
    const f = new File([b as Uint8Array<ArrayBuffer>], p.split('/').at(-1)!);
    Object.defineProperty(f, 'webkitRelativePath', { value: `${name}/${p}` });
    return f;
  });
}

const loadPicked = (files: File[], backend: 'wasm' | 'webgpu' | 'auto', dtype?: 'q4f16') =>
  loadModel(
    ort,
    files,
    { backend, ...(dtype ? { dtype } : {}) },
    { beforeSessions: async () => {}, onDeviceLost: () => {} },
    () => {},
  );

describe('BASE_SESSION_MAX_BYTES counts external data', () => {
  it('a small .onnx whose external data passes the threshold gets no base session; under it, it does', async () => {
    const pkg = await replicaPackage(read, { files: { fp32: 'builder/model.onnx' } });
    const onnx = pkg.get('onnx/model.onnx')!.byteLength;
    const data = pkg.get('onnx/model.onnx_data')!;
    // Under: the replica as is (~280 KB in all) → the un-injected base session for "no adapter".
    const small = await loadPicked(pickedFolder(pkg), 'wasm');
    try {
      expect(small.report.modelBytes).toBe(onnx + data.byteLength);
      expect(small.report.baseSession).toBe(true);
      expect(small.baseGraph).not.toBeNull();
    } finally {
      await small.release();
    }
    // Over: the same graph with its external data padded past the threshold (the tensors' offsets are
    // unchanged; the tail is never read). The .onnx itself stays ~10 KB.
    const padded = new Uint8Array(BASE_SESSION_MAX_BYTES + 1024);
    padded.set(data);
    const big = new Map(pkg).set('onnx/model.onnx_data', padded);
    const m = await loadPicked(pickedFolder(big), 'wasm');
    try {
      expect(onnx).toBeLessThan(64 * 1024);
      expect(m.report.modelBytes).toBe(onnx + padded.byteLength);
      expect(m.report.modelBytes).toBeGreaterThan(BASE_SESSION_MAX_BYTES);
      expect(m.report.externalDataBytes).toBe(padded.byteLength);
      expect(m.report.baseSession).toBe(false);
      expect(m.baseGraph).toBeNull();
      // "No adapter" then runs on the injected graph with the no-adapter feeds: still the base model.
      expectClose(await baseLogits(m), oracleLogits(set, 'base'), { atol: 1e-4, rtol: 1e-4 });
    } finally {
      await m.release();
    }
  });
});

describe('float16 models on a WebGPU adapter without shader-f16 (SwiftShader)', () => {
  it('backend "webgpu" → UnsupportedError naming shader-f16 and the fix; auto → wasm', async () => {
    const adapter = await navigator.gpu.requestAdapter();
    expect(adapter!.features.has('shader-f16')).toBe(false); // SwiftShader: the premise of this test
    const files = pickedFolder(await replicaPackage(read, { files: { q4f16: 'builder-q4f16/model.onnx' } }));
    const err = await rejection(loadPicked(files, 'webgpu', 'q4f16'));
    expect(err).toBeInstanceOf(UnsupportedError);
    expect((err as UnsupportedError).data).toMatchObject({ feature: 'shader-f16', dtype: 'q4f16' });
    expect((err as Error).message).toMatch(/float16.*shader-f16.*backend "wasm"/);
    const m = await loadPicked(files, 'auto', 'q4f16');
    try {
      expect(m.report.backend).toBe('wasm');
      expect(m.report.dtype).toBe('q4f16');
    } finally {
      await m.release();
    }
  });
});
