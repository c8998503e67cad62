import { readFileSync } from 'node:fs';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIALECTS } from '../test-support/databases.js';
import { startTestPlatform, type TestPlatform } from '../test-support/platform.js';
import { PkiPeers } from '../test-support/pki.js';

describe.each(DIALECTS)('device shadow through the API (%s)', (dialect) => {
  let tp: TestPlatform;

  beforeAll(async () => {
    tp = await startTestPlatform(dialect);
    await new PkiPeers(tp).device('SH-0001');
  }, 60_000);
  afterAll(async () => {
    await tp?.close();
  });

  it('merges desired changes, versions them, and refuses a stale version without changing anything', async () => {
    const empty = await tp.call('GET', '/api/v1/devices/SH-0001/shadow');
    expect(empty.body).toMatchObject({ version: 0, state: { desired: {}, reported: {}, delta: {} } });
    const first = await tp.call('PATCH', '/api/v1/devices/SH-0001/shadow', {
      body: { desired: { led: 'on', config: { rate: 5 } }, version: 0 },
    });
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ version: 1, state: { delta: { led: 'on', config: { rate: 5 } } } });
    const second = await tp.call('PATCH', '/api/v1/devices/SH-0001/shadow', {
      body: { desired: { led: null } },
    });
    expect(second.body).toMatchObject({ version: 2, state: { desired: { config: { rate: 5 } } } });
    const stale = await tp.call('PATCH', '/api/v1/devices/SH-0001/shadow', {
      body: { desired: { x: 1 }, version: 1 },
    });
    expect(stale.status).toBe(409);
    expect(stale.body.detail).toMatch(/version 2, not 1/);
    expect((await tp.call('GET', '/api/v1/devices/SH-0001/shadow')).body.version).toBe(2);
    const tooDeep = await tp.call('PATCH', '/api/v1/devices/SH-0001/shadow', {
      body: { desired: { a: { b: { c: { d: { e: { f: { g: 1 } } } } } } } },
    });
    expect(tooDeep.status).toBe(400);
    expect((await tp.call('GET', '/api/v1/devices/nope/shadow')).status).toBe(404);
  });
});

describe('device shadow over MQTT', () => {
  let tp: TestPlatform;
  let peers: PkiPeers;
  let device: MqttClient;
  const messages: { topic: string; body: Record<string, unknown> }[] = [];
  const next = async (topic: string) => {
    for (let i = 0; i < 100; i++) {
      const idx = messages.findIndex((m) => m.topic === topic);
      if (idx >= 0) return messages.splice(idx, 1)[0]!.body;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`no message on ${topic}`);
  };
  const base = '$rampart/devices/SH-0100/shadow';

  beforeAll(async () => {
    tp = await startTestPlatform('sqlite');
    peers = new PkiPeers(tp);
    await peers.device('SH-0100');
    const res = await peers.enroll('SH-0100', 'SH-0100', await peers.token('SH-0100'));
    if (res.status !== 200) throw new Error(res.body.toString());
    device = await mqtt.connectAsync(tp.platform.listeners.find((l) => l.name === 'mqtt')!.url, {
      ca: readFileSync(peers.rootCa),
      cert: readFileSync(peers.path('SH-0100.pem')),
      key: readFileSync(peers.path('SH-0100.key')),
      clientId: 'SH-0100',
      protocolVersion: 4,
      reconnectPeriod: 0,
    });
    // The subscription also echoes the device's own requests (get, update): keep only the answers.
    device.on('message', (topic, payload) => {
      if (topic !== `${base}/get` && topic !== `${base}/update`)
        messages.push({ topic, body: JSON.parse(payload.toString()) as Record<string, unknown> });
    });
    await device.subscribeAsync(`${base}/#`, { qos: 1 });
  }, 60_000);
  afterAll(async () => {
    device?.end(true);
    await tp?.close();
  });

  it('sends the delta when the desired state changes, accepts reported updates, and answers get', async () => {
    await tp.call('PATCH', '/api/v1/devices/SH-0100/shadow', { body: { desired: { led: 'on', rate: 5 } } });
    expect(await next(`${base}/update/delta`)).toEqual({ state: { led: 'on', rate: 5 }, version: 1 });

    device.publish(
      `${base}/update`,
      JSON.stringify({ state: { reported: { led: 'on', rate: 5 } }, clientToken: 't1' }),
      { qos: 1 },
    );
    expect(await next(`${base}/update/accepted`)).toEqual({
      state: { reported: { led: 'on', rate: 5 } },
      version: 2,
      clientToken: 't1',
    });
    const doc = await tp.call('GET', '/api/v1/devices/SH-0100/shadow');
    expect(doc.body).toMatchObject({ version: 2, state: { reported: { led: 'on', rate: 5 }, delta: {} } });

    device.publish(`${base}/get`, '', { qos: 1 });
    expect(await next(`${base}/get/accepted`)).toMatchObject({
      deviceId: 'SH-0100',
      version: 2,
      state: { delta: {} },
    });
  });

  it('rejects stale versions, desired changes from the device and malformed updates, and stays connected', async () => {
    device.publish(
      `${base}/update`,
      JSON.stringify({ state: { reported: { led: 'off' } }, version: 1, clientToken: 'old' }),
      { qos: 1 },
    );
    expect(await next(`${base}/update/rejected`)).toMatchObject({ code: 409, clientToken: 'old' });
    device.publish(`${base}/update`, JSON.stringify({ state: { desired: { led: 'off' } } }), { qos: 1 });
    expect(await next(`${base}/update/rejected`)).toMatchObject({ code: 403 });
    device.publish(`${base}/update`, '{not json', { qos: 1 });
    expect(await next(`${base}/update/rejected`)).toMatchObject({ code: 400 });
    expect(device.connected).toBe(true);
    expect((await tp.call('GET', '/api/v1/devices/SH-0100/shadow')).body.version).toBe(2);
  });
});
