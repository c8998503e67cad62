import { canonicalJson } from '@rampart/shared/audit';
import type { PolicyDocument } from '@rampart/shared/policy';
import { DEFAULT_POLICY, validatePolicyDocument } from '@rampart/shared/policy';
import type { PolicyAttachment, PolicyRecord, PolicyVersion } from '@rampart/shared/api';
import { RampartError, conflict, notFound } from '../errors.js';
import type { Executor, Storage } from '../storage/index.js';
import { isoNow } from '../time.js';
import { lintPolicy, type AttachedPolicy, type DeviceContext } from './policy/index.js';

export type PolicyTargetKind = 'model' | 'group' | 'device';
export const DEFAULT_POLICY_NAME = 'default';

function invalidDocument(errors: { path: string; message: string }[]): RampartError {
  return new RampartError(
    'VALIDATION',
    `the policy document is not valid: ${errors.map((e) => `${e.path || '(document)'}: ${e.message}`).join('; ')}`,
    errors.map((e) => ({ field: e.path ? `document.${e.path}` : 'document', message: e.message })),
  );
}

interface Snapshot {
  /** name → current version and document. */
  policies: Map<string, { version: number; document: PolicyDocument }>;
  /** `${kind}:${id}` → policy names attached there. */
  attachments: Map<string, string[]>;
}

/**
 * Named, versioned policy documents and where they are attached (device models, static and
 * dynamic groups, devices). Every update is a new version; the built-in `default` policy applies to every device.
 * The gateway reads a snapshot kept in memory (policies are few and read on every connect) and is
 * told when it changes, so that live sessions are re-authorized at once.
 */
export class PolicyStore {
  private snapshot: Snapshot | null = null;
  private readonly listeners: (() => void)[] = [];

  constructor(private readonly storage: Storage) {}

  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  /** Drop the snapshot without telling listeners (attachments went with a deleted target). */
  forget(): void {
    this.snapshot = null;
  }

  /** Call after a transaction that changed policies or attachments has committed. */
  changed(): void {
    this.snapshot = null;
    for (const l of this.listeners) l();
  }

  validate(document: unknown): PolicyDocument {
    const result = validatePolicyDocument(document);
    if (!result.ok) throw invalidDocument(result.errors);
    return document as PolicyDocument;
  }

  async create(
    db: Executor,
    input: { name: string; description?: string; document: unknown; actor: string },
  ): Promise<PolicyRecord> {
    if (input.name === DEFAULT_POLICY_NAME)
      throw conflict(`"${DEFAULT_POLICY_NAME}" is the built-in policy; choose another name`);
    const document = this.validate(input.document);
    const exists = await db
      .selectFrom('policies')
      .select('name')
      .where('name', '=', input.name)
      .executeTakeFirst();
    if (exists)
      throw conflict(`policy ${input.name} exists; add a version with: rampart policy update ${input.name}`);
    const now = isoNow();
    await db
      .insertInto('policies')
      .values({
        name: input.name,
        description: input.description ?? '',
        version: 1,
        created_at: now,
        updated_at: now,
      })
      .execute();
    await db
      .insertInto('policy_versions')
      .values({
        name: input.name,
        version: 1,
        document: canonicalJson(document),
        created_at: now,
        created_by: input.actor,
      })
      .execute();
    return this.get(db, input.name);
  }

  async update(
    db: Executor,
    name: string,
    input: { description?: string; document: unknown; actor: string },
  ): Promise<PolicyRecord> {
    const document = this.validate(input.document);
    const row = await db.selectFrom('policies').selectAll().where('name', '=', name).executeTakeFirst();
    if (!row) throw notFound(`policy ${name}`);
    const version = row.version + 1;
    const now = isoNow();
    await db
      .updateTable('policies')
      .set({
        version,
        updated_at: now,
        ...(input.description !== undefined ? { description: input.description } : {}),
      })
      .where('name', '=', name)
      .execute();
    await db
      .insertInto('policy_versions')
      .values({ name, version, document: canonicalJson(document), created_at: now, created_by: input.actor })
      .execute();
    return this.get(db, name);
  }

  async delete(db: Executor, name: string): Promise<PolicyRecord> {
    const record = await this.get(db, name);
    await db.deleteFrom('policy_attachments').where('name', '=', name).execute();
    await db.deleteFrom('policy_versions').where('name', '=', name).execute();
    await db.deleteFrom('policies').where('name', '=', name).execute();
    return record;
  }

  async attach(
    db: Executor,
    name: string,
    kind: PolicyTargetKind,
    targetId: string,
    actor: string,
  ): Promise<PolicyRecord> {
    await this.get(db, name);
    const table = kind === 'model' ? 'device_models' : kind === 'group' ? 'device_groups' : 'devices';
    const target = await db.selectFrom(table).select('id').where('id', '=', targetId).executeTakeFirst();
    if (!target) throw notFound(`${kind} ${targetId}`);
    await db
      .insertInto('policy_attachments')
      .values({ name, target_kind: kind, target_id: targetId, attached_at: isoNow(), attached_by: actor })
      .onConflict((oc) => oc.columns(['name', 'target_kind', 'target_id']).doNothing())
      .execute();
    return this.get(db, name);
  }

  async detach(db: Executor, name: string, kind: PolicyTargetKind, targetId: string): Promise<PolicyRecord> {
    const r = await db
      .deleteFrom('policy_attachments')
      .where('name', '=', name)
      .where('target_kind', '=', kind)
      .where('target_id', '=', targetId)
      .executeTakeFirst();
    if (Number(r.numDeletedRows) === 0) throw notFound(`attachment of policy ${name} to ${kind} ${targetId}`);
    return this.get(db, name);
  }

  async list(db: Executor): Promise<PolicyRecord[]> {
    const rows = await db.selectFrom('policies').select('name').orderBy('name').execute();
    return Promise.all(rows.map((r) => this.get(db, r.name)));
  }

  async get(db: Executor, name: string): Promise<PolicyRecord> {
    if (name === DEFAULT_POLICY_NAME)
      return {
        name,
        description: 'Built in: every device may connect as itself and use its own topics.',
        version: 1,
        document: DEFAULT_POLICY,
        attachments: [],
        createdAt: '1970-01-01T00:00:00.000Z',
        updatedAt: '1970-01-01T00:00:00.000Z',
        findings: lintPolicy(DEFAULT_POLICY),
      };
    const row = await db.selectFrom('policies').selectAll().where('name', '=', name).executeTakeFirst();
    if (!row) throw notFound(`policy ${name}`);
    const version = await db
      .selectFrom('policy_versions')
      .select('document')
      .where('name', '=', name)
      .where('version', '=', row.version)
      .executeTakeFirstOrThrow();
    const attachments = await db
      .selectFrom('policy_attachments')
      .selectAll()
      .where('name', '=', name)
      .orderBy('target_kind')
      .orderBy('target_id')
      .execute();
    const document = JSON.parse(version.document) as PolicyDocument;
    return {
      name,
      description: row.description,
      version: row.version,
      document,
      attachments: attachments.map((a): PolicyAttachment => ({
        targetKind: a.target_kind as PolicyTargetKind,
        targetId: a.target_id,
        attachedAt: a.attached_at,
        attachedBy: a.attached_by,
      })),
      createdAt: row.created_at,
      updatedAt: row.updated_at,
      findings: lintPolicy(document),
    };
  }

  async versions(db: Executor, name: string): Promise<PolicyVersion[]> {
    await this.get(db, name);
    const rows = await db
      .selectFrom('policy_versions')
      .selectAll()
      .where('name', '=', name)
      .orderBy('version')
      .execute();
    return rows.map((r) => ({
      name: r.name,
      version: r.version,
      document: JSON.parse(r.document) as PolicyDocument,
      createdAt: r.created_at,
      createdBy: r.created_by,
    }));
  }

  private async load(): Promise<Snapshot> {
    if (this.snapshot) return this.snapshot;
    const db = this.storage.db;
    const current = await db
      .selectFrom('policies as p')
      .innerJoin('policy_versions as v', (j) =>
        j.onRef('v.name', '=', 'p.name').onRef('v.version', '=', 'p.version'),
      )
      .select(['p.name', 'p.version', 'v.document'])
      .execute();
    const attachments = await db.selectFrom('policy_attachments').selectAll().orderBy('name').execute();
    const snapshot: Snapshot = {
      policies: new Map(
        current.map((r) => [
          r.name,
          { version: r.version, document: JSON.parse(r.document) as PolicyDocument },
        ]),
      ),
      attachments: new Map(),
    };
    for (const a of attachments) {
      const key = `${a.target_kind}:${a.target_id}`;
      snapshot.attachments.set(key, [...(snapshot.attachments.get(key) ?? []), a.name]);
    }
    this.snapshot = snapshot;
    return snapshot;
  }

  /** The policies in force for a device: the default, then its model's, its groups', its own. */
  async forDevice(device: DeviceContext): Promise<AttachedPolicy[]> {
    const snap = await this.load();
    const out: AttachedPolicy[] = [
      { name: DEFAULT_POLICY_NAME, version: 1, attachedTo: 'default', target: '*', document: DEFAULT_POLICY },
    ];
    const add = (kind: PolicyTargetKind, id: string) => {
      for (const name of snap.attachments.get(`${kind}:${id}`) ?? []) {
        const p = snap.policies.get(name);
        if (p) out.push({ name, version: p.version, attachedTo: kind, target: id, document: p.document });
      }
    };
    add('model', device.model);
    for (const g of device.groups) add('group', g);
    add('device', device.id);
    return out;
  }
}
