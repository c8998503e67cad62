import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPlatform, type TestPlatform } from '../test-support/platform.js';
import { PkiPeers } from '../test-support/pki.js';

/**
 * Rampart's CA against unmodified peers: curl as the EST client, openssl for CSRs, PKCS#7,
 * chain and CRL verification and OCSP.
 */
let tp: TestPlatform;
let peers: PkiPeers;

beforeAll(async () => {
  tp = await startTestPlatform('sqlite');
  peers = new PkiPeers(tp);
  for (const id of ['DW100-0001', 'DW100-0002', 'DW100-0003']) await peers.device(id);
}, 60_000);
afterAll(async () => {
  await tp?.close();
});

describe('EST with curl and openssl', () => {
  it('serves cacerts as a base64 PKCS#7 that openssl reads: root and issuing CA', async () => {
    const res = await peers.curl([`${peers.est}/cacerts`]);
    expect(res.status).toBe(200);
    expect(res.headers).toMatch(/content-type: application\/pkcs7-mime/i);
    const file = await peers.cacerts();
    expect(readFileSync(file, 'utf8').match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    const text = peers.openssl('pkcs7', '-inform', 'DER', '-in', 'cacerts.p7', '-print_certs', '-noout');
    expect(text).toContain('Rampart Root CA');
    expect(text).toContain('Rampart Device Issuing CA');
  });

  it('enrolls an openssl CSR with a one-time token over HTTP Basic and issues the device profile', async () => {
    const token = await peers.token('DW100-0001');
    const res = await peers.enroll('d1', 'DW100-0001', token);
    expect(res.status, res.body.toString()).toBe(200);
    expect(res.headers).toMatch(/content-type: application\/pkcs7-mime; smime-type=certs-only/i);
    const text = peers.openssl('x509', '-in', 'd1.pem', '-noout', '-text');
    expect(text).toContain('Subject: CN = DW100-0001');
    expect(text).toContain('URI:urn:rampart:device:DW100-0001');
    expect(text).toContain('TLS Web Client Authentication');
    expect(text).toContain('X509v3 Subject Key Identifier');
    expect(text).toContain('X509v3 Authority Key Identifier');
    expect(text).toContain(`URI:${peers.pki}/crl/issuing-1.crl`);
    expect(text).toContain(`OCSP - URI:${peers.pki}/ocsp`);
    expect(text).toContain('CA:FALSE');
    const cacerts = await peers.cacerts();
    expect(peers.openssl('verify', '-CAfile', peers.rootCa, '-untrusted', cacerts, 'd1.pem')).toContain(
      'd1.pem: OK',
    );

    // The device went from pending to active, and the certificate is on record with its key fingerprint.
    const device = await tp.call('GET', '/api/v1/devices/DW100-0001');
    expect(device.body.status).toBe('active');
    const serial = peers.serialOf('d1');
    const record = await tp.call('GET', `/api/v1/certificates/${serial}`);
    expect(record.status).toBe(200);
    expect(record.body).toMatchObject({
      deviceId: 'DW100-0001',
      issuerId: 'issuing-1',
      state: 'valid',
      renewedFrom: null,
    });
    const hours = (Date.parse(record.body.notAfter) - Date.parse(record.body.notBefore)) / 3600_000;
    expect(hours).toBeGreaterThan(24);
    expect(hours).toBeLessThanOrEqual(24.1);

    // The token was single-use.
    const again = await peers.enroll('d1b', 'DW100-0001', token);
    expect(again.status).toBe(401);
    expect(again.body.toString()).toMatch(/already used/);
  });

  it('accepts the token as a Bearer token too', async () => {
    const token = await peers.token('DW100-0003');
    const csr = peers.csr('d3', 'DW100-0003');
    const res = await peers.curl([
      '-H',
      `Authorization: Bearer ${token}`,
      '-H',
      'Content-Type: application/pkcs10',
      '--data-binary',
      `@${csr}`,
      `${peers.est}/simpleenroll`,
    ]);
    expect(res.status, res.body.toString()).toBe(200);
  });

  it('re-enrolls with curl presenting the current certificate, recording lineage and superseding it', async () => {
    const old = peers.serialOf('d1');
    const res = await peers.reenroll('d1r', 'DW100-0001', 'd1');
    expect(res.status, res.body.toString()).toBe(200);
    const serial = peers.serialOf('d1r');
    const record = await tp.call('GET', `/api/v1/certificates/${serial}`);
    expect(record.body).toMatchObject({
      deviceId: 'DW100-0001',
      renewedFrom: old.toLowerCase(),
      state: 'valid',
    });
    const previous = await tp.call('GET', `/api/v1/certificates/${old}`);
    expect(previous.body).toMatchObject({ state: 'revoked', revocationReason: 'superseded' });

    // The superseded certificate no longer authenticates a re-enrollment.
    const refused = await peers.reenroll('d1x', 'DW100-0001', 'd1');
    expect(refused.status).toBe(403);
    expect(refused.body.toString()).toMatch(/revoked/);
  });

  it('refuses re-enrollment that changes the identity', async () => {
    const res = await peers.curl([
      '--cert',
      peers.path('d1r.pem'),
      '--key',
      peers.path('d1r.key'),
      '-H',
      'Content-Type: application/pkcs10',
      '--data-binary',
      `@${peers.csr('evil', 'DW100-0002')}`,
      `${peers.est}/simplereenroll`,
    ]);
    expect(res.status).toBe(403);
    expect(res.body.toString()).toMatch(/DW100-0002/);
  });
});

describe('revocation seen by openssl', () => {
  it('openssl verify -crl_check accepts a good certificate and rejects it once revoked, fetching the CRL from the distribution point', async () => {
    const token = await peers.token('DW100-0002');
    expect((await peers.enroll('d2', 'DW100-0002', token)).status).toBe(200);
    const cacerts = await peers.cacerts();
    const verify = () =>
      peers.opensslStatus(
        'verify',
        '-crl_check',
        '-crl_download',
        '-CAfile',
        peers.rootCa,
        '-untrusted',
        cacerts,
        'd2.pem',
      );
    const good = await verify();
    expect(good.out).toContain('d2.pem: OK');
    expect(good.code).toBe(0);

    const serial = peers.serialOf('d2');
    const revoked = await tp.call('POST', `/api/v1/certificates/${serial}/revoke`, {
      body: { reason: 'keyCompromise' },
    });
    expect(revoked.status).toBe(200);
    // The CRL is re-signed after the revocation commits.
    let bad = await verify();
    for (let i = 0; i < 40 && bad.code === 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
      bad = await verify();
    }
    expect(bad.code).not.toBe(0);
    expect(bad.out).toContain('certificate revoked');
  });

  it('openssl ocsp reports good, then revoked, with a verified response', async () => {
    const cacerts = await peers.cacerts();
    const url = peers.openssl('x509', '-in', 'd1r.pem', '-noout', '-ocsp_uri').trim();
    expect(url).toBe(`${peers.pki}/ocsp`);
    // The issuer certificate comes from the certificate's own AIA caIssuers URL.
    const aia = peers.openssl('x509', '-in', 'd1r.pem', '-noout', '-ext', 'authorityInfoAccess');
    const caIssuers = /CA Issuers - URI:(\S+)/.exec(aia)![1]!;
    const issuer = await peers.curl([caIssuers]);
    expect(issuer.status).toBe(200);
    writeFileSync(peers.path('issuing.der'), issuer.body);
    peers.openssl('x509', '-inform', 'DER', '-in', 'issuing.der', '-out', 'issuing.pem');
    const ask = () =>
      peers.opensslStatus(
        'ocsp',
        '-issuer',
        'issuing.pem',
        '-cert',
        'd1r.pem',
        '-url',
        url,
        '-CAfile',
        peers.rootCa,
        '-verify_other',
        cacerts,
      );
    const good = await ask();
    expect(good.out).toContain('Response verify OK');
    expect(good.out).toContain('d1r.pem: good');

    const serial = peers.serialOf('d1r');
    expect(
      (
        await tp.call('POST', `/api/v1/certificates/${serial}/revoke`, {
          body: { reason: 'cessationOfOperation' },
        })
      ).status,
    ).toBe(200);
    const revoked = await ask();
    expect(revoked.out).toContain('Response verify OK');
    expect(revoked.out).toContain('d1r.pem: revoked');
    expect(revoked.out).toContain('Reason: cessationOfOperation');
  });

  it('openssl ocsp gets "unknown" for a serial Rampart never issued, and the lightweight GET form works', async () => {
    const url = `${peers.pki}/ocsp`;
    const unknown = await peers.opensslStatus(
      'ocsp',
      '-issuer',
      'issuing.pem',
      '-serial',
      '0x1234567890',
      '-url',
      url,
      '-noverify',
    );
    expect(unknown.out).toContain('0x1234567890: unknown');
    // Build a request with openssl, send it with curl over GET (RFC 6960 Appendix A.1).
    peers.openssl('ocsp', '-issuer', 'issuing.pem', '-cert', 'd2.pem', '-no_nonce', '-reqout', 'req.der');
    const b64 = encodeURIComponent(readFileSync(peers.path('req.der')).toString('base64'));
    const res = await peers.curl([`${url}/${b64}`]);
    expect(res.status).toBe(200);
    expect(res.headers).toMatch(/content-type: application\/ocsp-response/i);
    expect(res.headers).toMatch(/cache-control: max-age=\d+/i);
    writeFileSync(peers.path('resp.der'), res.body);
    const text = peers.openssl('ocsp', '-respin', 'resp.der', '-resp_text', '-noverify');
    expect(text).toContain('Cert Status: revoked');
    expect(text).toContain('Responder Id');
  });
});
