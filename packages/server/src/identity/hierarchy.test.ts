import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '@rampart/shared/logging';
import { startPlatform, type Platform } from '../platform.js';
import { DIALECTS } from '../test-support/databases.js';
import { startTestPlatform, type TestPlatform } from '../test-support/platform.js';
import { PkiPeers } from '../test-support/pki.js';

/**
 * The CA hierarchy as an operator meets it: created on first start, kept across restarts, the
 * server certificate it issues, issuing-CA rollover and retirement, and the offline root key.
 */
const run = promisify(execFile);
/** The passphrase startTestPlatform gives the file key store. */
const KEYSTORE_ENV = { RAMPART_KEYSTORE_PASSPHRASE: 'test passphrase for rampart' };

/** A 20-byte key identifier as openssl prints it (AB:CD:…). */
function keyIdIn(text: string): string {
  const m = /([0-9A-F]{2}(?::[0-9A-F]{2}){19})/.exec(text);
  if (!m) throw new Error(`no key identifier in:\n${text}`);
  return m[1]!;
}

/** Write a CA certificate (PEM, from the API) to `<id>.pem` in the peer directory. */
async function caFile(tp: TestPlatform, peers: PkiPeers, id: string): Promise<string> {
  const r = await tp.call('GET', `/api/v1/ca/${id}/certificate`);
  expect(r.status, `GET ca ${id}`).toBe(200);
  writeFileSync(peers.path(`${id}.pem`), r.body as string);
  return `${id}.pem`;
}

/** openssl s_client against a listener, with the root from `<dataDir>/ca.pem` pinned. */
async function sClient(peers: PkiPeers, url: string): Promise<{ code: number; out: string }> {
  const u = new URL(url);
  const p = run(
    'openssl',
    [
      's_client',
      '-connect',
      `${u.hostname}:${u.port}`,
      '-CAfile',
      peers.rootCa,
      '-verify_return_error',
      '-showcerts',
    ],
    { cwd: peers.dir, timeout: 15_000 },
  );
  p.child.stdin?.end();
  try {
    const r = await p;
    return { code: 0, out: r.stdout + r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, out: (e.stdout ?? '') + (e.stderr ?? '') };
  }
}

function listener(tp: TestPlatform, name: string): string {
  return tp.platform.listeners.find((l) => l.name === name)!.url;
}

describe.each(DIALECTS)('CA hierarchy on %s', (dialect) => {
  let tp: TestPlatform;
  let peers: PkiPeers;
  let restarted: Platform | null = null;

  beforeAll(async () => {
    tp = await startTestPlatform(dialect);
    peers = new PkiPeers(tp);
    for (const id of ['H-0001', 'H-0002', 'H-0003', 'H-0004']) await peers.device(id);
  }, 60_000);
  afterAll(async () => {
    await restarted?.stop('test');
    await tp?.close();
  });

  it('creates root-1, issuing-1 and manufacturing-1 on first start, ECDSA P-256 by default', async () => {
    const status = await tp.call('GET', '/api/v1/ca');
    expect(status.status).toBe(200);
    const byId = Object.fromEntries(
      (status.body.authorities as { id: string }[]).map((a) => [a.id, a as Record<string, unknown>]),
    );
    expect(Object.keys(byId).sort()).toEqual(['issuing-1', 'manufacturing-1', 'root-1']);
    expect(byId['root-1']).toMatchObject({
      kind: 'root',
      parentId: null,
      status: 'active',
      keyState: 'online',
      keyAlgorithm: 'ec-p256',
    });
    expect(byId['issuing-1']).toMatchObject({
      kind: 'issuing',
      parentId: 'root-1',
      status: 'active',
      generation: 1,
    });
    expect(byId['manufacturing-1']).toMatchObject({
      kind: 'manufacturing',
      parentId: 'root-1',
      status: 'active',
    });

    const root = await caFile(tp, peers, 'root-1');
    // <dataDir>/ca.pem is the root certificate.
    expect(readFileSync(peers.rootCa, 'utf8').trim()).toBe(readFileSync(peers.path(root), 'utf8').trim());
    const rootText = peers.openssl('x509', '-in', root, '-noout', '-text');
    expect(rootText).toContain('Issuer: O = Rampart, CN = Rampart Root CA');
    expect(rootText).toContain('Subject: O = Rampart, CN = Rampart Root CA');
    expect(rootText).toMatch(/CA:TRUE\s*\n/);
    expect(rootText).toMatch(/X509v3 Key Usage: critical\s*\n\s*Certificate Sign, CRL Sign\s*\n/);
    expect(rootText).toContain('Signature Algorithm: ecdsa-with-SHA256');
    expect(rootText).toContain('NIST CURVE: P-256');
    // Self-signed: it verifies against itself.
    expect(peers.openssl('verify', '-CAfile', root, root)).toContain(': OK');
    const rootSki = keyIdIn(peers.openssl('x509', '-in', root, '-noout', '-ext', 'subjectKeyIdentifier'));

    for (const [id, cn] of [
      ['issuing-1', 'Rampart Device Issuing CA'],
      ['manufacturing-1', 'Rampart Manufacturing CA'],
    ] as const) {
      const file = await caFile(tp, peers, id);
      const text = peers.openssl('x509', '-in', file, '-noout', '-text');
      expect(text).toContain(`Subject: O = Rampart, CN = ${cn}`);
      expect(text).toContain('Issuer: O = Rampart, CN = Rampart Root CA');
      expect(text).toContain('CA:TRUE, pathlen:0');
      expect(text).toMatch(/Certificate Sign, CRL Sign/);
      expect(text).toContain('Signature Algorithm: ecdsa-with-SHA256');
      expect(text).toContain('NIST CURVE: P-256');
      const aki = keyIdIn(peers.openssl('x509', '-in', file, '-noout', '-ext', 'authorityKeyIdentifier'));
      expect(aki, `${id} AKI = root SKI`).toBe(rootSki);
      expect(peers.openssl('verify', '-CAfile', root, file)).toContain(`${file}: OK`);
    }
  });

  it('presents a server certificate from issuing-1 on the API and EST listeners that verifies to ca.pem', async () => {
    for (const name of ['api', 'est']) {
      const r = await sClient(peers, listener(tp, name));
      expect(r.out, name).toContain('Verify return code: 0 (ok)');
      expect(r.out).toMatch(
        / 0 s:O = Rampart, CN = \S+\s*\n\s+i:O = Rampart, CN = Rampart Device Issuing CA\n/,
      );
      const leaf = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(r.out)![0];
      writeFileSync(peers.path(`${name}-leaf.pem`), leaf + '\n');
      const serial = peers.serialOf(`${name}-leaf`);
      const record = await tp.call('GET', `/api/v1/certificates/${serial}`);
      expect(record.body).toMatchObject({ profile: 'server', issuerId: 'issuing-1', state: 'valid' });
      expect(
        peers.openssl('x509', '-in', `${name}-leaf.pem`, '-noout', '-ext', 'extendedKeyUsage'),
      ).toContain('TLS Web Server Authentication');
    }
  });

  it('rolls the issuing CA over: both generations served until issuing-1 is retired', async () => {
    // Before the rollover: r1 (to check later) and r2 (to re-enroll later), both from issuing-1.
    expect((await peers.enroll('r1', 'H-0001', await peers.token('H-0001'))).status).toBe(200);
    expect((await peers.enroll('r2', 'H-0002', await peers.token('H-0002'))).status).toBe(200);
    const r1Serial = peers.serialOf('r1');
    expect((await tp.call('GET', `/api/v1/certificates/${r1Serial}`)).body.issuerId).toBe('issuing-1');

    const rolled = await tp.call('POST', '/api/v1/ca/rollover', { body: { kind: 'issuing' } });
    expect(rolled.status, JSON.stringify(rolled.body)).toBe(200);
    expect(rolled.body.previous).toMatchObject({ id: 'issuing-1', status: 'retiring' });
    expect(rolled.body.next).toMatchObject({
      id: 'issuing-2',
      status: 'active',
      generation: 2,
      parentId: 'root-1',
    });
    const status = await tp.call('GET', '/api/v1/ca');
    const states = Object.fromEntries(
      (status.body.authorities as { id: string; status: string }[]).map((a) => [a.id, a.status]),
    );
    expect(states).toMatchObject({ 'root-1': 'active', 'issuing-1': 'retiring', 'issuing-2': 'active' });

    const issuing1 = await caFile(tp, peers, 'issuing-1');
    const issuing2 = await caFile(tp, peers, 'issuing-2');
    expect(peers.openssl('x509', '-in', issuing2, '-noout', '-subject')).toContain(
      'CN = Rampart Device Issuing CA 2',
    );
    expect(peers.openssl('verify', '-CAfile', peers.rootCa, issuing2)).toContain(': OK');

    // cacerts: the root and both issuing CAs.
    const cacerts = await peers.cacerts();
    expect(readFileSync(cacerts, 'utf8').match(/BEGIN CERTIFICATE/g)).toHaveLength(3);
    const subjects = peers.openssl('pkcs7', '-inform', 'DER', '-in', 'cacerts.p7', '-print_certs', '-noout');
    expect(subjects).toContain('Rampart Root CA');
    expect(subjects).toContain('CN = Rampart Device Issuing CA\n');
    expect(subjects).toContain('CN = Rampart Device Issuing CA 2');

    // The certificate issued before the rollover still verifies, gets OCSP good, and its CRL is served.
    expect(peers.openssl('verify', '-CAfile', peers.rootCa, '-untrusted', cacerts, 'r1.pem')).toContain(
      'r1.pem: OK',
    );
    const ocsp = await peers.opensslStatus(
      'ocsp',
      '-issuer',
      issuing1,
      '-cert',
      'r1.pem',
      '-url',
      `${peers.pki}/ocsp`,
      '-CAfile',
      peers.rootCa,
      '-verify_other',
      cacerts,
    );
    expect(ocsp.out).toContain('Response verify OK');
    expect(ocsp.out).toContain('r1.pem: good');
    const crl = await peers.curl([`${peers.pki}/crl/issuing-1.crl`]);
    expect(crl.status).toBe(200);
    writeFileSync(peers.path('issuing-1.crl'), crl.body);
    expect(
      (
        await peers.opensslStatus(
          'crl',
          '-inform',
          'DER',
          '-in',
          'issuing-1.crl',
          '-CAfile',
          issuing1,
          '-noout',
        )
      ).out,
    ).toContain('verify OK');

    // New enrollments come from issuing-2.
    expect((await peers.enroll('r3', 'H-0003', await peers.token('H-0003'))).status).toBe(200);
    expect(peers.openssl('x509', '-in', 'r3.pem', '-noout', '-issuer')).toContain(
      'CN = Rampart Device Issuing CA 2',
    );
    expect((await tp.call('GET', `/api/v1/certificates/${peers.serialOf('r3')}`)).body.issuerId).toBe(
      'issuing-2',
    );
    expect(peers.openssl('verify', '-CAfile', peers.rootCa, '-untrusted', cacerts, 'r3.pem')).toContain(
      'r3.pem: OK',
    );
    expect(peers.openssl('x509', '-in', 'r3.pem', '-noout', '-text')).toContain(
      `URI:${peers.pki}/crl/issuing-2.crl`,
    );

    // A device holding an issuing-1 certificate re-enrolls over mTLS and gets an issuing-2 certificate,
    const re = await peers.reenroll('r2b', 'H-0002', 'r2');
    expect(re.status, re.body.toString()).toBe(200);
    expect(peers.openssl('x509', '-in', 'r2b.pem', '-noout', '-issuer')).toContain(
      'CN = Rampart Device Issuing CA 2',
    );
    expect((await tp.call('GET', `/api/v1/certificates/${peers.serialOf('r2b')}`)).body).toMatchObject({
      issuerId: 'issuing-2',
      renewedFrom: peers.serialOf('r2').toLowerCase(),
    });

    // ...and so does one holding an issuing-2 certificate: mTLS accepts both chains.
    const re3 = await peers.reenroll('r3b', 'H-0003', 'r3');
    expect(re3.status, re3.body.toString()).toBe(200);

    // Retiring issuing-1 stops serving it.
    const retired = await tp.call('POST', '/api/v1/ca/issuing-1/retire');
    expect(retired.status, JSON.stringify(retired.body)).toBe(200);
    expect(retired.body).toMatchObject({ id: 'issuing-1', status: 'retired' });
    const after = await peers.cacerts();
    expect(readFileSync(after, 'utf8').match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    expect(
      peers.openssl('pkcs7', '-inform', 'DER', '-in', 'cacerts.p7', '-print_certs', '-noout'),
    ).not.toContain('CN = Rampart Device Issuing CA\n');
    expect((await peers.curl([`${peers.pki}/crl/issuing-1.crl`])).status).toBe(404);
    expect((await peers.curl([`${peers.pki}/ca/issuing-1.crt`])).status).toBe(404);
    // A retiring CA can be retired once; an active one not at all.
    expect((await tp.call('POST', '/api/v1/ca/issuing-1/retire')).status).toBe(409);
    expect((await tp.call('POST', '/api/v1/ca/issuing-2/retire')).status).toBe(409);

    for (const [action, target] of [
      ['ca.rollover', 'ca:issuing-2'],
      ['ca.retire', 'ca:issuing-1'],
    ]) {
      const entries = await tp.call('GET', `/api/v1/audit/entries?action=${action}&outcome=success`);
      expect(entries.body.items, action).toHaveLength(1);
      expect(entries.body.items[0]).toMatchObject({ action, target, outcome: 'success' });
    }
  });

  it('keeps the root key offline: export, remove, refuse root operations, import', async () => {
    // Removing a key that was never exported would lose it: refused.
    const early = await tp.call('POST', '/api/v1/ca/root/remove');
    expect(early.status).toBe(409);
    expect(early.body.detail).toMatch(/export the root key before removing it/);
    expect((await tp.platform.keys.list()).map((k) => k.label)).toContain('ca-root-1');

    const short = await tp.call('POST', '/api/v1/ca/root/export', { body: { passphrase: 'too short' } });
    expect(short.status).toBe(400);

    const passphrase = 'correct horse battery staple';
    const exported = await tp.call('POST', '/api/v1/ca/root/export', { body: { passphrase } });
    expect(exported.status).toBe(200);
    expect(exported.body.keyPem).toMatch(/^-----BEGIN ENCRYPTED PRIVATE KEY-----/);
    writeFileSync(peers.path('root.key.pem'), exported.body.keyPem);
    writeFileSync(peers.path('root-export.pem'), exported.body.certificatePem);
    // openssl reads it with the passphrase, and its public key is the root certificate's.
    const pub = peers.openssl('pkey', '-in', 'root.key.pem', '-passin', `pass:${passphrase}`, '-pubout');
    expect(pub).toBe(peers.openssl('x509', '-in', peers.rootCa, '-noout', '-pubkey'));
    expect(
      (
        await peers.opensslStatus(
          'pkey',
          '-in',
          'root.key.pem',
          '-passin',
          'pass:wrong passphrase!',
          '-noout',
        )
      ).code,
    ).not.toBe(0);

    const removed = await tp.call('POST', '/api/v1/ca/root/remove');
    expect(removed.status, JSON.stringify(removed.body)).toBe(200);
    expect(removed.body).toMatchObject({ id: 'root-1', keyState: 'offline' });
    expect((await tp.platform.keys.list()).map((k) => k.label)).not.toContain('ca-root-1');
    const status = await tp.call('GET', '/api/v1/ca');
    const root = (status.body.authorities as { id: string; keyExportedAt: string | null }[]).find(
      (a) => a.id === 'root-1',
    );
    expect(root).toMatchObject({ keyState: 'offline' });
    expect(root?.keyExportedAt).not.toBeNull();

    // The issuing CA is online: devices still enroll.
    const enrolled = await peers.enroll('off1', 'H-0004', await peers.token('H-0004'));
    expect(enrolled.status, enrolled.body.toString()).toBe(200);
    expect(
      peers.openssl('verify', '-CAfile', peers.rootCa, '-untrusted', await peers.cacerts(), 'off1.pem'),
    ).toContain('OK');

    // A rollover needs the root: refused with the way back.
    const refused = await tp.call('POST', '/api/v1/ca/rollover', { body: { kind: 'issuing' } });
    expect(refused.status).toBe(409);
    expect(refused.body.detail).toMatch(/offline/);
    expect(refused.body.detail).toMatch(/rampart ca root import/);

    const wrong = await tp.call('POST', '/api/v1/ca/root/import', {
      body: { keyPem: exported.body.keyPem, passphrase: 'not the passphrase' },
    });
    expect(wrong.status).toBe(400);
    expect(
      (await tp.call('GET', '/api/v1/ca')).body.authorities.find((a: { id: string }) => a.id === 'root-1')
        .keyState,
    ).toBe('offline');

    const imported = await tp.call('POST', '/api/v1/ca/root/import', {
      body: { keyPem: exported.body.keyPem, passphrase },
    });
    expect(imported.status, JSON.stringify(imported.body)).toBe(200);
    expect(imported.body).toMatchObject({ id: 'root-1', keyState: 'online' });
    expect((await tp.platform.keys.list()).map((k) => k.label)).toContain('ca-root-1');

    const rolled = await tp.call('POST', '/api/v1/ca/rollover', { body: { kind: 'issuing' } });
    expect(rolled.status, JSON.stringify(rolled.body)).toBe(200);
    expect(rolled.body.next).toMatchObject({ id: 'issuing-3', status: 'active' });
    writeFileSync(
      peers.path('issuing-3.pem'),
      (await tp.call('GET', '/api/v1/ca/issuing-3/certificate')).body as string,
    );
    expect(peers.openssl('verify', '-CAfile', peers.rootCa, 'issuing-3.pem')).toContain('OK');

    for (const action of ['ca.root.export', 'ca.root.remove', 'ca.root.import']) {
      const entries = await tp.call('GET', `/api/v1/audit/entries?action=${action}&outcome=success`);
      expect(entries.body.items, action).toHaveLength(1);
    }
  });

  it('keeps the same hierarchy across a restart on the same data directory and database', async () => {
    const before = tp.platform.identity.authorities
      .all()
      .map((c) => ({ id: c.id, serial: c.serial, status: c.status, keyState: c.keyState }))
      .sort((a, b) => a.id.localeCompare(b.id));
    const caPem = readFileSync(join(tp.dataDir, 'ca.pem'), 'utf8');
    const config = tp.platform.config;
    await tp.platform.stop('test restart');

    restarted = await startPlatform(config, { env: KEYSTORE_ENV, logger: createLogger({ level: 'silent' }) });
    expect(restarted.initialAdminToken).toBeNull();
    const after = restarted.identity.authorities
      .all()
      .map((c) => ({ id: c.id, serial: c.serial, status: c.status, keyState: c.keyState }))
      .sort((a, b) => a.id.localeCompare(b.id));
    expect(after).toEqual(before);
    expect(readFileSync(join(tp.dataDir, 'ca.pem'), 'utf8')).toBe(caPem);
    expect(await restarted.audit.list({ action: 'ca.init' })).toHaveLength(1);
    expect(await restarted.audit.list({ action: 'platform.start' })).toHaveLength(2);

    // The restarted listeners still verify to the same root.
    const r = await sClient(peers, restarted.listeners.find((l) => l.name === 'est')!.url);
    expect(r.out).toContain('Verify return code: 0 (ok)');
  });
});

describe.each([
  ['ec-p384', 'ecdsa-with-SHA384', 'NIST CURVE: P-384'],
  ['rsa-2048', 'sha256WithRSAEncryption', 'Public-Key: (2048 bit)'],
] as const)('CA hierarchy with ca.keyAlgorithm %s (sqlite)', (algorithm, signature, keyText) => {
  let tp: TestPlatform;
  let peers: PkiPeers;

  beforeAll(async () => {
    tp = await startTestPlatform('sqlite', { 'ca.keyAlgorithm': algorithm });
    peers = new PkiPeers(tp);
  }, 60_000);
  afterAll(async () => {
    await tp?.close();
  });

  it(`creates ${algorithm} CA keys and signs with ${signature}`, async () => {
    const status = await tp.call('GET', '/api/v1/ca');
    for (const ca of status.body.authorities as { id: string; keyAlgorithm: string }[]) {
      expect(ca.keyAlgorithm, ca.id).toBe(algorithm);
      const file = await caFile(tp, peers, ca.id);
      const text = peers.openssl('x509', '-in', file, '-noout', '-text');
      expect(text, ca.id).toContain(keyText);
      expect(text, ca.id).toContain(`Signature Algorithm: ${signature}`);
      expect(peers.openssl('verify', '-CAfile', peers.rootCa, file)).toContain('OK');
    }
    // What the issuing CA signs carries the same signature algorithm: a device certificate, the CRL.
    await peers.device('ALG-0001');
    expect((await peers.enroll('alg', 'ALG-0001', await peers.token('ALG-0001'))).status).toBe(200);
    expect(peers.openssl('x509', '-in', 'alg.pem', '-noout', '-text')).toContain(
      `Signature Algorithm: ${signature}`,
    );
    expect(
      peers.openssl('verify', '-CAfile', peers.rootCa, '-untrusted', await peers.cacerts(), 'alg.pem'),
    ).toContain('OK');
    const crl = await peers.curl([`${peers.pki}/crl/issuing-1.crl`]);
    writeFileSync(peers.path('alg.crl'), crl.body);
    const crlText = await peers.opensslStatus(
      'crl',
      '-inform',
      'DER',
      '-in',
      'alg.crl',
      '-CAfile',
      'issuing-1.pem',
      '-noout',
      '-text',
    );
    expect(crlText.out).toContain('verify OK');
    expect(crlText.out).toContain(`Signature Algorithm: ${signature}`);
    // The server certificate on the API listener chains to the root as well.
    const r = await sClient(peers, listener(tp, 'api'));
    expect(r.out).toContain('Verify return code: 0 (ok)');
  });
});
