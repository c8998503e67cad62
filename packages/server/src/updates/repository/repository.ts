import { createHash, createPublicKey } from 'node:crypto';
import {
  Key,
  MetaFile,
  Metadata,
  MetadataKind,
  Root,
  Signature,
  Snapshot,
  Targets,
  Timestamp,
  type TargetFile,
} from '@tufjs/models';
import { Delegations } from '@tufjs/models/dist/delegations.js';
import { DelegatedRole, Role } from '@tufjs/models/dist/role.js';
import type { Logger } from '@rampart/shared/logging';
import {
  isTopLevelRole,
  signedBytes,
  signedDigest,
  tufKeyId,
  tufKeyOf,
  verifyTufSignature,
  type DetachedSignature,
  type TufKey,
} from '@rampart/shared/updates';
import type { RoleView, SigningRequestView } from '@rampart/shared/api';
import { RampartError } from '../../errors.js';
import type { KeyStore, PlatformKey } from '../../keystore/index.js';
import type { Db, Tx } from '../../storage/index.js';
import { isoNow } from '../../time.js';

type AnyMetadata = Metadata<Root | Targets | Snapshot | Timestamp>;
type TufJSON = Parameters<typeof Key.fromJSON>[1];

/** How long each role's metadata is valid after it is signed, in milliseconds. */
export interface Lifetimes {
  root: number;
  targets: number;
  delegated: number;
  snapshot: number;
  timestamp: number;
}

export interface RepositorySettings {
  /** Every key, root included, is made and kept by the server: for development only. */
  development: boolean;
  lifetimes: Lifetimes;
}

/** Who must sign a document: per role whose threshold applies (root changes need the old and the new root). */
interface Authorization {
  role: string;
  keys: Record<string, Key>;
  threshold: number;
}

export interface Proposal {
  published: boolean;
  version: number;
  requestId: number | null;
}

/** Key store labels the repository creates. */
export const DEV_KEY_LABELS = { root: 'tuf-dev-root', targets: 'tuf-dev-targets' } as const;
const onlineLabel = (role: string, n: number) => `tuf-${role}-${n}`;

const kindOf = (role: string): MetadataKind =>
  role === 'root'
    ? MetadataKind.Root
    : role === 'snapshot'
      ? MetadataKind.Snapshot
      : role === 'timestamp'
        ? MetadataKind.Timestamp
        : MetadataKind.Targets;

function parse(role: string, text: string): AnyMetadata {
  const json = JSON.parse(text) as TufJSON;
  switch (kindOf(role)) {
    case MetadataKind.Root:
      return Metadata.fromJSON(MetadataKind.Root, json) as AnyMetadata;
    case MetadataKind.Snapshot:
      return Metadata.fromJSON(MetadataKind.Snapshot, json) as AnyMetadata;
    case MetadataKind.Timestamp:
      return Metadata.fromJSON(MetadataKind.Timestamp, json) as AnyMetadata;
    default:
      return Metadata.fromJSON(MetadataKind.Targets, json) as AnyMetadata;
  }
}

/** File name of a role's metadata under consistent snapshots. */
export function metadataFileName(role: string, version: number): string {
  return role === 'timestamp' ? 'timestamp.json' : `${version}.${role}.json`;
}

function keyFromTuf(key: TufKey): Key {
  return Key.fromJSON(tufKeyId(key), key as unknown as TufJSON);
}

function expiresIn(ms: number, now = Date.now()): string {
  // TUF expiry has second precision.
  return new Date(Math.floor((now + ms) / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

/**
 * The TUF release repository: builds, signs and stores every version of every role's metadata in
 * the database, signs with the keys the server holds, and collects detached signatures for the rest.
 * Callers serialise changes with `exclusive`.
 */
export class TufRepository {
  private chain: Promise<unknown> = Promise.resolve();
  private readonly keyCache = new Map<string, PlatformKey>();

  constructor(
    private readonly keys: KeyStore,
    readonly settings: RepositorySettings,
    private readonly logger: Logger,
  ) {}

  /** Run `work` after every change started before it has finished: one change to the repository at a time. */
  exclusive<T>(work: () => Promise<T>): Promise<T> {
    const next = this.chain.then(work, work);
    this.chain = next.catch(() => undefined);
    return next;
  }

  // -- reading ----------------------------------------------------------------------------------

  async currentRow(
    db: Db | Tx,
    role: string,
  ): Promise<{ version: number; document: string; expires: string } | null> {
    const row = await db
      .selectFrom('tuf_metadata')
      .select(['version', 'document', 'expires'])
      .where('role', '=', role)
      .orderBy('version', 'desc')
      .limit(1)
      .executeTakeFirst();
    return row ? { version: Number(row.version), document: row.document, expires: row.expires } : null;
  }

  async document(db: Db | Tx, role: string, version?: number): Promise<string | null> {
    if (version === undefined) return (await this.currentRow(db, role))?.document ?? null;
    const row = await db
      .selectFrom('tuf_metadata')
      .select('document')
      .where('role', '=', role)
      .where('version', '=', version)
      .executeTakeFirst();
    return row?.document ?? null;
  }

  async root(db: Db | Tx): Promise<Metadata<Root> | null> {
    const row = await this.currentRow(db, 'root');
    return row ? (parse('root', row.document) as Metadata<Root>) : null;
  }

  private async mustRoot(db: Db | Tx): Promise<Metadata<Root>> {
    const root = await this.root(db);
    if (!root)
      throw new RampartError('CONFLICT', 'the release repository is not initialised yet', [
        {
          field: 'repository',
          message:
            'set updates.development, or initialise it with offline root and targets keys (rampart release init)',
        },
      ]);
    return root;
  }

  /**
   * The root that authorises the other top-level roles: the published one or, before any root is
   * published, root v1 waiting in the signing request `initialiseOffline` made (so that the initial
   * targets can collect its offline signatures at the same time as root).
   */
  private async rootInForce(db: Db | Tx): Promise<Metadata<Root>> {
    const published = await this.root(db);
    if (published) return published;
    const pending = await this.pendingInitialRoot(db);
    if (pending) return parse('root', pending.document) as Metadata<Root>;
    return this.mustRoot(db);
  }

  /** Root v1 of an offline initialisation, while it waits for its signatures. */
  private async pendingInitialRoot(db: Db | Tx): Promise<{ id: number; document: string } | null> {
    const row = await db
      .selectFrom('tuf_signing_requests')
      .select(['id', 'document'])
      .where('role', '=', 'root')
      .where('version', '=', 1)
      .where('state', '=', 'pending')
      .executeTakeFirst();
    return row ? { id: Number(row.id), document: row.document } : null;
  }

  async targets(db: Db | Tx, role = 'targets'): Promise<Metadata<Targets> | null> {
    const row = await this.currentRow(db, role);
    return row ? (parse(role, row.document) as Metadata<Targets>) : null;
  }

  /** The delegated role of the top-level targets that is responsible for `path`, or `targets` itself. */
  async roleForPath(db: Db | Tx, path: string): Promise<string> {
    const top = await this.targets(db);
    for (const r of Object.values(top?.signed.delegations?.roles ?? {})) {
      if (r.isDelegatedPath(path)) return r.name;
    }
    return 'targets';
  }

  async delegatedRoles(db: Db | Tx): Promise<DelegatedRole[]> {
    const top = await this.targets(db);
    return Object.values(top?.signed.delegations?.roles ?? {});
  }

  // -- keys ------------------------------------------------------------------------------------

  private async serverKey(db: Db | Tx, keyId: string): Promise<PlatformKey | null> {
    const cached = this.keyCache.get(keyId);
    if (cached) return cached;
    const row = await db
      .selectFrom('tuf_keys')
      .select('keystore_label')
      .where('key_id', '=', keyId)
      .executeTakeFirst();
    if (!row?.keystore_label) return null;
    const key = await this.keys.get(row.keystore_label);
    if (key) this.keyCache.set(keyId, key);
    return key;
  }

  private async recordKey(
    tx: Tx,
    tuf: TufKey,
    origin: 'online' | 'offline' | 'development',
    label: string | null,
  ): Promise<string> {
    const keyId = tufKeyId(tuf);
    const existing = await tx
      .selectFrom('tuf_keys')
      .select('key_id')
      .where('key_id', '=', keyId)
      .executeTakeFirst();
    if (!existing)
      await tx
        .insertInto('tuf_keys')
        .values({
          key_id: keyId,
          key: JSON.stringify(tuf),
          origin,
          keystore_label: label,
          created_at: isoNow(),
        })
        .execute();
    return keyId;
  }

  /** A new key in the key store for `role`, recorded as online (or development for root and targets in development). */
  private async newServerKey(
    tx: Tx,
    role: string,
    origin: 'online' | 'development',
  ): Promise<{ id: string; key: TufKey }> {
    let label: string;
    if (origin === 'development' && (role === 'root' || role === 'targets')) {
      label = DEV_KEY_LABELS[role];
    } else {
      let n = 1;
      while (await this.keys.get(onlineLabel(role, n))) n++;
      label = onlineLabel(role, n);
    }
    const pk = (await this.keys.get(label)) ?? (await this.keys.create(label, 'ec-p256'));
    const tuf = tufKeyOf(pk.publicKey);
    const id = await this.recordKey(tx, tuf, origin, label);
    return { id, key: tuf };
  }

  async serverHeldKeyIds(db: Db | Tx): Promise<Set<string>> {
    const rows = await db
      .selectFrom('tuf_keys')
      .select('key_id')
      .where('keystore_label', 'is not', null)
      .execute();
    return new Set(rows.map((r) => r.key_id));
  }

  // -- authorisation and signing ----------------------------------------------------------------

  private async authorization(db: Db | Tx, role: string, md: AnyMetadata): Promise<Authorization[]> {
    if (role === 'root') {
      const next = md.signed as Root;
      const out: Authorization[] = [];
      const current = await this.root(db);
      if (current) {
        const r = current.signed.roles.root!;
        out.push({
          role: `root v${current.signed.version}`,
          keys: pick(current.signed.keys, r.keyIDs),
          threshold: r.threshold,
        });
      }
      const r = next.roles.root!;
      out.push({ role: `root v${next.version}`, keys: pick(next.keys, r.keyIDs), threshold: r.threshold });
      return out;
    }
    if (isTopLevelRole(role)) {
      const root = await this.rootInForce(db);
      const r = root.signed.roles[role]!;
      return [{ role, keys: pick(root.signed.keys, r.keyIDs), threshold: r.threshold }];
    }
    const top = await this.targets(db);
    const d = top?.signed.delegations;
    const r = d?.roles?.[role];
    if (!d || !r)
      throw new RampartError(
        'NOT_FOUND',
        `no delegated role ${role}: create it with PUT /updates/roles/${role}`,
      );
    return [{ role, keys: pick(d.keys, r.keyIDs), threshold: r.threshold }];
  }

  private static missing(
    auth: Authorization[],
    md: AnyMetadata,
  ): { role: string; keyIds: string[]; needed: number }[] {
    const out: { role: string; keyIds: string[]; needed: number }[] = [];
    for (const a of auth) {
      let valid = 0;
      for (const [id, key] of Object.entries(a.keys)) {
        const sig = md.signatures[id];
        if (sig && verifyTufSignature(md.signed.toJSON(), key.toJSON() as unknown as TufKey, sig.sig))
          valid++;
      }
      if (valid < a.threshold)
        out.push({
          role: a.role,
          keyIds: Object.keys(a.keys).filter((id) => !md.signatures[id]),
          needed: a.threshold - valid,
        });
    }
    return out;
  }

  /** Add the signatures of every authorised key the server holds. */
  private async serverSign(db: Db | Tx, md: AnyMetadata, auth: Authorization[]): Promise<void> {
    const bytes = signedBytes(md.signed.toJSON());
    const ids = new Set(auth.flatMap((a) => Object.keys(a.keys)));
    for (const id of ids) {
      if (md.signatures[id]) continue;
      const key = await this.serverKey(db, id);
      if (!key) continue;
      const sig = await key.sign(bytes);
      md.signatures[id] = new Signature({ keyID: id, sig: sig.toString('hex') });
    }
  }

  private async insert(tx: Tx, role: string, md: AnyMetadata): Promise<void> {
    await tx
      .insertInto('tuf_metadata')
      .values({
        role,
        version: md.signed.version,
        document: JSON.stringify(md.toJSON()),
        expires: md.signed.expires,
        published_at: isoNow(),
      })
      .execute();
  }

  async pendingRequest(db: Db | Tx, role: string): Promise<number | null> {
    const row = await db
      .selectFrom('tuf_signing_requests')
      .select('id')
      .where('role', '=', role)
      .where('state', '=', 'pending')
      .executeTakeFirst();
    return row ? Number(row.id) : null;
  }

  async refuseWhilePending(db: Db | Tx, role: string): Promise<void> {
    const pending = await this.pendingRequest(db, role);
    if (pending !== null)
      throw new RampartError(
        'CONFLICT',
        `role ${role} has signing request ${pending} waiting for signatures; sign it (rampart release sign) or cancel it first`,
      );
  }

  /**
   * Sign a new version of `role` with the keys the server holds; publish it when its thresholds are
   * met, otherwise keep it as a pending signing request for offline keys.
   */
  async propose(
    tx: Tx,
    role: string,
    signed: Root | Targets,
    reason: string,
    actor: string,
  ): Promise<Proposal> {
    await this.refuseWhilePending(tx, role);
    const md = new Metadata(signed) as AnyMetadata;
    const auth = await this.authorization(tx, role, md);
    await this.serverSign(tx, md, auth);
    if (TufRepository.missing(auth, md).length === 0) {
      await this.publish(tx, role, md);
      return { published: true, version: signed.version, requestId: null };
    }
    const inserted = await tx
      .insertInto('tuf_signing_requests')
      .values({
        role,
        version: signed.version,
        document: JSON.stringify(md.toJSON()),
        state: 'pending',
        reason,
        created_at: isoNow(),
        created_by: actor,
        published_at: null,
      })
      .returning('id')
      .executeTakeFirstOrThrow();
    this.logger.info(
      { role, version: signed.version, request: inserted.id },
      'metadata waits for offline signatures',
    );
    return { published: false, version: signed.version, requestId: Number(inserted.id) };
  }

  /** Store a fully signed version and bring what depends on it up to date (snapshot, timestamp). */
  private async publish(tx: Tx, role: string, md: AnyMetadata): Promise<void> {
    await this.insert(tx, role, md);
    this.logger.info({ role, version: md.signed.version }, 'TUF metadata published');
    if (role === 'root') {
      // Keys of other roles may have changed: sign them anew with the keys now in force.
      const root = md.signed as Root;
      const top = await this.targets(tx);
      if (top && !sameKeys(top, root, 'targets'))
        await this.bump(tx, 'targets', 'targets keys changed', 'system');
      // An offline initialisation whose targets v1 still waits for signatures: no snapshot yet.
      if (top) await this.newSnapshot(tx);
    } else if (role !== 'snapshot' && role !== 'timestamp') {
      // Before root v1 of an offline initialisation is published there is nothing to snapshot for.
      if (await this.root(tx)) await this.newSnapshot(tx);
    }
  }

  /** A new version of a targets role with the same content and a fresh expiry. */
  async bump(tx: Tx, role: string, reason: string, actor: string): Promise<Proposal> {
    const current = await this.targets(tx, role);
    if (!current) throw new RampartError('NOT_FOUND', `no metadata for role ${role}`);
    const next = new Targets({
      version: current.signed.version + 1,
      specVersion: current.signed.specVersion,
      expires: expiresIn(
        role === 'targets' ? this.settings.lifetimes.targets : this.settings.lifetimes.delegated,
      ),
      targets: current.signed.targets,
      ...(current.signed.delegations ? { delegations: current.signed.delegations } : {}),
    });
    return this.propose(tx, role, next, reason, actor);
  }

  private async onlineSign(tx: Tx, role: 'snapshot' | 'timestamp', md: AnyMetadata): Promise<void> {
    const auth = await this.authorization(tx, role, md);
    await this.serverSign(tx, md, auth);
    const missing = TufRepository.missing(auth, md);
    if (missing.length)
      throw new RampartError(
        'KEYSTORE',
        `the server does not hold enough ${role} keys to sign it (${missing[0]!.needed} more needed)`,
      );
    await this.insert(tx, role, md);
  }

  /** A new snapshot naming the newest version of every targets role, then a new timestamp. */
  async newSnapshot(tx: Tx): Promise<void> {
    const meta: Record<string, MetaFile> = {};
    const top = await this.currentRow(tx, 'targets');
    if (top) meta['targets.json'] = new MetaFile({ version: top.version });
    for (const d of await this.delegatedRoles(tx)) {
      const row = await this.currentRow(tx, d.name);
      if (row) meta[`${d.name}.json`] = new MetaFile({ version: row.version });
    }
    const current = await this.currentRow(tx, 'snapshot');
    const md = new Metadata(
      new Snapshot({
        version: (current?.version ?? 0) + 1,
        specVersion: '1.0.31',
        expires: expiresIn(this.settings.lifetimes.snapshot),
        meta,
      }),
    ) as AnyMetadata;
    await this.onlineSign(tx, 'snapshot', md);
    await this.newTimestamp(tx);
  }

  /** A new timestamp for the newest snapshot, with its length and hash. */
  async newTimestamp(tx: Tx): Promise<void> {
    const snap = await this.currentRow(tx, 'snapshot');
    if (!snap) throw new RampartError('INTERNAL', 'no snapshot to time-stamp');
    const bytes = Buffer.from(snap.document);
    const current = await this.currentRow(tx, 'timestamp');
    const md = new Metadata(
      new Timestamp({
        version: (current?.version ?? 0) + 1,
        specVersion: '1.0.31',
        expires: expiresIn(this.settings.lifetimes.timestamp),
        snapshotMeta: new MetaFile({
          version: snap.version,
          length: bytes.length,
          hashes: { sha256: createHash('sha256').update(bytes).digest('hex') },
        }),
      }),
    ) as AnyMetadata;
    await this.onlineSign(tx, 'timestamp', md);
  }

  // -- set-up and role changes ------------------------------------------------------------------

  /**
   * Create the repository when there is none: root version 1 and empty targets, snapshot and timestamp.
   * In development every key is a key-store key (root and targets labelled `tuf-dev-*`).
   */
  async initialise(tx: Tx): Promise<boolean> {
    if (await this.root(tx)) return false;
    if (!this.settings.development) return false;
    const rootKey = await this.newServerKey(tx, 'root', 'development');
    const targetsKey = await this.newServerKey(tx, 'targets', 'development');
    const snapshotKey = await this.newServerKey(tx, 'snapshot', 'online');
    const timestampKey = await this.newServerKey(tx, 'timestamp', 'online');
    const root = new Root({
      version: 1,
      specVersion: '1.0.31',
      expires: expiresIn(this.settings.lifetimes.root),
      consistentSnapshot: true,
    });
    root.addKey(keyFromTuf(rootKey.key), 'root');
    root.addKey(keyFromTuf(targetsKey.key), 'targets');
    root.addKey(keyFromTuf(snapshotKey.key), 'snapshot');
    root.addKey(keyFromTuf(timestampKey.key), 'timestamp');
    const md = new Metadata(root) as AnyMetadata;
    await this.serverSign(tx, md, await this.authorization(tx, 'root', md));
    await this.insert(tx, 'root', md);
    const targets = new Metadata(
      new Targets({ version: 1, specVersion: '1.0.31', expires: expiresIn(this.settings.lifetimes.targets) }),
    ) as AnyMetadata;
    await this.serverSign(tx, targets, await this.authorization(tx, 'targets', targets));
    await this.insert(tx, 'targets', targets);
    await this.newSnapshot(tx);
    return true;
  }

  /**
   * Initialise a repository that is not in development mode and has no root yet, from offline keys:
   * root v1 names the offline root and targets keys and fresh online snapshot and timestamp keys
   * (made in the key store now); root v1 and an empty targets v1 wait as signing requests for the
   * thresholds of their own offline keys. When both are signed they are published, with the first
   * snapshot and timestamp. Refused (409) in development mode, with a root, or with an
   * initialisation pending; bad keys or thresholds (400) before anything is made.
   */
  async initialiseOffline(
    tx: Tx,
    spec: { root: { keys: TufKey[]; threshold: number }; targets: { keys: TufKey[]; threshold: number } },
    actor: string,
  ): Promise<{ root: Proposal; targets: Proposal }> {
    if (this.settings.development)
      throw new RampartError(
        'CONFLICT',
        'this is a development repository, which initialises itself with key-store keys; offline initialisation is for updates.development: false',
      );
    if (await this.root(tx))
      throw new RampartError(
        'CONFLICT',
        'the release repository is initialised already; change its keys with PUT /updates/roles/{name} (rampart release role set)',
      );
    for (const role of ['root', 'targets']) {
      const pending = await this.pendingRequest(tx, role);
      if (pending !== null)
        throw new RampartError(
          'CONFLICT',
          `an initialisation is under way: ${role} signing request ${pending} waits for signatures; sign it, or cancel it to start again`,
        );
    }
    const rootKeys = parseKeys(spec.root.keys, 'root.keys');
    const targetsKeys = parseKeys(spec.targets.keys, 'targets.keys');
    for (const [name, keys, threshold] of [
      ['root', rootKeys, spec.root.threshold],
      ['targets', targetsKeys, spec.targets.threshold],
    ] as const) {
      if (keys.length === 0)
        throw new RampartError('VALIDATION', `${name} needs at least one key`, [
          { field: `${name}.keys`, message: 'empty' },
        ]);
      if (!Number.isInteger(threshold) || threshold < 1 || threshold > keys.length)
        throw new RampartError(
          'VALIDATION',
          `threshold ${threshold} of ${name} is not between 1 and its ${keys.length} key(s)`,
          [{ field: `${name}.threshold`, message: `between 1 and ${keys.length}` }],
        );
    }
    const held = await this.serverHeldKeyIds(tx);
    for (const k of [...rootKeys, ...targetsKeys]) {
      if (held.has(k.id))
        throw new RampartError('VALIDATION', `key ${k.id} is held by the server; offline keys only`, [
          { field: rootKeys.includes(k) ? 'root.keys' : 'targets.keys', message: 'not an offline key' },
        ]);
      await this.recordKey(tx, k.tuf, 'offline', null);
    }
    const snapshotKey = await this.newServerKey(tx, 'snapshot', 'online');
    const timestampKey = await this.newServerKey(tx, 'timestamp', 'online');
    const keys: Record<string, Key> = {};
    for (const k of [...rootKeys, ...targetsKeys]) keys[k.id] = keyFromTuf(k.tuf);
    keys[snapshotKey.id] = keyFromTuf(snapshotKey.key);
    keys[timestampKey.id] = keyFromTuf(timestampKey.key);
    const root = new Root({
      version: 1,
      specVersion: '1.0.31',
      expires: expiresIn(this.settings.lifetimes.root),
      consistentSnapshot: true,
      keys,
      roles: {
        root: new Role({ keyIDs: rootKeys.map((k) => k.id), threshold: spec.root.threshold }),
        targets: new Role({ keyIDs: targetsKeys.map((k) => k.id), threshold: spec.targets.threshold }),
        snapshot: new Role({ keyIDs: [snapshotKey.id], threshold: 1 }),
        timestamp: new Role({ keyIDs: [timestampKey.id], threshold: 1 }),
      },
    });
    // Root first: the targets request is authorised by this pending root v1 (see rootInForce).
    const rootProposal = await this.propose(tx, 'root', root, 'initialise with offline keys', actor);
    const targets = new Targets({
      version: 1,
      specVersion: '1.0.31',
      expires: expiresIn(this.settings.lifetimes.targets),
    });
    const targetsProposal = await this.propose(tx, 'targets', targets, 'initialise with offline keys', actor);
    return { root: rootProposal, targets: targetsProposal };
  }

  /**
   * Change a role: its keys and threshold (top-level roles: a new root version; delegated roles: a
   * new version of the top-level targets, created when absent, with `paths`).
   */
  async setRole(
    tx: Tx,
    name: string,
    change: { threshold?: number; keys?: TufKey[]; onlineKey?: boolean; paths?: string[] },
    actor: string,
  ): Promise<Proposal> {
    const keyIds: string[] = [];
    const newKeys: Record<string, Key> = {};
    for (const k of parseKeys(change.keys ?? [], 'keys')) {
      keyIds.push(k.id);
      newKeys[k.id] = keyFromTuf(k.tuf);
    }
    if (isTopLevelRole(name)) {
      if (change.paths)
        throw new RampartError('VALIDATION', 'paths apply to delegated roles only', [
          { field: 'paths', message: 'not for top-level roles' },
        ]);
      if ((name === 'snapshot' || name === 'timestamp') && (change.keys?.length ?? 0) > 0)
        throw new RampartError(
          'VALIDATION',
          `${name} is an online role: its keys live in the server key store`,
          [{ field: 'keys', message: 'use onlineKey: true to rotate it' }],
        );
      await this.refuseWhilePending(tx, 'root');
      const current = await this.mustRoot(tx);
      const cur = current.signed;
      const role = cur.roles[name]!;
      let ids = change.keys || change.onlineKey ? [...keyIds] : [...role.keyIDs];
      if (change.onlineKey) {
        const created = await this.newServerKey(tx, name, 'online');
        ids.push(created.id);
        newKeys[created.id] = keyFromTuf(created.key);
      }
      ids = [...new Set(ids)];
      const threshold = change.threshold ?? role.threshold;
      if (ids.length === 0)
        throw new RampartError('VALIDATION', `role ${name} needs at least one key`, [
          { field: 'keys', message: 'empty' },
        ]);
      if (threshold > ids.length)
        throw new RampartError(
          'VALIDATION',
          `threshold ${threshold} is more than the ${ids.length} keys of ${name}`,
          [{ field: 'threshold', message: `at most ${ids.length}` }],
        );
      for (const [id, k] of Object.entries(newKeys)) {
        if (!change.onlineKey || !(await this.serverKey(tx, id)))
          await this.recordKey(tx, k.toJSON() as unknown as TufKey, 'offline', null);
      }
      const roles: Record<string, Role> = { ...cur.roles, [name]: new Role({ keyIDs: ids, threshold }) };
      const used = new Set(Object.values(roles).flatMap((r) => r.keyIDs));
      const keys: Record<string, Key> = {};
      for (const id of used) keys[id] = cur.keys[id] ?? newKeys[id]!;
      const next = new Root({
        version: cur.version + 1,
        specVersion: cur.specVersion,
        expires: expiresIn(this.settings.lifetimes.root),
        consistentSnapshot: true,
        keys,
        roles,
      });
      return this.propose(tx, 'root', next, `set role ${name}`, actor);
    }
    // A delegation of the top-level targets.
    if (change.onlineKey)
      throw new RampartError('VALIDATION', 'delegated roles are signed with offline keys', [
        { field: 'onlineKey', message: 'not for delegated roles' },
      ]);
    const top = await this.targets(tx);
    if (!top) throw new RampartError('CONFLICT', 'the release repository is not initialised yet');
    const existing = top.signed.delegations?.roles?.[name];
    const ids = change.keys ? keyIds : (existing?.keyIDs ?? []);
    const threshold = change.threshold ?? existing?.threshold ?? 1;
    const paths = change.paths ?? existing?.paths;
    if (!paths)
      throw new RampartError('VALIDATION', `a new delegated role needs paths`, [
        { field: 'paths', message: 'required for a new role' },
      ]);
    if (ids.length === 0)
      throw new RampartError('VALIDATION', `role ${name} needs at least one key`, [
        { field: 'keys', message: 'required for a new role' },
      ]);
    if (threshold > ids.length)
      throw new RampartError(
        'VALIDATION',
        `threshold ${threshold} is more than the ${ids.length} keys of ${name}`,
        [{ field: 'threshold', message: `at most ${ids.length}` }],
      );
    for (const [, k] of Object.entries(newKeys))
      await this.recordKey(tx, k.toJSON() as unknown as TufKey, 'offline', null);
    const d = top.signed.delegations;
    const roles: Record<string, DelegatedRole> = { ...(d?.roles ?? {}) };
    roles[name] = new DelegatedRole({ name, keyIDs: ids, threshold, terminating: true, paths });
    const used = new Set(Object.values(roles).flatMap((r) => r.keyIDs));
    const keys: Record<string, Key> = {};
    for (const id of used) keys[id] = d?.keys[id] ?? newKeys[id]!;
    const next = new Targets({
      version: top.signed.version + 1,
      specVersion: top.signed.specVersion,
      expires: expiresIn(this.settings.lifetimes.targets),
      targets: top.signed.targets,
      delegations: new Delegations({ keys, roles }),
    });
    return this.propose(tx, 'targets', next, `delegate ${paths.join(', ')} to ${name}`, actor);
  }

  /** A new version of `role` (a targets role) with `target` added or replaced. */
  async addTarget(tx: Tx, role: string, target: TargetFile, actor: string): Promise<Proposal> {
    await this.refuseWhilePending(tx, role);
    const current = await this.targets(tx, role);
    if (!current && role === 'targets')
      throw new RampartError('CONFLICT', 'the release repository is not initialised yet');
    const targets: Record<string, TargetFile> = { ...(current?.signed.targets ?? {}), [target.path]: target };
    const next = new Targets({
      version: (current?.signed.version ?? 0) + 1,
      specVersion: '1.0.31',
      expires: expiresIn(
        role === 'targets' ? this.settings.lifetimes.targets : this.settings.lifetimes.delegated,
      ),
      targets,
      ...(current?.signed.delegations ? { delegations: current.signed.delegations } : {}),
    });
    return this.propose(tx, role, next, `release ${target.path}`, actor);
  }

  // -- signing requests ------------------------------------------------------------------------

  async requestRow(db: Db | Tx, id: number) {
    const row = await db
      .selectFrom('tuf_signing_requests')
      .selectAll()
      .where('id', '=', id)
      .executeTakeFirst();
    if (!row) throw new RampartError('NOT_FOUND', `no signing request ${id}`);
    return row;
  }

  async requestView(
    db: Db | Tx,
    row: Awaited<ReturnType<TufRepository['requestRow']>>,
  ): Promise<SigningRequestView> {
    const md = parse(row.role, row.document);
    let missing: SigningRequestView['missing'] = [];
    let threshold: number;
    if (row.state === 'pending') {
      const auth = await this.authorization(db, row.role, md);
      missing = TufRepository.missing(auth, md);
      threshold = Math.max(...auth.map((a) => a.threshold));
    } else {
      threshold = Object.keys(md.signatures).length;
    }
    return {
      id: Number(row.id),
      role: row.role,
      version: Number(row.version),
      state: row.state as SigningRequestView['state'],
      reason: row.reason,
      threshold,
      signedBy: Object.keys(md.signatures),
      missing,
      signedDigest: signedDigest(md.signed.toJSON()),
      createdAt: row.created_at,
      createdBy: row.created_by,
      publishedAt: row.published_at,
    };
  }

  /**
   * Check a detached signature and add it to the pending request; publish when the thresholds are
   * met. Refused with nothing changed: another document, an unknown key, a bad signature.
   */
  async addSignature(
    tx: Tx,
    id: number,
    s: DetachedSignature,
  ): Promise<{ published: boolean; role: string; version: number }> {
    const row = await this.requestRow(tx, id);
    if (row.state !== 'pending')
      throw new RampartError(
        'CONFLICT',
        `signing request ${id} is ${row.state}; it takes no more signatures`,
      );
    if (s.role !== row.role)
      throw new RampartError(
        'VALIDATION',
        `the signature is for role ${s.role}, request ${id} is for ${row.role}`,
        [{ field: 'role', message: `must be ${row.role}` }],
      );
    if (s.version !== Number(row.version))
      throw new RampartError(
        'CONFLICT',
        `the signature is for ${row.role} version ${s.version}, request ${id} is version ${row.version}; download the request again and sign that`,
      );
    const md = parse(row.role, row.document);
    if (s.signedDigest !== signedDigest(md.signed.toJSON()))
      throw new RampartError('VALIDATION', `the signature is for another document than request ${id}`, [
        { field: 'signedDigest', message: 'does not match the pending metadata' },
      ]);
    const auth = await this.authorization(tx, row.role, md);
    const key = auth.map((a) => a.keys[s.keyid]).find((k) => k !== undefined);
    if (!key)
      throw new RampartError('VALIDATION', `key ${s.keyid} may not sign ${row.role}`, [
        { field: 'keyid', message: 'is not one of the keys of the role' },
      ]);
    if (!verifyTufSignature(md.signed.toJSON(), key.toJSON() as unknown as TufKey, s.sig))
      throw new RampartError('VALIDATION', `the signature does not verify with key ${s.keyid}`, [
        { field: 'sig', message: 'bad signature' },
      ]);
    md.signatures[s.keyid] = new Signature({ keyID: s.keyid, sig: s.sig });
    const published = TufRepository.missing(auth, md).length === 0;
    if (published) await this.publish(tx, row.role, md);
    await tx
      .updateTable('tuf_signing_requests')
      .set({
        document: JSON.stringify(md.toJSON()),
        ...(published ? { state: 'published', published_at: isoNow() } : {}),
      })
      .where('id', '=', id)
      .execute();
    return { published, role: row.role, version: Number(row.version) };
  }

  async cancel(tx: Tx, id: number): Promise<string> {
    const row = await this.requestRow(tx, id);
    if (row.state !== 'pending') throw new RampartError('CONFLICT', `signing request ${id} is ${row.state}`);
    const ids = [id];
    // The two requests of an offline initialisation stand or fall together while root v1 waits:
    // without it, nothing could authorise the initial targets.
    const initialRoot = await this.pendingInitialRoot(tx);
    if (initialRoot && (row.role === 'root' || row.role === 'targets')) {
      const targets = await this.pendingRequest(tx, 'targets');
      ids.push(initialRoot.id, ...(targets === null ? [] : [targets]));
    } else if (row.role === 'targets' && !(await this.targets(tx)))
      throw new RampartError(
        'CONFLICT',
        `signing request ${id} is the repository's first targets metadata and completes its initialisation; ` +
          'sign it with the targets keys (to use other keys, change them first: PUT /updates/roles/targets)',
      );
    await tx
      .updateTable('tuf_signing_requests')
      .set({ state: 'cancelled' })
      .where('id', 'in', [...new Set(ids)])
      .execute();
    return row.role;
  }

  // -- views and upkeep ------------------------------------------------------------------------

  async roles(db: Db | Tx): Promise<RoleView[]> {
    const root = await this.root(db);
    if (!root) return [];
    const held = await this.serverHeldKeyIds(db);
    const out: RoleView[] = [];
    const view = async (name: string, role: Role, delegated: boolean, paths?: string[]) => {
      const row = await this.currentRow(db, name);
      out.push({
        name,
        delegated,
        version: row?.version ?? 0,
        expires: row?.expires ?? '',
        threshold: role.threshold,
        keyIds: role.keyIDs,
        onlineKeyIds: role.keyIDs.filter((id) => held.has(id)),
        ...(paths ? { paths } : {}),
        pendingRequest: await this.pendingRequest(db, name),
      });
    };
    for (const name of ['root', 'targets', 'snapshot', 'timestamp'])
      await view(name, root.signed.roles[name]!, false);
    for (const d of await this.delegatedRoles(db)) await view(d.name, d, true, d.paths);
    return out;
  }

  /**
   * Re-sign what expires within half its lifetime and the server can sign alone (timestamp,
   * snapshot; targets and root too when their keys are online). Returns the roles re-signed.
   */
  async refresh(tx: Tx, now = Date.now()): Promise<string[]> {
    const root = await this.root(tx);
    if (!root) return [];
    const done: string[] = [];
    const soon = (expires: string, lifetime: number) => Date.parse(expires) - now < lifetime / 2;
    const held = await this.serverHeldKeyIds(tx);
    const canSign = (r: Role) => r.keyIDs.filter((id) => held.has(id)).length >= r.threshold;
    const rootRow = await this.currentRow(tx, 'root');
    const lt = this.settings.lifetimes;
    if (rootRow && soon(rootRow.expires, lt.root)) {
      if (canSign(root.signed.roles.root!) && (await this.pendingRequest(tx, 'root')) === null) {
        const r = root.signed;
        await this.propose(
          tx,
          'root',
          new Root({
            version: r.version + 1,
            specVersion: r.specVersion,
            expires: expiresIn(lt.root, now),
            consistentSnapshot: true,
            keys: r.keys,
            roles: r.roles,
          }),
          'expiry',
          'system',
        );
        done.push('root');
      } else
        this.logger.warn(
          { role: 'root', expires: rootRow.expires },
          'root metadata expires soon and needs offline signatures',
        );
    }
    const check = async (name: string, role: Role, lifetime: number) => {
      const row = await this.currentRow(tx, name);
      if (!row || !soon(row.expires, lifetime)) return;
      if (canSign(role) && (await this.pendingRequest(tx, name)) === null) {
        await this.bump(tx, name, 'expiry', 'system');
        done.push(name);
      } else
        this.logger.warn(
          { role: name, expires: row.expires },
          'targets metadata expires soon and needs offline signatures',
        );
    };
    await check('targets', root.signed.roles.targets!, lt.targets);
    for (const d of await this.delegatedRoles(tx)) await check(d.name, d, lt.delegated);
    // Publishing anything above signed a new snapshot and timestamp already.
    if (done.length) return done;
    const snap = await this.currentRow(tx, 'snapshot');
    if (snap && soon(snap.expires, lt.snapshot)) {
      await this.newSnapshot(tx);
      return ['snapshot', 'timestamp'];
    }
    const ts = await this.currentRow(tx, 'timestamp');
    if (ts && soon(ts.expires, lt.timestamp)) {
      await this.newTimestamp(tx);
      done.push('timestamp');
    }
    return done;
  }
}

function pick(keys: Record<string, Key>, ids: string[]): Record<string, Key> {
  const out: Record<string, Key> = {};
  for (const id of ids) if (keys[id]) out[id] = keys[id];
  return out;
}

function sameKeys(current: Metadata<Targets>, root: Root, role: string): boolean {
  // The targets metadata carries signatures by the keys that were in force: are they still the role's keys?
  const r = root.roles[role]!;
  const signers = Object.keys(current.signatures);
  return signers.filter((id) => r.keyIDs.includes(id)).length >= r.threshold;
}

/** Parse offline public keys: a malformed key must not reach published metadata (400 naming `field`). */
function parseKeys(keys: TufKey[], field: string): { id: string; tuf: TufKey }[] {
  const out: { id: string; tuf: TufKey }[] = [];
  for (const k of keys) {
    let id: string;
    try {
      const parsed = tufKeyOf(createPublicKey(k.keyval.public));
      if (parsed.keytype !== k.keytype || parsed.scheme !== k.scheme)
        throw new Error(`it is a ${parsed.keytype} key, not ${k.keytype}/${k.scheme}`);
      id = tufKeyId(k);
    } catch (err) {
      throw new RampartError('VALIDATION', `a key is not a usable public key: ${(err as Error).message}`, [
        { field, message: 'must be ECDSA P-256 or Ed25519 public keys, PEM in keyval.public' },
      ]);
    }
    if (out.some((o) => o.id === id))
      throw new RampartError('VALIDATION', `key ${id} is listed twice`, [
        { field, message: 'duplicate key' },
      ]);
    out.push({ id, tuf: k });
  }
  return out;
}
