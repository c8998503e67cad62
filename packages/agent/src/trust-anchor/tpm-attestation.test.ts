import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  attestationQualifyingData,
  extendDigest,
  parseTpmPublic,
  parseTpmSignature,
  parseTpmsAttest,
  pcrDigest,
  verifyTpmSignature,
} from '@rampart/shared/attestation';
import { TpmPcrs } from '../attestation/measurements.js';
import { startSwtpm, type Swtpm } from '../test-support/swtpm.js';
import { TpmTrustAnchor } from './tpm.js';

const QUOTED = [8, 9, 10, 11];

/** Remote attestation with a real (software) TPM 2.0 through unmodified tpm2-tools. */
describe('TPM 2.0 attestation (swtpm + tpm2-tools)', () => {
  let tpm: Swtpm;
  let other: Swtpm;
  let anchor: TpmTrustAnchor;
  let otherAnchor: TpmTrustAnchor;
  const dir = mkdtempSync(join(tmpdir(), 'rampart-tpm-attest-'));
  const otherDir = mkdtempSync(join(tmpdir(), 'rampart-tpm-attest-other-'));

  beforeAll(async () => {
    tpm = await startSwtpm();
    other = await startSwtpm();
    anchor = new TpmTrustAnchor({ dir, tcti: tpm.tcti });
    otherAnchor = new TpmTrustAnchor({ dir: otherDir, tcti: other.tcti });
  }, 30_000);
  afterAll(async () => {
    await tpm?.stop();
    await other?.stop();
    rmSync(dir, { recursive: true, force: true });
    rmSync(otherDir, { recursive: true, force: true });
  });

  /** Qualifying data as a device computes it for the server's nonce and its identity key. */
  async function qualifying(a: TpmTrustAnchor, nonce = randomBytes(16).toString('hex')): Promise<Buffer> {
    const key = await a.ensureKey();
    return attestationQualifyingData(nonce, key.export({ type: 'spki', format: 'der' }));
  }

  it('creates a restricted signing key fixed to the TPM as the attestation key, once', async () => {
    expect(await anchor.attestationKeyPublic()).toBeNull();
    const akPublic = await anchor.ensureAttestationKey();
    const ak = parseTpmPublic(akPublic);
    expect(ak.type).toBe('ecc');
    expect(ak.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(ak.flags).toMatchObject({
      restricted: true,
      sign: true,
      decrypt: false,
      fixedTPM: true,
      fixedParent: true,
      sensitiveDataOrigin: true,
    });
    for (const f of ['ak.pub', 'ak.priv']) expect(statSync(join(dir, f)).mode & 0o077).toBe(0);
    // Created once: the next call, and another agent process, get the same key.
    expect(await anchor.ensureAttestationKey()).toEqual(akPublic);
    expect(await new TpmTrustAnchor({ dir, tcti: tpm.tcti }).attestationKeyPublic()).toEqual(akPublic);
  });

  it('quotes PCRs over the qualifying data, signed by the AK, with the values it quoted', async () => {
    const ak = parseTpmPublic(await anchor.ensureAttestationKey());
    const qd = await qualifying(anchor);
    const { attest, signature, pcrValues } = await anchor.quote(QUOTED, qd);

    const parsed = parseTpmsAttest(attest);
    expect(parsed.type).toBe('quote');
    expect(parsed.extraData).toEqual(qd);
    expect(parsed.quote?.pcrSelections).toEqual([{ hash: 'sha256', pcrs: QUOTED }]);
    expect([...pcrValues.keys()]).toEqual(QUOTED);
    expect(parsed.quote?.pcrDigest).toEqual(pcrDigest(pcrValues, QUOTED));

    const sig = parseTpmSignature(signature);
    expect(sig).toMatchObject({ alg: 'ecdsa', hash: 'sha256' });
    expect(verifyTpmSignature(ak.publicKey, attest, sig)).toBe(true);
    // Any changed byte of the attestation breaks the signature.
    for (const at of [0, 10, attest.length - 1]) {
      const tampered = Buffer.from(attest);
      tampered[at]! ^= 0x01;
      expect(verifyTpmSignature(ak.publicKey, tampered, sig)).toBe(false);
    }
    // The AK is not the identity key.
    expect(verifyTpmSignature(await anchor.ensureKey(), attest, sig)).toBe(false);
  });

  it('quotes a different digest after a measurement is extended into PCR 10', async () => {
    const before = await anchor.quote(QUOTED, await qualifying(anchor));
    const measurement = randomBytes(32).toString('hex');
    await new TpmPcrs(tpm.tcti).extend(10, measurement);
    const after = await anchor.quote(QUOTED, await qualifying(anchor));

    expect(after.pcrValues.get(10)).toBe(extendDigest(before.pcrValues.get(10)!, measurement));
    expect(after.pcrValues.get(8)).toBe(before.pcrValues.get(8));
    const digest = (q: typeof before) => parseTpmsAttest(q.attest).quote!.pcrDigest;
    expect(digest(after)).not.toEqual(digest(before));
    expect(digest(after)).toEqual(pcrDigest(after.pcrValues, QUOTED));
  });

  it('certifies the AK with the identity key, over the qualifying data', async () => {
    const akPublic = await anchor.ensureAttestationKey();
    const identity = await anchor.ensureKey();
    const qd = await qualifying(anchor);
    const { attest, signature } = await anchor.certifyAttestationKey(qd);

    const parsed = parseTpmsAttest(attest);
    expect(parsed.type).toBe('certify');
    expect(parsed.extraData).toEqual(qd);
    expect(parsed.certify?.name).toEqual(parseTpmPublic(akPublic).name);
    const sig = parseTpmSignature(signature);
    expect(verifyTpmSignature(identity, attest, sig)).toBe(true);
    expect(verifyTpmSignature(parseTpmPublic(akPublic).publicKey, attest, sig)).toBe(false);
    const tampered = Buffer.from(attest);
    tampered[tampered.length - 1]! ^= 0x01;
    expect(verifyTpmSignature(identity, tampered, sig)).toBe(false);
  });

  it("does not verify another TPM's quote with this TPM's AK", async () => {
    const ak = parseTpmPublic(await anchor.ensureAttestationKey());
    const otherAk = parseTpmPublic(await otherAnchor.ensureAttestationKey());
    expect(otherAk.name).not.toEqual(ak.name);
    const qd = await qualifying(otherAnchor);
    const { attest, signature } = await otherAnchor.quote(QUOTED, qd);
    const sig = parseTpmSignature(signature);
    expect(verifyTpmSignature(otherAk.publicKey, attest, sig)).toBe(true);
    expect(verifyTpmSignature(ak.publicKey, attest, sig)).toBe(false);
  });

  it('reports the same EK for the same TPM, and another for another TPM', async () => {
    const first = await anchor.endorsementKeyPublic();
    const second = await anchor.endorsementKeyPublic();
    expect(second).toEqual(first);
    const ek = parseTpmPublic(first);
    expect(ek.type).toBe('ecc');
    expect(ek.flags).toMatchObject({ restricted: true, decrypt: true, sign: false, fixedTPM: true });
    const otherEk = await otherAnchor.endorsementKeyPublic();
    expect(parseTpmPublic(otherEk).name).not.toEqual(ek.name);
  });

  it('runs quotes and certifications one at a time without running out of TPM object slots', async () => {
    const qd = await qualifying(anchor);
    const results = await Promise.all([
      anchor.quote(QUOTED, qd),
      anchor.certifyAttestationKey(qd),
      anchor.quote([10], qd),
      anchor.certifyAttestationKey(qd),
      anchor.endorsementKeyPublic(),
    ]);
    expect(results).toHaveLength(5);
  });

  it('says what is missing or wrong, and a stolen AK is useless in another TPM', async () => {
    const empty = mkdtempSync(join(tmpdir(), 'rampart-tpm-attest-empty-'));
    try {
      const fresh = new TpmTrustAnchor({ dir: empty, tcti: tpm.tcti });
      await expect(fresh.quote(QUOTED, Buffer.alloc(32))).rejects.toThrow(
        /no attestation key in the TPM yet; create it first/,
      );
      await expect(fresh.certifyAttestationKey(Buffer.alloc(32))).rejects.toThrow(
        /no identity key in the TPM yet; run: rampart-agent identity init/,
      );
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
    await expect(anchor.quote(QUOTED, Buffer.alloc(65))).rejects.toThrow(/at most 64/);
    await expect(anchor.quote([24], Buffer.alloc(32))).rejects.toThrow(/PCRs are 0–23/);
    const stolen = new TpmTrustAnchor({ dir, tcti: other.tcti });
    await expect(stolen.quote(QUOTED, Buffer.alloc(32))).rejects.toThrow(
      /tpm2_load failed on the TPM at swtpm:/,
    );
    await expect(stolen.certifyAttestationKey(Buffer.alloc(32))).rejects.toThrow(
      /TPM2_Load failed on the TPM at swtpm:.*response code/,
    );
  });
});
