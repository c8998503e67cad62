import {
  ATTESTATION_STATUSES,
  TRUST_ANCHOR_KINDS,
  type AttestationEvidence,
  type AttestationStatus,
  type TrustAnchorKind,
} from '@rampart/shared/provisioning';
import { AgentError } from '../errors.js';
import { serverText, type AttestationOperation, type EstClient, type EstReply } from '../est/client.js';
import type { TrustAnchor } from '../trust-anchor/trust-anchor.js';
import { collectEvidence, type CollectEvidenceOptions } from './evidence.js';

/** A nonce handed out by the verifier: single use, valid until `expiresAt`. */
export interface AttestationNonce {
  nonce: string;
  expiresAt: string;
}

/** The verifier's conclusion about the device (RATS attestation result). */
export interface AttestationResult {
  id: string;
  deviceId: string;
  status: AttestationStatus;
  anchor: TrustAnchorKind;
  reasons: string[];
}

/** What the verifier answers to evidence: its result, and an attestation token when the device may enroll. */
export interface AttestationReply {
  result: AttestationResult;
  /** `rpa_…`, sent as `Authorization: Bearer` to simpleenroll / simplereenroll; null when refused. */
  token: string | null;
}

const WHAT: Record<AttestationOperation, string> = {
  'attestation/v1/nonce': 'taking an attestation nonce',
  'attestation/v1/evidence': 'attestation',
};

/**
 * The device side of remote attestation, on the EST server's origin and over its pinned TLS:
 * `POST /attestation/v1/nonce`, then `POST /attestation/v1/evidence`. Errors are AgentErrors that
 * carry the server's RFC 9457 `detail` and say what to do next.
 */
export class AttestationClient {
  constructor(private readonly est: EstClient) {}

  /** `POST /attestation/v1/nonce`: a fresh nonce for one piece of evidence. */
  async nonce(deviceId?: string): Promise<AttestationNonce> {
    const op = 'attestation/v1/nonce';
    const value = await this.exchange(op, {}, deviceId);
    const v = value as Partial<AttestationNonce>;
    if (typeof v.nonce !== 'string' || v.nonce.length === 0 || typeof v.expiresAt !== 'string')
      throw badReply(op, 'it has no nonce and expiresAt');
    return { nonce: v.nonce, expiresAt: v.expiresAt };
  }

  /** `POST /attestation/v1/evidence`: the verifier's result, with a token when the device may enroll. */
  async submit(evidence: AttestationEvidence): Promise<AttestationReply> {
    const op = 'attestation/v1/evidence';
    const value = (await this.exchange(op, evidence, evidence.deviceId)) as {
      result?: Partial<AttestationResult>;
      token?: unknown;
    };
    const r = value.result;
    if (
      !r ||
      typeof r !== 'object' ||
      typeof r.id !== 'string' ||
      typeof r.deviceId !== 'string' ||
      !(ATTESTATION_STATUSES as readonly unknown[]).includes(r.status) ||
      !(TRUST_ANCHOR_KINDS as readonly unknown[]).includes(r.anchor) ||
      !Array.isArray(r.reasons) ||
      !r.reasons.every((x) => typeof x === 'string')
    )
      throw badReply(op, 'it has no attestation result (id, deviceId, status, anchor, reasons)');
    if (value.token !== null && (typeof value.token !== 'string' || value.token.length === 0))
      throw badReply(op, 'its token is neither a string nor null');
    if (r.deviceId !== evidence.deviceId)
      throw badReply(op, `its result is for device "${r.deviceId}", not "${evidence.deviceId}"`);
    return {
      result: {
        id: r.id,
        deviceId: r.deviceId,
        status: r.status!,
        anchor: r.anchor!,
        reasons: r.reasons,
      },
      token: value.token,
    };
  }

  private async exchange(op: AttestationOperation, body: unknown, deviceId?: string): Promise<unknown> {
    const reply = await this.est.postJson(op, body);
    if (reply.status !== 200) throw statusError(op, reply, deviceId);
    const type = String(reply.headers['content-type'] ?? '')
      .split(';')[0]!
      .trim()
      .toLowerCase();
    if (type !== 'application/json')
      throw badReply(op, `its content type is ${JSON.stringify(reply.headers['content-type'] ?? '(none)')}`);
    let value: unknown;
    try {
      value = JSON.parse(reply.body.toString('utf8'));
    } catch {
      throw badReply(op, 'it is not JSON');
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value))
      throw badReply(op, 'it is not a JSON object');
    return value;
  }
}

function badReply(op: AttestationOperation, reason: string): AgentError {
  return new AgentError(
    'EST_BAD_RESPONSE',
    `the platform's reply to ${op.replace('attestation/v1/', '')} is not what the attestation protocol promises: ${reason}; ` +
      'refused (is est.url the Rampart platform, and is it up to date?)',
  );
}

function statusError(op: AttestationOperation, reply: EstReply, deviceId?: string): AgentError {
  const status = reply.status;
  const text = serverText(reply);
  const id = deviceId ?? 'ID';
  const said = `the platform answered ${status}${text ? `: "${text}"` : ''}`;
  let next: string;
  if (status === 404)
    next =
      'the platform offers no remote attestation at /attestation/v1 (it may be older than the agent); ' +
      'update the platform, or enroll with a one-time token instead: rampart-agent enroll';
  else if (status === 401 || status === 403)
    next =
      'the verifier does not accept attestation from this device (it may be unknown to the registry, ' +
      `disabled, or not from a registered factory batch); ask the operator to check: rampart device show ${id}`;
  else if (status === 409 || status === 410)
    next = 'the nonce was used or expired before the evidence arrived; run the command again for a new one';
  else if (status === 400 || status === 422)
    next =
      op === 'attestation/v1/evidence'
        ? 'the verifier refused the evidence (malformed or not authentic: it says nothing about the device); ' +
          'check the trust anchor and the event log (rampart-agent measurements), and if it persists report this message'
        : 'the platform found the request malformed; update the agent, or report this message';
  else if (status === 429 || status === 503) next = 'the platform is busy; try again later';
  else if (status >= 500)
    next = 'the platform failed; try again later, and if it persists ask the operator to check its logs';
  else next = 'this is not an attestation answer; check est.url';
  return new AgentError(
    'EST_REFUSED',
    `${WHAT[op]} failed: ${said}. ${next.charAt(0).toUpperCase()}${next.slice(1)}`,
    {
      status,
      ...(text ? { serverMessage: text } : {}),
    },
  );
}

export interface AttestOptions extends Omit<CollectEvidenceOptions, 'nonce'> {
  anchor: TrustAnchor;
  /** An EST client for the platform (its pinned TLS is used for the attestation endpoints too). */
  est: EstClient;
}

/** Take a nonce, collect evidence for it and submit it: the verifier's result and token. */
export async function attestDevice(
  options: AttestOptions,
): Promise<AttestationReply & { evidence: AttestationEvidence }> {
  const { est, ...collect } = options;
  const client = new AttestationClient(est);
  const { nonce } = await client.nonce(options.deviceId);
  const evidence = await collectEvidence({ ...collect, nonce });
  const reply = await client.submit(evidence);
  return { ...reply, evidence };
}

/**
 * The error for a result without a token: what the verifier found and what to do about it. `model`
 * (the factory record's) names where reference values belong; `again` is how to try again.
 */
export function attestationRefusal(
  result: AttestationResult,
  options: { model?: string; again?: string } = {},
): AgentError {
  const { model, again = 'run rampart-agent provision again' } = options;
  const found = result.reasons.length ? `: ${result.reasons.join('; ')}` : '';
  const refs = `rampart attestation reference add … for model ${model ?? 'MODEL'}`;
  let message: string;
  if (result.status === 'contraindicated')
    message =
      `the platform's verifier found device ${result.deviceId} contraindicated${found}. It issued no ` +
      'attestation token, so the device gets no certificate. If the measured software is genuine but new, ' +
      `the operator registers its digests as reference values (${refs}); otherwise reinstall genuine ` +
      `software and reboot. Then ${again}`;
  else if (result.status === 'warning')
    message =
      `the platform's verifier appraised device ${result.deviceId} with warnings${found}, and the ` +
      'enrollment policy admits it only when affirming: no attestation token was issued. The operator ' +
      `registers reference values for what was measured (${refs}); then ${again}`;
  else
    message =
      `the platform's verifier affirmed device ${result.deviceId}${found}, but issued no attestation ` +
      `token: the enrollment policy refuses it; ask the operator to check: rampart device show ${result.deviceId}`;
  return new AgentError('ATTESTATION_REFUSED', `${message} (attestation result ${result.id})`);
}
