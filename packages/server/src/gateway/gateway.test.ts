import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPlatform, type TestPlatform } from '../test-support/platform.js';
import { PkiPeers } from '../test-support/pki.js';

/**
 * The gateway against unmodified MQTT clients: mosquitto_pub and mosquitto_sub (Debian
 * mosquitto-clients) and mqtt.js, each with a device certificate enrolled over EST.
 */
const run = promisify(execFile);
let tp: TestPlatform;
let peers: PkiPeers;
let host: string;
let port: string;

async function mosquitto(
  tool: 'mosquitto_pub' | 'mosquitto_sub',
  cert: string,
  clientId: string,
  args: string[],
): Promise<{ code: number; out: string }> {
  try {
    const r = await run(
      tool,
      [
        '-h',
        host,
        '-p',
        port,
        '--cafile',
        peers.rootCa,
        '--cert',
        peers.path(`${cert}.pem`),
        '--key',
        peers.path(`${cert}.key`),
        '-i',
        clientId,
        '-V',
        'mqttv311',
        ...args,
      ],
      { timeout: 15_000 },
    );
    return { code: 0, out: r.stdout + r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, out: (e.stdout ?? '') + (e.stderr ?? '') };
  }
}

async function device(id: string): Promise<void> {
  await peers.device(id);
  const res = await peers.enroll(id, id, await peers.token(id));
  if (res.status !== 200) throw new Error(`enrollment of ${id} failed: ${res.body.toString()}`);
}

function connect(id: string, clientId = id): Promise<MqttClient> {
  return mqtt.connectAsync(`mqtts://${host}:${port}`, {
    ca: readFileSync(peers.rootCa),
    cert: readFileSync(peers.path(`${id}.pem`)),
    key: readFileSync(peers.path(`${id}.key`)),
    clientId,
    protocolVersion: 4,
    reconnectPeriod: 0,
    connectTimeout: 5_000,
  });
}

function closedWithin(client: MqttClient): { closedAt: Promise<number> } {
  return { closedAt: new Promise((resolve) => client.once('close', () => resolve(performance.now()))) };
}

beforeAll(async () => {
  tp = await startTestPlatform('sqlite', {}, { captureLogs: true });
  peers = new PkiPeers(tp);
  const url = new URL(tp.platform.listeners.find((l) => l.name === 'mqtt')!.url);
  host = url.hostname;
  port = url.port;
  for (const id of ['GW-0001', 'GW-0002', 'GW-0003', 'GW-0004', 'GW-0005', 'GW-0006']) await device(id);
}, 90_000);
afterAll(async () => {
  await tp?.close();
});

describe('MQTT over mutual TLS with mosquitto clients', () => {
  it('lets a device publish and subscribe under its own namespace', async () => {
    // One session per device (the client id is the device id), so publish a retained message
    // first and then receive it on a subscription.
    const pub = await mosquitto('mosquitto_pub', 'GW-0001', 'GW-0001', [
      '-t',
      'devices/GW-0001/telemetry',
      '-m',
      'hello',
      '-r',
      '-q',
      '1',
    ]);
    expect(pub.code, pub.out).toBe(0);
    const sub = await mosquitto('mosquitto_sub', 'GW-0001', 'GW-0001', [
      '-t',
      'devices/GW-0001/#',
      '-C',
      '1',
      '-W',
      '5',
      '-v',
    ]);
    expect(sub.code, sub.out).toBe(0);
    expect(sub.out.trim()).toBe('devices/GW-0001/telemetry hello');
  });

  it('answers a subscription outside the namespace with SUBACK 0x80', async () => {
    const r = await mosquitto('mosquitto_sub', 'GW-0002', 'GW-0002', [
      '-t',
      'devices/GW-0001/#',
      '-C',
      '1',
      '-W',
      '3',
      '-d',
    ]);
    // mosquitto_sub reports the refused grant and exits on its own.
    expect(r.out).toContain('Subscribed (mid: 1): 128');
    expect(r.out).toContain('All subscription requests were denied.');
  });

  it('closes the connection on a publish outside the namespace', async () => {
    const r = await mosquitto('mosquitto_pub', 'GW-0002', 'GW-0002', [
      '-t',
      'devices/GW-0001/telemetry',
      '-m',
      'x',
      '-q',
      '1',
    ]);
    expect(r.code).not.toBe(0);
  });

  it('refuses a client id other than the device id', async () => {
    const r = await mosquitto('mosquitto_pub', 'GW-0002', 'someone-else', [
      '-t',
      'devices/GW-0002/x',
      '-m',
      'x',
    ]);
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/identifier rejected/i);
  });

  it('answers an MQTT 5 client with unacceptable protocol version (the embedded broker speaks 3.1.1)', async () => {
    const r = await mosquitto('mosquitto_pub', 'GW-0002', 'GW-0002', [
      '-V',
      'mqttv5',
      '-t',
      'devices/GW-0002/x',
      '-m',
      'x',
    ]);
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/unacceptable protocol version|unsupported protocol version/i);
  });

  it('refuses a certificate from a foreign CA at the TLS handshake', async () => {
    peers.openssl(
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      'foreign-ca.key',
      '-subj',
      '/CN=Foreign CA',
      '-days',
      '1',
      '-out',
      'foreign-ca.pem',
    );
    peers.openssl(
      'req',
      '-new',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      'foreign.key',
      '-subj',
      '/CN=GW-0002',
      '-out',
      'foreign.csr',
    );
    peers.openssl(
      'x509',
      '-req',
      '-in',
      'foreign.csr',
      '-CA',
      'foreign-ca.pem',
      '-CAkey',
      'foreign-ca.key',
      '-days',
      '1',
      '-out',
      'foreign.pem',
    );
    const r = await mosquitto('mosquitto_pub', 'foreign', 'GW-0002', ['-t', 'devices/GW-0002/x', '-m', 'x']);
    expect(r.code).not.toBe(0);
    // The server refused the handshake itself (the client only sees the connection drop).
    expect(tp.logs.some((l) => l.includes('"event":"mqtt.tls.refused"'))).toBe(true);
    expect(tp.logs.some((l) => l.includes('"event":"mqtt.connect"') && l.includes('foreign'))).toBe(false);
  });

  it('refuses a revoked certificate', async () => {
    const serial = peers.serialOf('GW-0003');
    expect(
      (await tp.call('POST', `/api/v1/certificates/${serial}/revoke`, { body: { reason: 'keyCompromise' } }))
        .status,
    ).toBe(200);
    const r = await mosquitto('mosquitto_pub', 'GW-0003', 'GW-0003', ['-t', 'devices/GW-0003/x', '-m', 'x']);
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/not authori[sz]ed/i);
  });
});

describe('live revocation', () => {
  it('closes a live session within 1 s of its certificate being revoked', async () => {
    const client = await connect('GW-0004');
    const { closedAt } = closedWithin(client);
    const serial = peers.serialOf('GW-0004');
    const start = performance.now();
    const r = await tp.call('POST', `/api/v1/certificates/${serial}/revoke`, {
      body: { reason: 'keyCompromise' },
    });
    expect(r.status).toBe(200);
    const elapsed = (await closedAt) - start;
    expect(elapsed).toBeLessThan(1000);
  });

  it('closes a live session within 1 s of the device being disabled', async () => {
    const client = await connect('GW-0005');
    const { closedAt } = closedWithin(client);
    const start = performance.now();
    const r = await tp.call('PATCH', '/api/v1/devices/GW-0005', { body: { status: 'disabled' } });
    expect(r.status).toBe(200);
    const elapsed = (await closedAt) - start;
    expect(elapsed).toBeLessThan(1000);
    // And it cannot come back.
    await expect(connect('GW-0005')).rejects.toThrow();
  });

  it('closes a live session when the device is quarantined, and lets it back with only the update and report topics', async () => {
    const client = await connect('GW-0006');
    const { closedAt } = closedWithin(client);
    const start = performance.now();
    expect(
      (await tp.call('PATCH', '/api/v1/devices/GW-0006', { body: { status: 'quarantined' } })).status,
    ).toBe(200);
    expect((await closedAt) - start).toBeLessThan(1000);

    const again = await connect('GW-0006');
    await again.publishAsync('$rampart/devices/GW-0006/reports/crash', 'segfault', { qos: 1 });
    // mqtt.js turns SUBACK 0x80 into an error.
    await expect(again.subscribeAsync('devices/GW-0006/#')).rejects.toThrow(/Subscribe error/);
    const closed = closedWithin(again).closedAt;
    again.publish('devices/GW-0006/telemetry', 'x', { qos: 1 });
    await closed;
    expect(again.connected).toBe(false);
  });

  it('refuses a persistent session (clean session 0) with identifier rejected', async () => {
    await expect(
      mqtt.connectAsync(`mqtts://${host}:${port}`, {
        ca: readFileSync(peers.rootCa),
        cert: readFileSync(peers.path('GW-0002.pem')),
        key: readFileSync(peers.path('GW-0002.key')),
        clientId: 'GW-0002',
        clean: false,
        protocolVersion: 4,
        reconnectPeriod: 0,
      }),
    ).rejects.toThrow(/Identifier rejected/i);
  });
});
