import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { createLogger } from '@rampart/shared/logging';
import { loadServerConfig } from '../config/index.js';
import { startPlatform, type Platform } from '../platform.js';
import type { SqlDialect } from '../storage/index.js';
import { createTestDatabase, type TestDatabase } from './databases.js';

export interface TestPlatform {
  platform: Platform;
  url: string;
  adminToken: string;
  dataDir: string;
  /** Call the API; JSON bodies are sent and parsed. */
  call(
    method: string,
    path: string,
    options?: {
      token?: string | null;
      body?: unknown;
      raw?: string | Buffer;
      contentType?: string;
      headers?: Record<string, string>;
    },
  ): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: any }>; // eslint-disable-line @typescript-eslint/no-explicit-any
  /** Create a token of `role` through the API and return its secret. */
  tokenFor(role: string): Promise<string>;
  /** Every log line the platform wrote (level info and above), when started with `captureLogs`. */
  logs: string[];
  close(): Promise<void>;
}

/** A whole platform on a temporary data directory and a free port, for API tests. */
export async function startTestPlatform(
  dialect: SqlDialect = 'sqlite',
  settings: Record<string, unknown> = {},
  options: { captureLogs?: boolean; env?: Record<string, string> } = {},
): Promise<TestPlatform> {
  const dataDir = mkdtempSync(join(tmpdir(), 'rampart-test-'));
  const db: TestDatabase = await createTestDatabase(dialect);
  const env = { RAMPART_KEYSTORE_PASSPHRASE: 'test passphrase for rampart', ...options.env };
  const { config } = loadServerConfig({
    env,
    flags: {
      dataDir,
      'api.port': 0,
      'est.port': 0,
      'pki.port': 0,
      'gateway.port': 0,
      'updates.port': 0,
      'database.url': db.url,
      'log.level': 'silent',
      ...settings,
    },
  });
  const logs: string[] = [];
  const logger = options.captureLogs
    ? createLogger({
        level: 'info',
        destination: { write: (line: string) => void logs.push(line) },
      })
    : createLogger({ level: 'silent' });
  const platform = await startPlatform(config, { env, logger });
  const url = platform.listeners.find((l) => l.name === 'api')!.url;
  const adminToken = platform.initialAdminToken!;
  const dispatcher = new Agent({ connect: { rejectUnauthorized: false } });

  const call: TestPlatform['call'] = async (method, path, options = {}) => {
    const headers: Record<string, string> = { ...(options.headers ?? {}) };
    const token = options.token === undefined ? adminToken : options.token;
    if (token) headers.authorization = `Bearer ${token}`;
    let body: string | Buffer | undefined;
    if (options.raw !== undefined) {
      body = options.raw;
      headers['content-type'] = options.contentType ?? 'text/plain';
    } else if (options.body !== undefined) {
      body = JSON.stringify(options.body);
      headers['content-type'] = 'application/json';
    }
    const res = await request(url + path, { method: method as 'GET', headers, body, dispatcher });
    const text = await res.body.text();
    const type = String(res.headers['content-type'] ?? '');
    return {
      status: res.statusCode,
      headers: res.headers,
      body: type.includes('json') && text ? JSON.parse(text) : text,
    };
  };

  return {
    platform,
    url,
    adminToken,
    dataDir,
    call,
    logs,
    async tokenFor(role) {
      const r = await call('POST', '/api/v1/tokens', { body: { name: `test ${role}`, role } });
      if (r.status !== 201) throw new Error(`token create failed: ${JSON.stringify(r.body)}`);
      return r.body.token as string;
    },
    async close() {
      await platform.stop('test');
      await dispatcher.close();
      await db.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
