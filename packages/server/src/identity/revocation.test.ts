import { X509Certificate, createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import { CRLReasons, Extension, SubjectPublicKeyInfo } from '@peculiar/asn1-x509';
import { BasicOCSPResponse, OCSPRequest, OCSPResponse, OCSPResponseStatus } from '@peculiar/asn1-ocsp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OID } from '@rampart/shared/pki';
import { DIALECTS } from '../test-support/databases.js';
import { startTestPlatform, type TestPlatform } from '../test-support/platform.js';
import { PkiPeers } from '../test-support/pki.js';
import { CrlService } from './crl.js';

/**
 * Revocation as relying parties see it: lineage, device disabling, CRLs and the OCSP responder,
 * checked with openssl and with hand-made OCSP requests, on both storage backends.
 */
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Poll `fn` until `ok` holds or `ms` pass; returns the last value either way. */
async function until<T>(fn: () => Promise<T>, ok: (v: T) => boolean, ms = 2000): Promise<T> {
  const end = Date.now() + ms;
  let v = await fn();
  while (!ok(v) && Date.now() < end) {
    await sleep(50);
    v = await fn();
  }
  return v;
}

interface Crl {
  /** The DER file, in the peer directory. */
  file: string;
  text: string;
  number: number;
  thisUpdate: number;
  nextUpdate: number;
  /** serial (upper-case hex, as openssl prints it) → reason text ("Key Compromise"), "" when none. */
  entries: Map<string, string>;
}

let fileCounter = 0;
const scratch = (prefix: string) => `${prefix}-${++fileCounter}`;

/** Fetch and parse a CA's CRL from the PKI listener (or the given URL); its signature is verified against `caFile`. */
async function fetchCrl(
  peers: PkiPeers,
  caId: string,
  caFile: string,
  url = `${peers.pki}/crl/${caId}.crl`,
): Promise<Crl> {
  const res = await peers.curl([url]);
  expect(res.status, `GET ${url}`).toBe(200);
  expect(res.headers).toMatch(/content-type: application\/pkix-crl/i);
  const file = scratch('crl') + '.der';
  writeFileSync(peers.path(file), res.body);
  const checked = await peers.opensslStatus(
    'crl',
    '-inform',
    'DER',
    '-in',
    file,
    '-CAfile',
    caFile,
    '-noout',
    '-text',
  );
  expect(checked.out).toContain('verify OK');
  const text = checked.out;
  const entries = new Map<string, string>();
  for (const chunk of text.split('Serial Number: ').slice(1)) {
    const serial = chunk.split(/\s/, 1)[0]!;
    entries.set(serial, /X509v3 CRL Reason Code:\s*\n\s*(.+)\n/.exec(chunk)?.[1]?.trim() ?? '');
  }
  return {
    file,
    text,
    number: Number(/X509v3 CRL Number:\s*\n\s*(\d+)/.exec(text)![1]),
    thisUpdate: Date.parse(/Last Update: (.+)\n/.exec(text)![1]!),
    nextUpdate: Date.parse(/Next Update: (.+)\n/.exec(text)![1]!),
    entries,
  };
}

async function postOcsp(peers: PkiPeers, body: Buffer, contentType = 'application/ocsp-request') {
  const res = await fetch(`${peers.pki}/ocsp`, {
    method: 'POST',
    headers: { 'content-type': contentType },
    body,
  });
  return {
    status: res.status,
    type: res.headers.get('content-type'),
    der: Buffer.from(await res.arrayBuffer()),
  };
}

function ocspStatus(der: Buffer): OCSPResponseStatus {
  return AsnConvert.parse(der, OCSPResponse).responseStatus;
}

function basicOf(der: Buffer): BasicOCSPResponse {
  const r = AsnConvert.parse(der, OCSPResponse);
  return AsnConvert.parse(r.responseBytes!.response.buffer, BasicOCSPResponse);
}

/** An OCSP request made by openssl, without a nonce, or with the nonce given (any length). */
function ocspRequest(
  peers: PkiPeers,
  issuerFile: string,
  certOrSerial: { cert: string } | { serial: string },
  nonce?: Buffer,
): Buffer {
  const out = scratch('ocspreq') + '.der';
  const target = 'cert' in certOrSerial ? ['-cert', certOrSerial.cert] : ['-serial', certOrSerial.serial];
  peers.openssl('ocsp', '-issuer', issuerFile, ...target, '-no_nonce', '-reqout', out);
  const der = readFileSync(peers.path(out));
  if (!nonce) return der;
  const req = AsnConvert.parse(der, OCSPRequest);
  req.tbsRequest.requestExtensions = [
    new Extension({
      extnID: OID.ocspNonce,
      critical: false,
      extnValue: new OctetString(AsnConvert.serialize(new OctetString(nonce))),
    }),
  ];
  return Buffer.from(AsnConvert.serialize(req));
}

/** `openssl ocsp -respin -resp_text` on a response. */
async function ocspText(peers: PkiPeers, der: Buffer): Promise<string> {
  const file = scratch('ocspresp') + '.der';
  writeFileSync(peers.path(file), der);
  return (await peers.opensslStatus('ocsp', '-respin', file, '-resp_text', '-noverify')).out;
}

async function setup(dialect: (typeof DIALECTS)[number], settings: Record<string, unknown>) {
  const tp = await startTestPlatform(dialect, settings);
  const peers = new PkiPeers(tp);
  await tp.call('POST', '/api/v1/device-models', { body: { id: 'DW100' } });
  const issuing = (await tp.call('GET', '/api/v1/ca/issuing-1/certificate')).body as string;
  writeFileSync(peers.path('issuing-1.pem'), issuing);
  return { tp, peers };
}

async function revoke(tp: TestPlatform, serial: string, reason: string, token?: string) {
  return tp.call('POST', `/api/v1/certificates/${serial}/revoke`, {
    body: { reason },
    ...(token ? { token } : {}),
  });
}

const lower = (s: string) => s.toLowerCase();

describe.each(DIALECTS)('revocation on %s', (dialect) => {
  describe('lineage with supersedeOnRenewal off', () => {
    let tp: TestPlatform;
    let peers: PkiPeers;
    beforeAll(async () => {
      ({ tp, peers } = await setup(dialect, { 'ca.supersedeOnRenewal': false }));
      for (const id of ['L-0001', 'L-0002']) await peers.device(id);
    }, 60_000);
    afterAll(async () => {
      await tp?.close();
    });

    it('revoking the first certificate with keyCompromise revokes every renewal made from it', async () => {
      expect((await peers.enroll('a', 'L-0001', await peers.token('L-0001'))).status).toBe(200);
      expect((await peers.reenroll('b', 'L-0001', 'a')).status).toBe(200);
      expect((await peers.reenroll('c', 'L-0001', 'b')).status).toBe(200);
      expect((await peers.enroll('x', 'L-0002', await peers.token('L-0002'))).status).toBe(200);
      const [a, b, c, x] = ['a', 'b', 'c', 'x'].map((n) => peers.serialOf(n));
      const get = async (s: string) => (await tp.call('GET', `/api/v1/certificates/${s}`)).body;
      // Without supersede every renewal leaves its parent valid.
      expect(await get(a!)).toMatchObject({ state: 'valid', renewedFrom: null });
      expect(await get(b!)).toMatchObject({ state: 'valid', renewedFrom: lower(a!) });
      expect(await get(c!)).toMatchObject({ state: 'valid', renewedFrom: lower(b!) });

      const r = await revoke(tp, a!, 'keyCompromise');
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      expect(r.body.alreadyRevoked).toBe(false);
      // The requested certificate first, then its lineage.
      expect(r.body.revoked[0].serial).toBe(lower(a!));
      expect(r.body.revoked.map((e: { serial: string }) => e.serial).sort()).toEqual(
        [a, b, c].map((s) => lower(s!)).sort(),
      );
      expect(r.body.revoked.every((e: { deviceId: string }) => e.deviceId === 'L-0001')).toBe(true);
      for (const s of [a, b, c])
        expect(await get(s!)).toMatchObject({ state: 'revoked', revocationReason: 'keyCompromise' });
      expect(await get(x!)).toMatchObject({ state: 'valid', revocationReason: null });

      const crl = await until(
        () => fetchCrl(peers, 'issuing-1', 'issuing-1.pem'),
        (v) => [a, b, c].every((s) => v.entries.has(s!)),
      );
      for (const s of [a, b, c]) expect(crl.entries.get(s!), s).toBe('Key Compromise');
      expect(crl.entries.has(x!)).toBe(false);
      // The other device still re-enrolls with its certificate.
      expect((await peers.reenroll('x2', 'L-0002', 'x')).status).toBe(200);
    });
  });

  describe('with supersedeOnRenewal on (default)', () => {
    let tp: TestPlatform;
    let peers: PkiPeers;
    beforeAll(async () => {
      ({ tp, peers } = await setup(dialect, { 'ca.crlValidityHours': 6 }));
      for (const id of ['S-0001', 'S-0002', 'D-0001', 'C-0001', 'C-0002', 'O-0001', 'O-0002', 'E-0001'])
        await peers.device(id);
    }, 60_000);
    afterAll(async () => {
      await tp?.close();
    });

    const get = async (s: string) => (await tp.call('GET', `/api/v1/certificates/${s}`)).body;

    it('supersedes on renewal, and a later keyCompromise upgrades the reason across the lineage', async () => {
      expect((await peers.enroll('sa', 'S-0001', await peers.token('S-0001'))).status).toBe(200);
      expect((await peers.reenroll('sb', 'S-0001', 'sa')).status).toBe(200);
      const [a, b] = ['sa', 'sb'].map((n) => peers.serialOf(n));
      const aRecord = await get(a!);
      expect(aRecord).toMatchObject({ state: 'revoked', revocationReason: 'superseded' });
      expect((await peers.reenroll('sc', 'S-0001', 'sb')).status).toBe(200);
      const c = peers.serialOf('sc');
      expect(await get(b!)).toMatchObject({ state: 'revoked', revocationReason: 'superseded' });
      expect(await get(c)).toMatchObject({ state: 'valid', renewedFrom: lower(b!) });
      // Another device's certificate, to check it is left alone.
      expect((await peers.enroll('so', 'S-0002', await peers.token('S-0002'))).status).toBe(200);
      const other = peers.serialOf('so');

      // A pre-signed OCSP answer for A (superseded) sits in the responder's cache.
      const reqA = ocspRequest(peers, 'issuing-1.pem', { cert: 'sa.pem' });
      expect(await ocspText(peers, (await postOcsp(peers, reqA)).der)).toContain('Reason: superseded');

      const r = await revoke(tp, a!, 'keyCompromise');
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      expect(r.body.alreadyRevoked).toBe(true);
      expect(r.body.revoked.map((e: { serial: string }) => e.serial)).toEqual([lower(c)]);
      // A keeps its revocation time but now says keyCompromise; so do its renewals.
      expect(await get(a!)).toMatchObject({
        state: 'revoked',
        revocationReason: 'keyCompromise',
        revokedAt: aRecord.revokedAt,
      });
      expect(await get(b!)).toMatchObject({ state: 'revoked', revocationReason: 'keyCompromise' });
      expect(await get(c)).toMatchObject({ state: 'revoked', revocationReason: 'keyCompromise' });
      expect(await get(other)).toMatchObject({ state: 'valid' });

      const crl = await until(
        () => fetchCrl(peers, 'issuing-1', 'issuing-1.pem'),
        (v) => [a, b, c].every((s) => v.entries.get(s!) === 'Key Compromise'),
      );
      for (const s of [a, b, c]) expect(crl.entries.get(s!), s).toBe('Key Compromise');
      expect(crl.entries.has(other)).toBe(false);
      // The cached answer for A was dropped.
      expect(await ocspText(peers, (await postOcsp(peers, reqA)).der)).toContain('Reason: keyCompromise');

      // Revoking an already revoked leaf changes nothing.
      const before = await Promise.all([a, b, c, other].map((s) => get(s!)));
      const again = await revoke(tp, c, 'cessationOfOperation');
      expect(again.status).toBe(200);
      expect(again.body).toMatchObject({ alreadyRevoked: true, revoked: [] });
      await sleep(200);
      expect(await Promise.all([a, b, c, other].map((s) => get(s!)))).toEqual(before);
      const after = await fetchCrl(peers, 'issuing-1', 'issuing-1.pem');
      expect(after.number).toBe(crl.number);
      expect(after.entries).toEqual(crl.entries);

      // keyCompromise upgrades a revoked certificate with nothing left to revoke in its lineage, too.
      expect((await revoke(tp, other, 'cessationOfOperation')).body.alreadyRevoked).toBe(false);
      const otherRecord = await get(other);
      const reqOther = ocspRequest(peers, 'issuing-1.pem', { cert: 'so.pem' });
      expect(await ocspText(peers, (await postOcsp(peers, reqOther)).der)).toContain(
        'Reason: cessationOfOperation',
      );
      const upgrade = await revoke(tp, other, 'keyCompromise');
      expect(upgrade.body).toMatchObject({ alreadyRevoked: true, revoked: [] });
      expect(await get(other)).toMatchObject({
        revocationReason: 'keyCompromise',
        revokedAt: otherRecord.revokedAt,
      });
      expect(await ocspText(peers, (await postOcsp(peers, reqOther)).der)).toContain('Reason: keyCompromise');
      const upgradedCrl = await until(
        () => fetchCrl(peers, 'issuing-1', 'issuing-1.pem'),
        (v) => v.entries.get(other) === 'Key Compromise',
      );
      expect(upgradedCrl.entries.get(other)).toBe('Key Compromise');
      expect(upgradedCrl.number).toBeGreaterThan(crl.number);
    });

    it('disabling a device revokes its valid certificates at once (privilegeWithdrawn); enabling does not restore them', async () => {
      expect((await peers.enroll('d1', 'D-0001', await peers.token('D-0001'))).status).toBe(200);
      expect((await peers.enroll('d2', 'D-0001', await peers.token('D-0001'))).status).toBe(200);
      const serials = ['d1', 'd2'].map((n) => peers.serialOf(n));
      // Warm the pre-signed OCSP answer, which must not outlive the revocation.
      const req = ocspRequest(peers, 'issuing-1.pem', { cert: 'd1.pem' });
      expect(await ocspText(peers, (await postOcsp(peers, req)).der)).toContain('Cert Status: good');

      const disabled = await tp.call('PATCH', '/api/v1/devices/D-0001', { body: { status: 'disabled' } });
      expect(disabled.status, JSON.stringify(disabled.body)).toBe(200);
      // Same change: the certificates are revoked when the PATCH returns.
      for (const s of serials)
        expect(await get(s)).toMatchObject({ state: 'revoked', revocationReason: 'privilegeWithdrawn' });

      const crl = await until(
        () => fetchCrl(peers, 'issuing-1', 'issuing-1.pem'),
        (v) => serials.every((s) => v.entries.has(s)),
      );
      for (const s of serials) expect(crl.entries.get(s)).toBe('Privilege Withdrawn');
      const answer = await until(
        async () => (await postOcsp(peers, req)).der,
        (der) => basicOf(der).tbsResponseData.responses[0]!.certStatus.revoked !== undefined,
      );
      const revoked = basicOf(answer).tbsResponseData.responses[0]!.certStatus.revoked;
      expect(revoked, 'OCSP says revoked').toBeDefined();
      // openssl 3.0 prints reason 9 as "(UNKNOWN) (0x9)": read it from the ASN.1.
      expect(revoked!.revocationReason?.reason).toBe(CRLReasons.privilegeWithdrawn);
      // GeneralizedTime without fractional seconds (RFC 6960 §4.2.2.1 → RFC 5280 §4.1.2.5.2).
      expect(revoked!.revocationTime.getUTCMilliseconds()).toBe(0);
      expect(await ocspText(peers, answer)).toMatch(
        /Revocation Time: \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} GMT\n/,
      );
      const audit = await tp.call(
        'GET',
        '/api/v1/audit/entries?action=certificate.revoke&target=device:D-0001',
      );
      expect(audit.body.items).toHaveLength(1);
      expect(audit.body.items[0]).toMatchObject({
        actor: 'system',
        details: { reason: 'privilegeWithdrawn' },
      });
      expect([...audit.body.items[0].details.serials].sort()).toEqual(serials.map(lower).sort());

      const enabled = await tp.call('PATCH', '/api/v1/devices/D-0001', { body: { status: 'active' } });
      expect(enabled.status).toBe(200);
      for (const s of serials)
        expect(await get(s)).toMatchObject({ state: 'revoked', revocationReason: 'privilegeWithdrawn' });
      expect((await peers.reenroll('d3', 'D-0001', 'd1')).status).toBe(403);
    });

    it('serves a signed CRL per issuing CA at the distribution point, numbered upwards, valid for ca.crlValidityHours', async () => {
      expect((await peers.enroll('c1', 'C-0001', await peers.token('C-0001'))).status).toBe(200);
      const dp = /URI:(\S+\.crl)/.exec(
        peers.openssl('x509', '-in', 'c1.pem', '-noout', '-ext', 'crlDistributionPoints'),
      )![1]!;
      expect(dp).toBe(`${peers.pki}/crl/issuing-1.crl`);
      const first = await fetchCrl(peers, 'issuing-1', 'issuing-1.pem', dp);
      expect(first.text).toContain('Issuer: O = Rampart, CN = Rampart Device Issuing CA');
      expect(first.text).toContain('Version 2');
      expect(first.nextUpdate - first.thisUpdate).toBe(6 * 3600_000);
      // The API reports the same CRL.
      const status = await tp.call('GET', '/api/v1/ca');
      const issuing = status.body.authorities.find((a: { id: string }) => a.id === 'issuing-1');
      expect(issuing.crl).toMatchObject({ number: first.number, url: dp });
      // Signed by the issuing CA, not by the root.
      expect(
        (
          await peers.opensslStatus(
            'crl',
            '-inform',
            'DER',
            '-in',
            first.file,
            '-CAfile',
            peers.rootCa,
            '-noout',
          )
        ).out,
      ).not.toContain('verify OK');

      const serial = peers.serialOf('c1');
      expect((await revoke(tp, serial, 'cessationOfOperation')).status).toBe(200);
      const second = await until(
        () => fetchCrl(peers, 'issuing-1', 'issuing-1.pem', dp),
        (v) => v.entries.has(serial),
      );
      expect(second.number).toBeGreaterThan(first.number);
      expect(second.entries.get(serial)).toBe('Cessation Of Operation');
      expect(second.nextUpdate - second.thisUpdate).toBe(6 * 3600_000);
      // There is no CRL for the root or for a CA that does not exist.
      expect((await peers.curl([`${peers.pki}/crl/root-1.crl`])).status).toBe(404);
      expect((await peers.curl([`${peers.pki}/crl/issuing-9.crl`])).status).toBe(404);
    });

    it('coalesces a burst of CRL regenerations: every caller gets a CRL with what was committed before it asked', async () => {
      expect((await peers.enroll('c2', 'C-0002', await peers.token('C-0002'))).status).toBe(200);
      const crl = tp.platform.identity.crl;
      await crl.regenerate('issuing-1');
      const before = crl.builds;
      const serial = peers.serialOf('c2');
      expect((await revoke(tp, serial, 'keyCompromise')).status).toBe(200);
      // The revocation started a build in the background; 20 callers follow at once. Without
      // coalescing each would queue a build of its own (21 in all).
      const docs = await Promise.all(Array.from({ length: 20 }, () => crl.regenerate('issuing-1')));
      expect(crl.builds - before).toBeLessThanOrEqual(3);
      expect(new Set(docs.map((d) => d.number)).size).toBeLessThanOrEqual(2);
      const last = docs.at(-1)!;
      const file = scratch('burst') + '.der';
      writeFileSync(peers.path(file), last.der);
      const text = peers.openssl('crl', '-inform', 'DER', '-in', file, '-noout', '-text');
      expect(text).toContain(`Serial Number: ${serial.toUpperCase()}`);
    });

    it('re-signs a CRL once half of its validity has passed', async () => {
      const { storage, identity } = tp.platform;
      const crl = new CrlService(storage, identity.authorities, identity.registry, 1 / 3600);
      // Start half-way through a second so that the two CRLs fall into different seconds.
      await sleep((1500 - (Date.now() % 1000)) % 1000);
      const one = await crl.get('issuing-1');
      expect(one.nextUpdate.getTime() - one.thisUpdate.getTime()).toBe(1000);
      await sleep(600);
      const two = await crl.get('issuing-1');
      expect(two.number).toBeGreaterThan(one.number);
      expect(two.thisUpdate.getTime()).toBeGreaterThan(one.thisUpdate.getTime());
      // Not stale yet: the same document.
      expect((await crl.get('issuing-1')).number).toBe(two.number);
      // The stored CRL is the newest.
      const row = await storage.db
        .selectFrom('crls')
        .selectAll()
        .where('issuer_id', '=', 'issuing-1')
        .executeTakeFirstOrThrow();
      expect(Number(row.crl_number)).toBe(two.number);
    });

    it('OCSP: verified answers with an echoed nonce, malformed and unauthorized requests, pre-signed answers and their invalidation', async () => {
      expect((await peers.enroll('o1', 'O-0001', await peers.token('O-0001'))).status).toBe(200);
      const cacerts = await peers.cacerts();
      const url = `${peers.pki}/ocsp`;
      const ask = () =>
        peers.opensslStatus(
          'ocsp',
          '-issuer',
          'issuing-1.pem',
          '-cert',
          'o1.pem',
          '-url',
          url,
          '-CAfile',
          peers.rootCa,
          '-verify_other',
          cacerts,
          '-resp_text',
        );
      const good = await ask();
      expect(good.out).toContain('Response verify OK');
      expect(good.out).toContain('o1.pem: good');
      expect(good.out).toContain('OCSP Nonce');
      expect(good.out).not.toContain('WARNING: no nonce in response');

      // Hand-made nonces: echoed when 1..128 bytes, malformedRequest otherwise.
      for (const n of [1, 32, 128]) {
        const nonce = randomBytes(n);
        const res = await postOcsp(peers, ocspRequest(peers, 'issuing-1.pem', { cert: 'o1.pem' }, nonce));
        expect(res.status).toBe(200);
        expect(res.type).toBe('application/ocsp-response');
        expect(ocspStatus(res.der), `nonce of ${n}`).toBe(OCSPResponseStatus.successful);
        const ext = basicOf(res.der).tbsResponseData.responseExtensions?.find(
          (e) => e.extnID === OID.ocspNonce,
        );
        expect(ext, `nonce of ${n} echoed`).toBeDefined();
        expect(Buffer.from(AsnConvert.parse(ext!.extnValue.buffer, OctetString).buffer)).toEqual(nonce);
      }
      for (const n of [0, 129]) {
        const res = await postOcsp(
          peers,
          ocspRequest(peers, 'issuing-1.pem', { cert: 'o1.pem' }, Buffer.alloc(n, 7)),
        );
        expect(ocspStatus(res.der), `nonce of ${n}`).toBe(OCSPResponseStatus.malformedRequest);
        expect(await ocspText(peers, res.der)).toContain('Responder Error: malformedrequest');
      }
      const garbage = await postOcsp(peers, Buffer.from('this is not an OCSP request'));
      expect(ocspStatus(garbage.der)).toBe(OCSPResponseStatus.malformedRequest);
      expect(await ocspText(peers, garbage.der)).toContain('Responder Error: malformedrequest (1)');

      // An issuer Rampart does not know: unauthorized.
      peers.openssl(
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        'other.key',
        '-subj',
        '/CN=Other CA',
        '-days',
        '1',
        '-out',
        'other.pem',
      );
      const foreign = await postOcsp(peers, ocspRequest(peers, 'other.pem', { serial: '0x01' }));
      expect(ocspStatus(foreign.der)).toBe(OCSPResponseStatus.unauthorized);
      expect(await ocspText(peers, foreign.der)).toContain('Responder Error: unauthorized (6)');

      const wrongType = await postOcsp(
        peers,
        ocspRequest(peers, 'issuing-1.pem', { cert: 'o1.pem' }),
        'application/octet-stream',
      );
      expect(wrongType.status).toBe(415);

      // The same no-nonce request twice: byte-identical pre-signed answers.
      const req = ocspRequest(peers, 'issuing-1.pem', { cert: 'o1.pem' });
      const r1 = await postOcsp(peers, req);
      const r2 = await postOcsp(peers, req);
      expect(ocspStatus(r1.der)).toBe(OCSPResponseStatus.successful);
      expect(r2.der.equals(r1.der)).toBe(true);
      expect(await ocspText(peers, r1.der)).toContain('Cert Status: good');

      // Signed by a delegated OCSP certificate of the same CA: OCSPSigning and ocsp-nocheck.
      const basic = basicOf(r1.der);
      expect(basic.certs).toHaveLength(1);
      const signer = new X509Certificate(Buffer.from(AsnConvert.serialize(basic.certs![0]!)));
      const issuing = new X509Certificate(readFileSync(peers.path('issuing-1.pem')));
      expect(signer.checkIssued(issuing)).toBe(true);
      expect(signer.verify(issuing.publicKey)).toBe(true);
      expect(signer.ca).toBe(false);
      writeFileSync(peers.path('ocsp-signer.pem'), signer.toString());
      const signerText = peers.openssl('x509', '-in', 'ocsp-signer.pem', '-noout', '-text');
      expect(signerText).toMatch(/X509v3 Extended Key Usage:\s*\n\s*OCSP Signing\s*\n/);
      expect(signerText).toContain('OCSP No Check');
      expect(signerText).toContain('CN = OCSP responder for issuing-1');
      // The responder is named by the hash of that certificate's key.
      const keyBits = Buffer.from(
        AsnConvert.parse(signer.publicKey.export({ type: 'spki', format: 'der' }), SubjectPublicKeyInfo)
          .subjectPublicKey,
      );
      expect(Buffer.from(basic.tbsResponseData.responderID.byKey!.buffer)).toEqual(
        createHash('sha1').update(keyBits).digest(),
      );
      expect(
        peers.openssl(
          'verify',
          '-CAfile',
          peers.rootCa,
          '-untrusted',
          'issuing-1.pem',
          '-purpose',
          'ocsphelper',
          'ocsp-signer.pem',
        ),
      ).toContain('OK');

      // After a revocation the next answer says so.
      expect((await revoke(tp, peers.serialOf('o1'), 'keyCompromise')).status).toBe(200);
      const r3 = await postOcsp(peers, req);
      expect(r3.der.equals(r1.der)).toBe(false);
      const text = await ocspText(peers, r3.der);
      expect(text).toContain('Cert Status: revoked');
      expect(text).toContain('Reason: keyCompromise');
      const revoked = await ask();
      expect(revoked.out).toContain('Response verify OK');
      expect(revoked.out).toContain('o1.pem: revoked');
    });

    it('refuses unknown and malformed serials, and revocation by a viewer (audited)', async () => {
      const unknown = await revoke(tp, '0123456789abcdef0123456789abcdef', 'keyCompromise');
      expect(unknown.status).toBe(404);
      const malformed = await revoke(tp, 'not-a-serial', 'keyCompromise');
      expect(malformed.status).toBe(400);
      expect(malformed.body.detail).toMatch(/not a certificate serial/);

      expect((await peers.enroll('e1', 'E-0001', await peers.token('E-0001'))).status).toBe(200);
      const serial = peers.serialOf('e1');
      const viewer = await tp.tokenFor('viewer');
      const refused = await revoke(tp, serial, 'keyCompromise', viewer);
      expect(refused.status).toBe(403);
      expect(refused.body.detail).toMatch(/certificate:revoke/);
      expect(await get(serial)).toMatchObject({ state: 'valid' });
      // The viewer may still read it.
      expect((await tp.call('GET', `/api/v1/certificates/${serial}`, { token: viewer })).status).toBe(200);
      const audit = await tp.call('GET', '/api/v1/audit/entries?action=api.authorize&outcome=denied');
      expect(audit.body.items).toHaveLength(1);
      expect(audit.body.items[0]).toMatchObject({
        action: 'api.authorize',
        outcome: 'denied',
        target: 'POST /api/v1/certificates/:serial/revoke',
        details: { role: 'viewer', permission: 'certificate:revoke' },
      });
    });
  });
});
