import type { KeyObject } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toPem } from '@rampart/shared/pki';
import { AgentError } from '../errors.js';
import { createDeviceCsr } from '../identity/csr.js';
import { TestPki, type TestCa } from '../test-support/pki.js';
import { SoftwareTrustAnchor } from '../trust-anchor/software.js';
import { NodeMutualTls, clientSecureContext } from './mutual-tls.js';

let pki: TestPki;
let root: TestCa;
let issuing: TestCa;
let otherRoot: TestCa;
let anchor: SoftwareTrustAnchor;
let csr: Buffer;
let key: KeyObject;
let keyPem: string;

beforeAll(async () => {
  pki = new TestPki();
  root = pki.rootCa('Context Root CA');
  issuing = pki.issuingCa('Context Issuing CA', root);
  otherRoot = pki.rootCa('Other Root CA');
  anchor = new SoftwareTrustAnchor(join(mkdtempSync(join(tmpdir(), 'agent-tls-')), 'device-key.pem'));
  await anchor.ensureKey();
  csr = Buffer.from(await createDeviceCsr(anchor, 'dw-0001'));
  key = (await anchor.tlsKey())!;
  keyPem = key.export({ type: 'pkcs8', format: 'pem' }) as string;
});

const certPem = (der: Buffer) => toPem('CERTIFICATE', der) + issuing.pem;

describe('client secure contexts', () => {
  it('are shared for the same CA, certificate and key, and new for any other', () => {
    const cert = certPem(pki.issue(csr, issuing));
    const a = clientSecureContext({ ca: root.pem, cert, key: keyPem });
    expect(clientSecureContext({ ca: root.pem, cert, key: keyPem })).toBe(a);
    // A renewed certificate, another CA, or no client certificate at all: another context.
    const renewed = certPem(pki.issue(csr, issuing));
    expect(clientSecureContext({ ca: root.pem, cert: renewed, key: keyPem })).not.toBe(a);
    expect(clientSecureContext({ ca: otherRoot.pem, cert, key: keyPem })).not.toBe(a);
    expect(clientSecureContext({ ca: root.pem })).not.toBe(a);
  });

  it('refuses a certificate that does not belong to the key, every time (a refusal is not kept)', () => {
    for (let i = 0; i < 2; i++)
      expect(() => clientSecureContext({ ca: root.pem, cert: issuing.pem, key: keyPem })).toThrow(
        /key values mismatch/,
      );
    const tls = new NodeMutualTls(key);
    for (let i = 0; i < 2; i++)
      expect(() =>
        tls.connect({ host: '127.0.0.1', port: 9, certPem: issuing.pem, caPem: root.pem }),
      ).toThrow(AgentError);
  });
});

describe('NodeMutualTls', () => {
  const seen: (Buffer | null)[] = [];
  let port = 0;
  let server: ReturnType<typeof createServer>;

  beforeAll(async () => {
    const serverTls = pki.serverCert(issuing);
    server = createServer(
      {
        cert: serverTls.certPem,
        key: serverTls.keyPem,
        ca: [root.pem],
        requestCert: true,
        rejectUnauthorized: true,
      },
      (socket: TLSSocket) => {
        seen.push(socket.getPeerCertificate().raw ?? null);
        socket.end('ok');
      },
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  async function connectWith(cert: string, caPem = root.pem): Promise<string> {
    const socket = new NodeMutualTls(key).connect({ host: '127.0.0.1', port, certPem: cert, caPem });
    return new Promise((resolve, reject) => {
      let got = '';
      socket.on('data', (d: Buffer) => (got += d.toString()));
      socket.on('end', () => resolve(got));
      socket.on('error', reject);
    });
  }

  it('presents the certificate it is given, a renewed one at once, over a shared context', async () => {
    const first = pki.issue(csr, issuing);
    const renewed = pki.issue(csr, issuing);
    expect(await connectWith(certPem(first))).toBe('ok');
    expect(await connectWith(certPem(first))).toBe('ok');
    expect(await connectWith(certPem(renewed))).toBe('ok');
    // What the server saw: the first certificate twice, then the renewed one.
    expect(seen).toEqual([first, first, renewed]);
  });

  it('still trusts only the CA it is given', async () => {
    await expect(connectWith(certPem(pki.issue(csr, issuing)), otherRoot.pem)).rejects.toMatchObject({
      code: expect.stringMatching(/UNABLE_TO_GET_ISSUER_CERT|UNABLE_TO_VERIFY|SELF_SIGNED/),
    });
  });
});
