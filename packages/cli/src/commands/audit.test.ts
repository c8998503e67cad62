import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { createServer as createTlsServer } from 'node:tls';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditEntry } from '@rampart/shared/audit';
import { startTestPlatform, type TestPlatform } from '../../../server/src/test-support/platform.js';
import { cliEnvFor, runCli } from '../test-support/run-cli.js';

/** RFC 5424 header, structured data and message, as Rampart writes them (section 6 ABNF). */
const RFC5424 =
  /^<(\d{1,3})>1 (\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})) ([\x21-\x7e]{1,255}) ([\x21-\x7e]{1,48}) ([\x21-\x7e]{1,128}) ([\x21-\x7e]{1,32}) \[rampart@32473((?: [^= \]"]{1,32}="(?:[^"\\\]]|\\["\\\]])*")*)\] (\{.*\})$/;

function parseSyslog(line: string) {
  const m = RFC5424.exec(line);
  if (!m) throw new Error(`not an RFC 5424 message: ${line.slice(0, 160)}`);
  const params: Record<string, string> = {};
  for (const p of m[7]!.matchAll(/ ([^= \]"]+)="((?:[^"\\\]]|\\["\\\]])*)"/g))
    params[p[1]!] = p[2]!.replace(/\\(["\\\]])/g, '$1');
  return {
    pri: Number(m[1]),
    timestamp: m[2]!,
    hostname: m[3]!,
    appName: m[4]!,
    msgId: m[6]!,
    params,
    entry: JSON.parse(m[8]!) as AuditEntry,
  };
}

/** Split a TCP stream of RFC 6587 octet-counted frames; refuses anything else. */
function parseOctetCounted(stream: Buffer): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < stream.length) {
    const sp = stream.indexOf(0x20, i);
    const len = stream.subarray(i, sp).toString('ascii');
    if (sp < 0 || !/^[1-9]\d*$/.test(len)) throw new Error(`bad MSG-LEN at byte ${i}`);
    const end = sp + 1 + Number(len);
    if (end > stream.length) throw new Error(`frame at byte ${i} is cut short`);
    out.push(stream.subarray(sp + 1, end).toString('utf8'));
    i = end;
  }
  return out;
}

async function until(check: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await sleep(20);
  }
}

describe('rampart audit', () => {
  let t: TestPlatform;
  let dir: string;
  let dbPath: string;
  let env: Record<string, string>;
  /** Entries the platform writes while it starts (CA setup, admin token, server certificate, platform.start). */
  let start: number;
  /** Entries in the log once beforeAll is done: start + 10 token.create + 1 audit.checkpoint. */
  let total: number;
  const work = mkdtempSync(join(tmpdir(), 'rampart-audit-cli-test-'));

  /** Run `fn` on the platform's SQLite file directly, as an attacker with file access would. */
  function onDb<T>(fn: (db: Database.Database) => T): T {
    const db = new Database(dbPath);
    try {
      return fn(db);
    } finally {
      db.close();
    }
  }
  type Row = Record<string, unknown> & { seq: number };
  const row = (seq: number) =>
    onDb((db) => db.prepare('select * from audit_entries where seq = ?').get(seq) as Row);
  const restore = (r: Row) =>
    onDb((db) =>
      db
        .prepare(
          `insert or replace into audit_entries (seq, time, actor, action, target, outcome, details, prev_hash, hash)
           values (@seq, @time, @actor, @action, @target, @outcome, @details, @prev_hash, @hash)`,
        )
        .run(r),
    );
  const verify = (...args: string[]) => runCli(['audit', 'verify', ...args], { env });
  const head = async () => (await t.platform.audit.head()).seq;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'rampart-audit-data-'));
    dbPath = join(dir, 'rampart.db');
    t = await startTestPlatform('sqlite', { dataDir: dir, 'database.url': `sqlite:${dbPath}` });
    env = cliEnvFor(dir);
    // 1..start: first start (ending with platform.start), then 6 token.create, the audit.checkpoint
    // entry of a checkpoint over start + 6 entries, and 4 more token.create.
    start = await head();
    for (let i = 0; i < 6; i++) await t.tokenFor('viewer');
    await t.platform.audit.checkpoint();
    for (let i = 0; i < 4; i++) await t.tokenFor('auditor');
    total = start + 11;
    expect(await head()).toBe(total);
  });
  afterAll(async () => {
    await t?.close();
    rmSync(dir, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
  });

  describe('verify', () => {
    it('exits 0 and prints a summary for a clean log (while the platform runs)', async () => {
      const r = await verify();
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(
        `audit log verified: ${total} entries, chain intact, 1 of 1 signed checkpoints valid`,
      );
      expect(r.stdout).toContain(`from ${join(dir, 'audit-checkpoint.pub.pem')}`);
      expect(r.stdout).toContain('4 newest entries are chained but not yet covered by a signed checkpoint');
    });

    it('prints the verification as JSON with --json', async () => {
      const r = await verify('--json');
      expect(r.code).toBe(0);
      const v = JSON.parse(r.stdout);
      expect(v).toEqual({
        ok: true,
        entries: total,
        headHash: expect.stringMatching(/^[0-9a-f]{64}$/),
        keyId: expect.stringMatching(/^[0-9a-f]{64}$/),
        checkpoints: { total: 1, verified: 1, lastVerifiedEntryCount: start + 6 },
        unanchoredEntries: 4,
        firstBad: null,
        problems: [],
        queuedEntries: 0,
      });
      expect(v.headHash).toBe((await t.platform.audit.head()).hash);
    });

    it('exits 1 naming the entry whose row was edited', async () => {
      const original = row(5);
      onDb((db) => db.prepare("update audit_entries set actor = 'token:attacker0000' where seq = 5").run());
      try {
        const r = await verify();
        expect(r.code).toBe(1);
        expect(r.stdout).toContain('audit log FAILED verification: first bad entry is 5');
        expect(r.stdout).toContain(
          'entry 5: entry 5 was modified: its content does not match its recorded hash',
        );
        const j = await verify('--json');
        expect(j.code).toBe(1);
        expect(JSON.parse(j.stdout)).toMatchObject({ ok: false, firstBad: { seq: 5 } });
      } finally {
        restore(original);
      }
      expect((await verify()).code).toBe(0);
    });

    it('exits 1 naming the entry whose row was deleted', async () => {
      // An entry after the first checkpoint (over start + 6 entries, then its own audit.checkpoint
      // entry), so that the gap itself is the first thing found.
      const gap = start + 8;
      const original = row(gap);
      onDb((db) => db.prepare('delete from audit_entries where seq = ?').run(gap));
      try {
        const r = await verify();
        expect(r.code).toBe(1);
        expect(r.stdout).toContain(`first bad entry is ${gap}`);
        expect(r.stdout).toContain(`entry ${gap} is missing: the entry after ${gap - 1} is ${gap + 1}`);
      } finally {
        restore(original);
      }
      expect((await verify()).code).toBe(0);
    });

    it('exits 1 naming the first of two entries whose rows were swapped', async () => {
      const [a, b] = [row(4), row(6)];
      restore({ ...b, seq: 4 });
      restore({ ...a, seq: 6 });
      try {
        const r = await verify('--json');
        expect(r.code).toBe(1);
        const v = JSON.parse(r.stdout);
        expect(v.firstBad.seq).toBe(4);
        expect(v.problems.map((p: { seq: number }) => p.seq)).toContain(6);
      } finally {
        restore(a);
        restore(b);
      }
      expect((await verify()).code).toBe(0);
    });

    it('exits 1 when checked against another public key', async () => {
      const other = join(work, 'other.pub.pem');
      const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      writeFileSync(other, publicKey.export({ type: 'spki', format: 'pem' }));
      const r = await verify('--public-key', other);
      expect(r.code).toBe(1);
      expect(r.stdout).toContain('first bad entry is 1');
      expect(r.stdout).toMatch(
        new RegExp(
          `checkpoint #1 over ${start + 6} entries .* was signed by key [0-9a-f]{16}…, not by the trusted key`,
        ),
      );
    });

    it('exits 2 when there is no public key or no database', async () => {
      const r = await runCli(['audit', 'verify', '--data-dir', join(work, 'nothing-here')]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain('no checkpoint public key at');
    });
  });

  describe('export and verify --file', () => {
    const exported = () => join(work, 'audit.jsonl');

    it('writes JSON lines with -o that verify on their own, checkpoints included', async () => {
      const r = await runCli(['audit', 'export', '-o', exported()], { env });
      expect(r.code).toBe(0);
      expect(r.stderr).toContain(
        `exported ${total} entries (through seq ${total}) to ${exported()} as jsonl`,
      );
      const lines = readFileSync(exported(), 'utf8').trimEnd().split('\n');
      expect(lines.map((l) => (JSON.parse(l) as AuditEntry).seq)).toEqual(
        Array.from({ length: total }, (_, i) => i + 1),
      );
      const v = await verify('--file', exported(), '--json');
      expect(v.code).toBe(0);
      expect(JSON.parse(v.stdout)).toMatchObject({
        ok: true,
        entries: total,
        checkpoints: { total: 1, verified: 1 },
      });
    });

    it('fails on an export with one edited line, naming the entry', async () => {
      const lines = readFileSync(exported(), 'utf8').trimEnd().split('\n');
      const e = JSON.parse(lines[6]!) as AuditEntry;
      lines[6] = JSON.stringify({ ...e, details: { ...e.details, role: 'admin' } });
      const edited = join(work, 'edited.jsonl');
      writeFileSync(edited, lines.join('\n') + '\n');
      const r = await verify('--file', edited);
      expect(r.code).toBe(1);
      expect(r.stdout).toContain('first bad entry is 7');
    });

    it('resumes with --after, to standard output and appending to a file', async () => {
      const r = await runCli(['audit', 'export', '--after', String(total - 3)], { env });
      expect(r.code).toBe(0);
      const seqs = r.stdout
        .trimEnd()
        .split('\n')
        .map((l) => (JSON.parse(l) as AuditEntry).seq);
      expect(seqs).toEqual([total - 2, total - 1, total]);

      await t.tokenFor('viewer');
      await t.tokenFor('viewer');
      const more = await runCli(['audit', 'export', '--after', String(total), '-o', exported(), '--json'], {
        env,
      });
      expect(more.code).toBe(0);
      expect(JSON.parse(more.stdout)).toEqual({
        exported: 2,
        lastSeq: total + 2,
        destination: exported(),
        format: 'jsonl',
      });
      const all = readFileSync(exported(), 'utf8').trimEnd().split('\n');
      expect(all.map((l) => (JSON.parse(l) as AuditEntry).seq)).toEqual(
        Array.from({ length: total + 2 }, (_, i) => i + 1),
      );
      expect((await verify('--file', exported())).code).toBe(0);
    });
  });

  it('tail -n 5 --json prints the five newest entries, oldest first', async () => {
    const r = await runCli(['audit', 'tail', '-n', '5', '--json'], { env });
    expect(r.code).toBe(0);
    const entries = r.stdout
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as AuditEntry);
    const last = await head();
    expect(entries.map((e) => e.seq)).toEqual([last - 4, last - 3, last - 2, last - 1, last]);
    expect(entries[4]).toEqual((await t.platform.audit.list({ afterSeq: last - 1 }))[0]);
  });

  it('tail filters by action', async () => {
    const r = await runCli(['audit', 'tail', '--action', 'platform.*'], { env });
    expect(r.code).toBe(0);
    expect(r.stdout.trimEnd().split('\n')).toHaveLength(1);
    expect(r.stdout).toMatch(new RegExp(`^\\s+${start} \\S+ success system platform\\.start`));
  });

  describe('syslog', () => {
    it('writes valid RFC 5424 lines to a file with the seq and hash in structured data', async () => {
      const file = join(work, 'audit.log');
      const r = await runCli(['audit', 'export', '--format', 'syslog', '-o', file], { env });
      expect(r.code).toBe(0);
      const entries = await t.platform.audit.list({ limit: 1000 });
      const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
      expect(lines).toHaveLength(entries.length);
      lines.forEach((line, i) => {
        const m = parseSyslog(line);
        const e = entries[i]!;
        expect(m.pri).toBe(13 * 8 + 6);
        expect(m.timestamp).toBe(e.time);
        expect(m.appName).toBe('rampart');
        expect(m.msgId).toBe(e.action);
        expect(m.params).toMatchObject({
          seq: String(e.seq),
          hash: e.hash,
          action: e.action,
          outcome: e.outcome,
        });
        expect(m.entry).toEqual(e);
      });
    });

    it('sends to a UDP collector, one message per datagram', async () => {
      const socket: UdpSocket = createSocket('udp4');
      const received: string[] = [];
      socket.on('message', (m) => received.push(m.toString('utf8')));
      await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
      try {
        const { port } = socket.address();
        const r = await runCli(['audit', 'export', '--to', `udp://127.0.0.1:${port}`, '--after', '5'], {
          env,
        });
        expect(r.code).toBe(0);
        const expected = (await head()) - 5;
        expect(r.stderr).toContain(`exported ${expected} entries`);
        await until(() => received.length >= expected);
        expect(received.map((m) => Number(parseSyslog(m).params.seq))).toEqual(
          Array.from({ length: expected }, (_, i) => i + 6),
        );
      } finally {
        socket.close();
      }
    });

    it('sends to a TCP collector with RFC 6587 octet counting', async () => {
      const chunks: Buffer[] = [];
      let closed = false;
      const server: Server = createServer((conn) => {
        conn.on('data', (d: Buffer) => chunks.push(d));
        conn.on('end', () => (closed = true));
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      try {
        const { port } = server.address() as AddressInfo;
        const r = await runCli(['audit', 'export', '--to', `tcp://127.0.0.1:${port}`], { env });
        expect(r.code).toBe(0);
        await until(() => closed);
        const messages = parseOctetCounted(Buffer.concat(chunks));
        const entries = await t.platform.audit.list({ limit: 1000 });
        expect(messages).toHaveLength(entries.length);
        expect(messages.map((m) => parseSyslog(m).entry)).toEqual(entries);
      } finally {
        server.close();
      }
    });

    it('sends to a TLS collector it trusts, and refuses one it does not', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'rampart-syslog-tls-'));
      const key = join(dir, 'collector.key');
      const cert = join(dir, 'collector.pem');
      execFileSync(
        'openssl',
        [
          'req',
          '-x509',
          '-newkey',
          'ec',
          '-pkeyopt',
          'ec_paramgen_curve:P-256',
          '-nodes',
          '-keyout',
          key,
          '-out',
          cert,
          '-days',
          '1',
          '-subj',
          '/CN=collector',
          '-addext',
          'subjectAltName=IP:127.0.0.1',
        ],
        { stdio: 'ignore' },
      );
      const chunks: Buffer[] = [];
      let closed = false;
      const server = createTlsServer({ key: readFileSync(key), cert: readFileSync(cert) }, (conn) => {
        conn.on('data', (d: Buffer) => chunks.push(d));
        conn.on('end', () => (closed = true));
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      try {
        const { port } = server.address() as AddressInfo;
        const untrusted = await runCli(['audit', 'export', '--to', `tls://127.0.0.1:${port}`], { env });
        expect(untrusted.code).toBe(3);
        expect(untrusted.stderr).toContain(`cannot connect to syslog collector tls://127.0.0.1:${port}`);
        expect(chunks).toHaveLength(0);

        const r = await runCli(
          ['audit', 'export', '--to', `tls://127.0.0.1:${port}`, '--collector-ca', cert],
          { env },
        );
        expect(r.code).toBe(0);
        expect(r.stderr).not.toContain('RFC 6066');
        await until(() => closed);
        const messages = parseOctetCounted(Buffer.concat(chunks));
        const entries = await t.platform.audit.list({ limit: 1000 });
        expect(messages.map((m) => parseSyslog(m).entry)).toEqual(entries);
      } finally {
        server.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('exits 3 when the TCP collector is not there', async () => {
      const server = createServer();
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const { port } = server.address() as AddressInfo;
      await new Promise<void>((resolve) => server.close(() => resolve()));
      const r = await runCli(['audit', 'export', '--to', `tcp://127.0.0.1:${port}`], { env });
      expect(r.code).toBe(3);
      expect(r.stderr).toContain(`cannot connect to syslog collector tcp://127.0.0.1:${port}`);
    });
  });

  it('verifies offline after the platform stopped: the log ends in platform.stop and a checkpoint', async () => {
    await t.platform.stop('test');
    const last = onDb(
      (db) =>
        db.prepare('select action from audit_entries order by seq desc limit 2').all() as {
          action: string;
        }[],
    );
    expect(last.map((r) => r.action)).toEqual(['audit.checkpoint', 'platform.stop']);
    const r = await verify('--json');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({
      ok: true,
      unanchoredEntries: 0,
      checkpoints: { total: 2, verified: 2 },
    });
  });
});
