import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseCsr, toPem } from '@rampart/shared/pki';
import { SoftwareTrustAnchor } from '../trust-anchor/software.js';
import { createDeviceCsr } from './csr.js';

describe('device CSR from the trust anchor', () => {
  it('is signed by the software anchor and verified by openssl, with CN and SAN URI of the device', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'agent-csr-'));
    const anchor = new SoftwareTrustAnchor(join(dir, 'identity', 'device-key.pem'));
    const der = await createDeviceCsr(anchor, 'dw-0001');
    writeFileSync(join(dir, 'device.csr'), toPem('CERTIFICATE REQUEST', der));
    // openssl exits non-zero (and execFileSync throws) when the self-signature does not verify.
    const text = execFileSync('openssl', ['req', '-in', 'device.csr', '-verify', '-noout', '-text'], {
      cwd: dir,
      encoding: 'utf8',
      stdio: 'pipe',
    });
    expect(text).toContain('CN = dw-0001');
    expect(text).toContain('URI:urn:rampart:device:dw-0001');
    expect(text).toContain('ecdsa-with-SHA256');
    const parsed = parseCsr(der);
    expect(parsed).toMatchObject({ commonName: 'dw-0001', signatureValid: true, requestsCa: false });
    // The request certifies the anchor's key (created by createDeviceCsr when there was none).
    const pub = await anchor.publicKey();
    expect(parsed.publicKeyDer).toEqual(pub!.export({ type: 'spki', format: 'der' }));
  });

  it('refuses a device id the registry would not accept', async () => {
    const anchor = new SoftwareTrustAnchor(join(mkdtempSync(join(tmpdir(), 'agent-csr-')), 'k.pem'));
    await expect(createDeviceCsr(anchor, 'bad id/../x')).rejects.toThrow(/not a device id/);
  });
});
