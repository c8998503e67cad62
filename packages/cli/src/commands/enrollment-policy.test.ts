import { execFileSync } from 'node:child_process';
import { X509Certificate, createPrivateKey, createPublicKey, generateKeyPairSync, sign } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildCsr } from '@rampart/shared/pki';
import { startTestPlatform, type TestPlatform } from '../../../server/src/test-support/platform.js';
import { cliEnvFor, runCli } from '../test-support/run-cli.js';

/** `rampart enrollment policy`: group, claim and individual policies, and claim certificates. */
describe('rampart enrollment policy', { timeout: 60_000 }, () => {
  let t: TestPlatform;
  let dir: string;
  let env: Record<string, string>;
  const cli = (...args: string[]) => runCli(args, { env });
  const json = async (...args: string[]) => {
    const r = await cli(...args, '--json');
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout);
  };
  const file = (name: string, text: string) => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };
  /** SHA-256 of DER, computed by openssl rather than by the code under test. */
  const opensslSha256 = (script: string) =>
    execFileSync('bash', ['-c', `set -o pipefail; ${script} | sha256sum | cut -d' ' -f1`], { cwd: dir })
      .toString()
      .trim();

  beforeAll(async () => {
    t = await startTestPlatform('sqlite');
    env = cliEnvFor(t.dataDir);
    dir = mkdtempSync(join(tmpdir(), 'rampart-enrollment-policy-cli-'));
    expect((await t.call('POST', '/api/v1/device-models', { body: { id: 'DW100' } })).status).toBe(201);
    expect((await t.call('POST', '/api/v1/device-groups', { body: { id: 'berlin' } })).status).toBe(201);
  });
  afterAll(async () => {
    await t?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('group policy: create with placement, show, list, update (version 2), delete', async () => {
    const created = await json(
      'enrollment',
      'policy',
      'create',
      'line-3',
      '--kind',
      'group',
      '--issuer',
      'station:line-3',
      '--issuer',
      'manufacturer:acme',
      '--models',
      'DW100,GW2',
      '--model',
      'DW100',
      '--group',
      'berlin',
      '--attr',
      'region=eu',
      '--attr',
      'floor:=3',
      '--shadow',
      '{"interval":30}',
      '--description',
      'Line 3',
    );
    expect(created).toMatchObject({
      name: 'line-3',
      kind: 'group',
      version: 1,
      enabled: true,
      description: 'Line 3',
      config: { issuers: ['station:line-3', 'manufacturer:acme'], models: ['DW100', 'GW2'] },
      placement: {
        model: 'DW100',
        groups: ['berlin'],
        attributes: { region: 'eu', floor: 3 },
        shadow: { interval: 30 },
      },
    });

    const shown = await cli('enrollment', 'policy', 'show', 'line-3');
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).toMatch(/issuers\s+station:line-3, manufacturer:acme/);
    expect(shown.stdout).toMatch(/placement\s+model DW100; groups berlin; 2 attributes; shadow/);
    expect(shown.stdout).toContain('attribute floor = 3');
    const list = await cli('enrollment', 'policy', 'list');
    expect(list.stdout).toMatch(/factory\s+group\s+1\s+yes\s+issuers \*/);
    expect(list.stdout).toMatch(
      /line-3\s+group\s+1\s+yes\s+issuers station:line-3, manufacturer:acme; models DW100, GW2/,
    );

    const updated = await json(
      'enrollment',
      'policy',
      'update',
      'line-3',
      '--disable',
      '--attr',
      'region=us',
    );
    expect(updated).toMatchObject({
      version: 2,
      enabled: false,
      config: created.config,
      placement: { ...created.placement, attributes: { region: 'us', floor: 3 } },
    });
    const nothing = await cli('enrollment', 'policy', 'update', 'line-3');
    expect(nothing.code).toBe(2);
    expect(nothing.stderr).toContain('nothing to change');

    const merged = await json(
      'enrollment',
      'policy',
      'create',
      'cj',
      '--kind',
      'group',
      '--config-json',
      '{"issuers":["rampart"]}',
    );
    expect(merged.config).toEqual({ issuers: ['rampart'] });

    expect((await cli('enrollment', 'policy', 'delete', 'line-3')).code).toBe(0);
    const gone = await cli('enrollment', 'policy', 'show', 'line-3');
    expect(gone.code).toBe(5);
    expect(gone.stderr).toContain('rampart enrollment policy list');
    expect((await cli('enrollment', 'policy', 'delete', 'line-3')).code).toBe(5);
    expect((await cli('enrollment', 'policy', 'update', 'line-3', '--enable')).code).toBe(5);
  });

  it('refuses flags of another kind, bad JSON, a taken name and a placement the registry lacks', async () => {
    const wrong = await cli('enrollment', 'policy', 'create', 'x', '--kind', 'group', '--batch', 'b-1');
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toContain('--batch is for claim policies, and this one is a group policy');
    expect((await cli('enrollment', 'policy', 'update', 'factory', '--device', 'dw-1')).code).toBe(2);
    expect((await cli('enrollment', 'policy', 'update', 'factory', '--disallow', 'dw-1')).code).toBe(2);
    expect(
      (await cli('enrollment', 'policy', 'create', 'x', '--kind', 'group', '--shadow', '[1]')).code,
    ).toBe(2);
    expect(
      (await cli('enrollment', 'policy', 'create', 'x', '--kind', 'group', '--config-json', '{oops')).code,
    ).toBe(2);
    expect((await cli('enrollment', 'policy', 'create', 'factory', '--kind', 'group')).code).toBe(6);
    const noGroup = await cli(
      'enrollment',
      'policy',
      'create',
      'x',
      '--kind',
      'group',
      '--group',
      'atlantis',
    );
    expect(noGroup.code).toBe(2);
    expect(noGroup.stderr).toContain('atlantis');
    const names = (await json('enrollment', 'policy', 'list')).map((p: { name: string }) => p.name);
    expect(names).not.toContain('x');
  });

  it('claim policy: allowlist from flags and a file; update adds and removes ids', async () => {
    const ids = file('b-2026.ids', '# batch b-2026, line 1\ndw-3\ndw-4  # spare\n\ndw-5,dw-1\n');
    const noBatch = await cli(
      'enrollment',
      'policy',
      'create',
      'b-claim',
      '--kind',
      'claim',
      '--allow',
      'dw-1',
    );
    expect(noBatch.code).toBe(2);
    expect(noBatch.stderr).toContain('--batch');
    const created = await json(
      'enrollment',
      'policy',
      'create',
      'b-claim',
      '--kind',
      'claim',
      '--batch',
      'b-2026',
      '--allow',
      'dw-1,dw-2',
      '--allow',
      'dw-3',
      '--allow-file',
      ids,
      '--rate',
      '30',
    );
    expect(created.config).toEqual({
      batch: 'b-2026',
      allowlist: ['dw-1', 'dw-2', 'dw-3', 'dw-4', 'dw-5'],
      ratePerMinute: 30,
    });
    const shown = await cli('enrollment', 'policy', 'show', 'b-claim');
    expect(shown.stdout).toMatch(/allowlist\s+5 devices: dw-1, dw-2, dw-3, dw-4, dw-5/);
    expect(shown.stdout).toMatch(/rate\s+30 enrollments a minute/);

    const updated = await json(
      'enrollment',
      'policy',
      'update',
      'b-claim',
      '--allow',
      'dw-9',
      '--disallow',
      'dw-1,dw-4',
    );
    expect(updated).toMatchObject({
      version: 2,
      config: { batch: 'b-2026', allowlist: ['dw-2', 'dw-3', 'dw-5', 'dw-9'], ratePerMinute: 30 },
    });
    await json('enrollment', 'policy', 'create', 'b-empty', '--kind', 'claim', '--batch', 'b-2027');
    expect((await cli('enrollment', 'policy', 'show', 'b-empty')).stdout).toMatch(
      /allowlist\s+0 devices \(none may enroll\)/,
    );
  });

  it('individual policy: stores the SHA-256 of the key (SPKI DER) or of the certificate (DER)', async () => {
    const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
    openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', 'dw-7.key');
    openssl('pkey', '-in', 'dw-7.key', '-pubout', '-out', 'dw-7.pub.pem');
    openssl('req', '-x509', '-key', 'dw-7.key', '-subj', '/CN=dw-7', '-days', '30', '-out', 'dw-7.crt');
    const keySha = opensslSha256('openssl pkey -pubin -in dw-7.pub.pem -outform DER');
    const certSha = opensslSha256('openssl x509 -in dw-7.crt -outform DER');

    const byKey = await json(
      'enrollment',
      'policy',
      'create',
      'dw-7',
      '--kind',
      'individual',
      '--device',
      'dw-7',
      '--public-key',
      join(dir, 'dw-7.pub.pem'),
      '--model',
      'DW100',
    );
    expect(byKey.config).toEqual({ deviceId: 'dw-7', keyFingerprint: keySha });
    const byCert = await json(
      'enrollment',
      'policy',
      'update',
      'dw-7',
      '--certificate',
      join(dir, 'dw-7.crt'),
    );
    expect(byCert.config).toEqual({ deviceId: 'dw-7', certificateFingerprint: certSha });
    expect((await cli('enrollment', 'policy', 'list')).stdout).toMatch(
      new RegExp(`dw-7\\s+individual\\s+2\\s+yes\\s+device dw-7 by certificate ${certSha.slice(0, 16)}…`),
    );

    const both = await cli(
      'enrollment',
      'policy',
      'create',
      'dw-8',
      '--kind',
      'individual',
      '--device',
      'dw-8',
      '--public-key',
      join(dir, 'dw-7.pub.pem'),
      '--certificate',
      join(dir, 'dw-7.crt'),
    );
    expect(both.code).toBe(2);
    const noDevice = await cli(
      'enrollment',
      'policy',
      'create',
      'dw-8',
      '--kind',
      'individual',
      '--public-key',
      join(dir, 'dw-7.pub.pem'),
    );
    expect(noDevice.code).toBe(2);
    const privateKey = await cli(
      'enrollment',
      'policy',
      'create',
      'dw-8',
      '--kind',
      'individual',
      '--device',
      'dw-8',
      '--public-key',
      join(dir, 'dw-7.key'),
    );
    expect(privateKey.code).toBe(2);
    expect(privateKey.stderr).toContain('holds a private key');
  });

  it('claim-certificate writes certificate, chain and key (0600) that enroll an allowlisted device once', async () => {
    await json(
      'enrollment',
      'policy',
      'create',
      'claim-b7',
      '--kind',
      'claim',
      '--batch',
      'b-7',
      '--allow',
      'dw-701,dw-702',
      '--model',
      'DW100',
    );
    const out = join(dir, 'claim');
    const r = await cli(
      'enrollment',
      'policy',
      'claim-certificate',
      'claim-b7',
      '--out-dir',
      out,
      '--days',
      '30',
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`${join(out, 'claim.key')} (mode 0600)`);
    const cert = new X509Certificate(readFileSync(join(out, 'claim.crt')));
    const key = createPrivateKey(readFileSync(join(out, 'claim.key')));
    expect(statSync(join(out, 'claim.key')).mode & 0o777).toBe(0o600);
    expect(cert.checkPrivateKey(key)).toBe(true);
    const chain = readFileSync(join(out, 'claim-chain.pem'), 'utf8');
    const issuer = new X509Certificate(chain.slice(0, chain.indexOf('-----END CERTIFICATE-----') + 25));
    expect(cert.verify(issuer.publicKey)).toBe(true);
    expect(Date.parse(cert.validTo) - Date.now()).toBeLessThanOrEqual(31 * 86400_000);
    const fingerprint = cert.fingerprint256.replace(/:/g, '').toLowerCase();
    expect(r.stdout).toContain(`sha256 ${fingerprint.slice(0, 16)}…`);

    // Nothing is overwritten, and nothing is issued when the files could not be written.
    const claims = async () => (await t.call('GET', '/api/v1/certificates?profile=claim')).body.items.length;
    const before = await claims();
    const again = await cli('enrollment', 'policy', 'claim-certificate', 'claim-b7', '--out-dir', out);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain('exists already');
    expect(await claims()).toBe(before);

    // With a CSR the key stays where it is: no claim.key is written.
    const csrDir = join(dir, 'claim-csr');
    const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
    openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', 'own-claim.key');
    openssl('req', '-new', '-key', 'own-claim.key', '-subj', '/CN=claim', '-out', 'own-claim.csr');
    const withCsr = await json(
      'enrollment',
      'policy',
      'claim-certificate',
      'claim-b7',
      '--csr',
      join(dir, 'own-claim.csr'),
      '--out-dir',
      csrDir,
    );
    expect(withCsr.files.key).toBeUndefined();
    expect(existsSync(join(csrDir, 'claim.key'))).toBe(false);
    expect(withCsr).not.toHaveProperty('privateKey');
    const own = new X509Certificate(readFileSync(join(csrDir, 'claim.crt')));
    expect(own.checkPrivateKey(createPrivateKey(readFileSync(join(dir, 'own-claim.key'))))).toBe(true);
    expect(
      (
        await cli(
          'enrollment',
          'policy',
          'claim-certificate',
          'claim-b7',
          '--csr',
          join(dir, 'dw-7.pub.pem'),
          '--out-dir',
          join(dir, 'x'),
        )
      ).code,
    ).toBe(2);
    expect(
      (await cli('enrollment', 'policy', 'claim-certificate', 'factory', '--out-dir', join(dir, 'g'))).code,
    ).toBe(6);
    expect(
      (await cli('enrollment', 'policy', 'claim-certificate', 'nope', '--out-dir', join(dir, 'n'))).code,
    ).toBe(5);
    // A refused request leaves no files behind.
    expect(readdirSync(join(dir, 'n'))).toEqual([]);

    // The files as written work as the TLS client certificate of an ordinary EST client.
    const est = t.platform.listeners.find((l) => l.name === 'est')!.url;
    const dispatcher = new Agent({
      connect: {
        ca: readFileSync(join(t.dataDir, 'ca.pem')),
        cert: readFileSync(join(out, 'claim.crt')),
        key: readFileSync(join(out, 'claim.key')),
      },
    });
    const enroll = async (deviceId: string) => {
      const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const csr = await buildCsr({
        commonName: deviceId,
        publicKey: createPublicKey(privateKey),
        sign: async (data: Uint8Array) => sign('sha256', data, privateKey),
      });
      const res = await request(`${est}/simpleenroll`, {
        method: 'POST',
        dispatcher,
        headers: { 'content-type': 'application/pkcs10' },
        body: csr.toString('base64'),
      });
      return { status: res.statusCode, body: await res.body.text() };
    };
    try {
      const ok = await enroll('dw-701');
      expect(ok.status, ok.body).toBe(200);
      const outsider = await enroll('dw-999');
      expect(outsider.status).toBe(403);
      expect(outsider.body).toContain('not on the allowlist');
      expect((await enroll('dw-701')).status).toBe(403);
    } finally {
      await dispatcher.close();
    }
  });
});
