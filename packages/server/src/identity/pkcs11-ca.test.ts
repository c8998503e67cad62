import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPlatform, type TestPlatform } from '../test-support/platform.js';
import { PkiPeers } from '../test-support/pki.js';
import { createSoftHsmToken, type SoftHsmToken } from '../test-support/softhsm.js';

/** The same CA with every key inside a PKCS#11 token (SoftHSM2): signing code cannot tell the difference. */
let token: SoftHsmToken;
let tp: TestPlatform;
let peers: PkiPeers;

beforeAll(async () => {
  token = createSoftHsmToken();
  tp = await startTestPlatform(
    'sqlite',
    {
      'keystore.backend': 'pkcs11',
      'keystore.pkcs11.module': token.module,
      'keystore.pkcs11.tokenLabel': token.tokenLabel,
    },
    { env: { RAMPART_KEYSTORE_PIN: token.pin } },
  );
  peers = new PkiPeers(tp);
  await peers.device('HSM-0001');
}, 60_000);
afterAll(async () => {
  await tp?.close();
  token?.cleanup();
});

describe('CA on a PKCS#11 token', () => {
  it('keeps the CA, OCSP and audit keys on the token, non-exportable except the root and TLS key', async () => {
    expect(tp.platform.keys.backend).toBe('pkcs11');
    const keys = await tp.platform.keys.list();
    const byLabel = new Map(keys.map((k) => [k.label, k]));
    for (const label of ['ca-root-1', 'ca-issuing-1', 'ca-manufacturing-1', 'audit-checkpoint', 'tls-server'])
      expect(byLabel.has(label), label).toBe(true);
    expect(byLabel.get('ca-issuing-1')!.exportable).toBe(false);
    expect(byLabel.get('audit-checkpoint')!.exportable).toBe(false);
    const status = await tp.call('GET', '/api/v1/ca');
    expect(status.body.keyStore).toBe('pkcs11');
  });

  it('enrolls with curl, and openssl verifies the chain, the CRL and the OCSP answer', async () => {
    const res = await peers.enroll('h1', 'HSM-0001', await peers.token('HSM-0001'));
    expect(res.status, res.body.toString()).toBe(200);
    const cacerts = await peers.cacerts();
    const verified = await peers.opensslStatus(
      'verify',
      '-crl_check',
      '-crl_download',
      '-CAfile',
      peers.rootCa,
      '-untrusted',
      cacerts,
      'h1.pem',
    );
    expect(verified.out).toContain('h1.pem: OK');
    const aia = peers.openssl('x509', '-in', 'h1.pem', '-noout', '-ext', 'authorityInfoAccess');
    const issuer = await peers.curl([/CA Issuers - URI:(\S+)/.exec(aia)![1]!]);
    const { writeFileSync } = await import('node:fs');
    writeFileSync(peers.path('issuing.der'), issuer.body);
    peers.openssl('x509', '-inform', 'DER', '-in', 'issuing.der', '-out', 'issuing.pem');
    const ocsp = await peers.opensslStatus(
      'ocsp',
      '-issuer',
      'issuing.pem',
      '-cert',
      'h1.pem',
      '-url',
      `${peers.pki}/ocsp`,
      '-CAfile',
      peers.rootCa,
      '-verify_other',
      cacerts,
    );
    expect(ocsp.out).toContain('Response verify OK');
    expect(ocsp.out).toContain('h1.pem: good');
  });
});

describe('offline root on a PKCS#11 token', () => {
  it('exports the root key encrypted, removes it from the token, imports it back and rolls over', async () => {
    const passphrase = 'offline root passphrase 1';
    const exported = await tp.call('POST', '/api/v1/ca/root/export', { body: { passphrase } });
    expect(exported.status).toBe(200);
    const { createPrivateKey, X509Certificate } = await import('node:crypto');
    const key = createPrivateKey({ key: exported.body.keyPem, passphrase });
    const root = new X509Certificate(exported.body.certificatePem);
    expect(root.checkPrivateKey(key)).toBe(true);

    expect((await tp.call('POST', '/api/v1/ca/root/remove')).status).toBe(200);
    expect((await tp.platform.keys.list()).map((k) => k.label)).not.toContain('ca-root-1');
    const offline = await tp.call('POST', '/api/v1/ca/rollover', { body: { kind: 'issuing' } });
    expect(offline.status).toBe(409);
    expect(offline.body.detail).toMatch(/root import/);

    const imported = await tp.call('POST', '/api/v1/ca/root/import', {
      body: { keyPem: exported.body.keyPem, passphrase },
    });
    expect(imported.status).toBe(200);
    expect((await tp.platform.keys.list()).map((k) => k.label)).toContain('ca-root-1');
    const rolled = await tp.call('POST', '/api/v1/ca/rollover', { body: { kind: 'issuing' } });
    expect(rolled.status).toBe(200);
    expect(rolled.body.next.id).toBe('issuing-2');
    // The new issuing CA's key is on the token too, and it issues.
    expect((await tp.platform.keys.list()).map((k) => k.label)).toContain('ca-issuing-2');
    await peers.device('HSM-0002');
    const res = await peers.enroll('h2', 'HSM-0002', await peers.token('HSM-0002'));
    expect(res.status, res.body.toString()).toBe(200);
    expect(peers.openssl('x509', '-in', 'h2.pem', '-noout', '-issuer')).toContain('Issuing CA 2');
  });
});
