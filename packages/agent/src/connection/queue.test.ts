import { randomBytes } from 'node:crypto';
import {
  appendFileSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AgentError } from '../errors.js';
import { FileQueue } from './file-queue.js';
import { MemoryQueue, type MessageQueue, type OutboundMessage, type QueueBounds } from './queue.js';

const msg = (n: number, payload = `payload ${n}`, qos: 0 | 1 = 1): OutboundMessage => ({
  topic: `devices/dw-1/t/${n}`,
  payload: Buffer.from(payload),
  qos,
  retain: false,
});

const texts = (q: MessageQueue) => q.peek(Number.POSITIVE_INFINITY).map((m) => m.payload.toString());

const tmp = () => mkdtempSync(join(tmpdir(), 'agent-queue-'));

const implementations: [string, (bounds?: Partial<QueueBounds>) => MessageQueue][] = [
  ['MemoryQueue', (bounds) => new MemoryQueue(bounds)],
  ['FileQueue', (bounds) => FileQueue.open(tmp(), bounds)],
];

describe.each(implementations)('%s', (_name, make) => {
  it('keeps messages in order and removes only acknowledged ones, in any order', async () => {
    const q = make();
    const seqs = [1, 2, 3, 4, 5].map((n) => q.push(msg(n)).message.seq);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    expect(q.peek(2).map((m) => m.payload.toString())).toEqual(['payload 1', 'payload 2']);
    expect(q.ack(seqs[1]!)).toBe(true);
    expect(q.ack(seqs[3]!)).toBe(true);
    expect(q.ack(seqs[3]!)).toBe(false); // already gone
    expect(texts(q)).toEqual(['payload 1', 'payload 3', 'payload 5']);
    expect(q.ack(seqs[0]!)).toBe(true);
    expect(q.peek(1)[0]!.payload.toString()).toBe('payload 3');
    expect(q.size).toBe(2);
    await q.close();
  });

  it('enforces the message bound by dropping the oldest first, and counts the drops', async () => {
    const q = make({ maxMessages: 3 });
    const dropped: string[] = [];
    for (let n = 1; n <= 5; n++) dropped.push(...q.push(msg(n)).dropped.map((m) => m.payload.toString()));
    expect(dropped).toEqual(['payload 1', 'payload 2']);
    expect(texts(q)).toEqual(['payload 3', 'payload 4', 'payload 5']);
    expect(q.dropped).toBe(2);
    await q.close();
  });

  it('enforces the byte bound (topic and payload) the same way, and refuses a message that can never fit', async () => {
    const topicBytes = Buffer.byteLength(msg(1).topic);
    const q = make({ maxBytes: 3 * (topicBytes + 10) });
    for (let n = 1; n <= 4; n++) q.push(msg(n, 'x'.repeat(10)));
    expect(q.size).toBe(3);
    expect(q.bytes).toBe(3 * (topicBytes + 10));
    expect(q.peek(1)[0]!.topic).toBe('devices/dw-1/t/2');
    // One big message pushes out as many old ones as it needs.
    const big = q.push(msg(5, 'y'.repeat(2 * (topicBytes + 10) - topicBytes)));
    expect(big.dropped.map((m) => m.topic)).toEqual(['devices/dw-1/t/2', 'devices/dw-1/t/3']);
    expect(q.dropped).toBe(3);
    expect(() => q.push(msg(6, 'z'.repeat(10_000)))).toThrow(/does not fit the offline queue/);
    expect(() => q.push(msg(6, 'z'.repeat(10_000)))).toThrow(AgentError);
    await q.close();
  });
});

describe('FileQueue on disk', () => {
  it('recovers every unacknowledged message, in order, after a restart', async () => {
    const dir = tmp();
    const q = FileQueue.open(dir);
    const seqs = [1, 2, 3, 4].map((n) => q.push(msg(n, `m${n}`, n === 2 ? 0 : 1)).message.seq);
    q.ack(seqs[0]!);
    await q.close();
    expect(statSync(join(dir, 'journal')).mode & 0o777).toBe(0o600);
    expect(existsSync(join(dir, 'lock'))).toBe(false);

    const again = FileQueue.open(dir);
    expect(again.recovery).toMatchObject({ messages: 3, skippedBytes: 0, dropped: 0 });
    const recovered = again.peek(10);
    expect(recovered.map((m) => [m.payload.toString(), m.qos, m.topic])).toEqual([
      ['m2', 0, 'devices/dw-1/t/2'],
      ['m3', 1, 'devices/dw-1/t/3'],
      ['m4', 1, 'devices/dw-1/t/4'],
    ]);
    // New messages go after the recovered ones.
    const next = again.push(msg(5, 'm5')).message;
    expect(next.seq).toBeGreaterThan(recovered.at(-1)!.seq);
    await again.close();
  });

  it('recovers what was written before a crash (no close, no flush), acknowledgements included', async () => {
    const dir = tmp();
    const q = FileQueue.open(dir, { syncIntervalMs: 60_000 });
    for (let n = 1; n <= 3; n++) q.push(msg(n, `m${n}`));
    q.ack(q.peek(1)[0]!.seq);
    // The process dies here: the lock names this very process, so it counts as stale.
    const after = FileQueue.open(dir);
    expect(texts(after)).toEqual(['m2', 'm3']);
    await after.close();
  });

  it('skips a torn last record (a write cut short) and keeps working', async () => {
    const dir = tmp();
    const q = FileQueue.open(dir);
    q.push(msg(1, 'first'));
    q.push(msg(2, 'second'));
    await q.flush();
    const file = join(dir, 'journal');
    const before = readFileSync(file);
    q.push(msg(3, 'third — this record will be torn'));
    const full = readFileSync(file);
    // Simulate a crash in the middle of the third record.
    writeFileSync(file, full.subarray(0, before.length + Math.floor((full.length - before.length) / 2)));

    const after = FileQueue.open(dir);
    expect(texts(after)).toEqual(['first', 'second']);
    expect(after.recovery.skippedBytes).toBeGreaterThan(0);
    after.push(msg(4, 'fourth'));
    await after.close();
    const third = FileQueue.open(dir);
    expect(texts(third)).toEqual(['first', 'second', 'fourth']);
    expect(third.recovery.skippedBytes).toBe(0); // the torn tail was cut off at the previous opening
    await third.close();
  });

  it('skips a damaged record in the middle and recovers the records after it', async () => {
    const dir = tmp();
    const q = FileQueue.open(dir);
    for (const t of ['alpha', 'bravo', 'charlie']) q.push(msg(1, t));
    await q.close();
    const file = join(dir, 'journal');
    const buf = readFileSync(file);
    const at = buf.indexOf('bravo');
    buf[at] = buf[at]! ^ 0xff; // a flipped byte: the checksum no longer holds
    writeFileSync(file, buf);
    const after = FileQueue.open(dir);
    expect(texts(after)).toEqual(['alpha', 'charlie']);
    expect(after.recovery.skippedBytes).toBeGreaterThan(0);
    await after.close();
  });

  it('gets through a long stretch of garbage quickly, keeping the records before it', async () => {
    const dir = tmp();
    const q = FileQueue.open(dir);
    q.push(msg(1, 'before'));
    await q.close();
    appendFileSync(join(dir, 'journal'), randomBytes(4 * 1024 * 1024));
    const started = Date.now();
    const after = FileQueue.open(dir);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(texts(after)).toEqual(['before']);
    expect(after.recovery.skippedBytes).toBe(4 * 1024 * 1024);
    await after.close();
  });

  it('sets aside a journal it cannot read and starts empty rather than refuse to run', async () => {
    const dir = tmp();
    writeFileSync(join(dir, 'journal'), 'not a journal at all');
    const q = FileQueue.open(dir);
    expect(q.size).toBe(0);
    expect(q.recovery.setAside).toMatch(/journal\.unreadable-\d+$/);
    expect(readdirSync(dir).some((f) => f.startsWith('journal.unreadable-'))).toBe(true);
    await q.close();
  });

  it('drops the oldest recovered messages when the bounds shrank between runs', async () => {
    const dir = tmp();
    const q = FileQueue.open(dir);
    for (let n = 1; n <= 5; n++) q.push(msg(n, `m${n}`));
    await q.close();
    const after = FileQueue.open(dir, { maxMessages: 2 });
    expect(texts(after)).toEqual(['m4', 'm5']);
    expect(after.recovery.dropped).toBe(3);
    await after.close();
  });

  it('compacts the journal so that delivered messages do not pile up on disk', async () => {
    const dir = tmp();
    const q = FileQueue.open(dir, { compactAfterBytes: 64 * 1024 });
    const payload = 'p'.repeat(1000);
    for (let n = 0; n < 2000; n++) q.ack(q.push(msg(n, payload)).message.seq);
    q.push(msg(9999, 'last'));
    expect(statSync(join(dir, 'journal')).size).toBeLessThan(200 * 1024);
    await q.close();
    expect(statSync(join(dir, 'journal')).size).toBeLessThan(100);
    const after = FileQueue.open(dir);
    expect(texts(after)).toEqual(['last']);
    await after.close();
  });

  it('is refused to a second process while one holds it', async () => {
    const dir = tmp();
    // The parent process (the test runner) stands in for another live agent.
    writeFileSync(join(dir, 'lock'), `${process.ppid}\n`);
    expect(() => FileQueue.open(dir)).toThrow(/in use by process \d+; run one agent per data directory/);
    // A lock of a process that is gone is taken over.
    writeFileSync(join(dir, 'lock'), '2147483646\n');
    const q = FileQueue.open(dir);
    expect(readFileSync(join(dir, 'lock'), 'utf8')).toBe(`${process.pid}\n`);
    await q.close();
  });

  it('flushes appended records to the file before close', async () => {
    const dir = tmp();
    const q = FileQueue.open(dir, { syncIntervalMs: 5 });
    q.push(msg(1, 'durable'));
    await q.flush();
    expect(readFileSync(join(dir, 'journal')).includes('durable')).toBe(true);
    appendFileSync(join(dir, 'journal'), Buffer.alloc(3)); // stray bytes at the tail
    await q.close();
    const after = FileQueue.open(dir);
    expect(texts(after)).toEqual(['durable']);
    await after.close();
  });
});
