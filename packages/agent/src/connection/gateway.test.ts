import { mkdtempSync } from 'node:fs';
import { createServer, type Server } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ShadowState } from '@rampart/shared/shadow';
import { renewDevice } from '../identity/enroll.js';
import { TestPki } from '../test-support/pki.js';
import { RampartUp, type EnrolledDevice } from '../test-support/rampart-up.js';
import { backoffCeiling } from './backoff.js';
import { CommandDispatcher } from './commands.js';
import { DeviceConnection, type DeviceConnectionOptions, type OfflineEvent } from './connection.js';
import { identityCredentials, type ConnectionCredentials } from './credentials.js';
import { FileQueue } from './file-queue.js';
import { ShadowSync } from './shadow.js';

/**
 * The connection manager against the real platform: `rampart up` runs as a separate process, the
 * device enrolls over EST and connects to the gateway with its own certificate.
 */
let up: RampartUp;
const open: DeviceConnection[] = [];

beforeAll(async () => {
  up = await RampartUp.start();
}, 120_000);
afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.stop()));
});
afterAll(async () => {
  await up?.close();
});

const FAST = { initialMs: 200, maxMs: 1500, factor: 2, resetAfterMs: 60_000 };

function connect(device: EnrolledDevice, options: Partial<DeviceConnectionOptions> = {}): DeviceConnection {
  const c = new DeviceConnection({
    url: up.mqtt,
    deviceId: device.id,
    credentials: () => identityCredentials(device.store, device.anchor),
    backoff: FAST,
    ...options,
  });
  open.push(c);
  return c;
}

async function until<T>(
  what: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  ms = 20_000,
) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}\n${up.logs.slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const online = (c: DeviceConnection) =>
  c.isOnline ? Promise.resolve() : new Promise<void>((resolve) => c.once('online', () => resolve()));

/** Collect the payloads the device receives on its own topic (the gateway echoes them back). */
function echo(c: DeviceConnection, topic: string): string[] {
  const got: string[] = [];
  c.subscribe(topic, (_t, payload) => got.push(payload.toString()));
  return got;
}

/** First-seen order of what arrived; QoS 1 is at least once, so a message may come twice. */
const firstSeen = (xs: string[]) => [...new Set(xs)];

describe('gateway connection', () => {
  it('connects over mutual TLS with its own certificate, client id = device id, and the platform sees the session', async () => {
    const d = await up.enroll('AG-CONNECT');
    const c = connect(d);
    const states: string[] = [];
    c.on('state', (s) => states.push(s));
    const got = echo(c, `devices/${d.id}/telemetry`);
    c.start();
    await online(c);
    expect(states).toEqual(['connecting', 'online']);
    c.publish(`devices/${d.id}/telemetry`, '{"temp":21}');
    await until('the echo', () => got.length === 1);
    const serial = d.store.current()!.info.serial;
    expect(c.certificateSerial).toBe(serial);
    const conn = await up.call('GET', `/api/v1/devices/${d.id}/connection`);
    expect(conn.body).toMatchObject({
      connected: true,
      sessions: [{ clientId: d.id, certificateSerial: serial }],
    });
    expect(await c.drain(1000)).toBe(true);
  });

  it('reconnects with growing, jittered backoff after the gateway goes away; messages published meanwhile arrive in order', async () => {
    const d = await up.enroll('AG-RESTART');
    const c = connect(d, { backoff: { ...FAST, resetAfterMs: 500 } });
    const got = echo(c, `devices/${d.id}/seq`);
    const offline: OfflineEvent[] = [];
    c.on('offline', (e) => offline.push(e));
    c.start();
    await online(c);

    await up.stop();
    await until('the connection loss', () => offline.length >= 1);
    expect(offline[0]!.failure.kind).toBe('lost');
    for (let i = 1; i <= 20; i++) c.publish(`devices/${d.id}/seq`, String(i));
    expect(c.queue.size).toBe(20);
    // While the gateway is down every attempt fails and the wait grows, jittered below the ceiling.
    await until('several failed attempts', () => offline.length >= 4);
    const attempts = offline.map((e) => e.attempt);
    expect(attempts.slice(0, 4)).toEqual([1, 2, 3, 4]);
    for (const e of offline) {
      expect(e.retryInMs).toBeGreaterThanOrEqual(0);
      expect(e.retryInMs!).toBeLessThan(backoffCeiling(e.attempt, FAST));
    }
    expect(offline.slice(1).every((e) => e.failure.kind === 'unreachable')).toBe(true);

    await up.start();
    await online(c);
    // The failures still count until the connection has proved stable…
    expect(c.failedAttempts).toBeGreaterThanOrEqual(4);
    await until('the queued messages', () => firstSeen(got).length === 20);
    expect(firstSeen(got)).toEqual(Array.from({ length: 20 }, (_, i) => String(i + 1)));
    expect(await c.drain(5000)).toBe(true);
    expect(c.queue.size).toBe(0);
    // …then the backoff starts afresh.
    await until('the backoff reset', () => c.failedAttempts === 0);
  }, 90_000);

  it('aborts at once like a power cut; the queue on disk keeps what was not delivered', async () => {
    const d = await up.enroll('AG-ABORT');
    const queueDir = join(d.dataDir, 'queue');
    const c = connect(d, { queue: FileQueue.open(queueDir) });
    c.start();
    await online(c);
    await c.switchCertificate(async () => {
      // Nothing goes out while the connection holds for a certificate switch: a good moment to cut the power.
      for (let i = 1; i <= 3; i++) c.publish(`devices/${d.id}/abort`, `a${i}`);
      await c.abort();
    });
    expect(c.state).toBe('stopped');
    const after = FileQueue.open(queueDir);
    expect(after.peek(10).map((m) => m.payload.toString())).toEqual(['a1', 'a2', 'a3']);
    await after.close();
    await until('the gateway to see the session end', async () => {
      const r = await up.call('GET', `/api/v1/devices/${d.id}/connection`);
      return r.body.connected === false;
    });
  });

  it('delivers the persisted queue after the agent restarts', async () => {
    const d = await up.enroll('AG-PERSIST');
    const queueDir = join(d.dataDir, 'queue');
    // First run: the gateway is unreachable (wrong port), so everything stays queued.
    const first = connect(d, { url: 'mqtts://127.0.0.1:1', queue: FileQueue.open(queueDir) });
    first.start();
    for (let i = 1; i <= 10; i++) first.publish(`devices/${d.id}/persist`, `m${i}`);
    await first.stop();

    const second = connect(d, { queue: FileQueue.open(queueDir) });
    expect(second.queue.size).toBe(10);
    const got = echo(second, `devices/${d.id}/persist`);
    second.start();
    await until('the persisted messages', () => firstSeen(got).length === 10);
    expect(firstSeen(got)).toEqual(Array.from({ length: 10 }, (_, i) => `m${i + 1}`));
    expect(await second.drain(5000)).toBe(true);
    await second.stop();
    // Nothing left for a third run.
    const third = FileQueue.open(queueDir);
    expect(third.size).toBe(0);
    await third.close();
  });

  it('syncs the shadow: desired → delta → handler → reported, and again on every connect', async () => {
    const d = await up.enroll('AG-SHADOW');
    // Set while the device is offline: found by the read after connecting.
    await up.call('PATCH', `/api/v1/devices/${d.id}/shadow`, { desired: { led: 'on', rate: 5 } });
    const c = connect(d);
    const deltas: ShadowState[] = [];
    const shadow = new ShadowSync(c, {
      onDelta: (delta) => {
        deltas.push(delta);
        return 'rate' in delta ? { ...delta, rate: Math.min(Number(delta.rate), 10) } : delta;
      },
    });
    c.start();
    await until('the first report', async () => {
      const doc = await up.call('GET', `/api/v1/devices/${d.id}/shadow`);
      return doc.body.state.reported.led === 'on' && doc.body;
    });
    expect(deltas).toEqual([{ led: 'on', rate: 5 }]);

    // A change while connected arrives as a delta; the handler caps the rate, and that is reported.
    await up.call('PATCH', `/api/v1/devices/${d.id}/shadow`, { desired: { rate: 50 } });
    const doc = await until('the capped rate', async () => {
      const r = await up.call('GET', `/api/v1/devices/${d.id}/shadow`);
      return r.body.state.reported.rate === 10 && r.body;
    });
    expect(doc.state).toEqual({
      desired: { led: 'on', rate: 50 },
      reported: { led: 'on', rate: 10 },
      delta: { rate: 50 },
    });
    expect(deltas.at(-1)).toEqual({ rate: 50 });

    // The application reports on its own; the version it holds is the current one.
    await shadow.report({ firmware: '1.4.0' });
    const after = await up.call('GET', `/api/v1/devices/${d.id}/shadow`);
    expect(after.body.state.reported.firmware).toBe('1.4.0');
    expect(shadow.snapshot!.version).toBe(after.body.version);
    shadow.stop();
  });

  it('answers commands through the API: ping round trip, unknown command, with the correlation id', async () => {
    const d = await up.enroll('AG-COMMAND');
    const c = connect(d);
    const commands = new CommandDispatcher(c).handle('ping', (args) => ({
      pong: true,
      echo: args.echo ?? null,
    }));
    c.start();
    await online(c);
    const ping = await up.call('POST', `/api/v1/devices/${d.id}/commands`, {
      name: 'ping',
      args: { echo: 'hi' },
      timeoutSeconds: 5,
    });
    expect(ping.status).toBe(200);
    expect(ping.body).toMatchObject({ status: 'succeeded', result: { pong: true, echo: 'hi' }, error: null });
    const unknown = await up.call('POST', `/api/v1/devices/${d.id}/commands`, {
      name: 'reboot',
      timeoutSeconds: 5,
    });
    expect(unknown.body).toMatchObject({
      status: 'failed',
      error: 'unknown command "reboot"; this device handles: ping',
    });
    const listed = await up.call('GET', `/api/v1/devices/${d.id}/commands/${ping.body.id}`);
    expect(listed.body.status).toBe('succeeded');
    commands.stop();
  });

  it('is refused after its certificate is revoked, and backs off without crashing', async () => {
    const d = await up.enroll('AG-REVOKED');
    const c = connect(d);
    const offline: OfflineEvent[] = [];
    c.on('offline', (e) => offline.push(e));
    c.start();
    await online(c);
    const serial = d.store.current()!.info.serial;
    const r = await up.call('POST', `/api/v1/certificates/${serial}/revoke`, { reason: 'keyCompromise' });
    expect(r.status).toBe(200);
    await until(
      'three refused attempts',
      () => offline.filter((e) => e.failure.kind === 'not-authorized').length >= 3,
    );
    const refused = offline.filter((e) => e.failure.kind === 'not-authorized');
    expect(refused[0]!.failure).toMatchObject({
      refused: true,
      message: expect.stringMatching(/CONNACK 5 not authorized/),
      advice: expect.stringMatching(/revoked.*enroll/),
    });
    // Each refusal waits longer (ceilings 400, 800, … ms): the gateway is not hammered.
    const attempts = refused.map((e) => e.attempt);
    expect(attempts).toEqual([...attempts].sort((a, b) => a - b));
    expect(new Set(attempts).size).toBe(attempts.length);
    expect(c.state).not.toBe('online');
    const events = await up.call('GET', `/api/v1/security-events?device=${d.id}&kind=connect.refused`);
    expect(JSON.stringify(events.body)).toMatch(/revoked/);
  }, 60_000);

  it('switches to a renewed certificate without losing a message', async () => {
    const d = await up.enroll('AG-RENEW');
    const c = connect(d, { maxInFlight: 4 });
    const got = echo(c, `devices/${d.id}/renew`);
    c.start();
    await online(c);
    const before = d.store.current()!.info.serial;
    let n = 0;
    const publish = () => c.publish(`devices/${d.id}/renew`, String(++n));
    for (let i = 0; i < 30; i++) publish(); // some of these are in flight when the switch starts
    const during = setInterval(publish, 5); // and more keep coming while it happens
    const renewed = await c.switchCertificate(async () => {
      const info = await renewDevice({ anchor: d.anchor, store: d.store, est: d.est });
      // The platform has revoked the old certificate (superseded) and closed that session by now.
      await new Promise((r) => setTimeout(r, 300));
      return info;
    });
    clearInterval(during);
    for (let i = 0; i < 10; i++) publish();
    await online(c);
    expect(renewed.serial).not.toBe(before);
    expect(c.certificateSerial).toBe(renewed.serial);
    await until('every message', () => firstSeen(got).length === n, 30_000);
    expect(firstSeen(got)).toEqual(Array.from({ length: n }, (_, i) => String(i + 1)));
    const old = await up.call('GET', `/api/v1/certificates/${before}`);
    expect(old.body).toMatchObject({ state: 'revoked', revocationReason: 'superseded' });
    const conn = await up.call('GET', `/api/v1/devices/${d.id}/connection`);
    expect(conn.body.sessions).toEqual([expect.objectContaining({ certificateSerial: renewed.serial })]);
  }, 60_000);
});

describe('gateway connection when renewal fails', () => {
  it('carries on with the current certificate and sends what was queued meanwhile', async () => {
    const d = await up.enroll('AG-RENEW-FAIL');
    const c = connect(d);
    const got = echo(c, `devices/${d.id}/held`);
    c.start();
    await online(c);
    const serial = c.certificateSerial;
    await expect(
      c.switchCertificate(async () => {
        c.publish(`devices/${d.id}/held`, 'queued during the attempt');
        throw new Error('EST server unreachable');
      }),
    ).rejects.toThrow('EST server unreachable');
    expect(c.isOnline).toBe(true);
    expect(c.certificateSerial).toBe(serial);
    await until('the held message', () => got.length === 1);
  });
});

describe('gateway trust', () => {
  let pki: TestPki;
  let server: Server | null = null;
  beforeAll(() => {
    pki = new TestPki(mkdtempSync(join(tmpdir(), 'agent-e2e-pki-')));
  });
  afterEach(async () => {
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    server = null;
  });

  /** A TLS server that records whether any client got through the handshake. */
  async function impostor(
    certPem: string,
    keyPem: string,
  ): Promise<{ url: string; handshakes: () => number }> {
    let handshakes = 0;
    server = createServer({ cert: certPem, key: keyPem }, (socket) => {
      handshakes++;
      socket.destroy();
    });
    server.on('tlsClientError', () => {});
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    return {
      url: `mqtts://127.0.0.1:${(server.address() as AddressInfo).port}`,
      handshakes: () => handshakes,
    };
  }

  async function firstFailure(c: DeviceConnection): Promise<OfflineEvent> {
    const e = await new Promise<OfflineEvent>((resolve) => c.once('offline', resolve));
    await c.stop();
    return e;
  }

  it('refuses a gateway whose certificate comes from another CA (the pinned root is the only trust)', async () => {
    const d = await up.enroll('AG-PIN-1');
    const otherRoot = pki.rootCa('Impostor Root');
    const otherIssuing = pki.issuingCa('Impostor Issuing', otherRoot);
    const cert = pki.serverCert(otherIssuing);
    const fake = await impostor(cert.certPem, cert.keyPem);
    const c = connect(d, { url: fake.url });
    c.start();
    const e = await firstFailure(c);
    expect(e.failure).toMatchObject({
      kind: 'untrusted-gateway',
      refused: true,
      advice: expect.stringMatching(/root CA pinned at enrollment/),
    });
    expect(fake.handshakes()).toBe(0);
  });

  it('refuses the real gateway when another root is pinned, and one whose name does not match the URL', async () => {
    const d = await up.enroll('AG-PIN-2');
    const otherRoot = pki.rootCa('Another Root');
    const pinnedOther = async (): Promise<ConnectionCredentials> => ({
      ...(await identityCredentials(d.store, d.anchor)),
      caPem: otherRoot.pem,
    });
    const c = connect(d, { credentials: pinnedOther });
    c.start();
    expect((await firstFailure(c)).failure.kind).toBe('untrusted-gateway');

    // Right CA, wrong name: the certificate is for other.example, the URL says 127.0.0.1.
    const issuing = pki.issuingCa('Pinned Issuing', otherRoot);
    const cert = pki.serverCert(issuing, 'DNS:other.example');
    const fake = await impostor(cert.certPem, cert.keyPem);
    const named = connect(d, { url: fake.url, credentials: pinnedOther });
    named.start();
    const e = await firstFailure(named);
    expect(e.failure.kind).toBe('untrusted-gateway');
    expect(e.failure.message).toMatch(/ERR_TLS_CERT_ALTNAME_INVALID/);
  });
});
