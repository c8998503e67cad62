import { generateKeyPairSync, sign } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildCsr } from '@rampart/shared/pki';
import { startTestPlatform, type TestPlatform } from '../test-support/platform.js';
import {
  PkiPeers,
  auditEntriesAfter,
  auditHead,
  deviceCertificateCount,
  type TestAuditEntry,
} from '../test-support/pki.js';

/**
 * The "bad input" half of EST enrollment, against a running platform with curl as the client and
 * openssl making the CSRs. Every refusal must carry the RFC 7030 status (400 bad request, 401 with
 * a `WWW-Authenticate` challenge, 403 not allowed, 415 wrong media type) and a text/plain message
 * saying what was wrong; it must issue nothing, leave the enrollment token unused, write an audit
 * entry and log a warning.
 */
let tp: TestPlatform;
let peers: PkiPeers;

const POLICY_DEVICE = 'DW100-2001';
const BODY_DEVICE = 'DW100-2002';
const DEV_A = 'DW100-2003';
const DEV_B = 'DW100-2004';
const DEV_C = 'DW100-2005';
const DISABLED = 'DW100-2006';
const R1 = 'DW100-2011';
const R2 = 'DW100-2012';
const R3 = 'DW100-2013';

beforeAll(async () => {
  tp = await startTestPlatform('sqlite', {}, { captureLogs: true });
  peers = new PkiPeers(tp);
  for (const id of [POLICY_DEVICE, BODY_DEVICE, DEV_A, DEV_B, DEV_C, DISABLED, R1, R2, R3])
    await peers.device(id);
}, 60_000);
afterAll(async () => {
  await tp?.close();
});

interface CurlResult {
  status: number;
  body: Buffer;
  headers: string;
}

interface PostOptions {
  operation?: 'simpleenroll' | 'simplereenroll';
  /** HTTP Basic user name and password. */
  basic?: [string, string];
  bearer?: string;
  /** `null` sends no Content-Type header at all. */
  contentType?: string | null;
  /** A file written by `peers.csr`, or the exact bytes to send. */
  body: { file: string } | Buffer | string;
  /** TLS client certificate: `<name>.pem` / `<name>.key` in the peers' directory. */
  clientCert?: string;
}

let bodies = 0;
async function post(o: PostOptions): Promise<CurlResult> {
  let file: string;
  if (typeof o.body === 'string' || Buffer.isBuffer(o.body)) {
    file = peers.path(`body-${++bodies}.bin`);
    writeFileSync(file, o.body);
  } else file = o.body.file;
  const args: string[] = [];
  if (o.basic) args.push('--user', `${o.basic[0]}:${o.basic[1]}`);
  if (o.bearer) args.push('-H', `Authorization: Bearer ${o.bearer}`);
  if (o.clientCert)
    args.push('--cert', peers.path(`${o.clientCert}.pem`), '--key', peers.path(`${o.clientCert}.key`));
  const type = o.contentType === undefined ? 'application/pkcs10' : o.contentType;
  args.push('-H', type === null ? 'Content-Type:' : `Content-Type: ${type}`);
  args.push('--data-binary', `@${file}`, `${peers.est}/${o.operation ?? 'simpleenroll'}`);
  return peers.curl(args);
}

/**
 * Send a request that must be refused with `status` and a message matching `message`; check that
 * nothing was issued, that the refusal was audited (exactly one new `certificate.enroll` entry whose
 * reason is the message the client got) and logged as a warning. Returns the audit entry.
 */
async function refused(
  send: () => Promise<CurlResult>,
  status: number,
  message: RegExp,
): Promise<TestAuditEntry> {
  const certificatesBefore = await deviceCertificateCount(tp);
  const seq = await auditHead(tp);
  const logsBefore = tp.logs.length;

  const res = await send();
  const text = res.body.toString('utf8');
  expect(res.status, text).toBe(status);
  expect(res.headers).toMatch(/^content-type: text\/plain/im);
  expect(text).toMatch(message);
  if (status === 401) expect(res.headers).toMatch(/^www-authenticate: Basic realm="rampart-est"\r?$/im);
  else expect(res.headers).not.toMatch(/^www-authenticate:/im);

  expect(await deviceCertificateCount(tp), 'a refused request issued a certificate').toBe(certificatesBefore);

  const entries = await auditEntriesAfter(tp, 'certificate.enroll', seq);
  expect(entries, 'one audit entry per refusal').toHaveLength(1);
  const entry = entries[0]!;
  expect(entry.outcome).toBe(status === 400 || status === 415 ? 'failure' : 'denied');
  expect(entry.details.reason).toBe(text.trim());
  expect(entry.details.status).toBe(status);

  const warnings = tp.logs
    .slice(logsBefore)
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((l) => l.msg === 'enrollment refused');
  expect(warnings).toHaveLength(1);
  expect(warnings[0]).toMatchObject({
    level: 40,
    event: 'certificate.enroll.refused',
    status,
    reason: text.trim(),
  });
  return entry;
}

function tokenId(token: string): string {
  return token.split('_')[1]!;
}

async function tokenState(id: string, device: string): Promise<string> {
  const r = await tp.call('GET', `/api/v1/enrollment-tokens?device=${device}`);
  expect(r.status).toBe(200);
  return (r.body.items as { id: string; state: string }[]).find((t) => t.id === id)!.state;
}

describe('CSRs Rampart will not sign (good token, bad request)', () => {
  let token: string;
  const send = (file: string) => () => post({ basic: [POLICY_DEVICE, token], body: { file } });

  beforeAll(async () => {
    token = await peers.token(POLICY_DEVICE);
  });

  it('refuses an RSA-1024 key with 400', async () => {
    const csr = peers.csr('rsa1024', POLICY_DEVICE, { newkey: 'rsa:1024' });
    const entry = await refused(send(csr), 400, /RSA-1024; RSA keys must have at least 2048 bits/);
    expect(entry.details).toMatchObject({ operation: 'simpleenroll', basicUser: POLICY_DEVICE });
    expect(entry.actor).toBe(`device:${POLICY_DEVICE}`);
  });

  it('refuses a SHA-1 signature with 400', async () => {
    const csr = peers.csr('sha1', POLICY_DEVICE, { digest: 'sha1' });
    await refused(send(csr), 400, /SHA-1 is refused/);
  });

  it('refuses a key on secp521r1 with 400', async () => {
    peers.openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-521', '-out', 'p521.key');
    const csr = peers.csr('p521', POLICY_DEVICE, { key: 'p521.key' });
    await refused(send(csr), 400, /curve P-521; use P-256 or P-384/);
  });

  it('refuses a request for CA rights with 400', async () => {
    const csr = peers.csr('ca', POLICY_DEVICE, { extra: ['-addext', 'basicConstraints=critical,CA:TRUE'] });
    await refused(send(csr), 400, /asks for CA rights/);
  });

  it('refuses an unknown critical requested extension with 400', async () => {
    const csr = peers.csr('crit', POLICY_DEVICE, {
      extra: ['-addext', '1.3.6.1.4.1.55555.7=critical,ASN1:NULL'],
    });
    await refused(send(csr), 400, /critical extension 1\.3\.6\.1\.4\.1\.55555\.7/);
  });

  it('refuses a CSR whose signature does not verify with 400', async () => {
    peers.csr('badsig', POLICY_DEVICE);
    const der = readFileSync(peers.path('badsig.csr.der'));
    der[der.length - 2]! ^= 0x01; // inside the ECDSA signature's s
    writeFileSync(peers.path('badsig.csr.der'), der);
    // openssl agrees the request is bad (OpenSSL 3.0 says so but still exits 0).
    const check = await peers.opensslStatus(
      'req',
      '-inform',
      'DER',
      '-in',
      'badsig.csr.der',
      '-verify',
      '-noout',
    );
    expect(check.out).toMatch(/verify failure/);
    await refused(
      () => post({ basic: [POLICY_DEVICE, token], body: der.toString('base64') }),
      400,
      /does not verify/,
    );
  });

  it('refuses a SAN DNS name with 403', async () => {
    const csr = peers.csr('dns', POLICY_DEVICE, {
      extra: ['-addext', 'subjectAltName=DNS:evil.example.com'],
    });
    await refused(send(csr), 403, /SAN DNS:evil\.example\.com/);
  });

  it("refuses another device's SAN URI with 403", async () => {
    const csr = peers.csr('uri', POLICY_DEVICE, {
      extra: ['-addext', `subjectAltName=URI:urn:rampart:device:${DEV_B}`],
    });
    const entry = await refused(send(csr), 403, new RegExp(`SAN URI urn:rampart:device:${DEV_B}`));
    expect(entry.target).toBe(`device:${POLICY_DEVICE}`);
  });

  it('none of these refusals consumed the token: it then enrolls a good CSR', async () => {
    expect(await tokenState(tokenId(token), POLICY_DEVICE)).toBe('unused');
    const before = await deviceCertificateCount(tp);
    const res = await peers.enroll('policy-ok', POLICY_DEVICE, token);
    expect(res.status, res.body.toString()).toBe(200);
    expect(await deviceCertificateCount(tp)).toBe(before + 1);
    expect(await tokenState(tokenId(token), POLICY_DEVICE)).toBe('used');
  });
});

describe('bodies that are not a CSR', () => {
  let token: string;
  const send = (body: string | Buffer, contentType?: string | null) => () =>
    post({ basic: [BODY_DEVICE, token], body, ...(contentType !== undefined ? { contentType } : {}) });

  beforeAll(async () => {
    token = await peers.token(BODY_DEVICE);
    peers.csr('body', BODY_DEVICE);
  });

  it('refuses text that is not base64 with 400', async () => {
    await refused(send('%%%'), 400, /not base64 .*character "%" at offset 0/);
  });

  it('refuses base64 of a length that is not a multiple of 4 with 400', async () => {
    await refused(send('QUJDRA\r\nQ'), 400, /not base64 .*not a multiple of 4/);
  });

  it('refuses base64 of random bytes with 400', async () => {
    const noise = Buffer.from('9c1f00d2e3a47b5566778899aabbccddeeff0011223344556677'.repeat(8), 'hex');
    await refused(send(noise.toString('base64')), 400, /not a PKCS#10 certificate request/);
  });

  it('refuses a truncated CSR (first half of the DER) with 400', async () => {
    const der = readFileSync(peers.path('body.csr.der'));
    await refused(
      send(der.subarray(0, der.length >> 1).toString('base64')),
      400,
      /not a PKCS#10 certificate request/,
    );
  });

  it('refuses raw DER (not base64-encoded) with 400', async () => {
    await refused(send(readFileSync(peers.path('body.csr.der'))), 400, /not base64/);
  });

  it('refuses an empty body with 400', async () => {
    await refused(send(''), 400, /body is empty/);
  });

  it('refuses PEM with garbage inside with 400', async () => {
    const pem =
      '-----BEGIN CERTIFICATE REQUEST-----\nMIIB!!this is not base64!!\n-----END CERTIFICATE REQUEST-----\n';
    await refused(send(pem), 400, /not base64 .*character "!"/);
  });

  // The ASN.1 parser is lenient about the unsigned envelope of a request; Rampart insists on DER.
  it('refuses a valid CSR followed by trailing bytes with 400', async () => {
    const der = readFileSync(peers.path('body.csr.der'));
    const body = Buffer.concat([der, Buffer.from([0x05, 0x00])]).toString('base64');
    await refused(send(body), 400, /not a single DER-encoded PKCS#10 structure: 2 bytes follow the request/);
  });

  it('refuses a signature BIT STRING with unused bits, or a wrong algorithm tag, with 400', async () => {
    const der = readFileSync(peers.path('body.csr.der'));
    const algorithm = der.indexOf(Buffer.from('300a06082a8648ce3d040302', 'hex')); // ecdsa-with-SHA256
    expect(der[algorithm + 12]).toBe(0x03);
    const unusedBits = Buffer.from(der);
    unusedBits[algorithm + 14] = 0x01;
    await refused(send(unusedBits.toString('base64')), 400, /the signature BIT STRING has unused bits/);
    const wrongTag = Buffer.from(der);
    wrongTag[algorithm] = 0xb0;
    await refused(
      send(wrongTag.toString('base64')),
      400,
      /not a SEQUENCE of request info, algorithm and signature/,
    );
  });

  it('refuses an indefinite-length (BER) request with 400', async () => {
    const der = readFileSync(peers.path('body.csr.der'));
    const header = der[1]! < 0x80 ? 2 : 2 + (der[1]! & 0x7f);
    const ber = Buffer.concat([Buffer.from([0x30, 0x80]), der.subarray(header), Buffer.from([0, 0])]);
    await refused(send(ber.toString('base64')), 400, /indefinite length/);
  });

  it('refuses Content-Type application/json with 415', async () => {
    const b64 = readFileSync(peers.path('body.csr.b64'));
    await refused(
      send(b64, 'application/json'),
      415,
      /must have Content-Type application\/pkcs10, not "application\/json"/,
    );
  });

  it('refuses Content-Type text/plain with 415', async () => {
    const b64 = readFileSync(peers.path('body.csr.b64'));
    await refused(
      send(b64, 'text/plain'),
      415,
      /must have Content-Type application\/pkcs10, not "text\/plain"/,
    );
  });

  it('refuses a request without Content-Type with 415', async () => {
    const b64 = readFileSync(peers.path('body.csr.b64'));
    await refused(send(b64, null), 415, /must have Content-Type application\/pkcs10, not "none"/);
  });

  it('the token survived all of it and still enrolls', async () => {
    expect(await tokenState(tokenId(token), BODY_DEVICE)).toBe('unused');
    const res = await peers.enroll('body-ok', BODY_DEVICE, token, peers.path('body.csr.b64'));
    expect(res.status, res.body.toString()).toBe(200);
  });
});

describe('enrollment credentials', () => {
  it('refuses a request without credentials with 401 and a Basic challenge', async () => {
    const csr = peers.csr('nocred', DEV_A);
    const entry = await refused(() => post({ body: { file: csr } }), 401, /no credentials were presented/);
    expect(entry.actor).toMatch(/^anonymous:/);
    expect(entry.target).toBe('');
  });

  it('refuses a wrong password with 401: malformed, unknown and wrong-secret tokens', async () => {
    const csr = peers.csr('wrongpw', DEV_A);
    await refused(
      () => post({ basic: [DEV_A, 'hunter2'], body: { file: csr } }),
      401,
      /not in the rpe_… format/,
    );
    await refused(
      () => post({ basic: [DEV_A, `rpe_000000000000_${'A'.repeat(43)}`], body: { file: csr } }),
      401,
      /token is not known/,
    );
    const token = await peers.token(DEV_A);
    const last = token.at(-1) === 'A' ? 'B' : 'A';
    const entry = await refused(
      () => post({ basic: [DEV_A, token.slice(0, -1) + last], body: { file: csr } }),
      401,
      /token is not valid/,
    );
    expect(entry.details).toMatchObject({ basicUser: DEV_A, status: 401 });
    // The secret never reaches the audit log.
    expect(JSON.stringify(entry)).not.toContain(token.slice(20));
    await refused(
      () => post({ bearer: token.slice(0, -1) + last, body: { file: csr } }),
      401,
      /token is not valid/,
    );
    expect(await tokenState(tokenId(token), DEV_A)).toBe('unused');
  });

  it("refuses device A's token presented with user name B with 403", async () => {
    const token = await peers.token(DEV_A);
    const csr = peers.csr('userb', DEV_B);
    const entry = await refused(
      () => post({ basic: [DEV_B, token], body: { file: csr } }),
      403,
      new RegExp(`token belongs to device ${DEV_A}, not to ${DEV_B}`),
    );
    expect(entry.actor).toBe(`device:${DEV_B}`);
    expect(await tokenState(tokenId(token), DEV_A)).toBe('unused');
  });

  it("refuses a CSR for device B with device A's token and user name with 403", async () => {
    const token = await peers.token(DEV_A);
    const csr = peers.csr('cnb', DEV_B);
    await refused(
      () => post({ basic: [DEV_A, token], body: { file: csr } }),
      403,
      new RegExp(`CN is "${DEV_B}", but the credentials are for device "${DEV_A}"`),
    );
    // The same, with the token as a Bearer token (no user name to compare).
    await refused(() => post({ bearer: token, body: { file: csr } }), 403, new RegExp(`CN is "${DEV_B}"`));
    expect(await tokenState(tokenId(token), DEV_A)).toBe('unused');
    // And the token still works for its own device.
    expect((await peers.enroll('a-ok', DEV_A, token)).status).toBe(200);
  });

  it('refuses a token that was already used with 401', async () => {
    const token = await peers.token(DEV_B);
    expect((await peers.enroll('b-ok', DEV_B, token)).status).toBe(200);
    const csr = peers.csr('b-again', DEV_B);
    await refused(() => post({ basic: [DEV_B, token], body: { file: csr } }), 401, /already used/);
  });

  it('refuses an expired token with 401', async () => {
    const token = await peers.token(DEV_C, '1s');
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const csr = peers.csr('expired-token', DEV_C);
    await refused(() => post({ basic: [DEV_C, token], body: { file: csr } }), 401, /token has expired/);
    expect(await tokenState(tokenId(token), DEV_C)).toBe('expired');
  });

  it('refuses a revoked token with 401', async () => {
    const token = await peers.token(DEV_C);
    const revoked = await tp.call('DELETE', `/api/v1/enrollment-tokens/${tokenId(token)}`);
    expect(revoked.status).toBe(200);
    expect(revoked.body.state).toBe('revoked');
    const csr = peers.csr('revoked-token', DEV_C);
    await refused(() => post({ basic: [DEV_C, token], body: { file: csr } }), 401, /token was revoked/);
  });

  it('will not create a token for a device that is not registered (404)', async () => {
    const r = await tp.call('POST', '/api/v1/enrollment-tokens', {
      body: { deviceId: 'DW100-9999', expiresIn: '1h' },
    });
    expect(r.status).toBe(404);
    expect(JSON.stringify(r.body)).toMatch(/does not exist/);
  });

  it('refuses enrollment of a device disabled after its token was created with 403', async () => {
    const token = await peers.token(DISABLED);
    const patch = await tp.call('PATCH', `/api/v1/devices/${DISABLED}`, { body: { status: 'disabled' } });
    expect(patch.status, JSON.stringify(patch.body)).toBe(200);
    const csr = peers.csr('disabled', DISABLED);
    const entry = await refused(
      () => post({ basic: [DISABLED, token], body: { file: csr } }),
      403,
      /is disabled/,
    );
    expect(entry.target).toBe(`device:${DISABLED}`);
    expect(await tokenState(tokenId(token), DISABLED)).toBe('unused');
  });
});

describe('re-enrollment refusals', () => {
  beforeAll(async () => {
    for (const [name, id] of [
      ['r1', R1],
      ['r3', R3],
    ] as const) {
      const res = await peers.enroll(name, id, await peers.token(id));
      expect(res.status, res.body.toString()).toBe(200);
    }
  });

  it('refuses simplereenroll without a client certificate with 401', async () => {
    const csr = peers.csr('r1-nocert', R1);
    await refused(
      () => post({ operation: 'simplereenroll', body: { file: csr } }),
      401,
      /needs the current device certificate/,
    );
    // An enrollment token is no substitute for the certificate.
    const token = await peers.token(R1);
    await refused(
      () => post({ operation: 'simplereenroll', basic: [R1, token], body: { file: csr } }),
      401,
      /needs the current device certificate/,
    );
  });

  it('refuses a certificate of device A with a CSR for device B with 403', async () => {
    const csr = peers.csr('r1-as-r2', R2);
    const entry = await refused(
      () => post({ operation: 'simplereenroll', clientCert: 'r1', body: { file: csr } }),
      403,
      /re-enrollment must keep the identity/,
    );
    expect(entry.details.clientCertificate).toBe(peers.serialOf('r1').toLowerCase());
    expect(entry.actor).toBe(`device:${R1}`);
  });

  it("refuses a client certificate from a CA that is not Rampart's with 403", async () => {
    peers.openssl(
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'evil-ca.key',
      '-out', 'evil-ca.pem', '-subj', '/O=Rampart/CN=Rampart Device Issuing CA', '-days', '2',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    ); // prettier-ignore
    peers.csr('foreign', R2);
    writeFileSync(
      peers.path('foreign.ext'),
      `subjectAltName=URI:urn:rampart:device:${R2}\nextendedKeyUsage=clientAuth\nbasicConstraints=critical,CA:FALSE\n`,
    );
    peers.openssl(
      'x509', '-req', '-inform', 'DER', '-in', 'foreign.csr.der', '-CA', 'evil-ca.pem', '-CAkey', 'evil-ca.key',
      '-CAcreateserial', '-days', '1', '-extfile', 'foreign.ext', '-out', 'foreign.pem',
    ); // prettier-ignore
    const csr = peers.csr('foreign-renew', R2);
    await refused(
      () => post({ operation: 'simplereenroll', clientCert: 'foreign', body: { file: csr } }),
      403,
      /client certificate was not accepted \(\w+/,
    );
  });

  it('refuses a certificate that has expired (on record) with 403', async () => {
    const serial = peers.serialOf('r3').toLowerCase();
    await tp.platform.storage.db
      .updateTable('certificates')
      .set({ not_after: new Date(Date.now() - 60_000).toISOString() })
      .where('serial', '=', serial)
      .execute();
    expect((await tp.call('GET', `/api/v1/certificates/${serial}`)).body.state).toBe('expired');
    const csr = peers.csr('r3-renew', R3);
    const entry = await refused(
      () => post({ operation: 'simplereenroll', clientCert: 'r3', body: { file: csr } }),
      403,
      new RegExp(`client certificate ${serial} has expired`),
    );
    expect(entry.details).toMatchObject({ operation: 'simplereenroll', clientCertificate: serial });
  });

  it('refuses a revoked certificate with 403', async () => {
    const serial = peers.serialOf('r1').toLowerCase();
    const r = await tp.call('POST', `/api/v1/certificates/${serial}/revoke`, {
      body: { reason: 'keyCompromise' },
    });
    expect(r.status).toBe(200);
    const csr = peers.csr('r1-renew', R1);
    await refused(
      () => post({ operation: 'simplereenroll', clientCert: 'r1', body: { file: csr } }),
      403,
      /was revoked \(keyCompromise\)/,
    );
  });
});

describe('the audit trail of all of the above', () => {
  it('lists every refusal under certificate.enroll with a reason, and nothing else there', async () => {
    const r = await tp.call('GET', '/api/v1/audit/entries?action=certificate.enroll&limit=1000');
    expect(r.status).toBe(200);
    const items = r.body.items as TestAuditEntry[];
    expect(items.length).toBeGreaterThanOrEqual(35);
    for (const e of items) {
      expect(['denied', 'failure']).toContain(e.outcome);
      expect(typeof e.details.reason).toBe('string');
      expect(e.details.reason).not.toBe('');
    }
    const denied = await tp.call(
      'GET',
      '/api/v1/audit/entries?action=certificate.enroll&outcome=denied&limit=1000',
    );
    const failed = await tp.call(
      'GET',
      '/api/v1/audit/entries?action=certificate.enroll&outcome=failure&limit=1000',
    );
    expect(denied.body.items.length + failed.body.items.length).toBe(items.length);
    expect(failed.body.items.map((e: TestAuditEntry) => e.details.status)).not.toContain(401);
  });
});

describe.each(['sqlite', 'postgres'] as const)('client-controlled text in refusals (%s)', (dialect) => {
  const DEVICE = 'DW100-2101';
  let t: TestPlatform;
  let p: PkiPeers;

  beforeAll(async () => {
    t = await startTestPlatform(dialect);
    p = new PkiPeers(t);
    await p.device(DEVICE);
  }, 60_000);
  afterAll(async () => {
    await t?.close();
  });

  const basic = (user: string, password: string) =>
    `Authorization: Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

  it('audits a user name or CSR CN containing NUL (escaped) instead of failing with 500', async () => {
    const token = await p.token(DEVICE);
    const csr = p.csr('nul', DEVICE);
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const weak = await buildCsr({
      commonName: 'DW100\u00002101',
      publicKey,
      sign: async (data) => sign('sha256', data, privateKey),
    });
    writeFileSync(p.path('nul-cn.csr.b64'), weak.toString('base64'));
    const seq = await auditHead(t);
    const before = await deviceCertificateCount(t);

    const est = (auth: string, file: string) =>
      p.curl([
        '-H',
        auth,
        '-H',
        'Content-Type: application/pkcs10',
        '--data-binary',
        `@${file}`,
        `${p.est}/simpleenroll`,
      ]);
    const byUser = await est(basic('DW100\u00002101', token), csr);
    expect(byUser.status, byUser.body.toString()).toBe(403);
    const byCn = await est(basic(DEVICE, token), p.path('nul-cn.csr.b64'));
    expect(byCn.status, byCn.body.toString()).toBe(400);
    expect(byCn.body.toString()).toMatch(/RSA-1024/);

    const entries = await auditEntriesAfter(t, 'certificate.enroll', seq, 2);
    expect(entries.map((e) => [e.actor, e.target, e.details.status])).toEqual([
      ['device:DW100\\u00002101', 'device:DW100\\u00002101', 403],
      ['device:DW100\\u00002101', 'device:DW100\\u00002101', 400],
    ]);
    expect(await deviceCertificateCount(t)).toBe(before);
    expect((await p.enroll('ok', DEVICE, token)).status).toBe(200);
  });
});

describe('refusal limit per source address', () => {
  let t: TestPlatform;
  let p: PkiPeers;

  beforeAll(async () => {
    t = await startTestPlatform('sqlite', { 'est.refusalsPerMinute': 5 });
    p = new PkiPeers(t);
    await p.device('DW100-3001');
  }, 60_000);
  afterAll(async () => {
    await t?.close();
  });

  it('answers 429 with Retry-After after the limit, audits that once, and still counts nothing as issued', async () => {
    const seq = await auditHead(t);
    const statuses: number[] = [];
    let lastHeaders = '';
    for (let i = 0; i < 9; i++) {
      const r = await p.curl([
        '-H',
        'Content-Type: application/pkcs10',
        '--data-binary',
        '%%%',
        `${p.est}/simpleenroll`,
      ]);
      statuses.push(r.status);
      lastHeaders = r.headers;
    }
    expect(statuses).toEqual([400, 400, 400, 400, 400, 429, 429, 429, 429]);
    expect(lastHeaders).toMatch(/retry-after: \d+/i);
    const entries = await auditEntriesAfter(t, 'certificate.enroll', seq);
    // Five refusals and one entry for the address being limited; the blocked requests add nothing.
    expect(entries).toHaveLength(6);
    expect(entries.at(-1)!.details).toMatchObject({ status: 429, rateLimited: true });
    expect(await deviceCertificateCount(t)).toBe(0);
  });

  it('counts refused attestation evidence too, and then refuses nonces and evidence from that address', async () => {
    const base = p.est.replace(/\/\.well-known\/est$/, '');
    const attest = (path: string, body: string) =>
      p.curl(['-H', 'Content-Type: application/json', '--data-binary', body, `${base}${path}`]);
    // The address is still over its limit from the refused enrollments above.
    const nonce = await attest('/attestation/v1/nonce', '{}');
    expect(nonce.status).toBe(429);
    expect(JSON.parse(nonce.body.toString())).toMatchObject({ status: 429 });
    expect(nonce.headers).toMatch(/retry-after: \d+/i);
    expect((await attest('/attestation/v1/evidence', '{}')).status).toBe(429);
  });
});

describe('refusal limit on the attestation endpoints', () => {
  let t: TestPlatform;
  let p: PkiPeers;

  beforeAll(async () => {
    t = await startTestPlatform('sqlite', { 'est.refusalsPerMinute': 3 });
    p = new PkiPeers(t);
  }, 60_000);
  afterAll(async () => {
    await t?.close();
  });

  it('answers 429 after refused evidence reaches the limit, audited once', async () => {
    const base = p.est.replace(/\/\.well-known\/est$/, '');
    const seq = await auditHead(t);
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await p.curl([
        '-H',
        'Content-Type: application/json',
        '--data-binary',
        i % 2 ? 'not json' : '{"format":"rampart-evidence/1"}',
        `${base}/attestation/v1/evidence`,
      ]);
      statuses.push(r.status);
    }
    expect(statuses).toEqual([400, 400, 400, 429, 429]);
    const nonce = await p.curl(['-X', 'POST', `${base}/attestation/v1/nonce`]);
    expect(nonce.status).toBe(429);
    // The two refused evidence documents, and one entry for the address being limited.
    const entries = await auditEntriesAfter(t, 'attestation.verify', seq, 3);
    expect(entries.map((e) => e.details.status)).toEqual([400, 400, 429]);
  });
});
