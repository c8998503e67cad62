import { readFileSync } from 'node:fs';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPlatform, type TestPlatform } from '../test-support/platform.js';
import { PkiPeers } from '../test-support/pki.js';

let tp: TestPlatform;
let peers: PkiPeers;
const clients: MqttClient[] = [];

async function connectDevice(id: string, answer: (name: string) => object | null): Promise<MqttClient> {
  await peers.device(id);
  const res = await peers.enroll(id, id, await peers.token(id));
  if (res.status !== 200) throw new Error(res.body.toString());
  const client = await mqtt.connectAsync(tp.platform.listeners.find((l) => l.name === 'mqtt')!.url, {
    ca: readFileSync(peers.rootCa),
    cert: readFileSync(peers.path(`${id}.pem`)),
    key: readFileSync(peers.path(`${id}.key`)),
    clientId: id,
    protocolVersion: 4,
    reconnectPeriod: 0,
  });
  client.on('message', (topic, payload) => {
    const request = JSON.parse(payload.toString()) as { id: string; name: string };
    const response = answer(request.name);
    if (response)
      client.publish(topic.replace(/\/request$/, '/response'), JSON.stringify(response), { qos: 1 });
  });
  await client.subscribeAsync(`$rampart/devices/${id}/commands/+/request`, { qos: 1 });
  clients.push(client);
  return client;
}

beforeAll(async () => {
  tp = await startTestPlatform('sqlite');
  peers = new PkiPeers(tp);
  await connectDevice('CMD-0001', (name) =>
    name === 'reboot'
      ? { status: 'succeeded', result: { willRebootIn: 5 } }
      : name === 'format'
        ? { status: 'failed', error: 'refusing to format the boot disk' }
        : null,
  );
}, 60_000);
afterAll(async () => {
  for (const c of clients) c.end(true);
  await tp?.close();
});

describe('commands over MQTT', () => {
  it('sends a command and returns the device response, tracked', async () => {
    const r = await tp.call('POST', '/api/v1/devices/CMD-0001/commands', {
      body: { name: 'reboot', timeoutSeconds: 5 },
    });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({
      name: 'reboot',
      status: 'succeeded',
      result: { willRebootIn: 5 },
      error: null,
    });
    const listed = await tp.call('GET', '/api/v1/devices/CMD-0001/commands');
    expect(listed.body.items[0]).toMatchObject({ id: r.body.id, status: 'succeeded' });
    const audit = await tp.call('GET', '/api/v1/audit/entries?action=device.command&limit=5');
    expect(audit.body.items.at(-1)).toMatchObject({ target: 'device:CMD-0001', details: { name: 'reboot' } });
  });

  it('records a failure with the device reason, and a time-out when no answer comes', async () => {
    const failed = await tp.call('POST', '/api/v1/devices/CMD-0001/commands', {
      body: { name: 'format', timeoutSeconds: 5 },
    });
    expect(failed.body).toMatchObject({ status: 'failed', error: 'refusing to format the boot disk' });
    const start = Date.now();
    const hung = await tp.call('POST', '/api/v1/devices/CMD-0001/commands', {
      body: { name: 'hang', timeoutSeconds: 1 },
    });
    expect(hung.body).toMatchObject({ status: 'timed-out', error: 'no response within 1000 ms' });
    expect(Date.now() - start).toBeGreaterThanOrEqual(950);
  });

  it('returns at once with wait false, and the outcome can be read later', async () => {
    const r = await tp.call('POST', '/api/v1/devices/CMD-0001/commands', {
      body: { name: 'reboot', wait: false },
    });
    expect(r.status).toBe(202);
    expect(r.body.status).toBe('sent');
    let later = r.body;
    for (let i = 0; i < 50 && later.status === 'sent'; i++) {
      await new Promise((res) => setTimeout(res, 20));
      later = (await tp.call('GET', `/api/v1/devices/CMD-0001/commands/${r.body.id}`)).body;
    }
    expect(later.status).toBe('succeeded');
  });

  it("ignores another device's answer to a command it was not sent", async () => {
    const other = await connectDevice('CMD-0002', () => null);
    const pending = tp.call('POST', '/api/v1/devices/CMD-0001/commands', {
      body: { name: 'hang', timeoutSeconds: 1 },
    });
    await new Promise((res) => setTimeout(res, 200));
    const sent = (await tp.call('GET', '/api/v1/devices/CMD-0001/commands?limit=1')).body.items[0];
    // CMD-0002 answers with CMD-0001's command id, on its own (allowed) topic.
    await other.publishAsync(
      `$rampart/devices/CMD-0002/commands/${sent.id}/response`,
      JSON.stringify({ status: 'succeeded', result: 'forged' }),
      { qos: 1 },
    );
    expect((await pending).body).toMatchObject({ id: sent.id, status: 'timed-out' });
  });

  it('refuses a command to a device that is not connected, and to an unknown device', async () => {
    await peers.device('CMD-0003');
    const offline = await tp.call('POST', '/api/v1/devices/CMD-0003/commands', { body: { name: 'reboot' } });
    expect(offline.status).toBe(409);
    expect(offline.body.detail).toMatch(/not connected/);
    expect(
      (await tp.call('POST', '/api/v1/devices/nope/commands', { body: { name: 'reboot' } })).status,
    ).toBe(404);
  });
});
