import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPlatform, type TestPlatform } from '../../../server/src/test-support/platform.js';
import { cliEnvFor, runCli } from '../test-support/run-cli.js';

describe('rampart token', () => {
  let t: TestPlatform;
  beforeAll(async () => {
    t = await startTestPlatform('sqlite');
  });
  afterAll(async () => {
    await t?.close();
  });

  it('creates a token, shows it once, lists it without the secret and revokes it', async () => {
    const env = cliEnvFor(t.dataDir);
    const created = await runCli(
      ['token', 'create', '--role', 'operator', '--name', 'ci', '--expires', '30d', '--json'],
      { env },
    );
    expect(created.code).toBe(0);
    const { token, record } = JSON.parse(created.stdout);
    expect(token).toMatch(/^rpt_/);
    expect(record).toMatchObject({ role: 'operator', name: 'ci', state: 'active' });

    const list = await runCli(['token', 'list'], { env });
    expect(list.code).toBe(0);
    expect(list.stdout).toContain(record.id);
    expect(list.stdout).not.toContain(token);

    const who = await runCli(['token', 'whoami', '--json'], { env: { ...env, RAMPART_TOKEN: token } });
    expect(JSON.parse(who.stdout)).toMatchObject({ role: 'operator' });

    const revoked = await runCli(['token', 'revoke', record.id], { env });
    expect(revoked.code).toBe(0);
    const refused = await runCli(['token', 'whoami'], { env: { ...env, RAMPART_TOKEN: token } });
    expect(refused.code).toBe(4);
    expect(refused.stderr).toContain('revoked');
  });

  it('exits 2 with the allowed roles for an unknown role', async () => {
    const r = await runCli(['token', 'create', '--role', 'root'], { env: cliEnvFor(t.dataDir) });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('admin, operator, release-manager, auditor, viewer');
  });

  it('exits 4 when the role may not manage tokens', async () => {
    const viewer = await t.tokenFor('viewer');
    const r = await runCli(['token', 'list'], { env: cliEnvFor(t.dataDir, { RAMPART_TOKEN: viewer }) });
    expect(r.code).toBe(4);
    expect(r.stderr).toContain('token:manage');
  });

  it('exits 3 with advice when no platform can be found', async () => {
    const r = await runCli(['token', 'list'], { env: cliEnvFor('/nonexistent-rampart-dir') });
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('rampart up');
  });

  it('prints help with examples', async () => {
    const r = await runCli(['token', 'create', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('Examples:');
  });
});
