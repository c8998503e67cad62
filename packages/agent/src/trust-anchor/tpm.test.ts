import { execFile } from 'node:child_process';
import { createHash, verify } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCsr } from '@rampart/shared/pki';
import { createDeviceCsr } from '../identity/csr.js';
import { startSwtpm, type Swtpm } from '../test-support/swtpm.js';
import { TpmTrustAnchor } from './tpm.js';

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
