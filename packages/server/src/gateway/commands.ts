import { randomUUID } from 'node:crypto';
import {
  COMMAND_RESPONSE_TOPIC,
  commandTopics,
  type CommandRecord,
  type CommandStatus,
} from '@rampart/shared/command';
import type { Logger } from '@rampart/shared/logging';
import { RampartError, notFound } from '../errors.js';
import type { Executor, Storage } from '../storage/index.js';
import type { DeviceCommandsTable } from '../storage/schema.js';
import { isoNow } from '../time.js';
import type { GatewaySession } from './broker.js';

export interface CommandTransport {
  isConnected(deviceId: string): boolean;
  publish(topic: string, payload: string): Promise<void>;
}

function toRecord(row: DeviceCommandsTable): CommandRecord {
  return {
    id: row.id,
    deviceId: row.device_id,
    name: row.name,
    args: JSON.parse(row.args) as Record<string, unknown>,
    status: row.status as CommandStatus,
    timeoutMs: row.timeout_ms,
    result: row.result === null ? null : (JSON.parse(row.result) as unknown),
    error: row.error,
    createdBy: row.created_by,
    createdAt: row.created_at,
    completedAt: row.completed_at,
  };
}

/**
 * Commands to devices: a request published on the device's reserved topic with a fresh id, a
 * response matched by that id (only from the device it was sent to), and a time-out. Every command
 * and its outcome is recorded; `send` returns the record at once and a promise of its outcome.
 */
export class CommandService {
  private readonly pending = new Map<
    string,
    { resolve: (r: CommandRecord) => void; timer: NodeJS.Timeout }
  >();

  constructor(
    private readonly storage: Storage,
    private readonly transport: CommandTransport,
    private readonly logger: Logger,
  ) {}

  async send(input: {
    deviceId: string;
    name: string;
    args: Record<string, unknown>;
    timeoutMs: number;
    createdBy: string;
    db?: Executor;
  }): Promise<{ record: CommandRecord; outcome: Promise<CommandRecord> }> {
    const db = input.db ?? this.storage.db;
    const device = await db
      .selectFrom('devices')
      .select('id')
      .where('id', '=', input.deviceId)
      .executeTakeFirst();
    if (!device) throw notFound(`device ${input.deviceId}`);
    if (!this.transport.isConnected(input.deviceId))
      throw new RampartError(
        'CONFLICT',
        `device ${input.deviceId} is not connected; commands are not queued`,
      );
    const row: DeviceCommandsTable = {
      id: randomUUID(),
      device_id: input.deviceId,
      name: input.name,
      args: JSON.stringify(input.args),
      status: 'sent',
      timeout_ms: input.timeoutMs,
      result: null,
      error: null,
      created_by: input.createdBy,
      created_at: isoNow(),
      completed_at: null,
    };
    await db.insertInto('device_commands').values(row).execute();
    const outcome = new Promise<CommandRecord>((resolve) => {
      const timer = setTimeout(
        () => void this.finish(row.id, 'timed-out', null, `no response within ${input.timeoutMs} ms`),
        input.timeoutMs,
      );
      timer.unref();
      this.pending.set(row.id, { resolve, timer });
    });
    await this.transport.publish(
      commandTopics(input.deviceId, row.id).request,
      JSON.stringify({
        id: row.id,
        name: row.name,
        args: input.args,
        issuedAt: row.created_at,
        timeoutMs: row.timeout_ms,
      }),
    );
    return { record: toRecord(row), outcome };
  }

  /** A device published on its command response topic. */
  responded(session: GatewaySession, topic: string, payload: Buffer): void {
    const m = COMMAND_RESPONSE_TOPIC.exec(topic);
    if (!m || m[1] !== session.deviceId) return;
    const id = m[2]!;
    let body: { status?: unknown; result?: unknown; error?: unknown };
    try {
      body = JSON.parse(payload.toString('utf8')) as typeof body;
    } catch {
      body = { status: 'failed', error: 'the response was not JSON' };
    }
    const status: CommandStatus = body?.status === 'succeeded' ? 'succeeded' : 'failed';
    const error =
      status === 'failed' ? (typeof body?.error === 'string' ? body.error.slice(0, 1000) : 'failed') : null;
    void this.finish(id, status, body?.result ?? null, error, session.deviceId).catch((err: unknown) =>
      this.logger.error({ err, command: id }, 'recording a command response failed'),
    );
  }

  private async finish(
    id: string,
    status: CommandStatus,
    result: unknown,
    error: string | null,
    deviceId?: string,
  ): Promise<void> {
    let q = this.storage.db
      .updateTable('device_commands')
      .set({
        status,
        result: result === null || result === undefined ? null : JSON.stringify(result).slice(0, 64 * 1024),
        error,
        completed_at: isoNow(),
      })
      .where('id', '=', id)
      .where('status', '=', 'sent');
    if (deviceId) q = q.where('device_id', '=', deviceId);
    const r = await q.executeTakeFirst();
    if (Number(r.numUpdatedRows) === 0) return; // unknown, another device's, or already finished
    const waiting = this.pending.get(id);
    if (waiting) {
      clearTimeout(waiting.timer);
      this.pending.delete(id);
      const row = await this.storage.db
        .selectFrom('device_commands')
        .selectAll()
        .where('id', '=', id)
        .executeTakeFirstOrThrow();
      waiting.resolve(toRecord(row));
    }
  }

  async list(db: Executor, deviceId: string, limit: number): Promise<CommandRecord[]> {
    const rows = await db
      .selectFrom('device_commands')
      .selectAll()
      .where('device_id', '=', deviceId)
      .orderBy('created_at', 'desc')
      .limit(limit)
      .execute();
    return rows.map(toRecord);
  }

  async get(db: Executor, deviceId: string, id: string): Promise<CommandRecord> {
    const row = await db
      .selectFrom('device_commands')
      .selectAll()
      .where('id', '=', id)
      .where('device_id', '=', deviceId)
      .executeTakeFirst();
    if (!row) throw notFound(`command ${id} of device ${deviceId}`);
    return toRecord(row);
  }

  stop(): void {
    for (const p of this.pending.values()) clearTimeout(p.timer);
    this.pending.clear();
  }
}
