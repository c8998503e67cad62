import { generateKeyPairSync, sign } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildCsr, deviceUri, fromPem, normalizeSerial, toPem } from '@rampart/shared/pki';
import { SoftwareTrustAnchor } from '../trust-anchor/software.js';
import { TestPki, type TestCa } from '../test-support/pki.js';
import { createDeviceCsr } from './csr.js';
import { writeFileAtomic } from './files.js';
import { IdentityStore } from './store.js';

let pki: TestPki;
let root: TestCa;
let issuing: TestCa;
let issuing2: TestCa;
let otherRoot: TestCa;
let otherIssuing: TestCa;

beforeAll(() => {
  pki = new TestPki();
  root = pki.rootCa('Test Root CA');
  issuing = pki.issuingCa('Test Issuing CA 1', root);
  issuing2 = pki.issuingCa('Test Issuing CA 2', root);
  otherRoot = pki.rootCa('Other Root CA');
  otherIssuing = pki.issuingCa('Other Issuing CA', otherRoot);
});

async function device(id = 'dw-0001') {
  const dataDir = mkdtempSync(join(tmpdir(), 'agent-store-'));
  const anchor = new SoftwareTrustAnchor(join(dataDir, 'identity', 'device-key.pem'));
  const publicKey = await anchor.ensureKey();
  const store = new IdentityStore(dataDir);
  const csr = await createDeviceCsr(anchor, id);
  return { dataDir, anchor, publicKey, store, csr, id };
}

function snapshot(dir: string): Record<string, string> {
  return Object.fromEntries(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f), 'utf8')]));
}

describe('identity store', () => {
  it('saves a checked certificate, its CA chain and the pinned root, atomically and readable by all', async () => {
    const d = await device();
    const issued = pki.issue(d.csr, issuing);
    const checked = d.store.install({
      issued: [issued],
      caCertificates: [root.der, issuing.der],
      rootPem: root.pem,
      publicKey: d.publicKey,
      deviceId: d.id,
    });
    expect(readdirSync(d.store.dir).sort()).toEqual([
      'chain.pem',
      'device-key.pem',
      'device.crt',
      'root-ca.pem',
    ]);
    for (const f of [d.store.certFile, d.store.chainFile, d.store.rootFile])
      expect(statSync(f).mode & 0o777).toBe(0o644);
    expect(statSync(join(d.store.dir, 'device-key.pem')).mode & 0o777).toBe(0o600);
    expect(fromPem(readFileSync(d.store.certFile, 'utf8'), 'CERTIFICATE')).toEqual([issued]);
    expect(fromPem(readFileSync(d.store.chainFile, 'utf8'), 'CERTIFICATE')).toEqual([issuing.der]);
    expect(readFileSync(d.store.rootFile, 'utf8')).toBe(root.pem);

    const info = d.store.current()!.info;
    writeFileSync(join(pki.dir, 'issued.der'), issued);
    const serial = pki.openssl('x509', '-inform', 'DER', '-in', 'issued.der', '-noout', '-serial').trim();
    expect(info.serial).toBe(normalizeSerial(serial.replace('serial=', '')));
    expect(info.serial).toMatch(/^[0-9a-f]+$/);
    expect(info).toMatchObject({
      deviceId: 'dw-0001',
      subject: 'CN=dw-0001',
      issuer: 'CN=Test Issuing CA 1',
    });
    expect(info.notAfter.getTime() - info.notBefore.getTime()).toBe(86_400_000);
    expect(checked.leaf.info).toEqual(info);
    // The client certificate presented for renewal: the device certificate, then its issuing CA.
    expect(fromPem(d.store.clientCertificatePem(), 'CERTIFICATE')).toEqual([issued, issuing.der]);
  });

  it('accepts a certificate from either issuing CA during a rollover and keeps both in the chain', async () => {
    const d = await device();
    d.store.install({
      issued: [pki.issue(d.csr, issuing2)],
      caCertificates: [root.der, issuing.der, issuing2.der],
      rootPem: root.pem,
      publicKey: d.publicKey,
      deviceId: d.id,
    });
    expect(fromPem(readFileSync(d.store.chainFile, 'utf8'), 'CERTIFICATE')).toEqual([
      issuing2.der,
      issuing.der,
    ]);
    expect(fromPem(d.store.clientCertificatePem(), 'CERTIFICATE')[1]).toEqual(issuing2.der);
  });

  it('parses an unchanged certificate once, and notices at once a certificate or chain that changed', async () => {
    const d = await device();
    const install = (issuer: TestCa) =>
      d.store.install({
        issued: [pki.issue(d.csr, issuer)],
        caCertificates: [root.der, issuing.der, issuing2.der],
        rootPem: root.pem,
        publicKey: d.publicKey,
        deviceId: d.id,
      });
    const first = install(issuing);
    const current = d.store.current()!;
    expect(current.info).toEqual(first.leaf.info);
    // Read again unchanged: the same parsed certificate, shared, so it cannot be changed.
    expect(d.store.current()).toBe(current);
    expect(Object.isFrozen(current)).toBe(true);
    expect(Object.isFrozen(current.info)).toBe(true);
    expect(Object.isFrozen(current.sanUris)).toBe(true);
    const chain = d.store.chain();
    expect(chain.map((c) => c.info.subject)).toEqual(['CN=Test Issuing CA 1', 'CN=Test Issuing CA 2']);
    chain.pop(); // the caller's own array
    expect(d.store.chain()).toHaveLength(2);

    // Renewed (here, by another issuing CA): the new certificate is read at once, by this store
    // and by any other.
    const renewed = install(issuing2);
    expect(renewed.leaf.info.serial).not.toBe(first.leaf.info.serial);
    for (const store of [d.store, new IdentityStore(d.dataDir)]) {
      expect(store.current()!.info).toEqual(renewed.leaf.info);
      expect(fromPem(store.clientCertificatePem(), 'CERTIFICATE')).toEqual([renewed.leaf.der, issuing2.der]);
    }

    // Replaced behind the store's back, even by a file of the same size: noticed too.
    const other = pki.issue(d.csr, issuing);
    writeFileAtomic(d.store.certFile, toPem('CERTIFICATE', other), 0o644);
    expect(d.store.current()!.der).toEqual(other);
    expect(fromPem(d.store.clientCertificatePem(), 'CERTIFICATE')).toEqual([other, issuing.der]);
    writeFileAtomic(d.store.chainFile, issuing2.pem, 0o644);
    expect(d.store.chain().map((c) => c.der)).toEqual([issuing2.der]);

    // A damaged file is refused each time it is read, never served from what was parsed before.
    writeFileAtomic(d.store.certFile, 'not a certificate\n', 0o644);
    expect(() => d.store.current()).toThrow(/holds no PEM certificate/);
    expect(() => d.store.current()).toThrow(/holds no PEM certificate/);
  });

  describe('refuses what does not check out, and keeps the old identity', () => {
    let d: Awaited<ReturnType<typeof device>>;
    let before: Record<string, string>;

    beforeAll(async () => {
      d = await device();
      d.store.install({
        issued: [pki.issue(d.csr, issuing)],
        caCertificates: [root.der, issuing.der],
        rootPem: root.pem,
        publicKey: d.publicKey,
        deviceId: d.id,
      });
      before = snapshot(d.store.dir);
    });

    const cases: [string, () => Promise<{ issued: Buffer; ca?: Buffer[]; now?: number }>, RegExp][] = [
      [
        'a certificate for another key',
        async () => {
          const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
          const csr = await buildCsr({
            commonName: 'dw-0001',
            publicKey: other.publicKey,
            sanUris: [deviceUri('dw-0001')],
            sign: async (x) => sign('sha256', x, other.privateKey),
          });
          return { issued: pki.issue(csr, issuing) };
        },
        /certifies another public key/,
      ],
      [
        'a certificate naming another device (CN)',
        async () => ({ issued: pki.issue(await createDeviceCsr(d.anchor, 'dw-0002'), issuing) }),
        /subject CN is "dw-0002", not the device id "dw-0001"/,
      ],
      [
        'a certificate naming another device (SAN URI)',
        async () => ({ issued: pki.issue(d.csr, issuing, { san: 'URI:urn:rampart:device:dw-0002' }) }),
        /does not carry the SAN URI urn:rampart:device:dw-0001/,
      ],
      [
        'a certificate that does not chain to the pinned root',
        async () => ({ issued: pki.issue(d.csr, otherIssuing) }),
        /does not chain to the pinned root CA \(CN=Test Root CA\)/,
      ],
      [
        'a certificate chaining to a root that a forged cacerts reply offers',
        async () => ({ issued: pki.issue(d.csr, otherIssuing), ca: [otherRoot.der, otherIssuing.der] }),
        /does not chain to the pinned root CA/,
      ],
      [
        'a certificate that is no longer valid',
        async () => ({ issued: pki.issue(d.csr, issuing), now: Date.now() + 2 * 86_400_000 }),
        /it expired at/,
      ],
      [
        'a certificate not meant for TLS clients',
        async () => ({ issued: pki.issue(d.csr, issuing, { eku: 'serverAuth' }) }),
        /does not allow TLS client authentication/,
      ],
    ];

    for (const [what, make, message] of cases) {
      it(what, async () => {
        const { issued, ca, now } = await make();
        expect(() =>
          d.store.install({
            issued: [issued],
            caCertificates: ca ?? [root.der, issuing.der],
            rootPem: root.pem,
            publicKey: d.publicKey,
            deviceId: d.id,
            ...(now ? { now } : {}),
          }),
        ).toThrow(message);
        expect(snapshot(d.store.dir)).toEqual(before);
      });
    }

    it('a pinned "root" that is not a self-signed CA', () => {
      expect(() =>
        d.store.install({
          issued: [pki.issue(d.csr, issuing)],
          caCertificates: [root.der, issuing.der],
          rootPem: issuing.pem,
          publicKey: d.publicKey,
          deviceId: d.id,
        }),
      ).toThrow(/not a self-signed root CA certificate/);
      expect(snapshot(d.store.dir)).toEqual(before);
    });
  });

  it('has no identity before enrollment', () => {
    const store = new IdentityStore(mkdtempSync(join(tmpdir(), 'agent-store-')));
    expect(store.current()).toBeNull();
    expect(store.rootPem()).toBeNull();
    expect(store.chain()).toEqual([]);
  });
});

describe('writeFileAtomic', () => {
  it('replaces a file with the given mode and leaves no temporary file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'agent-atomic-'));
    const file = join(dir, 'device.crt');
    writeFileSync(file, 'old', { mode: 0o600 });
    const umask = process.umask(0o077);
    try {
      writeFileAtomic(file, 'new', 0o644);
    } finally {
      process.umask(umask);
    }
    expect(readFileSync(file, 'utf8')).toBe('new');
    expect(statSync(file).mode & 0o777).toBe(0o644);
    expect(readdirSync(dir)).toEqual(['device.crt']);
  });

  it('leaves the old content and no temporary file when the write fails', () => {
    const dir = mkdtempSync(join(tmpdir(), 'agent-atomic-'));
    const target = join(dir, 'chain.pem');
    mkdirSync(target); // renaming a file over a directory fails
    writeFileSync(join(target, 'keep'), 'x');
    expect(() => writeFileAtomic(target, 'new', 0o644)).toThrow();
    expect(readdirSync(dir)).toEqual(['chain.pem']);
    expect(readdirSync(target)).toEqual(['keep']);
  });
});
