import { X509Certificate, createPublicKey, randomBytes } from 'node:crypto';
import type { MeasuredComponent } from '@rampart/shared/attestation';
import {
  EST_MEDIA,
  decodeBase64Body,
  encodeBase64Body,
  encodeCertsOnly,
  parseCsr,
} from '@rampart/shared/pki';
import {
  appraiseEvidence,
  evidenceProblem,
  type AttestationEvidence,
  type AttestationStatus,
} from '@rampart/shared/provisioning';
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

export const problemReply = (status: number, title: string, detail: string): Reply => ({
  status,
  headers: { 'content-type': 'application/problem+json' },
  body: JSON.stringify({ title, status, detail }),
});

const jsonReply = (value: unknown): Reply => ({
  status: 200,
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify(value),
});

/** The fake verifier's state, for tests to set up and inspect. */
export interface FakeVerifier {
  /** Reference digests by component, as the operator registers them for the model. */
  references: Map<MeasuredComponent, Set<string>>;
  /** Whether a `warning` result still gets a token (the enrollment policy). */
  tokenOnWarning: boolean;
  /** Nonces handed out and not used yet. */
  nonces: Set<string>;
  /** Attestation tokens not used yet, with the device each is for. */
  tokens: Map<string, string>;
  /** Devices whose certificate came with an attestation token: their renewals need one too. */
  attested: Set<string>;
  /** Every piece of evidence received, well formed or not. */
  evidence: unknown[];
  /** The statuses of the results handed out. */
  statuses: AttestationStatus[];
}

export interface FakePlatform extends FakeEstServer {
  /** How an accepted CSR is turned into a certificate; replace it to misbehave. */
  issueAs: (csrDer: Buffer) => Buffer;
  verifier: FakeVerifier;
}

/**
 * The attestation endpoints as the platform's verifier answers them: nonces, then evidence checked
 * with evidenceProblem and appraised with appraiseEvidence against the device key (the birth
 * certificate's, when the evidence carries one).
 */
function handleAttestation(req: RecordedRequest, verifier: FakeVerifier): Reply {
  if (req.method !== 'POST') return problemReply(405, 'Method Not Allowed', 'use POST');
  if (!/^application\/json\b/.test(req.headers['content-type'] ?? ''))
    return problemReply(415, 'Unsupported Media Type', 'send application/json');
  let body: unknown;
  try {
    body = JSON.parse(Buffer.from(req.body, 'latin1').toString('utf8'));
  } catch {
    return problemReply(400, 'Bad Request', 'the body is not JSON');
  }
  if (req.path === '/attestation/v1/nonce') {
    const nonce = randomBytes(24).toString('base64url');
    verifier.nonces.add(nonce);
    return jsonReply({ nonce, expiresAt: new Date(Date.now() + 300_000).toISOString() });
  }
  if (req.path !== '/attestation/v1/evidence') return problemReply(404, 'Not Found', 'no such endpoint');
  verifier.evidence.push(body);
  const problem = evidenceProblem(body);
  if (problem) return problemReply(400, 'Bad Request', problem);
  const evidence = body as AttestationEvidence;
  if (!verifier.nonces.delete(evidence.nonce))
    return problemReply(409, 'Conflict', 'the nonce is unknown, used or expired');
  const birth = evidence.birthCertificates?.[0];
  const deviceKey = birth
    ? new X509Certificate(birth).publicKey
    : createPublicKey({ key: Buffer.from(evidence.key, 'base64'), format: 'der', type: 'spki' });
  const appraisal = appraiseEvidence(evidence, {
    deviceKey,
    references: verifier.references,
    model: 'DW100',
  });
  if (!appraisal.authentic)
    return problemReply(422, 'Unprocessable Content', `the evidence is not authentic: ${appraisal.problem}`);
  verifier.statuses.push(appraisal.status);
  const admitted =
    appraisal.status === 'affirming' || (appraisal.status === 'warning' && verifier.tokenOnWarning);
  const token = admitted ? `rpa_${randomBytes(16).toString('hex')}` : null;
  if (token) verifier.tokens.set(token, evidence.deviceId);
  return jsonReply({
    result: {
      id: `att_${randomBytes(6).toString('hex')}`,
      deviceId: evidence.deviceId,
      status: appraisal.status,
      anchor: evidence.anchor,
      reasons: appraisal.reasons,
    },
    token,
  });
}

/** A valid, unused attestation token for `cn` in `authorization`, used up by this call. */
function takeToken(verifier: FakeVerifier, authorization: string | undefined, cn: string | null): boolean {
  const token = /^Bearer (\S+)$/.exec(authorization ?? '')?.[1];
  if (!token || !cn || verifier.tokens.get(token) !== cn) return false;
  verifier.tokens.delete(token);
  return true;
}

/**
 * Just enough of the platform's EST behaviour for the agent's flows: cacerts, simpleenroll with
 * the Basic token `good-token` (user = the CSR's CN) or a bearer attestation token,
 * simplereenroll with a client certificate that chains to the root and names the CSR's CN (and,
 * for devices that enrolled with attestation, a fresh attestation token), and the attestation
 * endpoints. The real platform is tested end to end elsewhere.
 */
export async function startFakePlatform(pki: TestPki, root: TestCa, issuing: TestCa): Promise<FakePlatform> {
  const defaultIssue = (csr: Buffer) => pki.issue(csr, issuing);
  const state = { issueAs: defaultIssue };
  const verifier: FakeVerifier = {
    references: new Map(),
    tokenOnWarning: false,
    nonces: new Set(),
    tokens: new Map(),
    attested: new Set(),
    evidence: [],
    statuses: [],
  };
  const handle = (req: RecordedRequest): Reply => {
    if (req.path.startsWith('/attestation/')) return handleAttestation(req, verifier);
    const op = req.path.replace('/.well-known/est/', '');
    if (op === 'cacerts') return certsOnlyReply([root.der, issuing.der]);
    if (op !== 'simpleenroll' && op !== 'simplereenroll') return textReply(404, 'no such EST operation');
    const csr = decodeBase64Body(req.body, 'CSR');
    const cn = parseCsr(csr).commonName;
    if (op === 'simpleenroll') {
      if (req.headers.authorization?.startsWith('Bearer ')) {
        if (!takeToken(verifier, req.headers.authorization, cn))
          return problemReply(401, 'Unauthorized', 'invalid or used attestation token');
        verifier.attested.add(cn!);
      } else {
        const expected = 'Basic ' + Buffer.from(`${cn}:good-token`).toString('base64');
        if (req.headers.authorization !== expected) return textReply(401, 'invalid or used enrollment token');
        verifier.attested.delete(cn!);
      }
    } else {
      if (!req.clientCert || !req.clientVerified)
        return textReply(401, 'a valid client certificate is required');
      if (!req.clientCert.subject.split('\n').includes(`CN=${cn}`))
        return textReply(403, 'CSR subject differs');
      if (verifier.attested.has(cn!) && !takeToken(verifier, req.headers.authorization, cn))
        return problemReply(
          403,
          'Forbidden',
          'renewal of a provisioned device needs a fresh attestation token',
        );
    }
    return certsOnlyReply([state.issueAs(csr)]);
  };
  const server = await startFakeEst({ ...pki.serverCert(issuing), clientCa: root.pem, handle });
  return {
    url: server.url,
    requests: server.requests,
    close: () => server.close(),
    verifier,
    get issueAs() {
      return state.issueAs;
    },
    set issueAs(f: (csrDer: Buffer) => Buffer) {
      state.issueAs = f;
    },
  };
}
