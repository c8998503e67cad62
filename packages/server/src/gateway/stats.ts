import type { Logger } from '@rampart/shared/logging';
import type { Storage } from '../storage/index.js';
import type { DeviceConnectionStatsTable } from '../storage/schema.js';
import { isoNow } from '../time.js';

type Counter =
  | 'connect_attempts'
  | 'connects'
  | 'disconnects'
  | 'messages_in'
  | 'messages_out'
  | 'bytes_in'
  | 'bytes_out'
  | 'authorization_failures';
const COUNTERS: Counter[] = [
  'connect_attempts',
  'connects',
  'disconnects',
  'messages_in',
  'messages_out',
  'bytes_in',
  'bytes_out',
  'authorization_failures',
];

interface Pending {
  counts: Record<Counter, number>;
  last: Partial<
    Pick<
      DeviceConnectionStatsTable,
      'last_source_address' | 'last_connected_at' | 'last_disconnected_at' | 'last_disconnect_reason'
    >
  >;
}

export interface SecurityEvent {
  time: string;
  kind: string;
  device_id: string | null;
  source_address: string | null;
  reason: string;
}

export type DeviceConnectionStats = Omit<DeviceConnectionStatsTable, 'updated_at'> & {
  updated_at: string | null;
};

/**
 * Per-device connection statistics and the gateway's security events. Counting happens in memory
 * on the message path; a flush every few seconds adds the increments to the stored totals and
 * writes the buffered events (bounded: a flood of refusals cannot exhaust memory; what was dropped
 * is counted and logged). The fleet defender reads both.
 */
export class GatewayStats {
  private pending = new Map<string, Pending>();
  private events: SecurityEvent[] = [];
  private dropped = 0;
  private timer: NodeJS.Timeout | null = null;
  private static readonly MAX_EVENTS = 10_000;

  constructor(
    private readonly storage: Storage,
    private readonly logger: Logger,
  ) {}

  private entry(deviceId: string): Pending {
    let p = this.pending.get(deviceId);
    if (!p) {
      p = { counts: Object.fromEntries(COUNTERS.map((c) => [c, 0])) as Record<Counter, number>, last: {} };
      this.pending.set(deviceId, p);
    }
    return p;
  }

  count(deviceId: string, counter: Counter, by = 1): void {
    this.entry(deviceId).counts[counter] += by;
  }

  connected(deviceId: string, sourceAddress: string): void {
    const e = this.entry(deviceId);
    e.counts.connects++;
    e.last.last_source_address = sourceAddress;
    e.last.last_connected_at = isoNow();
  }

  disconnected(deviceId: string, reason: string): void {
    const e = this.entry(deviceId);
    e.counts.disconnects++;
    e.last.last_disconnected_at = isoNow();
    e.last.last_disconnect_reason = reason.slice(0, 200);
  }

  event(kind: string, deviceId: string | null, sourceAddress: string | null, reason: string): void {
    if (this.events.length >= GatewayStats.MAX_EVENTS) {
      this.dropped++;
      return;
    }
    this.events.push({
      time: isoNow(),
      kind,
      device_id: deviceId,
      source_address: sourceAddress,
      reason: reason.slice(0, 500),
    });
  }

  async flush(): Promise<void> {
    const pending = this.pending;
    const events = this.events;
    const dropped = this.dropped;
    this.pending = new Map();
    this.events = [];
    this.dropped = 0;
    if (dropped)
      this.logger.warn(
        { event: 'gateway.events.dropped', dropped },
        'security events dropped: more than 10,000 between flushes',
      );
    if (!pending.size && !events.length) return;
    const now = isoNow();
    await this.storage.db.transaction().execute(async (tx) => {
      for (const [deviceId, p] of pending) {
        await tx
          .insertInto('device_connection_stats')
          .values({ device_id: deviceId, ...p.counts, ...nullLast(p.last), updated_at: now })
          .onConflict((oc) =>
            oc.column('device_id').doUpdateSet((eb) => ({
              ...Object.fromEntries(
                COUNTERS.map((c) => [c, eb(`device_connection_stats.${c}`, '+', eb.ref(`excluded.${c}`))]),
              ),
              ...p.last,
              updated_at: now,
            })),
          )
          .execute();
      }
      for (let i = 0; i < events.length; i += 500)
        await tx
          .insertInto('security_events')
          .values(events.slice(i, i + 500))
          .execute();
    });
  }

  /** Stored totals plus what has not been flushed yet. */
  async get(deviceId: string): Promise<DeviceConnectionStats> {
    const row = await this.storage.db
      .selectFrom('device_connection_stats')
      .selectAll()
      .where('device_id', '=', deviceId)
      .executeTakeFirst();
    const base: DeviceConnectionStats = row
      ? { ...row, ...Object.fromEntries(COUNTERS.map((c) => [c, Number(row[c])])) }
      : {
          device_id: deviceId,
          ...(Object.fromEntries(COUNTERS.map((c) => [c, 0])) as Record<Counter, number>),
          ...nullLast({}),
          updated_at: null,
        };
    const p = this.pending.get(deviceId);
    if (!p) return base;
    for (const c of COUNTERS) base[c] += p.counts[c];
    return { ...base, ...p.last };
  }

  start(intervalMs: number): void {
    this.timer = setInterval(() => {
      this.flush().catch((err: unknown) => this.logger.error({ err }, 'writing gateway statistics failed'));
    }, intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.flush();
  }
}

function nullLast(last: Pending['last']) {
  return {
    last_source_address: last.last_source_address ?? null,
    last_connected_at: last.last_connected_at ?? null,
    last_disconnected_at: last.last_disconnected_at ?? null,
    last_disconnect_reason: last.last_disconnect_reason ?? null,
  };
}
