import mqttPacket from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import {
  DISCONNECT,
  FrameReader,
  PACKET,
  PINGREQ,
  decodePublish,
  encodeConnect,
  encodePuback,
  encodePublish,
  packetIdOf,
  subackCodes,
  topicFor,
  type Frame,
} from './mqtt.js';

const generate = (p: mqttPacket.Packet) => mqttPacket.generate(p);

describe('encoders', () => {
  it('build PUBLISH byte for byte as mqtt-packet does, for every length of the length field', () => {
    const topic = 'devices/dw-0001/telemetry';
    for (const size of [0, 10, 100, 200, 20_000, 3_000_000]) {
      const payload = Buffer.alloc(size, 7);
      const ours = encodePublish(Buffer.from(topic), payload, 1, 4242);
      const theirs = generate({
        cmd: 'publish',
        topic,
        payload,
        qos: 1,
        messageId: 4242,
        retain: false,
        dup: false,
      });
      expect(ours.equals(theirs)).toBe(true);
      const ours0 = encodePublish(Buffer.from(topic), payload, 0);
      const theirs0 = generate({ cmd: 'publish', topic, payload, qos: 0, retain: false, dup: false });
      expect(ours0.equals(theirs0)).toBe(true);
    }
    expect(encodePublish(Buffer.from('t'), Buffer.from('x'), 0, 0, true)).toEqual(
      generate({ cmd: 'publish', topic: 't', payload: Buffer.from('x'), qos: 0, retain: true, dup: false }),
    );
  });

  it('build PUBACK, PINGREQ and DISCONNECT as mqtt-packet does', () => {
    expect(encodePuback(65535)).toEqual(generate({ cmd: 'puback', messageId: 65535 }));
    expect(encodePuback(1)).toEqual(generate({ cmd: 'puback', messageId: 1 }));
    expect(PINGREQ).toEqual(generate({ cmd: 'pingreq' }));
    expect(DISCONNECT).toEqual(generate({ cmd: 'disconnect' }));
  });

  it('build a clean-session MQTT 3.1.1 CONNECT', () => {
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    const packets: mqttPacket.Packet[] = [];
    parser.on('packet', (p) => packets.push(p));
    parser.parse(encodeConnect({ clientId: 'dw-0001', keepalive: 60 }));
    expect(packets[0]).toMatchObject({
      cmd: 'connect',
      clientId: 'dw-0001',
      keepalive: 60,
      clean: true,
      protocolVersion: 4,
      protocolId: 'MQTT',
    });
  });

  it('fill topic templates', () => {
    expect(topicFor('devices/{id}/telemetry', 'dw-7')).toBe('devices/dw-7/telemetry');
    expect(topicFor('$rampart/devices/{id}/shadow/{id}', 'a')).toBe('$rampart/devices/a/shadow/a');
  });
});

describe('FrameReader', () => {
  const stream = Buffer.concat([
    generate({ cmd: 'connack', returnCode: 0, sessionPresent: false }),
    generate({ cmd: 'puback', messageId: 7 }),
    generate({ cmd: 'suback', messageId: 9, granted: [1, 128] }),
    generate({
      cmd: 'publish',
      topic: 'devices/dw-1/commands',
      payload: Buffer.alloc(300, 1),
      qos: 1,
      messageId: 513,
      retain: false,
      dup: false,
    }),
    generate({ cmd: 'pingresp' }),
  ]);

  function frames(chunks: Buffer[]): Frame[] {
    const reader = new FrameReader();
    const out: Frame[] = [];
    for (const c of chunks) reader.push(c, (f) => out.push({ ...f, body: Buffer.from(f.body) }));
    return out;
  }

  function check(out: Frame[]): void {
    expect(out.map((f) => f.type)).toEqual([
      PACKET.connack,
      PACKET.puback,
      PACKET.suback,
      PACKET.publish,
      PACKET.pingresp,
    ]);
    expect(packetIdOf(out[1]!)).toBe(7);
    expect(packetIdOf(out[2]!)).toBe(9);
    expect(subackCodes(out[2]!)).toEqual([1, 128]);
    expect(decodePublish(out[3]!)).toEqual({
      topic: 'devices/dw-1/commands',
      qos: 1,
      retain: false,
      packetId: 513,
      payload: Buffer.alloc(300, 1),
    });
  }

  it('splits a stream arriving in one chunk', () => check(frames([stream])));

  it('splits a stream arriving byte by byte', () => check(frames([...stream].map((b) => Buffer.from([b])))));

  it('splits a stream cut at every possible place', () => {
    for (let cut = 1; cut < stream.length; cut++)
      check(frames([stream.subarray(0, cut), stream.subarray(cut)]));
  });

  it('refuses a packet above its limit and a malformed length', () => {
    const reader = new FrameReader(100);
    const big = generate({
      cmd: 'publish',
      topic: 't',
      payload: Buffer.alloc(200),
      qos: 0,
      retain: false,
      dup: false,
    });
    expect(() => reader.push(big.subarray(0, 4), () => {})).toThrow(/exceeds 100/);
    expect(() => new FrameReader().push(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]), () => {})).toThrow(
      /malformed/,
    );
  });
});
