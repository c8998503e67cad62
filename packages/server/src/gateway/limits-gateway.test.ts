import { readFileSync } from 'node:fs';
import { connect as tlsConnect } from 'node:tls';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPlatform, type TestPlatform } from '../test-support/platform.js';
import { PkiPeers } from '../test-support/pki.js';

let tp: TestPlatform;
let peers: PkiPeers;
let url: URL;
const open: MqttClient[] = [];

function connect(id: string): Promise<MqttClient> {
  return mqtt
    .connectAsync(url.toString(), {
      ca: readFileSync(peers.rootCa),
      cert: readFileSync(peers.path(`${id}.pem`)),
      key: readFileSync(peers.path(`${id}.key`)),
      clientId: id,
      protocolVersion: 4,
      reconnectPeriod: 0,
    })
    .then((c) => (open.push(c), c));
}

const closed = (c: MqttClient) => new Promise<void>((resolve) => c.once('close', () => resolve()));

beforeAll(async () => {
  tp = await startTestPlatform(
    'sqlite',
    {
      'gateway.limits.publishesPerSecond': 5,
      'gateway.limits.maxSubscriptions': 2,
      'gateway.limits.maxPacketBytes': 4096,
      'gateway.limits.maxRetainedPerDevice': 2,
    },
    { captureLogs: true },
  );
  peers = new PkiPeers(tp);
  url = new URL(tp.platform.listeners.find((l) => l.name === 'mqtt')!.url);
  for (const id of ['LIM-1', 'LIM-2', 'LIM-3', 'LIM-4', 'LIM-5', 'LIM-OK']) {
    await peers.device(id);
    const res = await peers.enroll(id, id, await peers.token(id));
    if (res.status !== 200) throw new Error(res.body.toString());
  }
}, 90_000);
afterAll(async () => {
  for (const c of open) c.end(true);
  await tp?.close();
});

describe('gateway limits', () => {
  it('closes a connection that sends a packet larger than the limit, and only that one', async () => {
    const bystander = await connect('LIM-OK');
    const big = await connect('LIM-1');
    const gone = closed(big);
    big.publish('devices/LIM-1/blob', Buffer.alloc(10_000), { qos: 0 });
    await gone;
    await bystander.publishAsync('devices/LIM-OK/t', 'still here', { qos: 1 });
    expect(bystander.connected).toBe(true);
    expect(
      tp.logs.some(
        (l) => l.includes('"event":"mqtt.packet.refused"') && l.includes('exceeds the limit of 4096'),
      ),
    ).toBe(true);
  });

  it('closes a connection that publishes faster than allowed', async () => {
    const chatty = await connect('LIM-2');
    const gone = closed(chatty);
    for (let i = 0; i < 10; i++) chatty.publish('devices/LIM-2/t', String(i), { qos: 0 });
    await gone;
    expect(
      tp.logs.some((l) => l.includes('"event":"mqtt.limit.exceeded"') && l.includes('more than 5 publishes')),
    ).toBe(true);
  });

  it('refuses subscriptions beyond the limit with 0x80 and keeps the session', async () => {
    const c = await connect('LIM-3');
    await c.subscribeAsync('devices/LIM-3/a', { qos: 0 });
    await c.subscribeAsync('devices/LIM-3/b', { qos: 0 });
    await expect(c.subscribeAsync('devices/LIM-3/c', { qos: 0 })).rejects.toThrow(/Subscribe error/);
    expect(c.connected).toBe(true);
  });

  it('disconnects a client that sends a malformed packet, and only that client', async () => {
    const bystander = open.find((c) => c.options.clientId === 'LIM-OK')!;
    const socket = tlsConnect({
      host: url.hostname,
      port: Number(url.port),
      ca: readFileSync(peers.rootCa),
      cert: readFileSync(peers.path('LIM-4.pem')),
      key: readFileSync(peers.path('LIM-4.key')),
      servername: 'localhost',
    });
    await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
    const ended = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    // A PUBLISH whose remaining length never ends (five continuation bytes).
    socket.write(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0xff]));
    await ended;
    await bystander.publishAsync('devices/LIM-OK/t', 'after the malformed one', { qos: 1 });
    expect(bystander.connected).toBe(true);
  });

  it('caps the retained messages a device keeps; an empty retained publish frees a slot', async () => {
    const c = await connect('LIM-5');
    await c.publishAsync('devices/LIM-5/a', 'x', { qos: 1, retain: true });
    await c.publishAsync('devices/LIM-5/b', 'x', { qos: 1, retain: true });
    await new Promise((r) => setTimeout(r, 1100)); // stay under 5 publishes a second
    await c.publishAsync('devices/LIM-5/a', '', { qos: 1, retain: true });
    await c.publishAsync('devices/LIM-5/c', 'x', { qos: 1, retain: true });
    const gone = closed(c);
    c.publish('devices/LIM-5/d', 'x', { qos: 1, retain: true });
    await gone;
    expect(tp.logs.some((l) => l.includes('more than 2 retained messages'))).toBe(true);
  });
});
