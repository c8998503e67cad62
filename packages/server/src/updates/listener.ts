import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '@rampart/shared/logging';
import { HotArtifacts } from './artifacts/hot-cache.js';
import type { ServedKind, UpdatesService } from './service.js';

export interface UpdatesListener {
  server: Server;
  listen(opts: { host: string; port: number }): Promise<AddressInfo>;
  close(): Promise<void>;
}

const METADATA = /^\/metadata\/(?:(\d{1,9})\.)?([a-z0-9][a-z0-9._-]{0,62})\.json$/;
const TARGET = /^\/targets\/(?:[A-Za-z0-9][A-Za-z0-9._+-]*\/)*([0-9a-f]{64})\.[A-Za-z0-9][A-Za-z0-9._+-]*$/;

/** `bytes=a-b`, `bytes=a-`, `bytes=-n` against a file of `size` bytes; null when unsatisfiable, undefined when absent. */
export function parseRange(
  header: string | undefined,
  size: number,
): { start: number; end: number } | null | undefined {
  if (!header) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null;
  let start: number;
  let end: number;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0) return null;
    start = Math.max(0, size - n);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (start > end || start >= size) return null;
  return { start, end };
}

/**
 * The updates listener: TUF metadata under `/metadata/` (consistent snapshots: `<version>.<role>.json`,
 * and `timestamp.json`) and published targets under `/targets/` as `<sha256>.<name>`, with HTTP
 * range requests. Plain HTTP: everything it serves is verified by the client against signed metadata.
 */
/** Versioned metadata documents kept in memory: they never change once written. */
const DOCUMENT_CACHE = 256;
/** How long an answer "these bytes may be served" is remembered (a release stays published). */
const SERVABLE_TTL_MS = 5000;

export function buildUpdatesListener(updates: UpdatesService, logger: Logger): UpdatesListener {
  const served = (kind: ServedKind, bytes: number) => updates.served(kind, bytes);
  const documents = new Map<string, string>();
  const document = async (role: string, version: number | undefined): Promise<string | null> => {
    if (version === undefined) return updates.repository.document(updates.storage.db, role);
    const key = `${version}.${role}`;
    const hit = documents.get(key);
    if (hit !== undefined) return hit;
    const doc = await updates.repository.document(updates.storage.db, role, version);
    if (doc !== null) {
      if (documents.size >= DOCUMENT_CACHE) documents.delete(documents.keys().next().value!);
      documents.set(key, doc);
    }
    return doc;
  };
  const hot = new HotArtifacts(updates.artifacts, updates.settings.artifactCacheBytes);
  const servable = new Map<string, { kind: 'target' | 'delta'; until: number }>();
  const servableKind = async (sha256: string): Promise<'target' | 'delta' | null> => {
    const hit = servable.get(sha256);
    if (hit && hit.until > Date.now()) return hit.kind;
    const kind = await updates.servableKind(sha256);
    if (kind) {
      if (servable.size >= DOCUMENT_CACHE) servable.delete(servable.keys().next().value!);
      servable.set(sha256, { kind, until: Date.now() + SERVABLE_TTL_MS });
    }
    return kind;
  };
  const send = (res: ServerResponse, status: number, text: string) => {
    res.writeHead(status, {
      'content-type': 'text/plain; charset=utf-8',
      'content-length': Buffer.byteLength(text),
    });
    res.end(text);
  };
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      return send(res, 405, 'method not allowed\n');
    }
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const meta = METADATA.exec(path);
    if (meta) {
      const version = meta[1] === undefined ? undefined : Number(meta[1]);
      const role = meta[2]!;
      // Under consistent snapshots only the timestamp (and the newest root, for bootstrapping) go unversioned.
      if (version === undefined && role !== 'timestamp' && role !== 'root')
        return send(res, 404, 'not found\n');
      const doc = await document(role, version);
      if (doc === null) return send(res, 404, 'not found\n');
      if (req.method !== 'HEAD') served('metadata', Buffer.byteLength(doc));
      res.writeHead(200, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(doc),
        'cache-control': version === undefined ? 'no-cache' : 'public, max-age=31536000, immutable',
      });
      return res.end(req.method === 'HEAD' ? undefined : doc);
    }
    const target = TARGET.exec(path);
    if (target) {
      const sha256 = target[1]!;
      const kind = await servableKind(sha256);
      if (!kind) return send(res, 404, 'not found\n');
      const size = updates.artifacts.size(sha256);
      if (size === null) return send(res, 404, 'not found\n');
      const range = parseRange(req.headers.range, size);
      if (range === null) {
        res.writeHead(416, { 'content-range': `bytes */${size}` });
        return res.end();
      }
      const headers: Record<string, string | number> = {
        'content-type': 'application/octet-stream',
        'accept-ranges': 'bytes',
        'cache-control': 'public, max-age=31536000, immutable',
        etag: `"${sha256}"`,
      };
      if (range) {
        headers['content-range'] = `bytes ${range.start}-${range.end}/${size}`;
        headers['content-length'] = range.end - range.start + 1;
      } else headers['content-length'] = size;
      // From memory when it is one of the artifacts being downloaded (checked against its address).
      const data = req.method === 'HEAD' ? null : await hot.get(sha256, size);
      res.writeHead(range ? 206 : 200, headers);
      if (req.method === 'HEAD') return res.end();
      if (data) {
        served(kind, Number(headers['content-length']));
        return res.end(range ? data.subarray(range.start, range.end + 1) : data);
      }
      const stream = updates.artifacts.open(sha256, range);
      if (!stream) return res.destroy();
      served(kind, Number(headers['content-length']));
      stream.on('error', (err) => {
        logger.error({ err, sha256 }, 'reading an artifact failed');
        res.destroy();
      });
      stream.pipe(res);
      return;
    }
    send(res, 404, 'not found\n');
  };
  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      logger.error({ err, url: req.url }, 'updates listener request failed');
      if (!res.headersSent) send(res, 500, 'internal error\n');
      else res.destroy();
    });
  });
  server.keepAliveTimeout = 10_000;
  return {
    server,
    listen: ({ host, port }) =>
      new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          resolve(server.address() as AddressInfo);
        });
      }),
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
