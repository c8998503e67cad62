import { connect } from 'node:tls';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPlatform, type TestPlatform } from '../test-support/platform.js';

/** The issuer CN of the certificate a listener presents, verified against the pinned root. */
function presentedIssuer(url: string, root: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: hostname, port: Number(port), ca: root, servername: 'localhost' }, () => {
      const cert = socket.getPeerCertificate();
      socket.end();
      resolve(String(cert.issuer.CN));
    });
    socket.on('error', reject);
  });
}

let tp: TestPlatform;
beforeAll(async () => {
  tp = await startTestPlatform('sqlite');
}, 60_000);
afterAll(async () => {
  await tp?.close();
});

describe("Rampart's own server certificate", () => {
  it('is renewed after an issuing-CA rollover and presented by the running listeners without a restart', async () => {
    const root = readFileSync(join(tp.dataDir, 'ca.pem'), 'utf8');
    const api = tp.platform.listeners.find((l) => l.name === 'api')!.url;
    const est = tp.platform.listeners.find((l) => l.name === 'est')!.url;
    expect(await presentedIssuer(api, root)).toBe('Rampart Device Issuing CA');

    expect((await tp.call('POST', '/api/v1/ca/rollover', { body: { kind: 'issuing' } })).status).toBe(200);
    // What the twice-daily check does: the certificate's issuer is no longer the active CA.
    await tp.platform.identity.serverTls(tp.dataDir, []);
    expect(await presentedIssuer(api, root)).toBe('Rampart Device Issuing CA 2');
    expect(await presentedIssuer(est, root)).toBe('Rampart Device Issuing CA 2');
    // And nothing changes when it is still fresh.
    await tp.platform.identity.serverTls(tp.dataDir, []);
    expect(await presentedIssuer(api, root)).toBe('Rampart Device Issuing CA 2');
  });
});
