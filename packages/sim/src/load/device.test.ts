import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSecureContext, createServer, type Server, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LoadDevice } from './device.js';

/** A CA, a server certificate for 127.0.0.1 and a device certificate, made with openssl. */
function makePki(dir: string) {
  const run = (args: string[]) =>
    execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  run(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=Test CA']);
  const issue = (name: string, subject: string, ext: string) => {
    writeFileSync(join(dir, `${name}.ext`), ext);
    run(['req', '-new', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject]);
    run([
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-set_serial',
      String(name.length),
      '-days',
      '1',
      '-extfile',
      `${name}.ext`,
      '-out',
      `${name}.pem`,
    ]);
  };
  issue(
    'server',
    '/CN=localhost',
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n',
  );
  issue('device', '/CN=dw-0001', 'extendedKeyUsage=clientAuth\n');
  const read = (f: string) => readFileSync(join(dir, f), 'utf8');
  return {
    ca: read('ca.pem'),
    serverKey: read('server.key'),
    serverCert: read('server.pem'),
    deviceKey: read('device.key'),
    deviceCert: read('device.pem'),
  };
}

let dir: string;
let pki: ReturnType<typeof makePki>;
let server: Server;
let port: number;
const seen: { cn: string; resumed: boolean }[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sim-device-'));
  pki = makePki(dir);
  // A TLS server that requires the client certificate and answers CONNECT with CONNACK 0.
  server = createServer(
    { key: pki.serverKey, cert: pki.serverCert, ca: pki.ca, requestCert: true, rejectUnauthorized: true },
    (socket: TLSSocket) => {
      const cert = socket.getPeerX509Certificate();
      seen.push({ cn: cert?.subject.replace('CN=', '') ?? '', resumed: socket.isSessionReused() });
      socket.on('data', (d: Buffer) => {
        if (d[0] === 0x10) socket.write(Buffer.from([0x20, 0x02, 0x00, 0x00]));
        if (d[0] === 0xe0) socket.end();
      });
      socket.on('error', () => {});
    },
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
});
afterAll(async () => {
  await new Promise((r) => server.close(r));
  rmSync(dir, { recursive: true, force: true });
});

const context = () => createSecureContext({ key: pki.deviceKey, cert: pki.deviceCert, ca: pki.ca });

describe('LoadDevice over mutual TLS', () => {
  it('connects with its certificate, then resumes the TLS session it was given', async () => {
    const d = new LoadDevice('dw-0001');
    const secureContext = context();
    const first = await d.connect({ target: { host: '127.0.0.1', port }, secureContext, keepalive: 0 });
    expect(first.resumed).toBe(false);
    expect(first.connackMs).toBeGreaterThanOrEqual(first.handshakeMs);
    // The session ticket arrives after the handshake.
    for (let i = 0; i < 50 && !d.session; i++) await new Promise((r) => setTimeout(r, 10));
    const session = d.session;
    expect(session).not.toBeNull();
    await d.disconnect();
    expect(d.closeReason).toBe('client');
    const again = await d.connect({
      target: { host: '127.0.0.1', port },
      secureContext,
      session: session!,
      keepalive: 0,
    });
    expect(again.resumed).toBe(true);
    await d.disconnect();
    expect(seen.slice(-2)).toEqual([
      { cn: 'dw-0001', resumed: false },
      { cn: 'dw-0001', resumed: true },
    ]);
  });

  it("still checks the server's name against its certificate", async () => {
    const d = new LoadDevice('dw-0001');
    await expect(
      d.connect({
        target: { host: '127.0.0.1', port, servername: 'broker.example' },
        secureContext: context(),
        keepalive: 0,
      }),
    ).rejects.toMatchObject({ code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
    expect(d.state).toBe('closed');
    // And is free to try again at once.
    await d.connect({
      target: { host: '127.0.0.1', port, servername: 'localhost' },
      secureContext: context(),
      keepalive: 0,
    });
    await d.disconnect();
  });

  it('refuses a server its CAs did not sign', async () => {
    const otherDir = mkdtempSync(join(tmpdir(), 'sim-device-other-'));
    const other = makePki(otherDir);
    rmSync(otherDir, { recursive: true, force: true });
    const d = new LoadDevice('dw-0001');
    const secureContext = createSecureContext({ key: pki.deviceKey, cert: pki.deviceCert, ca: other.ca });
    await expect(
      d.connect({ target: { host: '127.0.0.1', port }, secureContext, keepalive: 0 }),
    ).rejects.toThrow(/certificate/);
  });
});
