import { describe, expect, it } from 'vitest';
import { AddressRotation, addressesNeeded, loopbackAddresses, parsePortRange, portsIn } from './addresses.js';

describe('ephemeral port range', () => {
  it('parses the /proc format', () => {
    expect(parsePortRange('32768\t60999\n')).toEqual({ low: 32768, high: 60999 });
    expect(portsIn(parsePortRange('32768 60999'))).toBe(28_232);
  });

  it('refuses what is not a range', () => {
    expect(() => parsePortRange('60999 32768')).toThrow(/not a port range/);
    expect(() => parsePortRange('1 70000')).toThrow(/not a port range/);
    expect(() => parsePortRange('')).toThrow(/not a port range/);
  });

  it('counts the addresses a number of connections needs', () => {
    const range = { low: 32768, high: 60999 };
    expect(addressesNeeded(1, range)).toBe(1);
    expect(addressesNeeded(14_116, range)).toBe(1);
    expect(addressesNeeded(14_117, range)).toBe(2);
    expect(addressesNeeded(50_000, range)).toBe(4);
    expect(addressesNeeded(50_000, range, 1)).toBe(2);
    expect(() => addressesNeeded(10, range, 0)).toThrow();
  });
});

describe('loopback addresses', () => {
  it('counts up from the first, skipping .0 and .255', () => {
    expect(loopbackAddresses(3)).toEqual(['127.1.0.1', '127.1.0.2', '127.1.0.3']);
    expect(loopbackAddresses(3, '127.1.0.254')).toEqual(['127.1.0.254', '127.1.1.1', '127.1.1.2']);
    expect(loopbackAddresses(2, '127.0.255.254')).toEqual(['127.0.255.254', '127.1.0.1']);
  });

  it('are distinct', () => {
    const a = loopbackAddresses(1000);
    expect(new Set(a).size).toBe(1000);
    expect(a.every((x) => x.startsWith('127.'))).toBe(true);
  });

  it('stay inside 127.0.0.0/8', () => {
    expect(() => loopbackAddresses(3, '127.255.255.253')).toThrow(/leave 127/);
    expect(() => loopbackAddresses(1, '10.0.0.1')).toThrow(/leave 127/);
    expect(() => loopbackAddresses(1, '127.0.0')).toThrow(/not an IPv4/);
  });
});

describe('AddressRotation', () => {
  it('hands addresses out round-robin', () => {
    const r = new AddressRotation(['a', 'b', 'c']);
    expect(Array.from({ length: 7 }, () => r.take())).toEqual(['a', 'b', 'c', 'a', 'b', 'c', 'a']);
    expect([...r.handedOut()]).toEqual([
      ['a', 3],
      ['b', 2],
      ['c', 2],
    ]);
  });

  it('leaves the choice to the kernel when empty', () => {
    expect(new AddressRotation([]).take()).toBeUndefined();
  });

  it('splits addresses into disjoint shares covering them all', () => {
    const all = loopbackAddresses(10);
    const parts = AddressRotation.split(all, 3);
    expect(parts.map((p) => p.length)).toEqual([4, 3, 3]);
    expect(parts.flat().sort()).toEqual([...all].sort());
    expect(AddressRotation.split([], 2)).toEqual([[], []]);
  });
});
