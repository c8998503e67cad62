import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIALECTS } from '../test-support/databases.js';
import { startTestPlatform, type TestPlatform } from '../test-support/platform.js';

describe.each(DIALECTS)('management API on %s', (dialect) => {
  let t: TestPlatform;
  beforeAll(async () => {
    t = await startTestPlatform(dialect);
  });
  afterAll(async () => {
    await t?.close();
  });

  it('answers /healthz without a token', async () => {
    const r = await t.call('GET', '/healthz', { token: null });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ status: 'ok', checks: { database: 'ok' } });
  });

  it('refuses a missing token with 401 problem and audits the refusal', async () => {
    const r = await t.call('GET', '/api/v1/tokens', { token: null });
    expect(r.status).toBe(401);
    expect(r.headers['content-type']).toContain('application/problem+json');
    expect(r.headers['www-authenticate']).toContain('Bearer');
    expect(r.body).toMatchObject({
      status: 401,
      code: 'UNAUTHORIZED',
      type: 'urn:rampart:problem:unauthorized',
    });
    const entries = await t.platform.audit.list({ action: 'api.authenticate', newestFirst: true, limit: 1 });
    expect(entries[0]).toMatchObject({
      outcome: 'denied',
      actor: 'anonymous',
      target: 'GET /api/v1/tokens',
      details: { reason: 'missing' },
    });
  });

  it('refuses a forged token and never logs its secret', async () => {
    const forged = `rpt_${t.adminToken.slice(4, 16)}_${'A'.repeat(43)}`;
    const r = await t.call('GET', '/api/v1/tokens', { token: forged });
    expect(r.status).toBe(401);
    const [entry] = await t.platform.audit.list({ action: 'api.authenticate', newestFirst: true, limit: 1 });
    expect(entry?.details).toMatchObject({ reason: 'wrong-secret', tokenId: t.adminToken.slice(4, 16) });
    expect(JSON.stringify(entry)).not.toContain('A'.repeat(43));
  });

  it('refuses a role without the permission with 403 and audits it', async () => {
    const viewer = await t.tokenFor('viewer');
    const r = await t.call('POST', '/api/v1/tokens', { token: viewer, body: { name: 'x', role: 'admin' } });
    expect(r.status).toBe(403);
    expect(r.body.detail).toContain('token:manage');
    const [entry] = await t.platform.audit.list({ action: 'api.authorize', newestFirst: true, limit: 1 });
    expect(entry).toMatchObject({
      outcome: 'denied',
      details: { role: 'viewer', permission: 'token:manage' },
    });
  });

  it('rejects unknown fields and wrong types naming the field, and writes nothing', async () => {
    const before = (await t.call('GET', '/api/v1/tokens')).body.items.length;
    const unknown = await t.call('POST', '/api/v1/tokens', {
      body: { name: 'x', role: 'viewer', colour: 'red' },
    });
    expect(unknown.status).toBe(400);
    expect(unknown.body.errors).toContainEqual({ field: 'colour', message: 'is not a known field' });
    const wrongType = await t.call('POST', '/api/v1/tokens', { body: { name: 42, role: 'viewer' } });
    expect(wrongType.status).toBe(400);
    expect(wrongType.body.errors[0].field).toBe('name');
    const badRole = await t.call('POST', '/api/v1/tokens', { body: { name: 'x', role: 'root' } });
    expect(badRole.status).toBe(400);
    expect(badRole.body.errors[0]).toMatchObject({ field: 'role' });
    expect((await t.call('GET', '/api/v1/tokens')).body.items.length).toBe(before);
    const [failure] = await t.platform.audit.list({
      action: 'token.create',
      outcome: 'failure',
      newestFirst: true,
      limit: 1,
    });
    expect(failure?.details).toMatchObject({ status: 400, code: 'VALIDATION' });
  });

  it('rejects malformed JSON and oversize bodies with problems', async () => {
    const bad = await t.call('POST', '/api/v1/tokens', { raw: '{"name": ', contentType: 'application/json' });
    expect(bad.status).toBe(400);
    expect(bad.body.code).toBe('VALIDATION');
    const huge = await t.call('POST', '/api/v1/tokens', {
      body: { name: 'x'.repeat(2 * 1024 * 1024), role: 'viewer' },
    });
    expect(huge.status).toBe(413);
    expect(huge.body.code).toBe('PAYLOAD_TOO_LARGE');
  });

  it('creates, lists and revokes tokens; a revoked token stops working at once', async () => {
    const created = await t.call('POST', '/api/v1/tokens', {
      body: { name: 'ci', role: 'operator', expiresIn: '30d' },
    });
    expect(created.status).toBe(201);
    expect(created.body.token).toMatch(/^rpt_[a-z0-9]{12}_/);
    const id = created.body.record.id;
    const list = await t.call('GET', '/api/v1/tokens');
    const listed = list.body.items.find((i: { id: string }) => i.id === id);
    expect(listed).toMatchObject({ role: 'operator', state: 'active' });
    expect(JSON.stringify(list.body)).not.toContain(created.body.token);
    expect((await t.call('GET', '/api/v1/whoami', { token: created.body.token })).status).toBe(200);
    const revoked = await t.call('DELETE', `/api/v1/tokens/${id}`);
    expect(revoked.body.state).toBe('revoked');
    expect((await t.call('GET', '/api/v1/whoami', { token: created.body.token })).status).toBe(401);
  });

  it('will not revoke the last active admin token', async () => {
    const adminId = t.adminToken.slice(4, 16);
    const r = await t.call('DELETE', `/api/v1/tokens/${adminId}`);
    expect(r.status).toBe(409);
  });

  it('serves OpenAPI 3.1 and a docs page', async () => {
    const spec = await t.call('GET', '/openapi.json', { token: null });
    expect(spec.status).toBe(200);
    expect(spec.body.openapi).toBe('3.1.0');
    expect(Object.keys(spec.body.paths)).toEqual(
      expect.arrayContaining(['/api/v1/tokens', '/api/v1/audit/entries', '/healthz']),
    );
    const docs = await t.call('GET', '/docs/', { token: null });
    expect(docs.status).toBe(200);
    expect(String(docs.body)).toContain('swagger');
  });

  it('exposes Prometheus metrics to a permitted token only', async () => {
    expect((await t.call('GET', '/metrics', { token: null })).status).toBe(401);
    const r = await t.call('GET', '/metrics');
    expect(r.status).toBe(200);
    expect(r.body).toContain('rampart_http_requests_total');
    expect(r.body).toContain('rampart_audit_head_seq');
    // Every appended entry is counted, refusals and the platform's own entries included.
    expect(r.body).toMatch(/rampart_audit_entries_appended_total\{outcome="denied"\} [1-9]/);
    expect(r.body).toMatch(/rampart_audit_entries_appended_total\{outcome="success"\} [1-9]/);
  });

  it('answers unknown endpoints with a 404 problem', async () => {
    const r = await t.call('GET', '/api/v1/nothing-here');
    expect(r.status).toBe(404);
    expect(r.body.code).toBe('NOT_FOUND');
  });
});

describe('security log', () => {
  it('logs refused requests with their reason and source, never the presented secret', async () => {
    const t = await startTestPlatform('sqlite', {}, { captureLogs: true });
    try {
      const forged = `rpt_${t.adminToken.slice(4, 16)}_${'B'.repeat(43)}`;
      expect((await t.call('GET', '/api/v1/tokens', { token: forged })).status).toBe(401);
      const viewer = await t.tokenFor('viewer');
      expect((await t.call('GET', '/api/v1/tokens', { token: viewer })).status).toBe(403);
      const events = t.logs.map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(events).toContainEqual(
        expect.objectContaining({
          level: 40,
          event: 'api.authenticate.denied',
          reason: 'wrong-secret',
          sourceAddress: '127.0.0.1',
        }),
      );
      expect(events).toContainEqual(
        expect.objectContaining({
          level: 40,
          event: 'api.authorize.denied',
          role: 'viewer',
          permission: 'token:manage',
        }),
      );
      const all = t.logs.join('\n');
      expect(all).not.toContain('B'.repeat(43));
      expect(all).not.toContain(t.adminToken);
      expect(all).not.toContain(viewer);
    } finally {
      await t.close();
    }
  });
});

describe('rate limits', () => {
  it('limits each token separately and answers 429 problems', async () => {
    const t = await startTestPlatform('sqlite', { 'api.rateLimit.max': 5 });
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 7; i++) statuses.push((await t.call('GET', '/api/v1/whoami')).status);
      expect(statuses.slice(0, 5).every((s) => s === 200)).toBe(true);
      const limited = await t.call('GET', '/api/v1/whoami');
      expect(limited.status).toBe(429);
      expect(limited.body.code).toBe('RATE_LIMITED');
    } finally {
      await t.close();
    }
  });
});
