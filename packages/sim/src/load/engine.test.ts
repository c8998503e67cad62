import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import mqttPacket from 'mqtt-packet';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { DeviceIdentity } from './device.js';
import { LoadEngine } from './engine.js';
import { LatencyHistogram } from './stats.js';

/**
 * A stand-in broker on plain TCP (the engine's `tls: false` mode, for development listeners):
 * CONNACK with a chosen code, PUBACK for every QoS 1 publish, PINGRESP, and a way to drop a client.
 */
class FakeBroker {
  server!: Server;
  port = 0;
  refuse = new Set<string>();
  connects: { clientId: string; keepalive: number }[] = [];
  publishes = 0;
  pings = 0;
  readonly clients = new Map<string, Socket>();
  private readonly sockets = new Set<Socket>();

  async start(): Promise<void> {
    this.server = createServer((socket) => {
      this.sockets.add(socket);
      const parser = mqttPacket.parser({ protocolVersion: 4 });
      let clientId = '';
      parser.on('packet', (p) => {
        if (p.cmd === 'connect') {
          clientId = p.clientId;
          this.connects.push({ clientId, keepalive: p.keepalive ?? 0 });
          const code = this.refuse.has(clientId) ? 5 : 0;
          socket.write(mqttPacket.generate({ cmd: 'connack', returnCode: code, sessionPresent: false }));
          if (code) socket.end();
          else this.clients.set(clientId, socket);
        } else if (p.cmd === 'publish') {
          this.publishes++;
          if (p.qos === 1) socket.write(mqttPacket.generate({ cmd: 'puback', messageId: p.messageId! }));
        } else if (p.cmd === 'pingreq') {
          this.pings++;
          socket.write(mqttPacket.generate({ cmd: 'pingresp' }));
        } else if (p.cmd === 'disconnect') socket.end();
      });
      socket.on('data', (d: Buffer) => parser.parse(d));
      socket.on('error', () => {});
      socket.on('close', () => {
        this.sockets.delete(socket);
        if (this.clients.get(clientId) === socket) this.clients.delete(clientId);
      });
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as AddressInfo).port;
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((r) => this.server.close(() => r()));
  }
}

const identities: DeviceIdentity[] = Array.from({ length: 20 }, (_, i) => ({
  id: `dev-${i}`,
  keyPem: '',
  certPem: '',
}));

let broker: FakeBroker;
beforeAll(async () => {
  broker = new FakeBroker();
  await broker.start();
});
afterAll(() => broker.close());
beforeEach(() => {
  broker.connects = [];
  broker.publishes = 0;
  broker.refuse.clear();
});

const target = () => ({ host: '127.0.0.1', port: broker.port, tls: false });

describe('LoadEngine', () => {
  it('connects devices at a bounded width, with their ids as client ids, and closes them', async () => {
    const engine = new LoadEngine(identities, { ca: [], keepaliveSeconds: 30 });
    const r = await engine.open({ target: target(), from: 0, count: 20, concurrency: 4 });
    expect(r).toMatchObject({ attempted: 20, opened: 20, failed: 0, retried: 0, resumed: 0, errors: {} });
    expect(r.endedAt).toBeGreaterThanOrEqual(r.startedAt);
    expect(LatencyHistogram.from(r.connack).count).toBe(20);
    expect(broker.connects.map((c) => c.clientId).sort()).toEqual(identities.map((d) => d.id).sort());
    expect(broker.connects.every((c) => c.keepalive === 30)).toBe(true);
    expect(engine.openCount).toBe(20);
    // Connected devices are left as they are.
    expect((await engine.open({ target: target(), from: 10, count: 15, concurrency: 4 })).attempted).toBe(0);
    expect(await engine.closeAll()).toBe(20);
    expect(engine.openCount).toBe(0);
    expect(engine.dropped).toBe(0);
  });

  it('opens a range next to what is connected', async () => {
    const engine = new LoadEngine(identities, { ca: [], keepaliveSeconds: 0 });
    expect((await engine.open({ target: target(), from: 0, count: 5, concurrency: 2 })).opened).toBe(5);
    expect((await engine.open({ target: target(), from: 5, count: 100, concurrency: 2 })).opened).toBe(15);
    expect(engine.openCount).toBe(20);
    await engine.closeAll();
  });

  it('reports refusals by their CONNACK code and retries failures untimed', async () => {
    const engine = new LoadEngine(identities.slice(0, 4), { ca: [], keepaliveSeconds: 0 });
    broker.refuse.add('dev-1');
    const r = await engine.open({ target: target(), from: 0, count: 4, concurrency: 4, retries: 1 });
    expect(r).toMatchObject({ attempted: 4, opened: 3, failed: 1, retried: 0 });
    expect(r.errors).toEqual({ 'CONNACK 5 (not authorized)': 2 });
    broker.refuse.clear();
    const again = await engine.open({ target: target(), from: 0, count: 4, concurrency: 4 });
    expect(again).toMatchObject({ attempted: 1, opened: 1, failed: 0 });
    await engine.closeAll();
  });

  it('publishes QoS 1 in a closed loop and counts the acknowledgements in the window', async () => {
    const engine = new LoadEngine(identities.slice(0, 5), { ca: [], keepaliveSeconds: 0 });
    await engine.open({ target: target(), from: 0, count: 5, concurrency: 5 });
    const r = await engine.publish({
      topic: 'devices/{id}/telemetry',
      payloadBytes: 64,
      qos: 1,
      inflight: 3,
      warmupMs: 50,
      durationMs: 300,
    });
    expect(r.devices).toBe(5);
    expect(r.acked).toBeGreaterThan(50);
    expect(r.failed).toBe(0);
    expect(r.unacknowledged).toBe(0);
    expect(LatencyHistogram.from(r.latency).count).toBe(r.acked);
    expect(r.endedAt - r.startedAt).toBe(300);
    // Warm-up and drain publishes reach the broker too, but are not counted.
    expect(broker.publishes).toBeGreaterThanOrEqual(r.acked);
    await engine.closeAll();
  });

  it('notices a connection the broker drops, and pings idle connections', async () => {
    const engine = new LoadEngine(identities.slice(0, 2), { ca: [], keepaliveSeconds: 2 });
    const dropped: string[] = [];
    engine.onDrop = (_, d) => dropped.push(`${d.id}:${d.closeReason}`);
    await engine.open({ target: target(), from: 0, count: 2, concurrency: 2 });
    const pings = broker.pings;
    await new Promise((r) => setTimeout(r, 2300));
    expect(broker.pings).toBeGreaterThan(pings);
    broker.clients.get('dev-0')!.destroy();
    await new Promise((r) => setTimeout(r, 100));
    expect(dropped).toEqual(['dev-0:broker']);
    expect(engine.dropped).toBe(1);
    expect(engine.openCount).toBe(1);
    expect(engine.device(0)!.state).toBe('closed');
    await engine.closeAll();
  });

  it('fails a publish on a closed connection instead of losing it', async () => {
    const engine = new LoadEngine(identities.slice(0, 1), { ca: [], keepaliveSeconds: 0 });
    await engine.open({ target: target(), from: 0, count: 1, concurrency: 1 });
    const d = engine.device(0)!;
    await d.disconnect();
    const err = await new Promise<Error | null>((resolve) =>
      d.publish(Buffer.from('t'), Buffer.alloc(1), 1, resolve),
    );
    expect(err?.message).toMatch(/not connected/);
  });
});
