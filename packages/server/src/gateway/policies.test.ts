import { readFileSync } from 'node:fs';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIALECTS } from '../test-support/databases.js';
import { startTestPlatform, type TestPlatform } from '../test-support/platform.js';
import { PkiPeers } from '../test-support/pki.js';

const SECRET_DENY = {
  statements: [
    {
      sid: 'no-secrets',
      effect: 'deny',
      actions: ['publish', 'receive', 'subscribe'],
      resources: ['devices/${device.id}/secret/#'],
    },
  ],
};

describe.each(DIALECTS)('gateway policies through the API (%s)', (dialect) => {
  let tp: TestPlatform;
  let peers: PkiPeers;

  beforeAll(async () => {
    tp = await startTestPlatform(dialect);
    peers = new PkiPeers(tp);
    await peers.device('POL-0001');
    // Pending devices may do nothing; simulate for an active one.
    await tp.call('PATCH', '/api/v1/devices/POL-0001', { body: { status: 'active' } });
  }, 60_000);
  afterAll(async () => {
    await tp?.close();
  });

  it('refuses an invalid document with the path of each problem, and stores nothing', async () => {
    const r = await tp.call('POST', '/api/v1/policies', {
      body: {
        name: 'broken',
        document: { statements: [{ effect: 'allow', actions: ['publish'], resources: ['a/#/b'] }] },
      },
    });
    expect(r.status).toBe(400);
    expect(r.body.errors[0].field).toBe('document.statements.0.resources.0');
    expect((await tp.call('GET', '/api/v1/policies/broken')).status).toBe(404);
  });

  it('creates, versions, attaches, simulates, detaches and deletes a policy, all audited', async () => {
    const created = await tp.call('POST', '/api/v1/policies', {
      body: { name: 'no-secrets', document: SECRET_DENY },
    });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ name: 'no-secrets', version: 1 });
    const updated = await tp.call('PUT', '/api/v1/policies/no-secrets', {
      body: { description: 'keep secrets in', document: SECRET_DENY },
    });
    expect(updated.body.version).toBe(2);
    expect((await tp.call('GET', '/api/v1/policies/no-secrets/versions')).body.items).toHaveLength(2);

    const attached = await tp.call('POST', '/api/v1/policies/no-secrets/attachments', {
      body: { targetKind: 'device', targetId: 'POL-0001' },
    });
    expect(attached.body.attachments).toMatchObject([{ targetKind: 'device', targetId: 'POL-0001' }]);
    expect(
      (
        await tp.call('POST', '/api/v1/policies/no-secrets/attachments', {
          body: { targetKind: 'device', targetId: 'nope' },
        })
      ).status,
    ).toBe(404);

    const denied = await tp.call('POST', '/api/v1/policies/simulate', {
      body: { device: 'POL-0001', action: 'publish', resource: 'devices/POL-0001/secret/key' },
    });
    expect(denied.body).toMatchObject({
      allowed: false,
      effect: 'deny',
      statement: { policy: 'no-secrets', version: 2, sid: 'no-secrets' },
    });
    expect(denied.body.policies.map((p: { name: string }) => p.name)).toEqual(['default', 'no-secrets']);
    const allowed = await tp.call('POST', '/api/v1/policies/simulate', {
      body: { device: 'POL-0001', action: 'publish', resource: 'devices/POL-0001/telemetry' },
    });
    expect(allowed.body).toMatchObject({ allowed: true, statement: { policy: 'default' } });

    expect((await tp.call('DELETE', '/api/v1/policies/no-secrets/attachments/device/POL-0001')).status).toBe(
      200,
    );
    expect((await tp.call('DELETE', '/api/v1/policies/no-secrets')).status).toBe(200);
    const audit = await tp.call('GET', '/api/v1/audit/entries?limit=50&order=desc');
    const actions = audit.body.items.map((e: { action: string }) => e.action);
    for (const a of ['policy.create', 'policy.update', 'policy.attach', 'policy.detach', 'policy.delete'])
      expect(actions).toContain(a);
  });

  it('lints a document without storing it', async () => {
    const r = await tp.call('POST', '/api/v1/policies/lint', {
      body: { document: { statements: [{ effect: 'allow', actions: ['publish'], resources: ['#'] }] } },
    });
    expect(r.body.valid).toBe(true);
    expect(r.body.findings.length).toBeGreaterThan(0);
  });
});

describe('narrowing a policy reaches live sessions', () => {
  let tp: TestPlatform;
  let peers: PkiPeers;
  let url: URL;

  function connect(id: string): Promise<MqttClient> {
    return mqtt.connectAsync(url.toString(), {
      ca: readFileSync(peers.rootCa),
      cert: readFileSync(peers.path(`${id}.pem`)),
      key: readFileSync(peers.path(`${id}.key`)),
      clientId: id,
      protocolVersion: 4,
      reconnectPeriod: 0,
    });
  }

  beforeAll(async () => {
    tp = await startTestPlatform('sqlite');
    peers = new PkiPeers(tp);
    url = new URL(tp.platform.listeners.find((l) => l.name === 'mqtt')!.url);
    for (const id of ['POL-0101', 'POL-0102']) {
      await peers.device(id);
      const res = await peers.enroll(id, id, await peers.token(id));
      if (res.status !== 200) throw new Error(res.body.toString());
    }
  }, 60_000);
  afterAll(async () => {
    await tp?.close();
  });

  it('stops deliveries and refuses publishes that a newly attached policy denies, within 1 s, without a reconnect', async () => {
    const device = await connect('POL-0101');
    const received: string[] = [];
    device.on('message', (topic) => received.push(topic));
    await device.subscribeAsync('devices/POL-0101/#', { qos: 1 });
    await device.publishAsync('devices/POL-0101/secret/a', 'before', { qos: 1 });
    await new Promise((r) => setTimeout(r, 100));
    expect(received).toContain('devices/POL-0101/secret/a');

    expect(
      (await tp.call('POST', '/api/v1/policies', { body: { name: 'no-secrets', document: SECRET_DENY } }))
        .status,
    ).toBe(201);
    const start = performance.now();
    expect(
      (
        await tp.call('POST', '/api/v1/policies/no-secrets/attachments', {
          body: { targetKind: 'model', targetId: 'DW100' },
        })
      ).status,
    ).toBe(200);
    // The session is still up and still allowed elsewhere…
    await device.publishAsync('devices/POL-0101/telemetry', 'ok', { qos: 1 });
    expect(device.connected).toBe(true);
    // …but a publish under secret/ now closes it.
    const closed = new Promise<number>((resolve) => device.once('close', () => resolve(performance.now())));
    device.publish('devices/POL-0101/secret/b', 'after', { qos: 1 });
    expect((await closed) - start).toBeLessThan(1000);
    expect(received).not.toContain('devices/POL-0101/secret/b');
  });

  it('closes a live session whose client id a new policy denies', async () => {
    const device = await connect('POL-0102');
    const closed = new Promise<number>((resolve) => device.once('close', () => resolve(performance.now())));
    const deny = { statements: [{ effect: 'deny', actions: ['connect'], resources: ['${device.id}'] }] };
    expect(
      (await tp.call('POST', '/api/v1/policies', { body: { name: 'lockout', document: deny } })).status,
    ).toBe(201);
    const start = performance.now();
    await tp.call('POST', '/api/v1/policies/lockout/attachments', {
      body: { targetKind: 'device', targetId: 'POL-0102' },
    });
    expect((await closed) - start).toBeLessThan(1000);
  });
});

describe('policies attached to groups follow the registry live', () => {
  let tp: TestPlatform;
  let peers: PkiPeers;
  let url: URL;
  const EU_FLEET = {
    statements: [{ effect: 'allow', actions: ['publish'], resources: ['fleet/eu/${device.id}'] }],
  };

  function connect(id: string): Promise<MqttClient> {
    return mqtt.connectAsync(url.toString(), {
      ca: readFileSync(peers.rootCa),
      cert: readFileSync(peers.path(`${id}.pem`)),
      key: readFileSync(peers.path(`${id}.key`)),
      clientId: id,
      protocolVersion: 4,
      reconnectPeriod: 0,
    });
  }

  /** Resolves with the time the connection closed. */
  const closed = (c: MqttClient) => new Promise<number>((r) => c.once('close', () => r(performance.now())));

  /**
   * Re-authorization is asynchronous: publish on `topic` every 20 ms (for at most a second) until
   * the new decision refuses it and the gateway closes the connection; resolves with that time.
   */
  async function publishUntilClosed(c: MqttClient, topic: string): Promise<number> {
    const at = closed(c);
    for (let i = 0; i < 50 && c.connected; i++) {
      c.publish(topic, 'after', { qos: 1 });
      await new Promise((r) => setTimeout(r, 20));
    }
    return at;
  }

  async function ok(method: 'POST' | 'PATCH' | 'DELETE', path: string, body?: unknown): Promise<void> {
    const r = await tp.call(method, path, body === undefined ? {} : { body });
    if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
  }

  beforeAll(async () => {
    tp = await startTestPlatform('sqlite');
    peers = new PkiPeers(tp);
    url = new URL(tp.platform.listeners.find((l) => l.name === 'mqtt')!.url);
    for (const id of ['POL-0201', 'POL-0202', 'POL-0203', 'POL-0204']) {
      await peers.device(id);
      const res = await peers.enroll(id, id, await peers.token(id));
      if (res.status !== 200) throw new Error(res.body.toString());
    }
    await ok('POST', '/api/v1/policies', { name: 'eu-fleet', document: EU_FLEET });
  }, 60_000);
  afterAll(async () => {
    await tp?.close();
  });

  it('applies a policy attached to a dynamic group to the devices its query matches, and withdraws it when an attribute moves the device out', async () => {
    await ok('POST', '/api/v1/device-groups', { id: 'eu', query: 'attributes.region = "eu"' });
    await ok('POST', '/api/v1/policies/eu-fleet/attachments', { targetKind: 'group', targetId: 'eu' });
    await ok('PATCH', '/api/v1/devices/POL-0201', { attributes: { region: 'eu' } });

    // Outside the group the default policy refuses the topic: the publish closes the connection.
    const outsider = await connect('POL-0202');
    const outsiderClosed = closed(outsider);
    outsider.publish('fleet/eu/POL-0202', 'x', { qos: 1 });
    await outsiderClosed;

    const member = await connect('POL-0201');
    await member.publishAsync('fleet/eu/POL-0201', 'allowed', { qos: 1 });
    expect(member.connected).toBe(true);

    const start = performance.now();
    await ok('PATCH', '/api/v1/devices/POL-0201', { attributes: { region: 'us' } });
    expect((await publishUntilClosed(member, 'fleet/eu/POL-0201')) - start).toBeLessThan(1000);
  });

  it('applies a policy attached to a static group to members of its child groups, and withdraws it on removal', async () => {
    await ok('POST', '/api/v1/device-groups', { id: 'site' });
    await ok('POST', '/api/v1/device-groups', { id: 'site-a', parentId: 'site' });
    await ok('POST', '/api/v1/device-groups/site-a/members', { deviceIds: ['POL-0203'] });
    await ok('POST', '/api/v1/policies/eu-fleet/attachments', { targetKind: 'group', targetId: 'site' });

    const member = await connect('POL-0203');
    await member.publishAsync('fleet/eu/POL-0203', 'allowed', { qos: 1 });
    const simulated = await tp.call('POST', '/api/v1/policies/simulate', {
      body: { device: 'POL-0203', action: 'publish', resource: 'fleet/eu/POL-0203' },
    });
    expect(simulated.status).toBe(200);
    expect(JSON.stringify(simulated.body)).toContain('group site');

    const start = performance.now();
    await ok('DELETE', '/api/v1/device-groups/site-a/members/POL-0203');
    expect((await publishUntilClosed(member, 'fleet/eu/POL-0203')) - start).toBeLessThan(1000);
  });

  it('drops the attachments of a deleted group: a new group with the same id does not inherit them', async () => {
    await ok('POST', '/api/v1/device-groups', { id: 'temp' });
    await ok('POST', '/api/v1/policies/eu-fleet/attachments', { targetKind: 'group', targetId: 'temp' });
    await ok('DELETE', '/api/v1/device-groups/temp');
    const policy = await tp.call('GET', '/api/v1/policies/eu-fleet');
    expect(JSON.stringify(policy.body)).not.toContain('"temp"');

    await ok('POST', '/api/v1/device-groups', { id: 'temp' });
    await ok('POST', '/api/v1/device-groups/temp/members', { deviceIds: ['POL-0204'] });
    const device = await connect('POL-0204');
    const deviceClosed = closed(device);
    device.publish('fleet/eu/POL-0204', 'x', { qos: 1 });
    await deviceClosed;
  });
});
