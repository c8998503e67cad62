import {
  EST_MEDIA,
  decodeBase64Body,
  encodeBase64Body,
  encodeCertsOnly,
  parseCsr,
} from '@rampart/shared/pki';
import { startFakeEst, type FakeEstServer, type RecordedRequest, type Reply } from './est-server.js';
import type { TestCa, TestPki } from './pki.js';

export const certsOnlyReply = (ders: Buffer[]): Reply => ({
  status: 200,
  headers: { 'content-type': EST_MEDIA.certsOnly },
  body: encodeBase64Body(encodeCertsOnly(ders)),
});

export const textReply = (status: number, body: string): Reply => ({
  status,
  headers: { 'content-type': 'text/plain' },
  body,
});

export interface FakePlatform extends FakeEstServer {
  /** How an accepted CSR is turned into a certificate; replace it to misbehave. */
  issueAs: (csrDer: Buffer) => Buffer;
}

/**
 * Just enough of the platform's EST behaviour for the agent's flows: cacerts, simpleenroll with
 * the Basic token `good-token` (user = the CSR's CN), simplereenroll with a client certificate
 * that chains to the root and names the CSR's CN. The real platform is tested end to end elsewhere.
 */
export async function startFakePlatform(pki: TestPki, root: TestCa, issuing: TestCa): Promise<FakePlatform> {
  const defaultIssue = (csr: Buffer) => pki.issue(csr, issuing);
  const state = { issueAs: defaultIssue };
  const handle = (req: RecordedRequest): Reply => {
    const op = req.path.replace('/.well-known/est/', '');
    if (op === 'cacerts') return certsOnlyReply([root.der, issuing.der]);
    if (op !== 'simpleenroll' && op !== 'simplereenroll') return textReply(404, 'no such EST operation');
    const csr = decodeBase64Body(req.body, 'CSR');
    const cn = parseCsr(csr).commonName;
    if (op === 'simpleenroll') {
      const expected = 'Basic ' + Buffer.from(`${cn}:good-token`).toString('base64');
      if (req.headers.authorization !== expected) return textReply(401, 'invalid or used enrollment token');
    } else {
      if (!req.clientCert || !req.clientVerified)
        return textReply(401, 'a valid client certificate is required');
      if (!req.clientCert.subject.split('\n').includes(`CN=${cn}`))
        return textReply(403, 'CSR subject differs');
    }
    return certsOnlyReply([state.issueAs(csr)]);
  };
  const server = await startFakeEst({ ...pki.serverCert(issuing), clientCa: root.pem, handle });
  return {
    url: server.url,
    requests: server.requests,
    close: () => server.close(),
    get issueAs() {
      return state.issueAs;
    },
    set issueAs(f: (csrDer: Buffer) => Buffer) {
      state.issueAs = f;
    },
  };
}
