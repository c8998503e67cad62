import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createServer, type Server } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DeviceConnection, type OfflineEvent } from '../connection/connection.js';
import { identityCredentials, type ConnectionCredentials } from '../connection/credentials.js';
import { readAgentStatus } from '../daemon.js';
import { AgentError } from '../errors.js';
import { EstClient } from '../est/client.js';
import { createDeviceCsr } from '../identity/csr.js';
import { enrollDevice, renewDevice } from '../identity/enroll.js';
import { IdentityStore } from '../identity/store.js';
import { TestPki } from '../test-support/pki.js';
import { RampartUp } from '../test-support/rampart-up.js';
import { createSoftHsmToken, type SoftHsmToken } from '../test-support/softhsm.js';
import { startSwtpm, type Swtpm } from '../test-support/swtpm.js';
import { Pkcs11TrustAnchor } from '../trust-anchor/pkcs11.js';
import { TpmTrustAnchor } from '../trust-anchor/tpm.js';
import type { TrustAnchor } from '../trust-anchor/trust-anchor.js';
import { mutualTlsFor } from './mutual-tls.js';
import { startTpmResourceManager, type TpmResourceManager } from './test-support/tpm-resource-manager.js';

/**
 * Mutual TLS with keys that never leave their hardware: devices whose key is in a TPM (swtpm behind
 * tpm2-abrmd, as /dev/tpmrm0 on a device) or a PKCS#11 token (SoftHSM2) enroll on the real platform
 * (`rampart up` as a separate process), then connect to its gateway and renew over EST through the
 * OpenSSL tunnel.
 */
let up: RampartUp;
let swtpm: Swtpm;
let rm: TpmResourceManager;
let token: SoftHsmToken;
/** A second token whose PIN holds what OpenSSL configuration files treat specially. */
let oddPinToken: SoftHsmToken;
const ODD_PIN = 'a#b $c "d\\e\' ;=f';

/** Change the token's user PIN (C_SetPIN), before any anchor has the module open. */
async function setUserPin(t: SoftHsmToken, pin: string): Promise<void> {
  const { default: p11 } = await import('pkcs11js');
  const lib = new p11.PKCS11();
  lib.load(t.module);
  lib.C_Initialize();
  try {
    const slot = lib.C_GetSlotList(true).find((s) => lib.C_GetTokenInfo(s).label.trim() === t.tokenLabel)!;
    const session = lib.C_OpenSession(slot, p11.CKF_SERIAL_SESSION | p11.CKF_RW_SESSION);
    lib.C_Login(session, p11.CKU_USER, t.pin);
    lib.C_SetPIN(session, t.pin, pin);
    lib.C_Logout(session);
    lib.C_CloseSession(session);
  } finally {
    lib.C_Finalize();
  }
}
let pki: TestPki;
const anchors: TrustAnchor[] = [];
const open: DeviceConnection[] = [];
let server: Server | null = null;

beforeAll(async () => {
  // Both tokens before any anchor opens the module (see createSoftHsmToken).
  token = createSoftHsmToken();
  oddPinToken = createSoftHsmToken();
  await setUserPin(oddPinToken, ODD_PIN);
  [up, swtpm] = await Promise.all([RampartUp.start(), startSwtpm()]);
  rm = await startTpmResourceManager(swtpm.tcti);
  pki = new TestPki(mkdtempSync(join(tmpdir(), 'agent-hw-tls-pki-')));
}, 120_000);
afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.stop()));
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = null;
});
afterAll(async () => {
  await Promise.all(anchors.map((a) => a.close?.()));
  token?.cleanup();
  oddPinToken?.cleanup();
  await rm?.stop();
  await swtpm?.stop();
  await up?.close();
});

interface Device {
  id: string;
  store: IdentityStore;
  anchor: TrustAnchor;
  est: EstClient;
}

type AnchorKind = 'tpm' | 'pkcs11' | 'pkcs11-odd-pin';

function anchorFor(kind: AnchorKind, dataDir: string, id: string): TrustAnchor {
  const anchor =
    kind === 'tpm'
      ? new TpmTrustAnchor({ dir: join(dataDir, 'identity', 'tpm'), tcti: rm.tcti })
      : new Pkcs11TrustAnchor({
          module: token.module,
          ...(kind === 'pkcs11'
            ? { tokenLabel: token.tokenLabel, pin: token.pin }
            : { tokenLabel: oddPinToken.tokenLabel, pin: ODD_PIN }),
          keyLabel: `key-${id}`,
        });
  anchors.push(anchor);
  return anchor;
}

/** Register the device and enroll it with a one-time token, its key created in the anchor. */
async function enroll(id: string, kind: AnchorKind): Promise<Device> {
  await up.register(id);
  const t = await up.call('POST', '/api/v1/enrollment-tokens', { deviceId: id, expiresIn: '1h' });
  expect(t.status).toBe(201);
  const dataDir = mkdtempSync(join(tmpdir(), 'agent-hw-tls-device-'));
  const anchor = anchorFor(kind, dataDir, id);
  const store = new IdentityStore(dataDir);
  const est = new EstClient({ url: up.est, caPem: up.rootCaPem });
  await enrollDevice({
    anchor,
    store,
    est,
    rootPem: up.rootCaPem,
    deviceId: id,
    credentials: { deviceId: id, token: t.body.token },
  });
  store.rememberServer(up.est, id);
  return { id, store, anchor, est };
}

function connect(
  d: Device,
  options: { url?: string; credentials?: () => Promise<ConnectionCredentials> } = {},
): DeviceConnection {
  const c = new DeviceConnection({
    url: options.url ?? up.mqtt,
    deviceId: d.id,
    credentials: options.credentials ?? (() => identityCredentials(d.store, d.anchor)),
    backoff: { initialMs: 200, maxMs: 1000, factor: 2, resetAfterMs: 60_000 },
    connectTimeoutMs: 15_000,
  });
  open.push(c);
  return c;
}

async function until<T>(what: string, check: () => T | undefined | false | Promise<T | undefined | false>) {
  const end = Date.now() + 20_000;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}\n${up.logs.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const online = (c: DeviceConnection) =>
  c.isOnline ? Promise.resolve() : new Promise<void>((resolve) => c.once('online', () => resolve()));

const firstOffline = (c: DeviceConnection) =>
  new Promise<OfflineEvent>((resolve) => c.once('offline', resolve));

/** The openssl processes `parent` (this test process) started: the tunnels, from /proc. */
function tunnels(parent = process.pid): { pid: number; argv: string[]; env: string[] }[] {
  const found: { pid: number; argv: string[]; env: string[] }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const m = /^\d+ \((.*)\) \S+ (\d+)/.exec(stat);
      if (!m || m[1] !== 'openssl' || Number(m[2]) !== parent) continue;
      const split = (f: string) => readFileSync(`/proc/${entry}/${f}`, 'utf8').split('\0').filter(Boolean);
      found.push({ pid: Number(entry), argv: split('cmdline'), env: split('environ') });
    } catch {
      // the process ended meanwhile
    }
  }
  return found;
}

/** A TLS server that counts the clients that got through the handshake. */
async function impostor(
  certPem: string,
  keyPem: string,
): Promise<{ port: number; handshakes: () => number }> {
  let handshakes = 0;
  server = createServer({ cert: certPem, key: keyPem }, (socket) => {
    handshakes++;
    socket.destroy();
  });
  server.on('tlsClientError', () => {});
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, handshakes: () => handshakes };
}

describe.each([
  ['tpm', 'TPM (swtpm behind a resource manager)', 'openssl-tpm2'],
  ['pkcs11', 'PKCS#11 token (SoftHSM2)', 'openssl-pkcs11'],
] as const)('mutual TLS with the key in a %s trust anchor', (kind, what, via) => {
  it(`connects to the real gateway with the key in the ${what}, publishes, and the platform sees the session`, async () => {
    const d = await enroll(`HW-${kind}-CONNECT`, kind);
    const credentials = await identityCredentials(d.store, d.anchor);
    expect(credentials.tls.via).toBe(via);
    const c = connect(d);
    const got: string[] = [];
    c.subscribe(`devices/${d.id}/telemetry`, (_t, payload) => got.push(payload.toString()));
    c.start();
    await online(c);
    c.publish(`devices/${d.id}/telemetry`, '{"temp":21}');
    await until('the echo', () => got.length >= 1);
    expect(got[0]).toBe('{"temp":21}');
    const serial = d.store.current()!.info.serial;
    const conn = await up.call('GET', `/api/v1/devices/${d.id}/connection`);
    expect(conn.body).toMatchObject({
      connected: true,
      sessions: [{ clientId: d.id, certificateSerial: serial }],
    });
    // The handshake was signed by a child process; the key never reached this one.
    expect(tunnels()).toHaveLength(1);
    await c.stop();
    await until('the tunnel process to end', () => tunnels().length === 0);
  });

  it(`renews over mutual TLS (EST simplereenroll) with the key in the ${what} while connected; the platform records the lineage`, async () => {
    const d = await enroll(`HW-${kind}-RENEW`, kind);
    const before = d.store.current()!.info.serial;
    const c = connect(d);
    const got: string[] = [];
    c.subscribe(`devices/${d.id}/renew`, (_t, payload) => got.push(payload.toString()));
    c.start();
    await online(c);
    // As `rampart-agent run` renews: the gateway connection (one tunnel) stays up while the CSR is
    // signed in the same ${kind} and simplereenroll goes through a second tunnel.
    const renewed = await c.switchCertificate(() =>
      renewDevice({ anchor: d.anchor, store: d.store, est: d.est }),
    );
    expect(renewed.serial).not.toBe(before);
    expect(d.store.current()!.info.serial).toBe(renewed.serial);
    const issued = await up.call('GET', `/api/v1/certificates/${renewed.serial}`);
    expect(issued.body).toMatchObject({ deviceId: d.id, renewedFrom: before, state: 'valid' });
    const old = await up.call('GET', `/api/v1/certificates/${before}`);
    expect(old.body).toMatchObject({ state: 'revoked', revocationReason: 'superseded' });
    // Back online with the renewed certificate, through a new tunnel; the old ones are gone.
    await online(c);
    expect(c.certificateSerial).toBe(renewed.serial);
    c.publish(`devices/${d.id}/renew`, 'after');
    await until('the echo after renewal', () => got.includes('after'));
    await until('one tunnel left', () => tunnels().length === 1);
  });

  it('is refused by the gateway once its certificate is revoked', async () => {
    const d = await enroll(`HW-${kind}-REVOKED`, kind);
    const c = connect(d);
    const offline: OfflineEvent[] = [];
    c.on('offline', (e) => offline.push(e));
    c.start();
    await online(c);
    const serial = d.store.current()!.info.serial;
    const r = await up.call('POST', `/api/v1/certificates/${serial}/revoke`, { reason: 'keyCompromise' });
    expect(r.status).toBe(200);
    await until('a refused attempt', () => offline.find((e) => e.failure.kind === 'not-authorized'));
    expect(c.isOnline).toBe(false);
    const refused = offline.find((e) => e.failure.kind === 'not-authorized')!;
    expect(refused.failure.advice).toMatch(/revoked.*enroll/);
  });

  it('refuses a gateway whose certificate comes from another CA: no connection, no byte sent', async () => {
    const d = await enroll(`HW-${kind}-IMPOSTOR`, kind);
    const otherRoot = pki.rootCa(`Impostor Root ${kind}`);
    const cert = pki.serverCert(pki.issuingCa(`Impostor CA ${kind}`, otherRoot));
    const fake = await impostor(cert.certPem, cert.keyPem);
    const c = connect(d, { url: `mqtts://127.0.0.1:${fake.port}` });
    const failed = firstOffline(c);
    c.start();
    const e = await failed;
    expect(e.failure).toMatchObject({
      kind: 'untrusted-gateway',
      refused: true,
      message: expect.stringMatching(
        /not trusted: .*(unable to get local issuer certificate|X509 verify error)/,
      ),
      advice: expect.stringMatching(/root CA pinned at enrollment/),
    });
    expect(fake.handshakes()).toBe(0);
    await c.stop();
    expect(tunnels()).toHaveLength(0);
  });
});

describe('the TLS tunnel', () => {
  let tpmDevice: Device;
  let hsmDevice: Device;
  beforeAll(async () => {
    [tpmDevice, hsmDevice] = await Promise.all([
      enroll('HW-TUNNEL-TPM', 'tpm'),
      enroll('HW-TUNNEL-HSM', 'pkcs11'),
    ]);
  }, 60_000);

  it('refuses a server whose certificate chains to the pinned root but names another host (IP and DNS name)', async () => {
    // A root the device pins, and a server certificate from it for other.example only.
    const root = pki.rootCa('Pinned Root');
    const cert = pki.serverCert(pki.issuingCa('Pinned CA', root), 'DNS:other.example');
    const fake = await impostor(cert.certPem, cert.keyPem);
    const { certPem, tls } = await identityCredentials(tpmDevice.store, tpmDevice.anchor);
    for (const host of ['127.0.0.1', 'localhost']) {
      const stream = tls.connect({ host, port: fake.port, certPem, caPem: root.pem, timeoutMs: 10_000 });
      let secured = false;
      stream.on('secureConnect', () => (secured = true));
      const err = await new Promise<unknown>((resolve) => stream.once('error', resolve));
      expect(err).toBeInstanceOf(AgentError);
      expect(err).toMatchObject({
        code: 'TLS_UNTRUSTED',
        message: expect.stringMatching(host === 'localhost' ? /hostname mismatch/ : /IP address mismatch/),
      });
      expect(secured).toBe(false);
    }
    expect(fake.handshakes()).toBe(0);
    await until('the tunnels to end', () => tunnels().length === 0);
  });

  it('refuses an impostor EST server for simplereenroll through the tunnel (EST_UNTRUSTED, exit 3)', async () => {
    const otherRoot = pki.rootCa('Impostor EST Root');
    const cert = pki.serverCert(pki.issuingCa('Impostor EST CA', otherRoot));
    const fake = await impostor(cert.certPem, cert.keyPem);
    const { certPem, tls } = await identityCredentials(hsmDevice.store, hsmDevice.anchor);
    const est = new EstClient({ url: `https://127.0.0.1:${fake.port}`, caPem: up.rootCaPem });
    const csr = await createDeviceCsr(hsmDevice.anchor, hsmDevice.id);
    await expect(est.simpleReenroll(csr, { certPem, tls }, hsmDevice.id)).rejects.toMatchObject({
      code: 'EST_UNTRUSTED',
      message: expect.stringMatching(
        /EST server at https:\/\/127\.0\.0\.1:\d+: 127\.0\.0\.1:\d+ is not trusted: .*pinned at enrollment/,
      ),
    });
    expect(fake.handshakes()).toBe(0);
  });

  it('keeps the PIN off the command line and out of the environment, and deletes its configuration once connected', async () => {
    const c = connect(hsmDevice);
    c.start();
    await online(c);
    const [child] = tunnels();
    expect(child).toBeDefined();
    expect(child!.argv.join(' ')).not.toContain(token.pin);
    expect(child!.env.join('\n')).not.toContain(token.pin);
    const conf = child!.env.find((e) => e.startsWith('OPENSSL_CONF='))!.slice('OPENSSL_CONF='.length);
    expect(existsSync(conf)).toBe(false);
  });

  it('kills the child process when the stream is destroyed', async () => {
    const { certPem, caPem, tls } = await identityCredentials(tpmDevice.store, tpmDevice.anchor);
    const { hostname, port } = new URL(up.mqtt);
    const stream = tls.connect({ host: hostname, port: Number(port), certPem, caPem });
    await new Promise((resolve) => stream.once('secureConnect', resolve));
    expect(tunnels()).toHaveLength(1);
    stream.destroy();
    await until('the tunnel process to end', () => tunnels().length === 0);
  });

  it('reports a server that does not accept the device certificate (TLS alert) as certificate-refused', async () => {
    // openssl s_server chains to a root the device pins, but wants client certificates from another CA.
    const root = pki.rootCa('Strict Root');
    const issuing = pki.issuingCa('Strict CA', root);
    const cert = pki.serverCert(issuing);
    const dir = mkdtempSync(join(tmpdir(), 'agent-hw-tls-strict-'));
    const file = (name: string, content: string) => (
      writeFileSync(join(dir, name), content),
      join(dir, name)
    );
    const port = await new Promise<number>((resolve) => {
      const probe = createNetServer().listen(0, '127.0.0.1', () => {
        const p = (probe.address() as AddressInfo).port;
        probe.close(() => resolve(p));
      });
    });
    const strict = spawn(
      'openssl',
      [
        's_server',
        '-accept',
        `127.0.0.1:${port}`,
        '-cert',
        file('server.pem', cert.certPem),
        '-key',
        file('server.key', cert.keyPem),
        '-cert_chain',
        file('chain.pem', issuing.pem),
        '-Verify',
        '1',
        '-verify_return_error',
        '-CAfile',
        file('client-ca.pem', pki.rootCa('Strict Client Root').pem),
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    try {
      await new Promise<void>((resolve) =>
        strict.stdout.on('data', (d: Buffer) => d.toString().includes('ACCEPT') && resolve()),
      );
      const c = connect(tpmDevice, {
        url: `mqtts://127.0.0.1:${port}`,
        credentials: async () => ({
          ...(await identityCredentials(tpmDevice.store, tpmDevice.anchor)),
          caPem: root.pem,
        }),
      });
      const failed = firstOffline(c);
      c.start();
      expect((await failed).failure).toMatchObject({
        kind: 'certificate-refused',
        refused: true,
        message: expect.stringMatching(
          /ended the TLS connection with the alert "unknown ca": it did not accept the device certificate/,
        ),
      });
    } finally {
      strict.kill();
    }
  });

  it('passes a PIN with characters OpenSSL configuration files treat specially (# $ " \\ \' ; =)', async () => {
    const d = await enroll('HW-ODD-PIN', 'pkcs11-odd-pin');
    const c = connect(d);
    c.start();
    await online(c);
    expect(tunnels()[0]!.argv.join(' ')).not.toContain(ODD_PIN);
  });

  it('reports a wrong PIN once, through the anchor, before any tunnel is started', async () => {
    const wrong = new Pkcs11TrustAnchor({
      module: token.module,
      tokenLabel: token.tokenLabel,
      pin: 'not-the-pin',
      keyLabel: 'key-HW-TUNNEL-HSM',
    });
    anchors.push(wrong);
    await expect(mutualTlsFor(wrong)).rejects.toMatchObject({
      code: 'TRUST_ANCHOR',
      message: expect.stringMatching(/PIN does not log in/),
    });
    expect(tunnels()).toHaveLength(0);
  });

  it('reports a TPM the tunnel cannot reach as a trust-anchor problem, with OpenSSL’s reasons', async () => {
    const lost = new TpmTrustAnchor({
      dir: join(tpmDevice.store.dir, 'tpm'),
      tcti: 'tabrmd:bus_name=com.intel.tss2.Tabrmd.nobody,bus_type=session',
    });
    const { certPem, caPem } = await identityCredentials(tpmDevice.store, tpmDevice.anchor);
    const { hostname, port } = new URL(up.mqtt);
    const stream = (await mutualTlsFor(lost)).connect({ host: hostname, port: Number(port), certPem, caPem });
    const err = await new Promise<unknown>((resolve) => stream.once('error', resolve));
    expect(err).toMatchObject({
      code: 'TRUST_ANCHOR',
      message: expect.stringMatching(
        /OpenSSL could not use the identity key in the TPM at tabrmd:bus_name=com\.intel\.tss2\.Tabrmd\.nobody.*\(openssl: .+\)/,
      ),
    });
    await until('the tunnel to end', () => tunnels().length === 0);
  });

  it('refuses a TPM reached without a resource manager, saying what to configure', async () => {
    const direct = new TpmTrustAnchor({ dir: join(tpmDevice.store.dir, 'tpm'), tcti: swtpm.tcti });
    await expect(mutualTlsFor(direct)).rejects.toMatchObject({
      code: 'TRUST_ANCHOR',
      message: expect.stringMatching(/resource manager: device:\/dev\/tpmrm0.*tabrmd/),
    });
  });
});

/** The built entry point (tests run after `tsc -b`, as `npm test` does). */
const BIN = fileURLToPath(new URL('../../dist/bin/rampart-agent.js', import.meta.url));

describe('rampart-agent with a hardware trust anchor', () => {
  function agentEnv(d: Device, kind: AnchorKind): Record<string, string> {
    const base = {
      PATH: process.env.PATH ?? '',
      HOME: tmpdir(),
      RAMPART_AGENT_DATA_DIR: d.store.dataDir,
      RAMPART_AGENT_TRUST_ANCHOR: kind,
    };
    return kind === 'tpm'
      ? {
          ...base,
          RAMPART_AGENT_TPM_TCTI: rm.tcti,
          DBUS_SESSION_BUS_ADDRESS: process.env.DBUS_SESSION_BUS_ADDRESS ?? '',
        }
      : {
          ...base,
          RAMPART_AGENT_PKCS11_MODULE: token.module,
          RAMPART_AGENT_PKCS11_TOKEN_LABEL: token.tokenLabel,
          RAMPART_AGENT_PKCS11_PIN: token.pin,
          RAMPART_AGENT_PKCS11_KEY_LABEL: `key-${d.id}`,
          ...token.env,
        };
  }

  function agent(args: string[], env: Record<string, string>) {
    const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const done = new Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }>(
      (resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })),
    );
    return { child, done };
  }

  it.each(['tpm', 'pkcs11'] as const)(
    'renews with `rampart-agent renew` (%s), where it used to refuse',
    async (kind) => {
      const d = await enroll(`HW-CLI-${kind}-RENEW`, kind);
      const before = d.store.current()!.info.serial;
      const r = await agent(['renew', '--json'], agentEnv(d, kind)).done;
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const out = JSON.parse(r.stdout);
      expect(out).toMatchObject({ previousSerial: before, trustAnchor: kind, strength: 'hardware' });
      expect(out.certificate.serial).not.toBe(before);
      const issued = await up.call('GET', `/api/v1/certificates/${out.certificate.serial}`);
      expect(issued.body.renewedFrom).toBe(before);
    },
  );

  it('runs with `rampart-agent run` (pkcs11): online through the tunnel, which ends with the agent, even a killed one', async () => {
    const d = await enroll('HW-CLI-RUN', 'pkcs11');
    const env = agentEnv(d, 'pkcs11');
    for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
      const run = agent(['run', '--mqtt-url', up.mqtt], env);
      await until('the agent online', () => readAgentStatus(d.store.dataDir)?.state === 'online');
      const [tunnel] = tunnels(run.child.pid);
      expect(tunnel).toBeDefined();
      const conn = await up.call('GET', `/api/v1/devices/${d.id}/connection`);
      expect(conn.body.connected).toBe(true);
      run.child.kill(signal);
      const r = await run.done;
      if (signal === 'SIGTERM') expect(r.code).toBe(0);
      await until(`the tunnel to end after ${signal}`, () => !existsSync(`/proc/${tunnel!.pid}`));
    }
  });
});
