import { readFileSync } from 'node:fs';

/**
 * Source addresses for many client connections to one broker. A client socket bound to an address
 * (`localAddress`) takes its port from that address's ephemeral range, and a port stays taken while
 * the connection is open and for a minute in TIME_WAIT after it closes. One address therefore holds
 * at most `ip_local_port_range` connections (28,232 on Linux by default); every address of
 * 127.0.0.0/8 is a loopback address, so spreading connections over several lifts the limit.
 */

/** An ephemeral port range, as in /proc/sys/net/ipv4/ip_local_port_range. */
export interface PortRange {
  low: number;
  high: number;
}

export const DEFAULT_PORT_RANGE: PortRange = { low: 32768, high: 60999 };

/** Parse "32768\t60999" (the /proc file's format). */
export function parsePortRange(text: string): PortRange {
  const m = /^\s*(\d+)\s+(\d+)\s*$/.exec(text);
  if (!m) throw new Error(`not a port range: ${JSON.stringify(text)}`);
  const low = Number(m[1]);
  const high = Number(m[2]);
  if (low < 1 || high > 65535 || high < low) throw new Error(`not a port range: ${JSON.stringify(text)}`);
  return { low, high };
}

/** This machine's ephemeral port range (Linux), or the Linux default where it cannot be read. */
export function localPortRange(file = '/proc/sys/net/ipv4/ip_local_port_range'): PortRange {
  try {
    return parsePortRange(readFileSync(file, 'utf8'));
  } catch {
    return DEFAULT_PORT_RANGE;
  }
}

export const portsIn = (range: PortRange): number => range.high - range.low + 1;

/**
 * How many source addresses `connections` need when each address may use `share` of the port
 * range (the rest is left for TIME_WAIT and other clients). At least one.
 */
export function addressesNeeded(connections: number, range: PortRange, share = 0.5): number {
  if (!(share > 0 && share <= 1)) throw new Error('share must be in (0, 1]');
  return Math.max(1, Math.ceil(connections / Math.floor(portsIn(range) * share)));
}

function ipv4ToInt(address: string): number {
  const parts = address.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255))
    throw new Error(`not an IPv4 address: ${address}`);
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

function intToIpv4(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

/**
 * `count` loopback addresses from `first` on (127.1.0.1, 127.1.0.2, …), skipping those ending in
 * .0 and .255. Throws if the run would leave 127.0.0.0/8.
 */
export function loopbackAddresses(count: number, first = '127.1.0.1'): string[] {
  const out: string[] = [];
  let n = ipv4ToInt(first);
  while (out.length < count) {
    if (n >>> 24 !== 127) throw new Error(`${count} loopback addresses from ${first} leave 127.0.0.0/8`);
    const last = n & 255;
    if (last !== 0 && last !== 255) out.push(intToIpv4(n));
    n++;
  }
  return out;
}

/**
 * Hands out source addresses round-robin, so that connections spread evenly over them. `split`
 * gives each of several processes its own disjoint share (the kernel's port budget is per address,
 * for every process alike).
 */
export class AddressRotation {
  private next = 0;
  private readonly counts: number[];

  constructor(readonly addresses: readonly string[]) {
    this.counts = addresses.map(() => 0);
  }

  /** The next address, or undefined when the rotation is empty (let the kernel choose). */
  take(): string | undefined {
    if (this.addresses.length === 0) return undefined;
    const i = this.next;
    this.next = (this.next + 1) % this.addresses.length;
    this.counts[i]!++;
    return this.addresses[i];
  }

  /** Connections handed out per address so far. */
  handedOut(): ReadonlyMap<string, number> {
    return new Map(this.addresses.map((a, i) => [a, this.counts[i]!]));
  }

  /** Split the addresses into `parts` disjoint lists (address k goes to part k mod parts). */
  static split(addresses: readonly string[], parts: number): string[][] {
    const out: string[][] = Array.from({ length: parts }, () => []);
    addresses.forEach((a, k) => out[k % parts]!.push(a));
    return out;
  }
}
