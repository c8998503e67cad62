import { readFileSync } from 'node:fs';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPlatform, type TestPlatform } from '../test-support/platform.js';
import { PkiPeers } from '../test-support/pki.js';

let tp: TestPlatform;
let peers: PkiPeers;

function options(id: string, clientId = id) {
  return {
    ca: readFileSync(peers.rootCa),
    cert: readFileSync(peers.path(`${id}.pem`)),
    key: readFileSync(peers.path(`${id}.key`)),
    clientId,
    protocolVersion: 4 as const,
    reconnectPeriod: 0,
  };
}

beforeAll(async () => {
  tp = await startTestPlatform('sqlite');
  peers = new PkiPeers(tp);
  await peers.device('ST-1');
  const res = await peers.enroll('ST-1', 'ST-1', await peers.token('ST-1'));
  if (res.status !== 200) throw new Error(res.body.toString());
}, 60_000);
afterAll(async () => {
  await tp?.close();
});

describe('per-device connection statistics and security events', () => {
  it('counts connects, messages and bytes both ways, denials and disconnects, and records security events', async () => {
    const url = tp.platform.listeners.find((l) => l.name === 'mqtt')!.url;
    const c = await mqtt.connectAsync(url, options('ST-1'));
    let received = 0;
    c.on('message', () => received++);
    await c.subscribeAsync('devices/ST-1/#', { qos: 1 });
    await expect(c.subscribeAsync('devices/other/#')).rejects.toThrow();
    for (let i = 0; i < 3; i++) await c.publishAsync('devices/ST-1/t', 'abcd', { qos: 1 });
    for (let i = 0; i < 50 && received < 3; i++) await new Promise((r) => setTimeout(r, 20));
    const live = (await tp.call('GET', '/api/v1/devices/ST-1/connection')).body;
    expect(live).toMatchObject({
      connected: true,
      sessions: [{ clientId: 'ST-1' }],
      stats: {
        connects: 1,
        connectAttempts: 1,
        messagesIn: 3,
        messagesOut: 3,
        bytesIn: 12,
        bytesOut: 12,
        authorizationFailures: 1,
      },
    });
    expect(live.stats.lastSourceAddress).toMatch(/127\.0\.0\.1/);
    await c.endAsync();
    // A refused connection (another client id) is an attempt and a security event.
    await expect(mqtt.connectAsync(url, options('ST-1', 'not-me'))).rejects.toThrow();
    for (let i = 0; i < 50; i++) {
      const s = (await tp.call('GET', '/api/v1/devices/ST-1/connection')).body.stats;
      if (s.disconnects >= 1) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const after = (await tp.call('GET', '/api/v1/devices/ST-1/connection')).body;
    expect(after).toMatchObject({ connected: false, stats: { connectAttempts: 2, disconnects: 1 } });

    const events = (await tp.call('GET', '/api/v1/security-events?device=ST-1')).body.items as {
      kind: string;
      reason: string;
    }[];
    expect(events.map((e) => e.kind)).toEqual(
      expect.arrayContaining(['authorization.denied', 'connect.refused']),
    );
    expect(events.find((e) => e.kind === 'connect.refused')!.reason).toMatch(/not-me/);
    const viewer = await tp.tokenFor('viewer');
    expect((await tp.call('GET', '/api/v1/security-events', { token: viewer })).status).toBe(403);

    const metrics = await tp.call('GET', '/metrics');
    expect(metrics.body).toMatch(/rampart_gateway_messages_total\{direction="in"\} 3/);
    expect(metrics.body).toMatch(/rampart_gateway_payload_bytes_total\{direction="out"\} 12/);
  });
});
