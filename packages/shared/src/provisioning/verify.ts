import { createHash, createPublicKey, verify, type KeyObject } from 'node:crypto';
import {
  MEASURED_COMPONENTS,
  PCR_OF,
  ZERO_DIGEST,
  attestationQualifyingData,
  parseTpmPublic,
  parseTpmSignature,
  parseTpmsAttest,
  pcrDigest,
  replayEventLog,
  verifyTpmSignature,
  type MeasuredComponent,
} from '../attestation/index.js';
import { canonicalJson } from '../audit/canonical.js';
import {
  SOFTWARE_QUOTE_FORMAT,
  type AttestationEvidence,
  type AttestationStatus,
  type SoftwareQuote,
} from './formats.js';

/**
 * The appraisal half of remote attestation (RATS background-check model), free of sockets and
 * storage so that it can be tested on its own and run anywhere: the verifier on the server calls it
 * after it has checked the nonce and worked out which device and key the evidence speaks for.
 *
 * Two outcomes must not be confused. Evidence that is not authentic — a signature that does not
 * verify, a quote over another nonce or key, an attestation key that is not the device's — says
 * nothing about the device (anyone could have sent it), so it is *refused* and nothing is concluded.
 * Authentic evidence is *appraised*: the event log must replay to the quoted registers, and every
 * measurement must be among the reference values; the result is affirming, warning or
 * contraindicated, with reasons.
 */

/** The registers quoted: one per measured component (PCR 8–11). */
export const QUOTED_PCRS: readonly number[] = [...new Set(Object.values(PCR_OF))].sort((a, b) => a - b);

export interface AppraisalContext {
  /** The key the evidence is for (the device key the certificate will certify). */
  deviceKey: KeyObject;
  /** The same key as SubjectPublicKeyInfo DER, when the caller has it (saves an export per check). */
  deviceKeyDer?: Buffer | null;
  /**
   * The attestation key recorded for this device at the factory (TPM2B_PUBLIC), when there is one.
   * Without it the AK must be certified by the device key (TPM2_Certify) in the evidence.
   */
  expectedAk?: Buffer | null;
  /** Reference digests by component; a component missing from the map has none registered. */
  references: ReadonlyMap<MeasuredComponent, ReadonlySet<string>>;
  /** For reasons: the model whose reference values apply. */
  model: string;
}

export interface AppraisedMeasurement {
  seq: number;
  component: MeasuredComponent;
  digest: string;
  description: string;
  /** `known`: among the reference values; `unknown`: not; `unreferenced`: none registered for the component. */
  verdict: 'known' | 'unknown' | 'unreferenced';
}

export type Appraisal =
  | { authentic: false; problem: string }
  | {
      authentic: true;
      status: AttestationStatus;
      reasons: string[];
      measurements: AppraisedMeasurement[];
      /** The register values the evidence proves (quoted, or signed by the software anchor). */
      registers: Record<string, string>;
    };

function refuse(problem: string): Appraisal {
  return { authentic: false, problem };
}

/** SHA-256 (hex) of the evidence as received, canonicalized: the digest transcripts record. */
export function evidenceDigest(evidence: AttestationEvidence): string {
  return createHash('sha256').update(canonicalJson(evidence)).digest('hex');
}

/** Check authenticity, then appraise. Never throws on malformed input: that is a refusal too. */
export function appraiseEvidence(evidence: AttestationEvidence, ctx: AppraisalContext): Appraisal {
  let keyDer: Buffer;
  try {
    keyDer = Buffer.from(evidence.key, 'base64');
    const expected = ctx.deviceKeyDer ?? ctx.deviceKey.export({ type: 'spki', format: 'der' });
    // The same bytes are the same key; otherwise compare the keys themselves (another encoding of
    // the same point, say), which costs an import.
    if (!keyDer.equals(expected)) {
      const presented = createPublicKey({ key: keyDer, format: 'der', type: 'spki' });
      if (!presented.export({ type: 'spki', format: 'der' }).equals(expected))
        return refuse('the evidence is for another key than the device key');
    }
  } catch {
    return refuse('the evidence key is not a SubjectPublicKeyInfo');
  }
  const qualifying = attestationQualifyingData(evidence.nonce, keyDer);

  let proven: Proven | string;
  try {
    proven =
      evidence.anchor === 'tpm'
        ? tpmRegisters(evidence, ctx, qualifying)
        : softwareRegisters(evidence, ctx, qualifying);
  } catch (err) {
    return refuse(`the evidence is malformed: ${(err as Error).message}`);
  }
  if (typeof proven === 'string') return refuse(proven);
  return appraise(evidence, ctx, proven);
}

/** What authentic evidence proves: the registers its log replays to, and whether the signed values agree. */
interface Proven {
  registers: Record<string, string>;
  /** Null when the log replays to what was quoted or signed; else which (`quoted`, `signed`). */
  mismatch: 'quoted' | 'signed' | null;
}

function tpmRegisters(
  evidence: AttestationEvidence,
  ctx: AppraisalContext,
  qualifying: Buffer,
): Proven | string {
  const tpm = evidence.tpm;
  if (!tpm) return 'TPM evidence needs a quote';
  const akBytes = Buffer.from(tpm.ak, 'base64');
  const ak = parseTpmPublic(akBytes);
  if (!ak.flags.restricted || !ak.flags.sign || !ak.flags.fixedTPM)
    return 'the attestation key is not a restricted signing key fixed to its TPM';

  if (ctx.expectedAk) {
    const expected = parseTpmPublic(ctx.expectedAk);
    if (!expected.name.equals(ak.name))
      return 'the quote is signed by another attestation key than the one recorded for this device at the factory (a quote from another TPM)';
  } else {
    if (!tpm.certify)
      return 'no attestation key is recorded for this device, and the evidence does not certify one with the device key';
    const attest = parseTpmsAttest(Buffer.from(tpm.certify.attest, 'base64'));
    if (attest.type !== 'certify' || !attest.certify)
      return 'the AK certification is not a TPM2_Certify statement';
    if (!attest.certify.name.equals(ak.name))
      return 'the AK certification names another key than the attestation key';
    if (!attest.extraData.equals(qualifying)) return 'the AK certification is not over this nonce and key';
    const sig = parseTpmSignature(Buffer.from(tpm.certify.signature, 'base64'));
    if (!verifyTpmSignature(ctx.deviceKey, Buffer.from(tpm.certify.attest, 'base64'), sig))
      return 'the AK certification is not signed by the device key';
  }

  const quoteBytes = Buffer.from(tpm.quote.attest, 'base64');
  const quote = parseTpmsAttest(quoteBytes);
  if (quote.type !== 'quote' || !quote.quote) return 'the quote is not a TPM2_Quote statement';
  const sig = parseTpmSignature(Buffer.from(tpm.quote.signature, 'base64'));
  if (!verifyTpmSignature(ak.publicKey, quoteBytes, sig))
    return 'the quote signature does not verify with the attestation key';
  if (!quote.extraData.equals(qualifying))
    return 'the quote is not over this nonce and key (a replayed or redirected quote)';
  const selections = quote.quote.pcrSelections.filter((s) => s.pcrs.length > 0);
  const sha256 = selections.find((s) => s.hash === 'sha256');
  if (selections.length !== 1 || !sha256 || sha256.pcrs.join(',') !== QUOTED_PCRS.join(','))
    return `the quote must select SHA-256 PCRs ${QUOTED_PCRS.join(', ')} and nothing else`;

  // The quote proves a digest, not values: the values are what the log replays to, if they match.
  const replayed = replayedRegisters(evidence);
  if (typeof replayed === 'string') return replayed;
  const values = new Map(QUOTED_PCRS.map((p) => [p, replayed[String(p)]!]));
  const matches = pcrDigest(values, QUOTED_PCRS).equals(quote.quote.pcrDigest);
  return { registers: replayed, mismatch: matches ? null : 'quoted' };
}

function replayedRegisters(evidence: AttestationEvidence): Record<string, string> | string {
  let map: Map<number, string>;
  try {
    map = replayEventLog(evidence.eventLog);
  } catch (err) {
    return `the event log is malformed: ${(err as Error).message}`;
  }
  const out: Record<string, string> = {};
  for (const pcr of QUOTED_PCRS) out[String(pcr)] = map.get(pcr) ?? ZERO_DIGEST;
  return out;
}

function softwareRegisters(
  evidence: AttestationEvidence,
  ctx: AppraisalContext,
  qualifying: Buffer,
): Proven | string {
  const statement = evidence.statement;
  if (!statement) return `evidence from a ${evidence.anchor} anchor needs a signed statement`;
  const body = Buffer.from(statement.body, 'base64');
  if (!verify('sha256', body, ctx.deviceKey, Buffer.from(statement.signature, 'base64')))
    return 'the statement is not signed by the device key';
  let quote: SoftwareQuote;
  try {
    quote = JSON.parse(body.toString('utf8')) as SoftwareQuote;
  } catch {
    return 'the statement is not JSON';
  }
  if (quote.format !== SOFTWARE_QUOTE_FORMAT) return `the statement is not a ${SOFTWARE_QUOTE_FORMAT}`;
  if (quote.qualifyingData !== qualifying.toString('hex'))
    return 'the statement is not over this nonce and key (a replayed or redirected statement)';
  if (typeof quote.registers !== 'object' || quote.registers === null)
    return 'the statement has no registers';
  const replayed = replayedRegisters(evidence);
  if (typeof replayed === 'string') return replayed;
  const matches = QUOTED_PCRS.every(
    (pcr) => (quote.registers[String(pcr)] ?? ZERO_DIGEST) === replayed[String(pcr)],
  );
  return { registers: replayed, mismatch: matches ? null : 'signed' };
}

function appraise(evidence: AttestationEvidence, ctx: AppraisalContext, proven: Proven): Appraisal {
  const contraindications: string[] = [];
  const warnings: string[] = [];
  const { registers, mismatch } = proven;
  if (mismatch) {
    contraindications.push(
      `the event log does not replay to the ${mismatch} registers: measurements were hidden or the log was altered`,
    );
  }
  const measurements: AppraisedMeasurement[] = [];
  const seen = new Set<MeasuredComponent>();
  for (const e of evidence.eventLog) {
    if (PCR_OF[e.component] !== e.pcr) {
      contraindications.push(
        `event ${e.seq} puts ${e.component} into PCR ${e.pcr}, not ${PCR_OF[e.component]}`,
      );
      continue;
    }
    seen.add(e.component);
    const refs = ctx.references.get(e.component);
    const verdict = !refs || refs.size === 0 ? 'unreferenced' : refs.has(e.digest) ? 'known' : 'unknown';
    measurements.push({
      seq: e.seq,
      component: e.component,
      digest: e.digest,
      description: e.description,
      verdict,
    });
    if (verdict === 'unknown')
      contraindications.push(
        `${e.component} measurement ${e.digest.slice(0, 16)}… (${e.description}) is not among the reference values of model ${ctx.model}`,
      );
  }
  for (const component of MEASURED_COMPONENTS) {
    const refs = ctx.references.get(component);
    const hasRefs = !!refs && refs.size > 0;
    if (!hasRefs && seen.has(component))
      warnings.push(`no reference values are registered for ${component} of model ${ctx.model}`);
    if (hasRefs && !seen.has(component)) warnings.push(`${component} was not measured`);
  }
  // The anchor's strength is not a finding about the software: it travels with the result as
  // `anchor`, and whether a software anchor is admitted is the relying party's (per-model) choice.
  const status: AttestationStatus = contraindications.length
    ? 'contraindicated'
    : warnings.length
      ? 'warning'
      : 'affirming';
  return { authentic: true, status, reasons: [...contraindications, ...warnings], measurements, registers };
}
