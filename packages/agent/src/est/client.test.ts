import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EST_MEDIA, decodeBase64Body, encodeBase64Body, encodeCertsOnly, toPem } from '@rampart/shared/pki';
import { AgentError } from '../errors.js';
import { createDeviceCsr } from '../identity/csr.js';
import { NodeMutualTls } from '../tls/mutual-tls.js';
import { SoftwareTrustAnchor } from '../trust-anchor/software.js';
import { startFakeEst, type FakeEstServer, type Reply } from '../test-support/est-server.js';
import { TestPki, type TestCa } from '../test-support/pki.js';
import { EstClient, authorizationHeader, estBaseUrl } from './client.js';

let pki: TestPki;
let root: TestCa;
let issuing: TestCa;
let server: FakeEstServer;
let reply: (path: string) => Reply | Promise<Reply>;
let csr: Buffer;
let anchor: SoftwareTrustAnchor;

const certsOnly = (ders: Buffer[]): Reply => ({
  status: 200,
  headers: { 'content-type': EST_MEDIA.certsOnly },
  body: encodeBase64Body(encodeCertsOnly(ders)),
});

beforeAll(async () => {
  pki = new TestPki();
  root = pki.rootCa('Test Root CA');
  issuing = pki.issuingCa('Test Issuing CA', root);
  anchor = new SoftwareTrustAnchor(join(mkdtempSync(join(tmpdir(), 'agent-est-')), 'device-key.pem'));
  csr = await createDeviceCsr(anchor, 'dw-0001');
  server = await startFakeEst({
    ...pki.serverCert(issuing),
    clientCa: root.pem,
    handle: (req) => reply(req.path),
  });
});
afterAll(() => server.close());

function client(options: { url?: string; timeoutMs?: number; caPem?: string } = {}) {
  return new EstClient({
    url: options.url ?? server.url,
    caPem: options.caPem ?? root.pem,
    caFile: '/etc/rampart/ca.pem',
    timeoutMs: options.timeoutMs ?? 5000,
  });
}

async function refusal(p: Promise<unknown>): Promise<AgentError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AgentError);
  return err as AgentError;
}

describe('EST client', () => {
  it('fetches cacerts from /.well-known/est/cacerts over TLS pinned to the root', async () => {
    reply = () => ({ ...certsOnly([root.der, issuing.der]), headers: { 'content-type': EST_MEDIA.pkcs7 } });
    expect(await client().cacerts()).toEqual([root.der, issuing.der]);
    const req = server.requests.at(-1)!;
    expect(req).toMatchObject({ method: 'GET', path: '/.well-known/est/cacerts', clientCert: null });
    expect(req.headers.accept).toBe(EST_MEDIA.pkcs7);
  });

  it('reads csrattrs, and null when the server asks for nothing', async () => {
    reply = () => ({ status: 200, headers: { 'content-type': EST_MEDIA.csrattrs }, body: 'MAA=\r\n' });
    expect(await client().csrattrs()).toEqual(Buffer.from([0x30, 0]));
    reply = () => ({ status: 204 });
    expect(await client().csrattrs()).toBeNull();
  });

  it('enrolls with HTTP Basic (device id : token), posting the CSR base64 as application/pkcs10', async () => {
    const cert = pki.issue(csr, issuing);
    reply = () => certsOnly([cert]);
    expect(await client().simpleEnroll(csr, { deviceId: 'dw-0001', token: 'ret_abc.DEF-123' })).toEqual([
      cert,
    ]);
    const req = server.requests.at(-1)!;
    expect(req).toMatchObject({ method: 'POST', path: '/.well-known/est/simpleenroll' });
    expect(req.headers.authorization).toBe(
      'Basic ' + Buffer.from('dw-0001:ret_abc.DEF-123').toString('base64'),
    );
    expect(req.headers['content-type']).toBe('application/pkcs10');
    expect(req.body).toMatch(/^[A-Za-z0-9+/=\r\n]+$/);
    expect(decodeBase64Body(req.body, 'CSR')).toEqual(csr);
  });

  it('enrolls with a bearer token', async () => {
    reply = () => certsOnly([pki.issue(csr, issuing)]);
    await client().simpleEnroll(csr, { bearer: 'ret_abc' });
    expect(server.requests.at(-1)!.headers.authorization).toBe('Bearer ret_abc');
  });

  it('re-enrolls presenting the device certificate as TLS client certificate, without Authorization', async () => {
    const cert = pki.issue(csr, issuing);
    reply = () => certsOnly([cert]);
    const tls = new NodeMutualTls((await anchor.tlsKey())!);
    await client().simpleReenroll(csr, { certPem: toPem('CERTIFICATE', cert) + issuing.pem, tls });
    const req = server.requests.at(-1)!;
    expect(req.path).toBe('/.well-known/est/simplereenroll');
    expect(req.headers.authorization).toBeUndefined();
    expect(req.headers['content-type']).toBe('application/pkcs10');
    expect(req.clientCert?.raw).toEqual(cert);
    expect(req.clientVerified).toBe(true);
  });

  it('maps error statuses to messages that say what happened and what to do', async () => {
    const enroll = () => client().simpleEnroll(csr, { deviceId: 'dw-0001', token: 't' });
    const text =
      (status: number, body: string, headers: Record<string, string> = {}) =>
      () => ({
        status,
        headers: { 'content-type': 'text/plain; charset=utf-8', ...headers },
        body,
      });

    reply = text(401, 'enrollment token expired', { 'www-authenticate': 'Basic realm="rampart-est"' });
    let err = await refusal(enroll());
    expect(err).toMatchObject({
      code: 'EST_REFUSED',
      status: 401,
      serverMessage: 'enrollment token expired',
    });
    expect(err.message).toContain('the EST server answered 401: "enrollment token expired"');
    expect(err.message).toContain(
      'The enrollment token was refused: it may be used, expired or for another device',
    );
    expect(err.message).toContain('rampart enrollment token create --device dw-0001');

    reply = text(403, 'token is bound to device dw-0009');
    err = await refusal(enroll());
    expect(err).toMatchObject({ status: 403 });
    expect(err.message).toMatch(/403: "token is bound to device dw-0009".*rampart device show dw-0001/);

    reply = text(403, 'certificate revoked');
    const tls = new NodeMutualTls((await anchor.tlsKey())!);
    const certPem = toPem('CERTIFICATE', pki.issue(csr, issuing));
    err = await refusal(client().simpleReenroll(csr, { certPem, tls }, 'dw-0001'));
    expect(err.message).toMatch(
      /renewal \(re-enrollment\) failed: .*"certificate revoked".*must enroll again/,
    );

    reply = text(400, 'the CSR body is not base64');
    expect((await refusal(enroll())).message).toMatch(/400: "the CSR body is not base64".*malformed/);
    reply = text(415, 'expected application/pkcs10');
    expect((await refusal(enroll())).message).toMatch(/415.*media types/);
    reply = text(503, 'busy', { 'retry-after': '120' });
    expect(await refusal(enroll())).toMatchObject({
      status: 503,
      retryAfterSeconds: 120,
      message: expect.stringMatching(/try again in 120 s/),
    });
    reply = text(500, 'boom');
    expect((await refusal(enroll())).message).toMatch(/500: "boom".*try again later/);
    reply = text(404, 'not found');
    expect((await refusal(client().cacerts())).message).toMatch(/no EST service at .*check est.url/);
    reply = () => ({ status: 202, headers: { 'retry-after': '30' } });
    expect(await refusal(enroll())).toMatchObject({
      code: 'EST_PENDING',
      message: expect.stringMatching(/in 30 s/),
    });
  });

  it('says the device must enroll again when the server refuses its certificate in the TLS handshake', async () => {
    const other = pki.rootCa('Another Root');
    const strict = await startFakeEst({
      ...pki.serverCert(issuing),
      clientCa: other.pem,
      requireClientCert: true,
      handle: () => certsOnly([root.der]),
    });
    try {
      const tls = new NodeMutualTls((await anchor.tlsKey())!);
      const certPem = toPem('CERTIFICATE', pki.issue(csr, issuing)) + issuing.pem;
      const err = await refusal(client({ url: strict.url }).simpleReenroll(csr, { certPem, tls }, 'dw-0001'));
      expect(err.code).toBe('EST_REFUSED');
      expect(err.message).toMatch(
        /did not accept the device certificate.*must enroll again with a new token/,
      );
      expect(strict.requests).toEqual([]);
    } finally {
      await strict.close();
    }
  });

  it('refuses to present a certificate that does not belong to the TLS key', async () => {
    const tls = new NodeMutualTls((await anchor.tlsKey())!);
    const err = await refusal(client().simpleReenroll(csr, { certPem: issuing.pem, tls }));
    expect(err).toMatchObject({
      code: 'CERT_REFUSED',
      message: expect.stringMatching(/do not belong together/),
    });
  });

  it('refuses a reply with the wrong content type or a body that is not a certs-only PKCS#7', async () => {
    const enroll = () => client().simpleEnroll(csr, { deviceId: 'dw-0001', token: 't' });
    reply = () => ({ status: 200, headers: { 'content-type': 'text/html' }, body: '<html>login</html>' });
    let err = await refusal(enroll());
    expect(err.code).toBe('EST_BAD_RESPONSE');
    expect(err.message).toMatch(/content type "text\/html", not application\/pkcs7-mime/);

    reply = () => ({
      status: 200,
      headers: { 'content-type': EST_MEDIA.certsOnly },
      body: encodeBase64Body(Buffer.from('hello')),
    });
    err = await refusal(enroll());
    expect(err).toMatchObject({
      code: 'EST_BAD_RESPONSE',
      message: expect.stringMatching(/not a base64 certs-only PKCS#7/),
    });

    reply = () => ({ status: 200, headers: { 'content-type': EST_MEDIA.certsOnly }, body: '%%%' });
    expect((await refusal(enroll())).message).toMatch(/not base64/);

    reply = () => ({
      status: 200,
      headers: { 'content-type': 'application/pkcs7-mime; smime-type=signed-data' },
      body: 'AAAA',
    });
    expect((await refusal(enroll())).message).toMatch(/signed-data message, not certs-only/);

    reply = () => ({
      status: 200,
      headers: { 'content-type': EST_MEDIA.certsOnly },
      body: encodeBase64Body(encodeCertsOnly([])),
    });
    expect((await refusal(client().cacerts())).message).toMatch(/holds no certificate/);
  });

  it('refuses a server whose certificate does not chain to the pinned root, or names another host', async () => {
    const other = pki.rootCa('Impostor Root');
    const impostor = await startFakeEst({ ...pki.serverCert(other), handle: () => certsOnly([root.der]) });
    try {
      const err = await refusal(client({ url: impostor.url }).cacerts());
      expect(err.code).toBe('EST_UNTRUSTED');
      expect(err.message).toMatch(/is not trusted: .*only the root CA in \/etc\/rampart\/ca.pem/);
      expect(impostor.requests).toEqual([]);
    } finally {
      await impostor.close();
    }
    const misnamed = await startFakeEst({
      ...pki.serverCert(issuing, 'DNS:other.example'),
      handle: () => certsOnly([root.der]),
    });
    try {
      const err = await refusal(client({ url: misnamed.url }).cacerts());
      expect(err).toMatchObject({
        code: 'EST_UNTRUSTED',
        message: expect.stringMatching(/ERR_TLS_CERT_ALTNAME_INVALID/),
      });
    } finally {
      await misnamed.close();
    }
  });

  it('gives up after its time limit, and says when the server cannot be reached', async () => {
    reply = () => new Promise<Reply>(() => {});
    const started = Date.now();
    const err = await refusal(client({ timeoutMs: 300 }).cacerts());
    expect(err.code).toBe('EST_TIMEOUT');
    expect(err.message).toMatch(/no complete answer within 0.3 s/);
    expect(Date.now() - started).toBeLessThan(3000);

    const closed = await startFakeEst({ ...pki.serverCert(issuing), handle: () => ({ status: 204 }) });
    const url = closed.url;
    await closed.close();
    expect(await refusal(client({ url }).cacerts())).toMatchObject({
      code: 'EST_UNREACHABLE',
      message: expect.stringMatching(/cannot reach the EST server .*ECONNREFUSED/),
    });
  });

  it('builds EST URLs and refuses what is not HTTPS', () => {
    expect(estBaseUrl('https://rampart.example:8444')).toBe('https://rampart.example:8444/.well-known/est');
    expect(estBaseUrl('https://rampart.example:8444/')).toBe('https://rampart.example:8444/.well-known/est');
    expect(estBaseUrl('https://h/.well-known/est/fleet-a/')).toBe('https://h/.well-known/est/fleet-a');
    expect(() => estBaseUrl('http://rampart.example:8444')).toThrow(/EST needs HTTPS/);
    expect(() => estBaseUrl('rampart.example')).toThrow(/not a URL/);
    expect(() => estBaseUrl('https://u:p@h')).toThrow(/without credentials/);
  });

  it('never puts a token that could break the header on the wire', () => {
    expect(() => authorizationHeader({ bearer: 'a b' })).toThrow(/spaces or control characters/);
    expect(() => authorizationHeader({ deviceId: 'd', token: 'x\r\nX-Evil: 1' })).toThrow(
      /control characters/,
    );
    expect(() => authorizationHeader({ deviceId: 'a:b', token: 't' })).toThrow(/HTTP Basic cannot carry/);
  });
});
