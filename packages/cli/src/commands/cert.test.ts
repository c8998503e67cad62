import { readFileSync, rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PkiPeers } from '../../../server/src/test-support/pki.js';
import { startTestPlatform, type TestPlatform } from '../../../server/src/test-support/platform.js';
import { cliEnvFor, runCli } from '../test-support/run-cli.js';

/** `3A9F01` → `3A:9F:01`, the way browsers and some tools print serials. */
const withColons = (hex: string) => (hex.length % 2 ? '0' + hex : hex).match(/../g)!.join(':');

// Every step spawns the CLI a few times; give them room on a busy machine.
describe('rampart cert', { timeout: 90_000 }, () => {
  let t: TestPlatform;
  let peers: PkiPeers;
  let env: Record<string, string>;
  const device = 'dw-cert-1';
  let first: string; // as openssl prints it: upper case
  let renewed: string;

  beforeAll(async () => {
    // Keep the first certificate valid on renewal, so revoking it revokes a lineage of two.
    t = await startTestPlatform('sqlite', { 'ca.supersedeOnRenewal': false });
    peers = new PkiPeers(t);
    env = cliEnvFor(t.dataDir);
    await peers.device(device);
    const created = await runCli(['enrollment', 'token', 'create', '--device', device, '--json'], { env });
    const { token } = JSON.parse(created.stdout);
    expect((await peers.enroll('c1', device, token)).status).toBe(200);
    expect((await peers.reenroll('c2', device, 'c1')).status).toBe(200);
    first = peers.serialOf('c1');
    renewed = peers.serialOf('c2');
  });
  afterAll(async () => {
    await t?.close();
    if (peers) rmSync(peers.dir, { recursive: true, force: true });
  });

  it('lists certificates by device, with their lineage', async () => {
    const r = await runCli(['cert', 'list', '--device', device, '--json'], { env });
    expect(r.code, r.stderr).toBe(0);
    const { items, next } = JSON.parse(r.stdout);
    expect(next).toBeNull();
    expect(items).toHaveLength(2);
    const byserial = Object.fromEntries(items.map((c: { serial: string }) => [c.serial, c]));
    expect(byserial[first.toLowerCase()]).toMatchObject({
      deviceId: device,
      state: 'valid',
      renewedFrom: null,
    });
    expect(byserial[renewed.toLowerCase()]).toMatchObject({
      deviceId: device,
      state: 'valid',
      renewedFrom: first.toLowerCase(),
      issuerId: 'issuing-1',
    });

    const human = await runCli(['cert', 'list', '--device', device], { env });
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/SERIAL\s+DEVICE\s+STATE\s+NOT AFTER\s+ISSUER\s+RENEWED FROM/);
    expect(human.stdout).toMatch(
      new RegExp(`${renewed.toLowerCase()}\\s+${device}\\s+valid\\s.*issuing-1\\s+${first.toLowerCase()}`),
    );
  });

  it('filters by profile, state and expiry, and follows every page with --all', async () => {
    const all = JSON.parse(
      (await runCli(['cert', 'list', '--limit', '1000', '--json'], { env })).stdout,
    ).items;
    expect(all.length).toBeGreaterThanOrEqual(3); // two device certificates, the server's own, OCSP signers
    const paged = await runCli(['cert', 'list', '--limit', '1', '--all', '--json'], { env });
    expect(paged.code, paged.stderr).toBe(0);
    expect(JSON.parse(paged.stdout)).toEqual({ items: all, next: null });

    const one = await runCli(['cert', 'list', '--limit', '1'], { env });
    expect(one.stdout).toMatch(/more: add --after [0-9a-f]+ \(or --all\)/);

    const servers = JSON.parse(
      (await runCli(['cert', 'list', '--profile', 'server', '--json'], { env })).stdout,
    );
    expect(servers.items.length).toBeGreaterThanOrEqual(1);
    expect(servers.items.every((c: { profile: string }) => c.profile === 'server')).toBe(true);

    // Device certificates live 24h; the server certificate 90 days.
    const soon = JSON.parse(
      (await runCli(['cert', 'list', '--expiring-within', '2d', '--json'], { env })).stdout,
    );
    const soonSerials = soon.items.map((c: { serial: string }) => c.serial);
    expect(soonSerials).toEqual(expect.arrayContaining([first.toLowerCase(), renewed.toLowerCase()]));
    expect(soonSerials).not.toContain(servers.items[0].serial);
    const days = JSON.parse(
      (await runCli(['cert', 'list', '--expiring-within', '365', '--json'], { env })).stdout,
    );
    expect(days.items.map((c: { serial: string }) => c.serial)).toContain(servers.items[0].serial);

    const bad = await runCli(['cert', 'list', '--expiring-within', 'soon'], { env });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('7d');
  });

  it('shows a certificate given its serial as openssl prints it, and its chain', async () => {
    const r = await runCli(['cert', 'show', withColons(first)], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(first.toLowerCase());
    expect(r.stdout).toContain(device);
    expect(r.stdout).toMatch(/state\s+valid/);

    const pem = await runCli(['cert', 'show', first, '--pem'], { env });
    expect(pem.stdout).toMatch(/^-----BEGIN CERTIFICATE-----\n[\s\S]+-----END CERTIFICATE-----\n$/);
    const issued = readFileSync(peers.path('c1.pem'), 'utf8');
    expect(issued.replace(/\s/g, '')).toContain(pem.stdout.replace(/\s/g, ''));

    const json = JSON.parse((await runCli(['cert', 'show', renewed, '--json'], { env })).stdout);
    expect(json).toMatchObject({ serial: renewed.toLowerCase(), renewedFrom: first.toLowerCase() });
    expect(json.certificatePem).toContain('BEGIN CERTIFICATE');

    const chainFile = peers.path('chain.pem');
    const chain = await runCli(['cert', 'chain', renewed, '--out', chainFile], { env });
    expect(chain.code, chain.stderr).toBe(0);
    expect(readFileSync(chainFile, 'utf8').match(/BEGIN CERTIFICATE/g)).toHaveLength(3);
    const verify = await peers.opensslStatus(
      'verify',
      '-CAfile',
      peers.rootCa,
      '-untrusted',
      chainFile,
      chainFile,
    );
    expect(verify.out).toContain(': OK');

    const missing = await runCli(['cert', 'show', 'deadbeef01'], { env });
    expect(missing.code).toBe(5);
    const invalid = await runCli(['cert', 'show', 'not-a-serial'], { env });
    expect(invalid.code).toBe(2);
    expect(invalid.stderr).toContain('hex');
  });

  it('revokes a certificate and everything renewed from it, printing every serial', async () => {
    const badReason = await runCli(['cert', 'revoke', first, '--reason', 'stolen'], { env });
    expect(badReason.code).toBe(2);
    expect(badReason.stderr).toContain('keyCompromise');
    const noReason = await runCli(['cert', 'revoke', first], { env });
    expect(noReason.code).toBe(2);

    const r = await runCli(
      ['cert', 'revoke', withColons(first).toLowerCase(), '--reason', 'key-compromise'],
      {
        env,
      },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('revoked 2 certificates (keyCompromise)');
    expect(r.stdout).toContain(`${first.toLowerCase()}  device ${device}`);
    expect(r.stdout).toContain(`${renewed.toLowerCase()}  device ${device}`);

    const revoked = JSON.parse(
      (await runCli(['cert', 'list', '--device', device, '--state', 'revoked', '--json'], { env })).stdout,
    );
    expect(revoked.items).toHaveLength(2);
    const shown = JSON.parse((await runCli(['cert', 'show', renewed, '--json'], { env })).stdout);
    expect(shown).toMatchObject({ state: 'revoked', revocationReason: 'keyCompromise' });
    expect((await runCli(['cert', 'show', renewed], { env })).stdout).toMatch(
      /state\s+revoked \(keyCompromise/,
    );

    const again = await runCli(['cert', 'revoke', first, '--reason', 'keyCompromise', '--json'], { env });
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ alreadyRevoked: true, revoked: [] });
  });

  it('exits 5 when revoking a serial Rampart never issued', async () => {
    const r = await runCli(['cert', 'revoke', '0123456789ABCDEF', '--reason', 'superseded'], { env });
    expect(r.code).toBe(5);
    expect(r.stderr).toContain('0123456789abcdef');
  });

  it('exits 4 when the role may not revoke', async () => {
    const viewer = await t.tokenFor('viewer');
    const r = await runCli(['cert', 'revoke', renewed, '--reason', 'superseded'], {
      env: { ...env, RAMPART_TOKEN: viewer },
    });
    expect(r.code).toBe(4);
    expect(r.stderr).toContain('certificate:revoke');
  });
});
