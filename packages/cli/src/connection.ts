import { existsSync, readFileSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { resolve, join } from 'node:path';
import { Agent, request } from 'undici';
import type { Problem } from '@rampart/shared/problem';
import { CliError, EXIT, exitCodeForStatus } from './errors.js';

/** Options every command that talks to a running Rampart accepts. */
export interface ConnectionOptions {
  url?: string;
  token?: string;
  ca?: string;
  dataDir?: string;
}

export interface Connection {
  url: string;
  token: string | null;
  caPem: string | null;
  source: string;
}

export function dataDirOf(opts: { dataDir?: string }, env = process.env): string {
  return resolve(opts.dataDir ?? env.RAMPART_DATA_DIR ?? './rampart-data');
}

function readIfExists(path: string): string | null {
  return existsSync(path) ? readFileSync(path, 'utf8') : null;
}

/** The listeners a running `rampart up` wrote to `<data-dir>/runtime.json`, or null without one. */
export function runtimeListeners(dataDir: string): { name: string; url: string }[] | null {
  const runtime = readIfExists(join(dataDir, 'runtime.json'));
  if (!runtime) return null;
  return (JSON.parse(runtime) as { listeners?: { name: string; url: string }[] }).listeners ?? [];
}

/**
 * Find the platform: flags first, then RAMPART_URL / RAMPART_TOKEN / RAMPART_CA, then the files
 * `rampart up` leaves in the data directory (runtime.json, admin-token, ca.pem).
 */
export function resolveConnection(opts: ConnectionOptions, env = process.env): Connection {
  const dataDir = dataDirOf(opts, env);
  let url = opts.url ?? env.RAMPART_URL;
  let source = opts.url ? '--url' : env.RAMPART_URL ? 'RAMPART_URL' : '';
  if (!url) {
    const listeners = runtimeListeners(dataDir);
    if (listeners) {
      url = listeners.find((l) => l.name === 'api')?.url;
      source = join(dataDir, 'runtime.json');
    }
  }
  if (!url) {
    throw new CliError(`cannot find a running Rampart`, EXIT.unreachable, [
      `no --url given, RAMPART_URL is not set and ${join(dataDir, 'runtime.json')} does not exist`,
      'start one with `rampart up`, or point at one with --url https://host:port (or --data-dir DIR)',
    ]);
  }
  const tokenText = opts.token ?? env.RAMPART_TOKEN ?? readIfExists(join(dataDir, 'admin-token'));
  const caPath = opts.ca ?? env.RAMPART_CA ?? join(dataDir, 'ca.pem');
  const caPem = readIfExists(caPath);
  if ((opts.ca ?? env.RAMPART_CA) && !caPem)
    throw new CliError(`CA certificate ${caPath} does not exist`, EXIT.usage);
  return { url: url.replace(/\/+$/, ''), token: tokenText?.trim() || null, caPem, source };
}

export interface RequestOptions {
  method?: 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE';
  query?: Record<string, string | number | boolean | undefined>;
  body?: unknown;
  /** Send a raw body with this content type instead of JSON. */
  raw?: { contentType: string; data: string | Buffer | Readable };
  /** Treat these statuses as results rather than errors. */
  accept?: number[];
}

/** A small client for the management API. Problems (RFC 9457) become CliErrors with the server's words. */
export class ApiClient {
  private readonly dispatcher: Agent;

  constructor(readonly connection: Connection) {
    this.dispatcher = new Agent({
      connect: connection.caPem ? { ca: connection.caPem } : {},
      keepAliveTimeout: 10_000,
    });
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }

  async call<T>(path: string, options: RequestOptions = {}): Promise<{ status: number; body: T }> {
    const url = new URL(this.connection.url + path);
    for (const [k, v] of Object.entries(options.query ?? {}))
      if (v !== undefined) url.searchParams.set(k, String(v));
    const headers: Record<string, string> = { accept: 'application/json, application/problem+json' };
    if (this.connection.token) headers.authorization = `Bearer ${this.connection.token}`;
    let body: string | Buffer | Readable | undefined;
    if (options.raw) {
      headers['content-type'] = options.raw.contentType;
      body = options.raw.data;
    } else if (options.body !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(options.body);
    }
    let res;
    try {
      res = await request(url, {
        method: options.method ?? 'GET',
        headers,
        body,
        dispatcher: this.dispatcher,
      });
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException };
      const code = e.code ?? e.cause?.code ?? '';
      const hint =
        code.includes('CERT') || code.includes('SELF_SIGNED') || code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE'
          ? 'the server certificate is not trusted: pass --ca <data-dir>/ca.pem (or set RAMPART_CA)'
          : `is Rampart running? (url from ${this.connection.source})`;
      throw new CliError(`cannot reach ${this.connection.url}: ${e.message}`, EXIT.unreachable, [hint]);
    }
    const text = await res.body.text();
    const type = String(res.headers['content-type'] ?? '');
    const parsed = type.includes('json') && text ? (JSON.parse(text) as unknown) : text;
    if (res.statusCode >= 400 && !(options.accept ?? []).includes(res.statusCode)) {
      const problem = parsed as Partial<Problem>;
      const hints = (problem.errors ?? []).map((e) => `${e.field}: ${e.message}`);
      if (res.statusCode === 401 && !this.connection.token)
        hints.push('no token: pass --token or set RAMPART_TOKEN');
      throw new CliError(
        problem.detail ?? problem.title ?? `HTTP ${res.statusCode}`,
        exitCodeForStatus(res.statusCode),
        hints,
      );
    }
    return { status: res.statusCode, body: parsed as T };
  }

  async get<T>(path: string, query?: RequestOptions['query']): Promise<T> {
    return (await this.call<T>(path, { query })).body;
  }
  async post<T>(path: string, body?: unknown, query?: RequestOptions['query']): Promise<T> {
    return (await this.call<T>(path, { method: 'POST', body: body ?? {}, query })).body;
  }
  async patch<T>(path: string, body: unknown): Promise<T> {
    return (await this.call<T>(path, { method: 'PATCH', body })).body;
  }
  async put<T>(path: string, body: unknown): Promise<T> {
    return (await this.call<T>(path, { method: 'PUT', body })).body;
  }
  async delete<T>(path: string): Promise<T> {
    return (await this.call<T>(path, { method: 'DELETE' })).body;
  }
}

/** Run `fn` with a client for the resolved connection, closing it afterwards. */
export async function withClient<T>(
  opts: ConnectionOptions,
  fn: (client: ApiClient) => Promise<T>,
): Promise<T> {
  const client = new ApiClient(resolveConnection(opts));
  try {
    return await fn(client);
  } finally {
    await client.close();
  }
}
