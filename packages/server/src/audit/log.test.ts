import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { sql } from 'kysely';
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  CHECKPOINT_ACTION,
  GENESIS_HASH,
  auditEntryHash,
  canonicalJson,
  checkpointMessage,
  keyIdOf,
  verifyCheckpointSignature,
  type AuditEvent,
} from '@rampart/shared/audit';
import type { PlatformKey } from '../keystore/index.js';
import type { Storage } from '../storage/index.js';
import { DIALECTS, useTestStorage } from '../test-support/databases.js';
import { AuditLog } from './log.js';

function testKey(): PlatformKey & { privateKey: KeyObject } {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    label: 'audit-checkpoint',
    algorithm: 'ec-p256',
    publicKey,
    privateKey,
    keyId: keyIdOf(publicKey),
    signatureAlgorithm: 'ecdsa-p256-sha256',
    sign: async (data) => sign('sha256', data, privateKey),
  };
}

const event = (n: number, extra: Partial<AuditEvent> = {}): AuditEvent => ({
  actor: 'token:abcdefghijkl',
  action: 'token.create',
  target: `token:t${n}`,
  outcome: 'success',
  details: { n, name: `token ${n}` },
  ...extra,
});

describe.each(DIALECTS)('audit log on %s', (dialect) => {
  const t = useTestStorage(dialect, { poolSize: 20 });
  let storage: Storage;
  let log: AuditLog;
  const key = testKey();

  beforeAll(() => {
    storage = t.storage;
    log = new AuditLog(storage, key);
  });
  beforeEach(async () => {
    await storage.db.deleteFrom('audit_checkpoints').execute();
    await storage.db.deleteFrom('audit_entries').execute();
    await storage.db.deleteFrom('audit_queue').execute();
  });

  /** The chain as stored, after every committed entry has been sealed into it. */
  const rows = async () => {
    await log.flush();
    return storage.db.selectFrom('audit_entries').selectAll().orderBy('seq').execute();
  };

  it('appends entries that chain from the genesis hash, each hashed over its content', async () => {
    for (let i = 1; i <= 5; i++)
      await log.record(event(i, i === 3 ? { details: { z: 1, a: [2, { c: 3, b: 4 }] } } : {}));
    const stored = await rows();
    expect(stored.map((r) => Number(r.seq))).toEqual([1, 2, 3, 4, 5]);
    let prev = GENESIS_HASH;
    for (const r of stored) {
      expect(r.prev_hash).toBe(prev);
      expect(r.hash).toBe(
        auditEntryHash({ ...r, seq: Number(r.seq), detailsJson: r.details, prevHash: r.prev_hash }),
      );
      prev = r.hash;
    }
    // Details are stored in canonical form.
    expect(stored[2]!.details).toBe('{"a":[2,{"b":4,"c":3}],"z":1}');
    expect(stored[2]!.details).toBe(canonicalJson(JSON.parse(stored[2]!.details)));
    expect(await log.head()).toEqual({ seq: 5, hash: prev });
    const listed = await log.list({ newestFirst: true, limit: 2 });
    expect(listed.map((e) => e.seq)).toEqual([5, 4]);
    expect(listed[0]).toMatchObject({ actor: 'token:abcdefghijkl', details: { n: 5 }, hash: prev });
    expect(await log.verify(key.publicKey)).toMatchObject({ ok: true, entries: 5, headHash: prev });
  });

  it('keeps the chain gap-free and valid under 200 concurrent appending transactions', async () => {
    await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        storage.db.transaction().execute(async (tx) => {
          // Other work in the same transaction first, as API routes do.
          await sql`select 1`.execute(tx);
          return log.append(tx, event(i));
        }),
      ),
    );
    const stored = await rows();
    expect(stored.map((r) => Number(r.seq))).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
    expect(new Set(stored.map((r) => r.target)).size).toBe(200);
    await log.checkpoint();
    const v = await log.verify(key.publicKey);
    expect(v).toMatchObject({ ok: true, entries: 201, unanchoredEntries: 0, firstBad: null });
  });

  it('leaves no entry behind when the transaction rolls back, and no gap after it', async () => {
    await log.record(event(1));
    await expect(
      storage.db.transaction().execute(async (tx) => {
        await log.append(tx, event(2));
        throw new Error('the state change failed');
      }),
    ).rejects.toThrow('the state change failed');
    expect((await rows()).map((r) => r.target)).toEqual(['token:t1']);
    await log.record(event(3));
    expect((await log.head()).seq).toBe(2);
    expect((await log.verify(key.publicKey)).ok).toBe(true);
  });

  it('commits entries with their transaction and chains them when sealed, also after a crash', async () => {
    await storage.db.transaction().execute((tx) => log.append(tx, event(1)));
    // Committed but not yet chained: it waits in the queue, as after a crash before sealing.
    expect(await storage.db.selectFrom('audit_queue').select('target').execute()).toEqual([
      { target: 'token:t1' },
    ]);
    const offline = new AuditLog(storage, null, { readonly: true });
    expect(await offline.queued()).toBe(1);
    // A new process (a fresh AuditLog) seals what it finds.
    const restarted = new AuditLog(storage, key);
    await restarted.flush();
    expect(await offline.queued()).toBe(0);
    expect((await rows()).map((r) => [Number(r.seq), r.target])).toEqual([[1, 'token:t1']]);
    expect((await restarted.verify(key.publicKey)).ok).toBe(true);
  });

  it('writes a checkpoint only when new entries exist, and records it in the chain', async () => {
    expect(await log.checkpoint()).toBeNull();
    for (let i = 1; i <= 3; i++) await log.record(event(i));
    const c = await log.checkpoint();
    expect(c).toMatchObject({ entryCount: 3, headHash: (await rows())[2]!.hash, keyId: key.keyId });
    expect(verifyCheckpointSignature(c!, key.publicKey)).toBe(true);
    expect(checkpointMessage(c!).toString()).toBe(
      `rampart-audit-checkpoint-v1\n3\n${c!.headHash}\n${c!.time}\n`,
    );
    // Recorded as entry 4, which needs no checkpoint of its own.
    const [recorded] = await log.list({ action: CHECKPOINT_ACTION });
    expect(recorded).toMatchObject({ seq: 4, actor: 'system', target: 'audit:3', details: c });
    expect(await log.checkpoint()).toBeNull();
    expect(await log.checkpoints()).toHaveLength(1);
    expect((await log.verify(key.publicKey)).unanchoredEntries).toBe(0);

    await log.record(event(5));
    const d = await log.checkpoint();
    expect(d?.entryCount).toBe(5);
    expect(await log.checkpoints()).toHaveLength(2);
    expect(await log.verify(key.publicKey)).toMatchObject({
      ok: true,
      checkpoints: { total: 2, verified: 2, lastVerifiedEntryCount: 5 },
      unanchoredEntries: 0,
    });
    // Without a signing key there are no checkpoints.
    await log.record(event(7));
    expect(await new AuditLog(storage, null).checkpoint()).toBeNull();
  });

  describe('detects tampering with the stored rows', () => {
    /** 1..8, checkpoint over 8 (entry 9), 10..14, checkpoint over 14 (entry 15), 16..18. */
    async function populate() {
      for (let i = 1; i <= 8; i++) await log.record(event(i));
      await log.checkpoint();
      for (let i = 10; i <= 14; i++) await log.record(event(i));
      await log.checkpoint();
      for (let i = 16; i <= 18; i++) await log.record(event(i));
      expect((await log.verify(key.publicKey)).ok).toBe(true);
    }
    beforeEach(populate);

    it("an UPDATE of a row's actor", async () => {
      await storage.db
        .updateTable('audit_entries')
        .set({ actor: 'token:attacker0000' })
        .where('seq', '=', 11)
        .execute();
      const v = await log.verify(key.publicKey);
      expect(v.ok).toBe(false);
      expect(v.firstBad).toEqual({
        seq: 11,
        message: 'entry 11 was modified: its content does not match its recorded hash',
      });
    });

    it('an UPDATE of the details of a row', async () => {
      await storage.db
        .updateTable('audit_entries')
        .set({ details: canonicalJson({ n: 3, name: 'token 3', role: 'admin' }) })
        .where('seq', '=', 3)
        .execute();
      expect((await log.verify(key.publicKey)).firstBad?.seq).toBe(3);
    });

    it('a DELETE of a row', async () => {
      await storage.db.deleteFrom('audit_entries').where('seq', '=', 12).execute();
      const v = await log.verify(key.publicKey);
      expect(v.ok).toBe(false);
      expect(v.firstBad).toEqual({ seq: 12, message: 'entry 12 is missing: the entry after 11 is 13' });
    });

    it("a swap of two rows' content", async () => {
      const [a, b] = await Promise.all([
        storage.db.selectFrom('audit_entries').selectAll().where('seq', '=', 4).executeTakeFirstOrThrow(),
        storage.db.selectFrom('audit_entries').selectAll().where('seq', '=', 6).executeTakeFirstOrThrow(),
      ]);
      const content = ({ seq: _seq, ...rest }: typeof a) => rest;
      await storage.db.transaction().execute(async (tx) => {
        await tx.updateTable('audit_entries').set(content(b)).where('seq', '=', 4).execute();
        await tx.updateTable('audit_entries').set(content(a)).where('seq', '=', 6).execute();
      });
      const v = await log.verify(key.publicKey);
      expect(v.ok).toBe(false);
      expect(v.firstBad?.seq).toBe(4);
      expect(v.problems.map((p) => p.seq)).toEqual(expect.arrayContaining([4, 6]));
    });

    it('a consistent rewrite with the checkpoint rows deleted: the checkpoint entries in the chain catch it', async () => {
      const all = await rows();
      let prev = all[10]!.hash; // entry 11 stays
      await storage.db.transaction().execute(async (tx) => {
        for (const r of all.slice(11)) {
          const actor = Number(r.seq) === 12 ? 'token:attacker0000' : r.actor;
          const fields = { ...r, seq: Number(r.seq), actor, detailsJson: r.details, prevHash: prev };
          const hash = auditEntryHash(fields);
          await tx
            .updateTable('audit_entries')
            .set({ actor, prev_hash: prev, hash })
            .where('seq', '=', r.seq)
            .execute();
          prev = hash;
        }
        await tx.deleteFrom('audit_checkpoints').execute();
      });
      const v = await log.verify(key.publicKey);
      expect(v.ok).toBe(false);
      expect(v.checkpoints).toMatchObject({ total: 2, verified: 1, lastVerifiedEntryCount: 8 });
      expect(v.firstBad?.seq).toBe(9);
      expect(v.firstBad?.message).toMatch(/entries 9\.\.14 were rewritten/);
    });

    it('a truncated tail below a checkpoint', async () => {
      await storage.db.deleteFrom('audit_entries').where('seq', '>', 12).execute();
      const v = await log.verify(key.publicKey);
      expect(v.ok).toBe(false);
      expect(v.firstBad?.seq).toBe(13);
      expect(v.firstBad?.message).toMatch(/entries 13\.\.14 were deleted/);
    });

    it('a different verification key', async () => {
      const v = await log.verify(testKey().publicKey);
      expect(v.ok).toBe(false);
      expect(v.checkpoints.verified).toBe(0);
    });
  });
});
