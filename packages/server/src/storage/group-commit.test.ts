import { beforeEach, describe, expect, it } from 'vitest';
import { DIALECTS, useTestStorage } from '../test-support/databases.js';
import { GroupCommit } from './group-commit.js';

const model = (id: string) => ({
  id,
  name: id,
  description: '',
  created_at: '2026-01-01T00:00:00.000Z',
  updated_at: '2026-01-01T00:00:00.000Z',
});

describe.each(DIALECTS)('group commit on %s', (dialect) => {
  const t = useTestStorage(dialect);
  beforeEach(async () => {
    await t.storage.db.deleteFrom('device_models').execute();
  });
  const ids = async () =>
    (await t.storage.db.selectFrom('device_models').select('id').orderBy('id').execute()).map((r) => r.id);

  it('writes concurrent work in one transaction, each resolved with its own result after the commit', async () => {
    let commits = 0;
    const group = new GroupCommit(t.storage.db, { afterCommit: () => commits++ });
    const txids: unknown[] = [];
    const results = await Promise.all(
      ['A', 'B', 'C', 'D'].map((id) =>
        group.run(async (tx) => {
          await tx.insertInto('device_models').values(model(id)).execute();
          txids.push(tx);
          return id.toLowerCase();
        }),
      ),
    );
    expect(results).toEqual(['a', 'b', 'c', 'd']);
    expect(await ids()).toEqual(['A', 'B', 'C', 'D']);
    expect(new Set(txids).size).toBe(1);
    expect(commits).toBe(1);
  });

  it('rolls back only the failing piece and rejects only its promise', async () => {
    const group = new GroupCommit(t.storage.db);
    const outcomes = await Promise.allSettled([
      group.run((tx) => tx.insertInto('device_models').values(model('A')).execute()),
      group.run(async (tx) => {
        await tx.insertInto('device_models').values(model('B')).execute();
        throw new Error('refused after writing');
      }),
      // A constraint violation (the same key again) fails the statement itself.
      group.run((tx) => tx.insertInto('device_models').values(model('A')).execute()),
      group.run((tx) => tx.insertInto('device_models').values(model('C')).execute()),
    ]);
    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'fulfilled']);
    expect((outcomes[1] as PromiseRejectedResult).reason).toHaveProperty('message', 'refused after writing');
    expect(await ids()).toEqual(['A', 'C']);
  });

  it('splits a long queue into groups of at most `limit` and writes them all', async () => {
    const group = new GroupCommit(t.storage.db, { limit: 3 });
    const seen = new Map<unknown, number>();
    await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        group.run(async (tx) => {
          seen.set(tx, (seen.get(tx) ?? 0) + 1);
          await tx
            .insertInto('device_models')
            .values(model(`M${i}`))
            .execute();
        }),
      ),
    );
    expect((await ids()).length).toBe(8);
    expect([...seen.values()].every((n) => n <= 3)).toBe(true);
    expect(seen.size).toBeGreaterThanOrEqual(3);
  });
});
