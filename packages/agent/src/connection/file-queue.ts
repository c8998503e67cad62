import {
  closeSync,
  existsSync,
  fsync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import type { Logger } from '@rampart/shared/logging';
import { AgentError } from '../errors.js';
import { writeFileAtomic } from '../identity/files.js';
import {
  DEFAULT_QUEUE_BOUNDS,
  QueueState,
  type MessageQueue,
  type OutboundMessage,
  type QueueBounds,
  type QueuedMessage,
} from './queue.js';

/**
 * Journal format (all integers big-endian):
 *
 *   header   "RAMPARTQ" (8 bytes) u32 format version (1)
 *   record   u32 body length | u32 CRC-32 of the body | body
 *   body     u8 kind = 1 (message) | u8 flags (bit 0 retain, bit 1 QoS 1) | u64 position
 *              | u16 topic length | topic (UTF-8) | payload
 *            u8 kind = 2 (removed: delivered or dropped) | u64 position
 *
 * Records are only ever appended. A record cut short by a crash, or damaged, fails its length or
 * checksum: it is skipped and reading resumes at the next record whose checksum holds. Compaction
 * rewrites the live messages into a new file and renames it over the journal (atomic).
 */
const MAGIC = Buffer.from('RAMPARTQ', 'latin1');
const FORMAT_VERSION = 1;
const HEADER_BYTES = MAGIC.length + 4;
const RECORD_HEADER_BYTES = 8;
const KIND_MESSAGE = 1;
const KIND_REMOVED = 2;
const MESSAGE_FIXED_BYTES = 1 + 1 + 8 + 2;
const REMOVED_BYTES = 1 + 8;
const FILE_MODE = 0o600;
/** The largest record body: a topic of 65535 bytes and a payload as large as queue.maxBytes allows. */
export const MAX_QUEUE_BYTES = 1024 * 1024 * 1024;
const MAX_BODY = MESSAGE_FIXED_BYTES + 65_535 + MAX_QUEUE_BYTES;
/**
 * Looking for the next valid record after damage costs a checksum per plausible position; past
 * this many checksummed bytes the rest of the journal is given up as damaged.
 */
const RESYNC_BUDGET_BYTES = 64 * 1024 * 1024;

export interface FileQueueOptions extends Partial<QueueBounds> {
  /** Appends are flushed to disk (fsync) at most this long after they are written. Default 200 ms. */
  syncIntervalMs?: number;
  /** Compact when at least this many bytes of the journal are dead records. Default 1 MiB. */
  compactAfterBytes?: number;
  log?: Logger;
}

/** What reading the journal found when the queue was opened. */
export interface QueueRecovery {
  /** Messages recovered, still to be delivered. */
  messages: number;
  /** Bytes of the journal that were not valid records (a torn last write, damage) and were skipped. */
  skippedBytes: number;
  /** Messages dropped at opening because the bounds are now smaller than what was kept. */
  dropped: number;
  /** The journal could not be read at all (unknown format) and was set aside under this name. */
  setAside: string | null;
}

interface ParsedJournal {
  messages: QueuedMessage[];
  skippedBytes: number;
}

function encodeMessage(m: QueuedMessage): Buffer {
  const topic = Buffer.from(m.topic, 'utf8');
  const body = Buffer.alloc(MESSAGE_FIXED_BYTES + topic.length + m.payload.length);
  body.writeUInt8(KIND_MESSAGE, 0);
  body.writeUInt8((m.retain ? 1 : 0) | (m.qos === 1 ? 2 : 0), 1);
  body.writeBigUInt64BE(BigInt(m.seq), 2);
  body.writeUInt16BE(topic.length, 10);
  topic.copy(body, 12);
  m.payload.copy(body, 12 + topic.length);
  return frame(body);
}

function encodeRemoved(seq: number): Buffer {
  const body = Buffer.alloc(REMOVED_BYTES);
  body.writeUInt8(KIND_REMOVED, 0);
  body.writeBigUInt64BE(BigInt(seq), 1);
  return frame(body);
}

function frame(body: Buffer): Buffer {
  const head = Buffer.alloc(RECORD_HEADER_BYTES);
  head.writeUInt32BE(body.length, 0);
  head.writeUInt32BE(crc32(body), 4);
  return Buffer.concat([head, body]);
}

function header(): Buffer {
  const h = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(h, 0);
  h.writeUInt32BE(FORMAT_VERSION, MAGIC.length);
  return h;
}

type Record =
  { kind: 'message'; message: QueuedMessage; next: number } | { kind: 'removed'; seq: number; next: number };

/** The body length of a record that could start at `offset` (cheap checks, no checksum), or 0. */
function plausibleAt(buf: Buffer, offset: number): number {
  if (offset + RECORD_HEADER_BYTES + 1 > buf.length) return 0;
  const length = buf.readUInt32BE(offset);
  if (length < 1 || length > MAX_BODY || offset + RECORD_HEADER_BYTES + length > buf.length) return 0;
  const body = offset + RECORD_HEADER_BYTES;
  const kind = buf.readUInt8(body);
  if (kind === KIND_REMOVED) return length === REMOVED_BYTES ? length : 0;
  if (kind !== KIND_MESSAGE || length < MESSAGE_FIXED_BYTES || buf.readUInt8(body + 1) > 3) return 0;
  return MESSAGE_FIXED_BYTES + buf.readUInt16BE(body + 10) <= length ? length : 0;
}

/** The record at `offset`, or null when there is no valid record there. */
function recordAt(buf: Buffer, offset: number): Record | null {
  const length = plausibleAt(buf, offset);
  if (!length) return null;
  const body = buf.subarray(offset + RECORD_HEADER_BYTES, offset + RECORD_HEADER_BYTES + length);
  if (crc32(body) !== buf.readUInt32BE(offset + 4)) return null;
  const next = offset + RECORD_HEADER_BYTES + length;
  if (body.readUInt8(0) === KIND_REMOVED)
    return { kind: 'removed', seq: Number(body.readBigUInt64BE(1)), next };
  const flags = body.readUInt8(1);
  const topicLength = body.readUInt16BE(10);
  return {
    kind: 'message',
    message: {
      seq: Number(body.readBigUInt64BE(2)),
      retain: (flags & 1) === 1,
      qos: (flags & 2) === 2 ? 1 : 0,
      topic: body.toString('utf8', 12, 12 + topicLength),
      // A copy, so that the file's buffer can be released.
      payload: Buffer.from(body.subarray(12 + topicLength)),
    },
    next,
  };
}

/** Read every valid record of a journal; damaged stretches are skipped, never fatal. */
function parseJournal(buf: Buffer): ParsedJournal {
  const live = new Map<number, QueuedMessage>();
  let skippedBytes = 0;
  let budget = RESYNC_BUDGET_BYTES;
  let offset = HEADER_BYTES;
  while (offset < buf.length) {
    const r = recordAt(buf, offset);
    if (!r) {
      // Look for the next record whose structure and checksum hold; a CRC-32 match by chance is
      // about one in four billion per plausible position.
      let resume = offset + 1;
      for (; resume < buf.length; resume++) {
        const cost = plausibleAt(buf, resume);
        if (!cost) continue;
        budget -= cost;
        if (budget < 0) {
          resume = buf.length;
          break;
        }
        if (recordAt(buf, resume)) break;
      }
      skippedBytes += resume - offset;
      offset = resume;
      continue;
    }
    if (r.kind === 'message') live.set(r.message.seq, r.message);
    else live.delete(r.seq);
    offset = r.next;
  }
  return { messages: [...live.values()].sort((a, b) => a.seq - b.seq), skippedBytes };
}

/**
 * The offline queue on disk, in `<dataDir>/queue/`: an append-only journal (`journal`, mode 0600)
 * of messages and of removals (delivered or dropped), flushed to disk in batches and compacted when
 * dead records pile up. A lock file keeps a second agent process away from the same queue. Reopening
 * after a crash or power cut recovers every message whose record reached the disk, in order; a torn
 * or damaged record is skipped and logged. Messages acknowledged just before a crash may be sent
 * again (at least once).
 */
export class FileQueue implements MessageQueue {
  readonly dir: string;
  readonly file: string;
  readonly recovery: QueueRecovery;
  private readonly state: QueueState;
  private readonly lockFile: string;
  private readonly syncIntervalMs: number;
  private readonly compactAfterBytes: number;
  private readonly log: Logger | undefined;
  private fd: number | null = null;
  /** Bumped whenever the journal is replaced, so that a late fsync of the old file is ignored. */
  private generation = 0;
  private deadBytes = 0;
  private fileBytes = 0;
  private syncTimer: NodeJS.Timeout | null = null;
  private syncing: Promise<void> | null = null;
  private dirty = false;
  /** The journal could not be written: messages are kept in memory and the next compaction retries. */
  private writeFailed = false;
  private closed = false;

  private constructor(dir: string, options: FileQueueOptions) {
    this.dir = dir;
    this.file = join(dir, 'journal');
    this.lockFile = join(dir, 'lock');
    this.state = new QueueState({
      maxMessages: options.maxMessages ?? DEFAULT_QUEUE_BOUNDS.maxMessages,
      maxBytes: options.maxBytes ?? DEFAULT_QUEUE_BOUNDS.maxBytes,
    });
    if (this.state.bounds.maxBytes > MAX_QUEUE_BYTES)
      throw new AgentError('CONFIG_INVALID', `queue.maxBytes may be at most ${MAX_QUEUE_BYTES} (1 GiB)`);
    this.syncIntervalMs = options.syncIntervalMs ?? 200;
    this.compactAfterBytes = options.compactAfterBytes ?? 1024 * 1024;
    this.log = options.log;
    this.recovery = { messages: 0, skippedBytes: 0, dropped: 0, setAside: null };
  }

  /** Open (or create) the queue in `dir`, recovering what an earlier run left. */
  static open(dir: string, options: FileQueueOptions = {}): FileQueue {
    const q = new FileQueue(dir, options);
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new AgentError(
        'QUEUE_UNAVAILABLE',
        `cannot create the offline queue directory ${dir}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
        { cause: err },
      );
    }
    q.lock();
    try {
      q.recover();
    } catch (err) {
      q.unlock();
      throw err;
    }
    return q;
  }

  private lock(): void {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(this.lockFile, 'wx', FILE_MODE);
        writeSync(fd, `${process.pid}\n`);
        closeSync(fd);
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST')
          throw new AgentError(
            'QUEUE_UNAVAILABLE',
            `cannot lock the offline queue ${this.lockFile}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
            { cause: err },
          );
      }
      const pid = Number.parseInt(readFileSync(this.lockFile, 'utf8'), 10);
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && processAlive(pid))
        throw new AgentError(
          'QUEUE_UNAVAILABLE',
          `the offline queue ${this.dir} is in use by process ${pid}; run one agent per data directory (stop the other one first)`,
        );
      // A lock left by a process that no longer runs (a crash): take it over.
      rmSync(this.lockFile, { force: true });
    }
    throw new AgentError('QUEUE_UNAVAILABLE', `cannot lock the offline queue ${this.lockFile}`);
  }

  private unlock(): void {
    rmSync(this.lockFile, { force: true });
  }

  private recover(): void {
    let parsed: ParsedJournal = { messages: [], skippedBytes: 0 };
    if (existsSync(this.file)) {
      const buf = readFileSync(this.file);
      if (buf.length >= HEADER_BYTES && buf.subarray(0, MAGIC.length).equals(MAGIC)) {
        parsed = parseJournal(buf);
      } else if (buf.length > 0) {
        // Not a journal this agent can read (another format, or the header itself is damaged):
        // keep it for inspection and start afresh rather than refuse to run.
        const aside = `${this.file}.unreadable-${Date.now()}`;
        renameSync(this.file, aside);
        this.recovery.setAside = aside;
      }
    }
    for (const m of parsed.messages) {
      try {
        this.state.add(m, m.seq);
      } catch {
        this.recovery.dropped += 1; // larger than the bounds allow now
      }
    }
    this.recovery.dropped += this.state.overflow().length;
    this.state.droppedTotal = 0;
    this.recovery.messages = this.state.size;
    this.recovery.skippedBytes = parsed.skippedBytes;
    // Start from a clean, compact journal: this also cuts off a torn tail.
    this.compact();
    if (this.recovery.setAside)
      this.log?.error(
        { file: this.recovery.setAside },
        `the offline queue journal was not in a readable format; it was set aside as ${this.recovery.setAside} and the queue starts empty`,
      );
    if (this.recovery.skippedBytes > 0)
      this.log?.warn(
        { skippedBytes: this.recovery.skippedBytes, recovered: this.recovery.messages },
        `the offline queue had ${this.recovery.skippedBytes} bytes of torn or damaged records (an interrupted write); they were skipped`,
      );
    if (this.recovery.dropped > 0)
      this.log?.warn(
        { dropped: this.recovery.dropped },
        `dropped the ${this.recovery.dropped} oldest queued messages to fit queue.maxMessages / queue.maxBytes`,
      );
  }

  push(message: OutboundMessage): { message: QueuedMessage; dropped: QueuedMessage[] } {
    this.ensureOpen();
    const queued = this.state.add(message);
    this.append(encodeMessage(queued));
    const dropped = this.state.overflow();
    for (const d of dropped) this.removed(d);
    this.maybeCompact();
    return { message: queued, dropped };
  }

  peek(limit: number): QueuedMessage[] {
    return this.state.peek(limit);
  }

  ack(seq: number): boolean {
    if (this.closed) return false;
    const message = this.state.remove(seq);
    if (!message) return false;
    this.removed(message);
    this.maybeCompact();
    return true;
  }

  get size(): number {
    return this.state.size;
  }

  get bytes(): number {
    return this.state.bytes;
  }

  get dropped(): number {
    return this.state.droppedTotal;
  }

  async flush(): Promise<void> {
    if (this.closed) return;
    if (this.writeFailed) this.compact();
    this.clearSyncTimer();
    if (this.syncing) await this.syncing;
    if (this.dirty && this.fd !== null) {
      this.dirty = false;
      try {
        fsyncSync(this.fd);
      } catch (err) {
        this.failedWrite(err);
      }
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.flush();
    // Leave a compact journal behind: the next start reads less.
    if (this.deadBytes > 0) this.compact();
    this.closed = true;
    this.clearSyncTimer();
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
    this.unlock();
  }

  private ensureOpen(): void {
    if (this.closed) throw new AgentError('STOPPED', 'the offline queue is closed');
  }

  private removed(message: QueuedMessage): void {
    // The message's own record and this one are dead from now on.
    const record = encodeRemoved(message.seq);
    this.deadBytes += RECORD_HEADER_BYTES + MESSAGE_FIXED_BYTES + Buffer.byteLength(message.topic);
    this.deadBytes += message.payload.length + record.length;
    this.append(record);
  }

  private append(record: Buffer): void {
    if (this.writeFailed || this.fd === null) return;
    try {
      writeSync(this.fd, record);
      this.fileBytes += record.length;
      this.dirty = true;
      this.scheduleSync();
    } catch (err) {
      this.failedWrite(err);
    }
  }

  private failedWrite(err: unknown): void {
    if (!this.writeFailed)
      this.log?.error(
        { err, file: this.file },
        `cannot write the offline queue (${(err as NodeJS.ErrnoException).code ?? String(err)}): queued messages are kept in memory only until it can be written again; check the free space on ${this.dir}`,
      );
    this.writeFailed = true;
  }

  private scheduleSync(): void {
    if (this.syncTimer || this.closed) return;
    this.syncTimer = setTimeout(() => {
      this.syncTimer = null;
      if (!this.dirty || this.fd === null) return;
      this.dirty = false;
      const fd = this.fd;
      const generation = this.generation;
      this.syncing = new Promise<void>((resolve) =>
        fsync(fd, (err) => {
          if (err && !this.closed && generation === this.generation) this.failedWrite(err);
          resolve();
        }),
      ).finally(() => (this.syncing = null));
    }, this.syncIntervalMs);
    this.syncTimer.unref();
  }

  private clearSyncTimer(): void {
    if (this.syncTimer) clearTimeout(this.syncTimer);
    this.syncTimer = null;
  }

  private maybeCompact(): void {
    if (this.deadBytes >= this.compactAfterBytes && this.deadBytes * 2 >= this.fileBytes) this.compact();
  }

  /** Rewrite the journal with only the live messages, atomically. */
  private compact(): void {
    const records = [header(), ...this.state.all().map(encodeMessage)];
    const content = Buffer.concat(records);
    try {
      this.generation += 1;
      if (this.fd !== null) closeSync(this.fd);
      this.fd = null;
      writeFileAtomic(this.file, content, FILE_MODE);
      this.fd = openSync(this.file, 'a', FILE_MODE);
      this.fileBytes = statSync(this.file).size;
      this.deadBytes = 0;
      this.dirty = false;
      if (this.writeFailed) this.log?.info({ file: this.file }, 'the offline queue can be written again');
      this.writeFailed = false;
    } catch (err) {
      this.failedWrite(err);
    }
  }
}

/** Whether a process with this id runs (one of another user counts too). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
