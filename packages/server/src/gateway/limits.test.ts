import { describe, expect, it } from 'vitest';
import { DEFAULT_LIMITS, MqttFrameGuard, SessionBudget } from './limits.js';

function frames(...packets: Buffer[]): Buffer {
  return Buffer.concat(packets);
}

function packet(type: number, bodyLength: number): Buffer {
  const len: number[] = [];
  let n = bodyLength;
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    len.push(b);
  } while (n > 0);
  return Buffer.concat([Buffer.from([type, ...len]), Buffer.alloc(bodyLength)]);
}

describe('MQTT frame guard', () => {
  it('lets packets within the limit through, however the bytes are split', () => {
    const seen: string[] = [];
    const guard = new MqttFrameGuard(1000, (r) => seen.push(r));
    const data = frames(
      packet(0x10, 20),
      packet(0x30, 900),
      packet(0xc0, 0),
      packet(0x30, 127),
      packet(0x30, 128),
    );
    for (let i = 0; i < data.length; i += 7) guard.feed(data.subarray(i, i + 7));
    expect(seen).toEqual([]);
  });

  it('stops at the header of an oversized packet, before its body arrives', () => {
    const seen: string[] = [];
    const guard = new MqttFrameGuard(1000, (r) => seen.push(r));
    guard.feed(packet(0x30, 5000).subarray(0, 4));
    expect(seen).toEqual(['packet of 5003 bytes exceeds the limit of 1000']);
  });

  it('refuses a remaining-length field longer than four bytes', () => {
    const seen: string[] = [];
    new MqttFrameGuard(1000, (r) => seen.push(r)).feed(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]));
    expect(seen[0]).toMatch(/malformed packet/);
  });
});

describe('session budget', () => {
  it('counts publishes and bytes per second and checks topic length and depth', () => {
    const b = new SessionBudget({ ...DEFAULT_LIMITS, publishesPerSecond: 3, bytesPerSecond: 100 });
    expect(b.publish('a/b', 10, 0)).toBeNull();
    expect(b.publish('a/b', 10, 10)).toBeNull();
    expect(b.publish('a/b', 10, 20)).toBeNull();
    expect(b.publish('a/b', 10, 30)).toMatch(/more than 3 publishes/);
    expect(b.publish('a/b', 10, 1030)).toBeNull();
    expect(b.publish('a/b', 200, 1040)).toMatch(/more than 100 bytes/);
    expect(b.topic('x'.repeat(300))).toMatch(/exceeds 256/);
    expect(b.topic(Array(20).fill('a').join('/'))).toMatch(/20 levels exceeds 16/);
  });
});
