import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { canonicalJson } from './canonical.js';
import { checkpointMessage, keyIdOf, verifyCheckpointSignature, type AuditCheckpoint } from './checkpoint.js';
import { GENESIS_HASH, auditEntryHash } from './entry.js';
import { CHECKPOINT_ACTION, verifyAuditChain, type StoredAuditEntry } from './verify.js';

interface Signer {
  publicKey: KeyObject;
  privateKey: KeyObject;
  keyId: string;
}

function newSigner(): Signer {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { publicKey, privateKey, keyId: keyIdOf(publicKey) };
}

const timeOf = (seq: number) => new Date(Date.UTC(2026, 0, 1) + seq * 1000).toISOString();

function rehash(e: StoredAuditEntry, prevHash: string): StoredAuditEntry {
  const fixed = { ...e, prevHash };
  return { ...fixed, hash: auditEntryHash(fixed) };
}

/** What the server does: entries appended in order, checkpoints signed and also written into the chain. */
class ChainBuilder {
  entries: StoredAuditEntry[] = [];
  /** The checkpoint table. */
  table: AuditCheckpoint[] = [];

  constructor(private readonly signer: Signer) {}

  get head(): string {
    return this.entries[this.entries.length - 1]?.hash ?? GENESIS_HASH;
  }

  add(count = 1, actor = 'token:abcdefghijkl'): this {
    for (let i = 0; i < count; i++) {
      const seq = this.entries.length + 1;
      this.push({
        actor,
        action: 'token.create',
        target: `token:t${seq}`,
        outcome: 'success',
        detailsJson: canonicalJson({ name: `token ${seq}`, role: 'viewer' }),
      });
    }
    return this;
  }

  checkpoint(): AuditCheckpoint {
    const entryCount = this.entries.length;
    const headHash = this.head;
    const time = timeOf(entryCount + 0.5);
    const signature = sign(
      'sha256',
      checkpointMessage({ entryCount, headHash, time }),
      this.signer.privateKey,
    ).toString('base64');
    const c: AuditCheckpoint = {
      id: this.table.length + 1,
      entryCount,
      headHash,
      time,
      keyId: this.signer.keyId,
      algorithm: 'ecdsa-p256-sha256',
      signature,
    };
    this.table.push(c);
    this.push({
      actor: 'system',
      action: CHECKPOINT_ACTION,
      target: `audit:${entryCount}`,
      outcome: 'success',
      detailsJson: canonicalJson(c),
    });
    return c;
  }

  private push(e: Omit<StoredAuditEntry, 'seq' | 'time' | 'prevHash' | 'hash'>) {
    const seq = this.entries.length + 1;
    const fields = { ...e, seq, time: timeOf(seq), prevHash: this.head };
    this.entries.push({ ...fields, hash: auditEntryHash(fields) });
  }
}

const signer = newSigner();

/** 1..10 token entries, checkpoint over 10 (entry 11), 12..20, checkpoint over 20 (entry 21), 22..25. */
function standardChain() {
  const b = new ChainBuilder(signer);
  b.add(10);
  b.checkpoint();
  b.add(9);
  b.checkpoint();
  b.add(4);
  return b;
}

const verify = (
  entries: StoredAuditEntry[],
  checkpoints: AuditCheckpoint[] = [],
  publicKey = signer.publicKey,
) => verifyAuditChain(entries, { checkpoints, publicKey });

describe('verifyAuditChain', () => {
  it('accepts a clean chain with its checkpoints, from the table and from the chain alone', async () => {
    const b = standardChain();
    const v = await verify(b.entries, b.table);
    expect(v).toMatchObject({
      ok: true,
      entries: 25,
      headHash: b.head,
      keyId: signer.keyId,
      checkpoints: { total: 2, verified: 2, lastVerifiedEntryCount: 20 },
      unanchoredEntries: 4,
      firstBad: null,
      problems: [],
    });
    // The embedded audit.checkpoint entries are enough on their own (an export, deleted checkpoint rows).
    const embeddedOnly = await verify(b.entries, []);
    expect(embeddedOnly).toMatchObject({
      ok: true,
      checkpoints: { total: 2, verified: 2, lastVerifiedEntryCount: 20 },
      unanchoredEntries: 4,
    });
  });

  it('accepts an async source as well as an array, and an empty log', async () => {
    const b = standardChain();
    async function* gen() {
      yield* b.entries;
    }
    expect((await verifyAuditChain(gen(), { publicKey: signer.publicKey })).ok).toBe(true);
    expect(await verify([])).toMatchObject({
      ok: true,
      entries: 0,
      headHash: GENESIS_HASH,
      unanchoredEntries: 0,
    });
  });

  describe('counts the entries no checkpoint covers', () => {
    it('all of them without a checkpoint', async () => {
      const b = new ChainBuilder(signer).add(7);
      expect((await verify(b.entries)).unanchoredEntries).toBe(7);
    });

    it('none right after a checkpoint: the entry recording it needs no cover of its own', async () => {
      const b = new ChainBuilder(signer).add(7);
      b.checkpoint();
      const v = await verify(b.entries, b.table);
      expect(v.entries).toBe(8);
      expect(v.unanchoredEntries).toBe(0);
    });

    it('those after the last checkpoint, including a checkpoint entry that is not last', async () => {
      const b = new ChainBuilder(signer).add(7);
      b.checkpoint();
      b.add(3);
      expect((await verify(b.entries, b.table)).unanchoredEntries).toBe(3);
    });

    it('everything when no trusted key is given', async () => {
      const b = standardChain();
      const v = await verifyAuditChain(b.entries, { checkpoints: b.table, publicKey: null });
      expect(v.checkpoints.verified).toBe(0);
      expect(v.unanchoredEntries).toBe(25);
    });
  });

  describe('detects an edit of any field at the edited entry', () => {
    const fields: [keyof StoredAuditEntry, unknown][] = [
      ['time', '2030-01-01T00:00:00.000Z'],
      ['actor', 'token:attacker00000'],
      ['action', 'token.revoke'],
      ['target', 'token:other'],
      ['outcome', 'failure'],
      ['detailsJson', canonicalJson({ name: 'token 7', role: 'admin' })],
      ['prevHash', 'f'.repeat(64)],
      ['hash', 'e'.repeat(64)],
    ];
    it.each(fields)('%s', async (field, value) => {
      const b = standardChain();
      const entries = b.entries.map((e) => (e.seq === 7 ? { ...e, [field]: value } : e));
      const v = await verify(entries, b.table);
      expect(v.ok).toBe(false);
      expect(v.firstBad?.seq).toBe(7);
      expect(v.firstBad?.message).toMatch(/entry 7 (was modified|does not link)/);
    });

    it('seq', async () => {
      const b = standardChain();
      const entries = b.entries.map((e) => (e.seq === 7 ? { ...e, seq: 70 } : e));
      const v = await verify(entries, b.table);
      expect(v.ok).toBe(false);
      expect(v.firstBad?.seq).toBe(7);
    });
  });

  it('detects a deleted entry in the middle and names it', async () => {
    const b = standardChain();
    const v = await verify(
      b.entries.filter((e) => e.seq !== 13),
      b.table,
    );
    expect(v.ok).toBe(false);
    expect(v.firstBad).toEqual({ seq: 13, message: 'entry 13 is missing: the entry after 12 is 14' });
  });

  it('detects a deleted first entry and names it', async () => {
    const b = standardChain();
    const v = await verify(b.entries.slice(1), b.table);
    expect(v.ok).toBe(false);
    expect(v.firstBad).toEqual({ seq: 1, message: 'entry 1 is missing: the entry after 0 is 2' });
  });

  it('detects a deleted entry whose successors were renumbered', async () => {
    const b = new ChainBuilder(signer).add(10);
    const entries = b.entries
      .filter((e) => e.seq !== 5)
      .map((e) => (e.seq > 5 ? { ...e, seq: e.seq - 1 } : e));
    const v = await verify(entries);
    expect(v.ok).toBe(false);
    expect(v.firstBad?.seq).toBe(5);
    // Under a checkpoint, the shifted head contradicts it as well: everything it covers is in doubt.
    const c = standardChain();
    const shifted = c.entries
      .filter((e) => e.seq !== 5)
      .map((e) => (e.seq > 5 ? { ...e, seq: e.seq - 1 } : e));
    const w = await verify(shifted, c.table);
    expect(w.ok).toBe(false);
    expect(w.checkpoints.verified).toBe(0);
    expect(w.problems.map((p) => p.seq)).toContain(5);
  });

  it('detects two entries in swapped order', async () => {
    const b = standardChain();
    const entries = [...b.entries];
    [entries[3], entries[4]] = [entries[4]!, entries[3]!]; // seq 4 and 5
    const v = await verify(entries, b.table);
    expect(v.ok).toBe(false);
    expect(v.firstBad?.seq).toBe(4);
    expect(v.problems.map((p) => p.message).join('\n')).toMatch(/out of order/);
  });

  it('detects two entries whose contents were swapped but kept their sequence numbers', async () => {
    const b = standardChain();
    const entries = b.entries.map((e) => {
      const other = e.seq === 4 ? b.entries[7]! : e.seq === 8 ? b.entries[3]! : null;
      return other ? { ...other, seq: e.seq } : e;
    });
    const v = await verify(entries, b.table);
    expect(v.ok).toBe(false);
    expect(v.firstBad?.seq).toBe(4);
    expect(v.problems.map((p) => p.seq)).toContain(8);
  });

  it('detects a forged entry inserted between two others', async () => {
    const b = standardChain();
    // A well-formed forgery after entry 22 that links to it correctly.
    const forged = rehash(
      {
        ...b.entries[21]!,
        seq: 23,
        time: timeOf(22.5),
        actor: 'token:attacker00000',
        detailsJson: canonicalJson({ name: 'backdoor', role: 'admin' }),
      },
      b.entries[21]!.hash,
    );
    const inserted = [...b.entries.slice(0, 22), forged, ...b.entries.slice(22)];
    const v = await verify(inserted, b.table);
    expect(v.ok).toBe(false);
    expect(v.firstBad?.seq).toBe(23);
    // Renumbering what follows does not help: entry 24 (the old 23) no longer matches its hash.
    const renumbered = [
      ...b.entries.slice(0, 22),
      forged,
      ...b.entries.slice(22).map((e) => ({ ...e, seq: e.seq + 1 })),
    ];
    const w = await verify(renumbered, b.table);
    expect(w.ok).toBe(false);
    expect(w.firstBad?.seq).toBe(24);
    expect(w.firstBad?.message).toMatch(/entry 24 was modified/);
    // Inserted under a checkpoint, the shifted heads contradict the signatures too.
    const early = rehash({ ...forged, seq: 7, time: timeOf(6.5) }, b.entries[5]!.hash);
    const x = await verify(
      [...b.entries.slice(0, 6), early, ...b.entries.slice(6).map((e) => ({ ...e, seq: e.seq + 1 }))],
      b.table,
    );
    expect(x.ok).toBe(false);
    expect(x.checkpoints.verified).toBe(0);
  });

  describe('a chain rewritten consistently after an edit (every hash recomputed)', () => {
    function rewrite(entries: StoredAuditEntry[], at: number, change: Partial<StoredAuditEntry>) {
      const out: StoredAuditEntry[] = [];
      let prev = GENESIS_HASH;
      for (const e of entries) {
        const next = e.seq < at ? e : rehash(e.seq === at ? { ...e, ...change } : e, prev);
        out.push(next);
        prev = next.hash;
      }
      return out;
    }

    it('links perfectly, so only a checkpoint can catch it', async () => {
      const b = standardChain();
      const forged = rewrite(b.entries, 15, { actor: 'token:attacker00000' });
      const v = await verifyAuditChain(forged, { publicKey: null });
      expect(v.ok).toBe(true);
    });

    it('is caught by the first checkpoint it contradicts, with firstBad after the last one that holds', async () => {
      const b = standardChain();
      const forged = rewrite(b.entries, 15, { actor: 'token:attacker00000' });
      const v = await verify(forged, b.table);
      expect(v.ok).toBe(false);
      // The checkpoint over 1..10 still holds; the one over 20 entries does not: 11..20 are in doubt.
      expect(v.checkpoints).toMatchObject({ verified: 1, lastVerifiedEntryCount: 10 });
      expect(v.firstBad?.seq).toBe(11);
      expect(v.firstBad?.message).toMatch(/does not match checkpoint #2 over 20 entries/);
      expect(v.firstBad?.message).toMatch(/entries 11\.\.20 were rewritten/);
    });

    it('is caught before the first checkpoint, naming entry 1', async () => {
      const b = standardChain();
      const forged = rewrite(b.entries, 3, { outcome: 'denied' });
      const v = await verify(forged, b.table);
      expect(v.ok).toBe(false);
      expect(v.checkpoints.verified).toBe(0);
      expect(v.firstBad?.seq).toBe(1);
    });

    it('is still caught when every checkpoint row is deleted: the checkpoint entries in the chain count', async () => {
      const b = standardChain();
      const forged = rewrite(b.entries, 15, { actor: 'token:attacker00000' });
      const v = await verify(forged, []);
      expect(v.ok).toBe(false);
      expect(v.checkpoints.total).toBe(2);
      expect(v.firstBad?.seq).toBe(11);
    });

    it('cannot be hidden by also rewriting the checkpoint entries with a checkpoint of its own', async () => {
      const b = standardChain();
      const forged = rewrite(b.entries, 15, { actor: 'token:attacker00000' });
      // The attacker has no signing key: a checkpoint made with another key is refused.
      const attacker = newSigner();
      const fake = new ChainBuilder(attacker);
      fake.entries = forged;
      const c = fake.checkpoint();
      const v = await verify(fake.entries, [c]);
      expect(v.ok).toBe(false);
      expect(v.problems.map((p) => p.message).join('\n')).toMatch(/not by the trusted key/);
    });
  });

  describe('truncation', () => {
    it('of the tail below a checkpoint is detected', async () => {
      const b = standardChain();
      const v = await verify(b.entries.slice(0, 17), b.table);
      expect(v.ok).toBe(false);
      expect(v.firstBad?.seq).toBe(18);
      expect(v.firstBad?.message).toMatch(/log ends at entry 17 but checkpoint #2 over 20 entries/);
      expect(v.firstBad?.message).toMatch(/entries 18\.\.20 were deleted/);
    });

    it('names the real last entry when an entry in the middle is missing too', async () => {
      const b = standardChain();
      const entries = b.entries.slice(0, 17).filter((e) => e.seq !== 3);
      const v = await verify(entries, b.table);
      expect(v.firstBad?.seq).toBe(3);
      expect(v.problems.map((p) => p.message)).toContain(
        'the log ends at entry 17 but checkpoint #2 over 20 entries (2026-01-01T00:00:20.500Z) is signed: entries 18..20 were deleted',
      );
    });

    it('after the last checkpoint cannot be detected from the log itself', async () => {
      const b = standardChain();
      const v = await verify(b.entries.slice(0, 23), b.table);
      expect(v.ok).toBe(true);
      expect(v.unanchoredEntries).toBe(2);
    });

    it('of the tail and of the checkpoints recording it is caught by a checkpoint kept elsewhere', async () => {
      const b = standardChain();
      const saved = [...b.table];
      // Drop everything from entry 12 on, the checkpoint entry 21 and the table rows with it.
      const v = await verify(b.entries.slice(0, 12), []);
      expect(v.ok).toBe(true);
      const w = await verify(b.entries.slice(0, 12), saved);
      expect(w.ok).toBe(false);
      expect(w.firstBad?.seq).toBe(13);
    });
  });

  describe('checkpoint signatures', () => {
    it('refuses a checkpoint whose signature does not verify', async () => {
      const b = standardChain();
      const bad = b.table.map((c) => (c.id === 2 ? { ...c, signature: b.table[0]!.signature } : c));
      const v = await verifyAuditChain(b.entries.slice(0, 20), {
        checkpoints: bad,
        publicKey: signer.publicKey,
      });
      expect(v.ok).toBe(false);
      expect(v.firstBad?.seq).toBe(11);
      expect(v.firstBad?.message).toMatch(/checkpoint #2 over 20 entries .* has an invalid signature/);
    });

    it('refuses a checkpoint whose covered head was changed after signing', async () => {
      const b = standardChain();
      const c = { ...b.table[1]!, headHash: b.entries[18]!.hash, entryCount: 19 };
      const v = await verify(b.entries.slice(0, 19), [c]);
      expect(v.ok).toBe(false);
      expect(v.firstBad?.message).toMatch(/invalid signature/);
    });

    it('refuses a checkpoint with an unknown algorithm', async () => {
      const b = standardChain();
      const c = { ...b.table[0]!, algorithm: 'md5-rsa' };
      expect(verifyCheckpointSignature(c, signer.publicKey)).toBe(false);
      const v = await verify(b.entries.slice(0, 10), [c]);
      expect(v.ok).toBe(false);
    });

    it('refuses checkpoints signed by a different key, and a log checked against a different key', async () => {
      const b = standardChain();
      const other = newSigner();
      // Verifying with another key: every checkpoint is refused, naming both key ids.
      const v = await verify(b.entries, b.table, other.publicKey);
      expect(v.ok).toBe(false);
      expect(v.keyId).toBe(other.keyId);
      expect(v.checkpoints.verified).toBe(0);
      expect(v.firstBad?.seq).toBe(1);
      expect(v.firstBad?.message).toContain(`signed by key ${signer.keyId.slice(0, 16)}`);
      expect(v.firstBad?.message).toContain(`not by the trusted key ${other.keyId.slice(0, 16)}`);
      // A checkpoint by another key that claims the trusted key id fails on its signature.
      const forgedBuilder = new ChainBuilder(other).add(3);
      const forged = { ...forgedBuilder.checkpoint(), keyId: signer.keyId };
      const w = await verify(forgedBuilder.entries.slice(0, 3), [forged]);
      expect(w.ok).toBe(false);
      expect(w.firstBad?.message).toMatch(/invalid signature/);
    });

    it('reports an unreadable checkpoint entry', async () => {
      const b = standardChain();
      const entries = b.entries.map((e) =>
        e.seq === 11 ? rehash({ ...e, detailsJson: '{not json' }, e.prevHash) : e,
      );
      // Rehash the rest so that only the unreadable checkpoint is at fault.
      let prev = entries[10]!.hash;
      for (let i = 11; i < entries.length; i++) {
        entries[i] = rehash(entries[i]!, prev);
        prev = entries[i]!.hash;
      }
      const v = await verify(entries, [b.table[0]!]);
      expect(v.ok).toBe(false);
      expect(v.firstBad?.seq).toBe(11);
      expect(v.firstBad?.message).toMatch(/entry 11 records a checkpoint that cannot be read/);
    });

    it('does not crash on a checkpoint entry with missing fields', async () => {
      const b = new ChainBuilder(signer).add(3);
      const fields = {
        seq: 4,
        time: timeOf(4),
        actor: 'system',
        action: CHECKPOINT_ACTION,
        target: 'audit:3',
        outcome: 'success',
        detailsJson: canonicalJson({ entryCount: 3, signature: 'AAAA' }),
        prevHash: b.head,
      };
      const v = await verify([...b.entries, { ...fields, hash: auditEntryHash(fields) }]);
      expect(v.ok).toBe(false);
      expect(v.firstBad).toEqual({ seq: 4, message: 'entry 4 records a checkpoint that cannot be read' });
    });
  });

  it('keeps the true first bad entry even when the problem list is cut short', async () => {
    const b = new ChainBuilder(signer).add(10);
    b.checkpoint();
    b.add(80);
    // 80 entries edited without their hashes (80 problems), and a bad checkpoint before them.
    const entries = b.entries.map((e) => (e.seq > 11 ? { ...e, actor: 'x' } : e));
    const c = { ...b.table[0]!, signature: Buffer.alloc(64).toString('base64') };
    const v = await verifyAuditChain(
      entries.filter((e) => e.action !== CHECKPOINT_ACTION),
      { checkpoints: [c], publicKey: signer.publicKey },
    );
    expect(v.ok).toBe(false);
    expect(v.problems.length).toBeLessThanOrEqual(50);
    expect(v.firstBad?.seq).toBe(1);
  });
});
