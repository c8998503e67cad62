import { execFile } from 'node:child_process';
import { createHash, generateKeyPairSync, randomBytes, verify } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseTpmPublic } from '@rampart/shared/attestation';
import { parseCsr } from '@rampart/shared/pki';
import { AgentError } from '../errors.js';
import { createDeviceCsr } from '../identity/csr.js';
import { startSwtpm, type Swtpm } from '../test-support/swtpm.js';
import { runTpm2 } from './tpm-tools.js';
import { DEFAULT_PARENT_HANDLE, TpmTrustAnchor } from './tpm.js';
import { wrapLikeDirector } from '../test-support/content-key.js';

/** The TPM trust anchor against a real (software) TPM 2.0 through unmodified tpm2-tools. */
describe('TPM 2.0 trust anchor (swtpm + tpm2-tools)', () => {
  let tpm: Swtpm;
  let other: Swtpm;
  const dir = mkdtempSync(join(tmpdir(), 'rampart-tpm-anchor-'));

  beforeAll(async () => {
    tpm = await startSwtpm();
    other = await startSwtpm();
  }, 30_000);
  afterAll(async () => {
    await tpm?.stop();
    await other?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('creates a P-256 key inside the TPM, keeps only wrapped blobs, and signs with it', async () => {
    const anchor = new TpmTrustAnchor({ dir, tcti: tpm.tcti });
    expect(await anchor.publicKey()).toBeNull();
    const pub = await anchor.ensureKey();
    expect(pub.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(anchor.kind).toBe('tpm');
    expect(anchor.strength).toBe('hardware');
    // What is on disk is the TPM's wrapped key, not a private key anyone could use.
    for (const f of ['tpm-key.pub', 'tpm-key.priv']) {
      expect(statSync(join(dir, f)).mode & 0o077).toBe(0);
      expect(readFileSync(join(dir, f)).toString('latin1')).not.toContain('PRIVATE KEY');
    }
    expect(await anchor.tlsKey()).toBeNull();

    const data = Buffer.from('to be signed by the TPM');
    const signature = await anchor.sign(data);
    expect(verify('sha256', data, pub, signature)).toBe(true);
    expect(verify('sha256', Buffer.from('something else'), pub, signature)).toBe(false);
  });

  it('keeps the same key across restarts of the agent, and signs a CSR the server accepts', async () => {
    const first = await new TpmTrustAnchor({ dir, tcti: tpm.tcti }).ensureKey();
    const again = new TpmTrustAnchor({ dir, tcti: tpm.tcti });
    const pub = await again.ensureKey();
    const fp = (k: typeof pub) =>
      createHash('sha256')
        .update(k.export({ type: 'spki', format: 'der' }))
        .digest('hex');
    expect(fp(pub)).toBe(fp(first));
    const csr = parseCsr(await createDeviceCsr(again, 'tpm-device-1'));
    expect(csr.signatureValid).toBe(true);
    expect(csr.commonName).toBe('tpm-device-1');
  });

  it('signs concurrent requests one at a time without running out of TPM object slots', async () => {
    const anchor = new TpmTrustAnchor({ dir, tcti: tpm.tcti });
    const pub = await anchor.ensureKey();
    const messages = Array.from({ length: 8 }, (_, i) => Buffer.from(`message ${i}`));
    const signatures = await Promise.all(messages.map((m) => anchor.sign(m)));
    messages.forEach((m, i) => expect(verify('sha256', m, pub, signatures[i]!)).toBe(true));
  });

  it('creates the key for both ECDSA and ECDH (sign and decrypt, no scheme of its own)', async () => {
    await new TpmTrustAnchor({ dir, tcti: tpm.tcti }).ensureKey();
    const key = parseTpmPublic(readFileSync(join(dir, 'tpm-key.pub')));
    expect(key.flags).toMatchObject({ sign: true, decrypt: true, restricted: false, fixedTPM: true });
  });

  it('opens a content key wrapped to its key with the ECDH in the TPM, and refuses one wrapped to another key', async () => {
    const anchor = new TpmTrustAnchor({ dir, tcti: tpm.tcti });
    const pub = await anchor.ensureKey();
    const contentKey = randomBytes(32);
    const opened = await anchor.unwrapKey(await wrapLikeDirector(contentKey, pub, 'tpm-device-1'));
    expect(Buffer.from(opened).equals(contentKey)).toBe(true);
    // Several at once go to the TPM one at a time.
    const keys = Array.from({ length: 4 }, () => randomBytes(32));
    const jwes = await Promise.all(keys.map((k) => wrapLikeDirector(k, pub, 'tpm-device-1')));
    const all = await Promise.all(jwes.map((j) => anchor.unwrapKey(j)));
    all.forEach((k, i) => expect(Buffer.from(k).equals(keys[i]!)).toBe(true));

    const elsewhere = await wrapLikeDirector(
      contentKey,
      generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey,
      'tpm-device-1',
    );
    await expect(anchor.unwrapKey(elsewhere)).rejects.toThrow(/does not unwrap with this device key/);
    // And the TPM is left with no object loaded: signing still works.
    expect(verify('sha256', Buffer.from('after'), pub, await anchor.sign(Buffer.from('after')))).toBe(true);
  });

  it('refuses to unwrap with a key created before it could (sign only), saying what to do; that key still signs', async () => {
    const old = mkdtempSync(join(tmpdir(), 'rampart-tpm-old-'));
    try {
      // What ensureKey created before: an ECDSA signing key without the decrypt attribute.
      const parent = `0x${DEFAULT_PARENT_HANDLE.toString(16)}`;
      await runTpm2(
        'tpm2_create',
        [
          '-C',
          parent,
          '-G',
          'ecc256:ecdsa-sha256',
          '-a',
          'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign',
          '-u',
          join(old, 'tpm-key.pub'),
          '-r',
          join(old, 'tpm-key.priv'),
        ],
        tpm.tcti,
      );
      const anchor = new TpmTrustAnchor({ dir: old, tcti: tpm.tcti });
      const pub = await anchor.ensureKey();
      const err = await anchor.unwrapKey(await wrapLikeDirector(randomBytes(32), pub, 'tpm-device-1')).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(AgentError);
      expect((err as AgentError).code).toBe('TRUST_ANCHOR');
      expect((err as Error).message).toMatch(/created before .* lacks the decrypt attribute/);
      expect((err as Error).message).toMatch(/re-provision the device .* or publish unencrypted releases/);
      expect(verify('sha256', Buffer.from('old'), pub, await anchor.sign(Buffer.from('old')))).toBe(true);
    } finally {
      rmSync(old, { recursive: true, force: true });
    }
  });

  it('cannot use the key blobs in another TPM: signing there fails and says where', async () => {
    const stolen = new TpmTrustAnchor({ dir, tcti: other.tcti });
    await expect(stolen.sign(Buffer.from('x'))).rejects.toThrow(/tpm2_load failed on the TPM at swtpm:/);
  });

  it('says what to do when there is no key yet, and creates nothing while signing', async () => {
    const empty = mkdtempSync(join(tmpdir(), 'rampart-tpm-empty-'));
    try {
      await expect(new TpmTrustAnchor({ dir: empty, tcti: tpm.tcti }).sign(Buffer.from('x'))).rejects.toThrow(
        /rampart-agent identity init/,
      );
      expect(existsSync(join(empty, 'tpm-key.priv'))).toBe(false);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it('is what `rampart-agent identity` uses with trustAnchor tpm, reported as hardware', async () => {
    const bin = fileURLToPath(new URL('../../dist/bin/rampart-agent.js', import.meta.url));
    const dataDir = mkdtempSync(join(tmpdir(), 'rampart-tpm-agent-'));
    const env = {
      PATH: process.env.PATH ?? '',
      RAMPART_AGENT_TRUST_ANCHOR: 'tpm',
      RAMPART_AGENT_TPM_TCTI: tpm.tcti,
    };
    try {
      const run = promisify(execFile);
      await run(process.execPath, [bin, '--data-dir', dataDir, 'identity', 'init'], { env });
      const shown = await run(process.execPath, [bin, '--data-dir', dataDir, '--json', 'identity', 'show'], {
        env,
      });
      expect(JSON.parse(shown.stdout)).toMatchObject({ trustAnchor: 'tpm', strength: 'hardware' });
      expect(existsSync(join(dataDir, 'identity', 'tpm', 'tpm-key.priv'))).toBe(true);
      expect(existsSync(join(dataDir, 'identity', 'device-key.pem'))).toBe(false);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
