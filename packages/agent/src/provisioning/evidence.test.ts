import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MeasuredComponent, MeasurementEvent } from '@rampart/shared/attestation';
import { canonicalJson } from '@rampart/shared/audit';
import {
  EVIDENCE_FORMAT,
  SOFTWARE_QUOTE_FORMAT,
  appraiseEvidence,
  evidenceProblem,
  type AttestationEvidence,
} from '@rampart/shared/provisioning';
import { measure, measurementStore } from '../attestation/measurements.js';
import { createSoftHsmToken, type SoftHsmToken } from '../test-support/softhsm.js';
import { startSwtpm, type Swtpm } from '../test-support/swtpm.js';
import { Pkcs11TrustAnchor } from '../trust-anchor/pkcs11.js';
import { SoftwareTrustAnchor } from '../trust-anchor/software.js';
import { TpmTrustAnchor } from '../trust-anchor/tpm.js';
import type { TrustAnchor } from '../trust-anchor/trust-anchor.js';
import { collectEvidence } from './evidence.js';

const nonce = () => randomBytes(24).toString('base64url');

/** Boot measurements as the boot scripts take them, into the register and log of `dataDir`. */
async function boot(dataDir: string, tcti: string | null): Promise<void> {
  const { register, log } = measurementStore(dataDir, tcti);
  const stages: [MeasuredComponent, string][] = [
    ['bootloader', 'u-boot 2026.01'],
    ['os', 'rootfs 2026.11'],
    ['application', 'app 4.2.0'],
    ['configuration', 'config.yaml'],
    ['application', 'plugin 1.0'],
  ];
  for (const [component, description] of stages)
    await measure({ register, log, component, data: Buffer.from(`${description} image`), description });
}

/** Reference values as an operator registers them: every digest the log names. */
function referencesFrom(events: readonly MeasurementEvent[]) {
  const refs = new Map<MeasuredComponent, Set<string>>();
  for (const e of events) refs.set(e.component, (refs.get(e.component) ?? new Set()).add(e.digest));
  return refs;
}

async function appraise(evidence: AttestationEvidence, anchor: TrustAnchor, events = evidence.eventLog) {
  return appraiseEvidence(evidence, {
    deviceKey: (await anchor.publicKey())!,
    references: referencesFrom(events),
    model: 'DW100',
  });
}

describe('evidence from the software trust anchor', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'agent-evidence-'));
  const anchor = new SoftwareTrustAnchor(join(dataDir, 'identity', 'device-key.pem'));
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  it('signs the software register over the nonce and key, and the verifier affirms it', async () => {
    await anchor.ensureKey();
    await boot(dataDir, null);
    const n = nonce();
    const evidence = await collectEvidence({ anchor, dataDir, nonce: n, deviceId: 'dw-0200' });
    expect(evidenceProblem(evidence)).toBeNull();
    expect(evidence).toMatchObject({
      format: EVIDENCE_FORMAT,
      nonce: n,
      deviceId: 'dw-0200',
      anchor: 'software',
    });
    expect(evidence.tpm).toBeUndefined();
    expect(evidence.birthCertificates).toBeUndefined();
    const { events } = measurementStore(dataDir, null).log.read();
    expect(evidence.eventLog).toEqual(events);
    expect(evidence.eventLog.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5]);
    const body = Buffer.from(evidence.statement!.body, 'base64').toString('utf8');
    const statement = JSON.parse(body) as { format: string; registers: Record<string, string> };
    expect(statement.format).toBe(SOFTWARE_QUOTE_FORMAT);
    expect(Object.keys(statement.registers)).toEqual(['8', '9', '10', '11']);
    expect(body).toBe(canonicalJson(statement));
    const { register } = measurementStore(dataDir, null);
    const values = await register.read([8, 9, 10, 11]);
    expect(statement.registers).toEqual(Object.fromEntries([...values].map(([k, v]) => [String(k), v])));

    const appraisal = await appraise(evidence, anchor);
    expect(appraisal).toMatchObject({ authentic: true, status: 'affirming', reasons: [] });
  });

  it('is refused as not authentic when the nonce is changed, or the key is another', async () => {
    const evidence = await collectEvidence({ anchor, dataDir, nonce: nonce(), deviceId: 'dw-0200' });
    expect(await appraise({ ...evidence, nonce: nonce() }, anchor)).toEqual({
      authentic: false,
      problem: 'the statement is not over this nonce and key (a replayed or redirected statement)',
    });
    const other = new SoftwareTrustAnchor(join(dataDir, 'other-key.pem'));
    await other.ensureKey();
    expect(await appraise(evidence, other)).toMatchObject({ authentic: false });
  });

  it('is contraindicated when the log does not replay to the signed register, or a digest is unknown', async () => {
    const evidence = await collectEvidence({ anchor, dataDir, nonce: nonce(), deviceId: 'dw-0200' });
    const edited = evidence.eventLog.slice(0, -1);
    const appraisal = await appraise({ ...evidence, eventLog: edited }, anchor, evidence.eventLog);
    expect(appraisal).toMatchObject({ authentic: true, status: 'contraindicated' });
    expect(appraisal.authentic && appraisal.reasons[0]).toMatch(/does not replay to the signed registers/);

    const references = referencesFrom(evidence.eventLog);
    references.set('os', new Set(['ab'.repeat(32)]));
    const unknown = appraiseEvidence(evidence, {
      deviceKey: (await anchor.publicKey())!,
      references,
      model: 'DW100',
    });
    expect(unknown).toMatchObject({ authentic: true, status: 'contraindicated' });
    expect(unknown.authentic && unknown.reasons[0]).toMatch(
      /^os measurement [0-9a-f]{16}… \(rootfs 2026\.11\) is not among/,
    );
  });

  it('carries the birth certificates, and refuses without a device key', async () => {
    const evidence = await collectEvidence({
      anchor,
      dataDir,
      nonce: nonce(),
      deviceId: 'dw-0200',
      birthCertificates: ['-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'],
    });
    expect(evidence.birthCertificates).toHaveLength(1);
    const empty = mkdtempSync(join(tmpdir(), 'agent-evidence-nokey-'));
    await expect(
      collectEvidence({
        anchor: new SoftwareTrustAnchor(join(empty, 'identity', 'device-key.pem')),
        dataDir: empty,
        nonce: nonce(),
        deviceId: 'dw-0201',
      }),
    ).rejects.toMatchObject({ code: 'TRUST_ANCHOR', message: expect.stringMatching(/holds no device key/) });
    rmSync(empty, { recursive: true, force: true });
  });

  it('sends an empty log and zero registers before anything was measured', async () => {
    const fresh = mkdtempSync(join(tmpdir(), 'agent-evidence-fresh-'));
    const a = new SoftwareTrustAnchor(join(fresh, 'identity', 'device-key.pem'));
    await a.ensureKey();
    const evidence = await collectEvidence({
      anchor: a,
      dataDir: fresh,
      nonce: nonce(),
      deviceId: 'dw-0202',
    });
    expect(evidence.eventLog).toEqual([]);
    expect(await appraise(evidence, a)).toMatchObject({ authentic: true, status: 'affirming' });
    rmSync(fresh, { recursive: true, force: true });
  });
});

describe('evidence from the TPM trust anchor (swtpm + tpm2-tools)', () => {
  let tpm: Swtpm;
  let anchor: TpmTrustAnchor;
  const dataDir = mkdtempSync(join(tmpdir(), 'agent-evidence-tpm-'));

  beforeAll(async () => {
    tpm = await startSwtpm();
    anchor = new TpmTrustAnchor({ dir: join(dataDir, 'identity', 'tpm'), tcti: tpm.tcti });
    await anchor.ensureKey();
    await boot(dataDir, tpm.tcti);
  }, 60_000);
  afterAll(async () => {
    await tpm?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('quotes PCRs 8–11 with the attestation key, certified by the device key; the verifier affirms it', async () => {
    const evidence = await collectEvidence({ anchor, dataDir, nonce: nonce(), deviceId: 'dw-0300' });
    expect(evidenceProblem(evidence)).toBeNull();
    expect(evidence.anchor).toBe('tpm');
    expect(evidence.statement).toBeUndefined();
    expect(evidence.tpm).toMatchObject({
      ak: (await anchor.ensureAttestationKey()).toString('base64'),
      certify: { attest: expect.any(String), signature: expect.any(String) },
      quote: { attest: expect.any(String), signature: expect.any(String) },
    });
    expect(evidence.eventLog).toHaveLength(5);
    expect(await appraise(evidence, anchor)).toMatchObject({
      authentic: true,
      status: 'affirming',
      reasons: [],
    });
  });

  it('is refused as not authentic for a changed nonce', async () => {
    const evidence = await collectEvidence({ anchor, dataDir, nonce: nonce(), deviceId: 'dw-0300' });
    const appraisal = await appraise({ ...evidence, nonce: nonce() }, anchor);
    expect(appraisal.authentic).toBe(false);
  });

  it('is contraindicated when an entry is removed from the log: it no longer replays to the quote', async () => {
    const evidence = await collectEvidence({ anchor, dataDir, nonce: nonce(), deviceId: 'dw-0300' });
    // The last application measurement hidden: what is left is numbered without gaps and all known.
    const appraisal = await appraise(
      { ...evidence, eventLog: evidence.eventLog.slice(0, -1) },
      anchor,
      evidence.eventLog,
    );
    expect(appraisal).toMatchObject({ authentic: true, status: 'contraindicated' });
    expect(appraisal.authentic && appraisal.reasons).toEqual([
      'the event log does not replay to the quoted registers: measurements were hidden or the log was altered',
    ]);
  });
});

describe('evidence from the PKCS#11 trust anchor (SoftHSM2)', () => {
  let token: SoftHsmToken;
  let anchor: Pkcs11TrustAnchor;
  const dataDir = mkdtempSync(join(tmpdir(), 'agent-evidence-pkcs11-'));

  beforeAll(async () => {
    token = createSoftHsmToken();
    anchor = new Pkcs11TrustAnchor({ module: token.module, tokenLabel: token.tokenLabel, pin: token.pin });
    await anchor.ensureKey();
    await boot(dataDir, null);
  });
  afterAll(async () => {
    await anchor?.close();
    token?.cleanup();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('signs the software register in the token; the verifier affirms it, and refuses another nonce', async () => {
    const evidence = await collectEvidence({ anchor, dataDir, nonce: nonce(), deviceId: 'dw-0400' });
    expect(evidenceProblem(evidence)).toBeNull();
    expect(evidence.anchor).toBe('pkcs11');
    expect(evidence.statement).toBeDefined();
    expect(await appraise(evidence, anchor)).toMatchObject({ authentic: true, status: 'affirming' });
    expect((await appraise({ ...evidence, nonce: nonce() }, anchor)).authentic).toBe(false);
  });
});
