import { attestationQualifyingData } from '@rampart/shared/attestation';
import { canonicalJson } from '@rampart/shared/audit';
import {
  EVIDENCE_FORMAT,
  QUOTED_PCRS,
  SOFTWARE_QUOTE_FORMAT,
  evidenceProblem,
  type AttestationEvidence,
  type SoftwareQuote,
} from '@rampart/shared/provisioning';
import { measurementStore, type EventLog, type MeasurementRegister } from '../attestation/measurements.js';
import { AgentError } from '../errors.js';
import type { TrustAnchor } from '../trust-anchor/trust-anchor.js';

/** A TPM's signature over one of its own statements: TPMS_ATTEST and TPMT_SIGNATURE bytes. */
export interface TpmSignedStatement {
  attest: Buffer;
  signature: Buffer;
}

/**
 * What a TPM trust anchor adds for remote attestation (TpmTrustAnchor has it): an attestation key,
 * its certification by the device key, quotes.
 */
export interface TpmAttestation {
  /** The attestation key's public area (TPM2B_PUBLIC), created on first use. */
  ensureAttestationKey(): Promise<Buffer>;
  /** TPM2_Certify of the attestation key by the device key, over `qualifyingData`. */
  certifyAttestationKey(qualifyingData: Buffer): Promise<TpmSignedStatement>;
  /** TPM2_Quote of SHA-256 PCRs `pcrs` by the attestation key, over `qualifyingData`. */
  quote(pcrs: readonly number[], qualifyingData: Buffer): Promise<TpmSignedStatement>;
}

function tpmAttestation(anchor: TrustAnchor): TpmAttestation {
  const a = anchor as Partial<TpmAttestation>;
  if (
    typeof a.ensureAttestationKey !== 'function' ||
    typeof a.certifyAttestationKey !== 'function' ||
    typeof a.quote !== 'function'
  )
    throw new AgentError(
      'TRUST_ANCHOR',
      'this TPM trust anchor cannot quote: it has no attestation key support',
    );
  return anchor as TrustAnchor & TpmAttestation;
}

export interface CollectEvidenceOptions {
  anchor: TrustAnchor;
  /**
   * The agent's data directory: the event log `rampart-agent measure` appends to, and (for the
   * software and PKCS#11 anchors) the software register it extends, under `measurements/`.
   */
  dataDir: string;
  /** Another register and log than the data directory's (tests, embedding applications). */
  measurements?: { register: MeasurementRegister; log: EventLog };
  /** The verifier's nonce. */
  nonce: string;
  deviceId: string;
  /** The birth certificate, then the station CA that issued it (PEM), when the device has them. */
  birthCertificates?: string[];
}

/**
 * Collect attestation evidence for the verifier's `nonce` (RATS: the attester's side). Everything
 * signed is bound to the nonce and to the device key through attestationQualifyingData, so it can
 * be neither replayed nor presented for another key:
 *
 * - a TPM anchor quotes PCRs 8–11 with its attestation key and certifies that key with the device key;
 * - the software and PKCS#11 anchors sign a statement of the software register with the device key.
 *
 * The whole event log goes along, in order, so that the verifier can replay it to what was quoted.
 * The result is checked against the evidence format before it is returned.
 */
export async function collectEvidence(options: CollectEvidenceOptions): Promise<AttestationEvidence> {
  const { anchor, nonce, deviceId } = options;
  const publicKey = await anchor.publicKey();
  if (!publicKey)
    throw new AgentError(
      'TRUST_ANCHOR',
      `the ${anchor.kind} trust anchor holds no device key, so there is nothing to attest; ` +
        'a provisioned device gets its key at the factory (otherwise: rampart-agent identity init)',
    );
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const qualifying = attestationQualifyingData(nonce, spki);
  const { register, log } = options.measurements ?? measurementStore(options.dataDir, null);
  const { events } = log.read();

  const evidence: AttestationEvidence = {
    format: EVIDENCE_FORMAT,
    nonce,
    deviceId,
    anchor: anchor.kind,
    key: spki.toString('base64'),
    ...(options.birthCertificates?.length ? { birthCertificates: options.birthCertificates } : {}),
    eventLog: events,
  };

  if (anchor.kind === 'tpm') {
    const tpm = tpmAttestation(anchor);
    const ak = await tpm.ensureAttestationKey();
    const certify = await tpm.certifyAttestationKey(qualifying);
    const quote = await tpm.quote(QUOTED_PCRS, qualifying);
    evidence.tpm = {
      ak: ak.toString('base64'),
      certify: { attest: certify.attest.toString('base64'), signature: certify.signature.toString('base64') },
      quote: { attest: quote.attest.toString('base64'), signature: quote.signature.toString('base64') },
    };
  } else {
    const values = await register.read(QUOTED_PCRS);
    const statement: SoftwareQuote = {
      format: SOFTWARE_QUOTE_FORMAT,
      qualifyingData: qualifying.toString('hex'),
      registers: Object.fromEntries(QUOTED_PCRS.map((pcr) => [String(pcr), values.get(pcr)!])),
    };
    const body = Buffer.from(canonicalJson(statement), 'utf8');
    const signature = await anchor.sign(body);
    evidence.statement = { body: body.toString('base64'), signature: signature.toString('base64') };
  }

  const problem = evidenceProblem(evidence);
  if (problem)
    throw new AgentError(
      problem.includes('field eventLog') ? 'MEASUREMENT_LOG' : 'USAGE',
      `the device cannot send its attestation evidence: ${problem}` +
        (events.length > 1024 ? ' (the event log holds more than the 1024 entries evidence may carry)' : ''),
    );
  return evidence;
}
