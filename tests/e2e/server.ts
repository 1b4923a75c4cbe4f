/**
 * A minimal static file server (node:http) for the e2e tests: serves built folders under URL prefixes
 * (dist/ at '/', a sub-path build at '/some/base/', dist-lib/ at '/lib/') plus in-memory files (test
 * pages, test adapters), with correct MIME types (wasm, mjs, webmanifest) and no COOP/COEP headers —
 * like a plain static host. It deliberately has no SPA fallback (a missing file is a 404), no
 * compression and no range requests.
 */
import { createReadStream, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, join, normalize, sep } from 'node:path';

const MIME: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.webmanifest': 'application/manifest+json',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.onnx': 'application/octet-stream',
  '.safetensors': 'application/octet-stream',
  '.ts': 'text/plain; charset=utf-8',
};

export interface Mount {
  /** URL prefix with leading and trailing slash, e.g. '/some/base/'. */
  prefix: string;
  dir: string;
}

export interface StaticServer {
  origin: string;
  /** In-memory files by absolute URL path. */
  files: Map<string, { body: Uint8Array | string; type?: string }>;
  /** Paths requested so far (for debugging). */
  log: string[];
  close(): Promise<void>;
}

export async function startStaticServer(mounts: Mount[]): Promise<StaticServer> {
  const files = new Map<string, { body: Uint8Array | string; type?: string }>();
  const log: string[] = [];
  // Longest prefix first, so '/some/base/' wins over '/'.
  const sorted = [...mounts].sort((a, b) => b.prefix.length - a.prefix.length);
  const server: Server = createServer((req, res) => {
    const path = decodeURIComponent((req.url ?? '/').split('?')[0]!);
    log.push(path);
    const mem = files.get(path);
    if (mem) {
      const body = typeof mem.body === 'string' ? Buffer.from(mem.body) : Buffer.from(mem.body);
      res.writeHead(200, {
        'Content-Type': mem.type ?? MIME[extname(path)] ?? 'application/octet-stream',
        'Content-Length': body.byteLength,
        'Cache-Control': 'no-cache',
      });
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    for (const m of sorted) {
      if (!path.startsWith(m.prefix)) continue;
      let rel = path.slice(m.prefix.length);
      if (rel === '' || rel.endsWith('/')) rel += 'index.html';
      const file = normalize(join(m.dir, rel));
      if (!file.startsWith(m.dir + sep) && file !== m.dir) break;
      let size: number;
      try {
        const st = statSync(file);
        if (!st.isFile()) break;
        size = st.size;
      } catch {
        break;
      }
      res.writeHead(200, {
        'Content-Type': MIME[extname(file)] ?? 'application/octet-stream',
        'Content-Length': size,
        'Cache-Control': 'no-cache',
      });
      if (req.method === 'HEAD') res.end();
      else createReadStream(file).pipe(res);
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    res.end('not found');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    files,
    log,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
