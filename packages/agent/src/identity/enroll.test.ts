import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EstClient } from '../est/client.js';
import { SoftwareTrustAnchor } from '../trust-anchor/software.js';
import { startFakePlatform, type FakePlatform } from '../test-support/platform.js';
import { TestPki, type TestCa } from '../test-support/pki.js';
import { enrollDevice, renewDevice } from './enroll.js';
import { IdentityStore } from './store.js';

let pki: TestPki;
let root: TestCa;
let issuing: TestCa;
let server: FakePlatform;

beforeAll(async () => {
  pki = new TestPki();
  root = pki.rootCa('Test Root CA');
  issuing = pki.issuingCa('Test Issuing CA', root);
  server = await startFakePlatform(pki, root, issuing);
});
afterAll(() => server.close());

function agent() {
  const dataDir = mkdtempSync(join(tmpdir(), 'agent-flow-'));
  const anchor = new SoftwareTrustAnchor(join(dataDir, 'identity', 'device-key.pem'));
  const store = new IdentityStore(dataDir);
  const est = new EstClient({ url: server.url, caPem: root.pem });
  return { dataDir, anchor, store, est };
}

describe('enrollment and renewal', () => {
  it('enrolls with a token, then renews over mutual TLS with the same key', async () => {
    const a = agent();
    const first = await enrollDevice({
      ...a,
      rootPem: root.pem,
      deviceId: 'dw-0001',
      credentials: { deviceId: 'dw-0001', token: 'good-token' },
    });
    expect(first).toMatchObject({ deviceId: 'dw-0001', issuer: 'CN=Test Issuing CA' });
    expect(readFileSync(a.store.rootFile, 'utf8')).toBe(root.pem);
    const key = readFileSync(join(a.store.dir, 'device-key.pem'), 'utf8');

    const second = await renewDevice(a);
    expect(second.serial).not.toBe(first.serial);
    expect(a.store.current()!.info).toEqual(second);
    expect(readFileSync(join(a.store.dir, 'device-key.pem'), 'utf8')).toBe(key);
    const req = server.requests.at(-1)!;
    expect(req.path).toBe('/.well-known/est/simplereenroll');
    expect(req.clientCert!.serialNumber.toLowerCase()).toBe(first.serial);
    expect(req.headers.authorization).toBeUndefined();
  });

  it('keeps nothing when the token is refused, and says how to get a new one', async () => {
    const a = agent();
    await expect(
      enrollDevice({
        ...a,
        rootPem: root.pem,
        deviceId: 'dw-0002',
        credentials: { deviceId: 'dw-0002', token: 'used-token' },
      }),
    ).rejects.toThrow(
      /401: "invalid or used enrollment token".*rampart enrollment token create --device dw-0002/,
    );
    expect(a.store.current()).toBeNull();
    expect(readdirSync(a.store.dir)).toEqual(['device-key.pem']);
  });

  it('refuses a renewed certificate for another device and keeps the old identity', async () => {
    const a = agent();
    await enrollDevice({
      ...a,
      rootPem: root.pem,
      deviceId: 'dw-0003',
      credentials: { deviceId: 'dw-0003', token: 'good-token' },
    });
    const before = readFileSync(a.store.certFile, 'utf8');
    const normal = server.issueAs;
    server.issueAs = (csr) => pki.issue(csr, issuing, { san: 'URI:urn:rampart:device:dw-0999' });
    try {
      await expect(renewDevice(a)).rejects.toMatchObject({
        code: 'CERT_REFUSED',
        message: expect.stringMatching(/SAN URI urn:rampart:device:dw-0003; the current identity was kept/),
      });
    } finally {
      server.issueAs = normal;
    }
    expect(readFileSync(a.store.certFile, 'utf8')).toBe(before);
  });

  it('does not try to renew an expired certificate or one for another configured device', async () => {
    const a = agent();
    await expect(renewDevice(a)).rejects.toMatchObject({ code: 'NOT_ENROLLED' });
    await enrollDevice({
      ...a,
      rootPem: root.pem,
      deviceId: 'dw-0004',
      credentials: { deviceId: 'dw-0004', token: 'good-token' },
    });
    const count = server.requests.length;
    await expect(renewDevice({ ...a, now: () => Date.now() + 2 * 86_400_000 })).rejects.toMatchObject({
      code: 'CERT_EXPIRED',
      message: expect.stringMatching(/must enroll again .*rampart enrollment token create --device dw-0004/),
    });
    await expect(renewDevice({ ...a, deviceId: 'dw-0005' })).rejects.toThrow(/certificate is for "dw-0004"/);
    expect(server.requests.length).toBe(count);
  });
});
