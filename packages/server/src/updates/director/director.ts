import type { KeyObject, X509Certificate } from 'node:crypto';
import { Key, Metadata, MetadataKind, Root, Signature, Targets, TargetFile } from '@tufjs/models';
import { Role } from '@tufjs/models/dist/role.js';
import type { Logger } from '@rampart/shared/logging';
import { normalizeSerial } from '@rampart/shared/pki';
import type { RampartTarget } from '@rampart/shared/updates';
import {
  CUSTOM_KEY,
  receiptProblem,
  signedBytes,
  tufKeyId,
  tufKeyOf,
  type SignedUpdateReceipt,
} from '@rampart/shared/updates';
import { canonicalJson } from '@rampart/shared/audit';
import type { AuditLog } from '../../audit/log.js';
import { RampartError } from '../../errors.js';
import { deviceIdOf } from '../../gateway/gateway.js';
import { certificateStatusGeneration } from '../../identity/certificate-status.js';
import { spkiBytesOfCertificate } from '../../identity/x509.js';
import type { KeyStore, PlatformKey } from '../../keystore/index.js';
import { GroupCommit } from '../../storage/group-commit.js';
import type { Db, Executor, Storage, Tx } from '../../storage/index.js';
import { isoNow } from '../../time.js';
import { tableAssignments, unassign, type DirectorAssignments } from './assignments.js';
import { ContentKeys, ecdhProblem, publicKeyOfCertificate, wrapForDevice } from '../artifacts/encryption.js';

type TufJSON = Parameters<typeof Key.fromJSON>[1];

/** Key store labels of the director's first keys (root version 1). */
export const DIRECTOR_KEY_LABELS = { root: 'director-root', targets: 'director-targets-1' } as const;

/** The director roles whose keys rotate. */
export type DirectorRole = 'root' | 'targets';
export const DIRECTOR_ROLES: readonly DirectorRole[] = ['root', 'targets'];

/**
 * Key store label of the director's `role` key introduced in root version `version`: version 1 has
 * `DIRECTOR_KEY_LABELS`, a rotation to version N creates `director-root-N` / `director-targets-N`.
 */
export function directorKeyLabel(role: DirectorRole, version: number): string {
  return version === 1 ? DIRECTOR_KEY_LABELS[role] : `director-${role}-${version}`;
}

/** What `Director.rotate` did: the new root version and the key ids it lists. */
export interface DirectorRotation {
  version: number;
  rotated: DirectorRole[];
  rootKeyIds: string[];
  targetsKeyIds: string[];
  /** The root key ids that signed the new root: the previous root's and the new one's. */
  signedBy: string[];
  expires: string;
}

/**
 * How long the key that signs device targets is taken from memory before the newest director root
 * is read again: bounds how long a rotation made by another platform instance sharing the
 * PostgreSQL database goes unnoticed here (a rotation by this process takes effect at once).
 */
export const DIRECTOR_KEY_RECHECK_MS = 5_000;

/** Where the director's per-device facts go in a target's `custom`, next to the release's `rampart`. */
export const DIRECTOR_CUSTOM_KEY = 'director';

export interface DirectorCustom {
  /** The device this metadata was signed for: a device refuses metadata for another. */
  deviceId: string;
  deploymentId: string | null;
  /**
   * For an encrypted target: its content key wrapped to this device alone, a JWE (compact,
   * `ECDH-ES+A256KW` / `A256GCM`) to the public key of the device's current certificate.
   */
  contentKey?: string;
}

/** What the director lists for a device, before it is signed (and before a content key is wrapped). */
interface PlannedTarget {
  path: string;
  length: number;
  sha256: string;
  release: RampartTarget;
  deploymentId: string | null;
}

export interface DirectorSettings {
  /** Lifetime of the director root, in milliseconds. */
  rootLifetimeMs: number;
  /** Lifetime of a device's targets metadata, in milliseconds: re-signed when half of it has passed. */
  targetsLifetimeMs: number;
}

/** A device authenticated by its operational certificate on the EST listener. */
export interface AuthenticatedDevice {
  deviceId: string;
  serial: string;
  certificate: X509Certificate;
}

/**
 * How long a device authenticated on a connection is trusted there without asking the database
 * again. A revocation by this process ends it at once (see `certificateStatusGeneration`); this
 * bounds how long a revocation made by another platform instance sharing the PostgreSQL database
 * goes unnoticed on a connection that is already open.
 */
export const CONNECTION_AUTH_REUSE_MS = 5_000;

/** TUF key ids of the director's signing keys, by key object (immutable: its bytes never change). */
const tufKeyIds = new WeakMap<KeyObject, string>();

function tufKeyIdOf(key: KeyObject): string {
  let id = tufKeyIds.get(key);
  if (id === undefined) {
    id = tufKeyId(tufKeyOf(key));
    tufKeyIds.set(key, id);
  }
  return id;
}

function expiresIn(ms: number, now = Date.now()): string {
  return new Date(Math.floor((now + ms) / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

/**
 * The director (Uptane's second repository): tells each device, in targets metadata signed for it
 * alone, exactly which target of the release repository it must install. Its root is its own (a
 * device pins it); the per-device `targets` role is signed online. Devices install only what the
 * director and the release repository agree on, so neither a compromised director nor a compromised
 * release repository alone can make a device install something.
 */
export class Director {
  private chain: Promise<unknown> = Promise.resolve();
  /** Per-device serialisation of `targetsFor`: one device's documents get versions in order. */
  private readonly deviceChains = new Map<string, Promise<unknown>>();
  /** Director metadata and receipts from many devices share commits (one fsync for a group). */
  private readonly writes: GroupCommit;
  private readonly keyCache = new Map<string, PlatformKey>();
  /** The key that signs device targets under the newest root: see `DIRECTOR_KEY_RECHECK_MS`. */
  private signing: { rootVersion: number; key: PlatformKey; keyId: string; checkedAt: number } | null = null;
  /**
   * Devices authenticated per TLS connection: the certificate of a connection does not change, so
   * its status is read once and reused for the connection's later requests while no certificate
   * was revoked since (`generation`), for at most `CONNECTION_AUTH_REUSE_MS` and not past the
   * certificate's expiry (`until`).
   */
  private readonly connections = new WeakMap<
    object,
    { device: AuthenticatedDevice; generation: number; until: number }
  >();
  /** Content keys of encrypted artifacts, sealed at rest with a key from the key store. */
  readonly contentKeys: ContentKeys;

  constructor(
    private readonly storage: Storage,
    private readonly keys: KeyStore,
    private readonly audit: AuditLog,
    readonly settings: DirectorSettings,
    private readonly logger: Logger,
    readonly assignments: DirectorAssignments = tableAssignments,
  ) {
    this.contentKeys = new ContentKeys(keys);
    this.writes = new GroupCommit(storage.db, { afterCommit: () => audit.sealSoon() });
  }

  /** Where receipts for a deployment's assignment are reported (the deployment engine). */
  private outcomes:
    | ((
        tx: Executor,
        report: {
          deviceId: string;
          deploymentId: string;
          path: string;
          outcome: 'committed' | 'rolled-back';
          receiptId: string;
          at: string;
        },
      ) => Promise<unknown>)
    | null = null;

  onOutcome(sink: NonNullable<Director['outcomes']>): void {
    this.outcomes = sink;
  }

  private forDevice<T>(deviceId: string, work: () => Promise<T>): Promise<T> {
    const next = (this.deviceChains.get(deviceId) ?? Promise.resolve()).then(work, work);
    const tail = next.catch(() => undefined);
    this.deviceChains.set(deviceId, tail);
    void tail.then(() => {
      if (this.deviceChains.get(deviceId) === tail) this.deviceChains.delete(deviceId);
    });
    return next;
  }

  private exclusive<T>(work: () => Promise<T>): Promise<T> {
    const next = this.chain.then(work, work);
    this.chain = next.catch(() => undefined);
    return next;
  }

  private async key(label: string): Promise<PlatformKey> {
    const cached = this.keyCache.get(label);
    if (cached) return cached;
    const key = (await this.keys.get(label)) ?? (await this.keys.create(label, 'ec-p256'));
    this.keyCache.set(label, key);
    return key;
  }

  private static async sign(md: Metadata<Root | Targets>, key: PlatformKey): Promise<void> {
    const id = tufKeyIdOf(key.publicKey);
    const sig = await key.sign(signedBytes(md.signed.toJSON()));
    md.signatures[id] = new Signature({ keyID: id, sig: sig.toString('hex') });
  }

  /** Create the director root on first start: root key and online targets key in the key store, threshold 1. */
  async open(): Promise<void> {
    await this.exclusive(async () => {
      if (await this.rootDocument(this.storage.db)) return;
      const rootKey = await this.key(DIRECTOR_KEY_LABELS.root);
      const targetsKey = await this.key(DIRECTOR_KEY_LABELS.targets);
      const tufRoot = tufKeyOf(rootKey.publicKey);
      const tufTargets = tufKeyOf(targetsKey.publicKey);
      const rootId = tufKeyId(tufRoot);
      const targetsId = tufKeyId(tufTargets);
      const root = new Root({
        version: 1,
        specVersion: '1.0.31',
        expires: expiresIn(this.settings.rootLifetimeMs),
        consistentSnapshot: false,
        keys: {
          [rootId]: Key.fromJSON(rootId, tufRoot as unknown as TufJSON),
          [targetsId]: Key.fromJSON(targetsId, tufTargets as unknown as TufJSON),
        },
        roles: {
          root: new Role({ keyIDs: [rootId], threshold: 1 }),
          targets: new Role({ keyIDs: [targetsId], threshold: 1 }),
          // Not used by the director's chain (see docs/updates.md "Director"), present for TUF's schema.
          snapshot: new Role({ keyIDs: [targetsId], threshold: 1 }),
          timestamp: new Role({ keyIDs: [targetsId], threshold: 1 }),
        },
      });
      const md = new Metadata(root);
      await Director.sign(md, rootKey);
      await this.storage.db.transaction().execute(async (tx) => {
        await tx
          .insertInto('director_roots')
          .values({
            version: 1,
            document: JSON.stringify(md.toJSON()),
            expires: root.expires,
            created_at: isoNow(),
          })
          .execute();
        await this.audit.append(tx, {
          actor: 'system',
          action: 'director.init',
          target: 'director:root',
          outcome: 'success',
          details: { rootKeyId: rootId, targetsKeyId: targetsId },
        });
      });
      this.audit.sealSoon();
      this.logger.info('director root created');
    });
  }

  /**
   * The key store key of `role` whose TUF key id is `keyId`, looked up under the labels of the root
   * versions up to `upTo` (a key is labelled after the root version that introduced it), or null
   * when the server does not hold it.
   */
  private async heldKey(role: DirectorRole, keyId: string, upTo: number): Promise<PlatformKey | null> {
    for (let v = upTo; v >= 1; v--) {
      const label = directorKeyLabel(role, v);
      const key = this.keyCache.get(label) ?? (await this.keys.get(label));
      if (!key) continue;
      this.keyCache.set(label, key);
      if (tufKeyIdOf(key.publicKey) === keyId) return key;
    }
    return null;
  }

  /** The online targets key of the newest root (re-read at most every `DIRECTOR_KEY_RECHECK_MS`). */
  private async targetsKey(now = Date.now()): Promise<{ key: PlatformKey; keyId: string }> {
    const cached = this.signing;
    if (cached && now - cached.checkedAt < DIRECTOR_KEY_RECHECK_MS) return cached;
    const newest = await this.storage.db
      .selectFrom('director_roots')
      .select('version')
      .orderBy('version', 'desc')
      .limit(1)
      .executeTakeFirst();
    if (!newest) throw new RampartError('INTERNAL', 'the director has no root yet');
    const rootVersion = Number(newest.version);
    if (cached?.rootVersion === rootVersion) {
      cached.checkedAt = now;
      return cached;
    }
    const root = Director.parseRoot((await this.rootDocument(this.storage.db, rootVersion))!).signed;
    for (const keyId of root.roles.targets?.keyIDs ?? []) {
      const key = await this.heldKey('targets', keyId, rootVersion);
      if (key) {
        this.signing = { rootVersion, key, keyId, checkedAt: now };
        return this.signing;
      }
    }
    throw new RampartError(
      'INTERNAL',
      `the key store holds no targets key of director root version ${rootVersion}`,
    );
  }

  /**
   * Rotate the director's root key, its online targets key, or both, the TUF way: a new root
   * version N+1 listing the new keys (created in the key store as `director-root-N+1`,
   * `director-targets-N+1`), signed by the threshold of root N's keys and by the new root key, and
   * verified with both before it is stored. Devices walk to it from the root they pinned. The new
   * targets key signs every device document from now on; documents signed by the old one are
   * re-signed at their device's next request. Audited as `director.rotate`.
   */
  async rotate(roles: readonly DirectorRole[], actor: string): Promise<DirectorRotation> {
    const rotated = DIRECTOR_ROLES.filter((r) => roles.includes(r));
    if (rotated.length === 0)
      throw new RampartError('VALIDATION', 'name the roles to rotate: root, targets or both', [
        { field: 'roles', message: 'at least one of root, targets' },
      ]);
    return this.exclusive(async () => {
      const text = await this.rootDocument(this.storage.db);
      if (!text) throw new RampartError('CONFLICT', 'the director has no root yet');
      const current = Director.parseRoot(text);
      const cur = current.signed;
      const held = await this.heldRootKeys(cur);
      if (held.length < cur.roles.root!.threshold)
        throw new RampartError(
          'CONFLICT',
          `the key store holds ${held.length} of the ${cur.roles.root!.threshold} root keys of director root version ${cur.version} needed to sign its successor`,
        );
      return this.successor(current, held, rotated, actor);
    });
  }

  /**
   * Re-sign the director root before it expires (the upkeep calls this): when the newest root has
   * less than half of `rootLifetimeMs` left, root version N+1 with the same keys and thresholds and
   * a fresh expiry, signed by the root keys the server holds, so that devices walk to it and never
   * meet an expired root (which they refuse as a frozen director). When the key store does not hold
   * the threshold of root keys, a warning says when the root expires and nothing is done. Audited
   * as `director.root-resign`. Returns what was made, or null.
   */
  async resignRootIfExpiring(now = Date.now()): Promise<DirectorRotation | null> {
    return this.exclusive(async () => {
      const text = await this.rootDocument(this.storage.db);
      if (!text) return null;
      const current = Director.parseRoot(text);
      const cur = current.signed;
      if (Date.parse(cur.expires) - now >= this.settings.rootLifetimeMs / 2) return null;
      const held = await this.heldRootKeys(cur);
      const threshold = cur.roles.root!.threshold;
      if (held.length < threshold) {
        this.logger.warn(
          {
            event: 'director.root-expiring',
            version: cur.version,
            expires: cur.expires,
            held: held.length,
            threshold,
          },
          `the director root (version ${cur.version}) will expire on ${cur.expires} and the key store holds only ${held.length} of the ${threshold} root keys needed to re-sign it: restore the director root keys (key store labels director-root, director-root-N) before then; devices refuse an expired director root and install nothing until a re-signed root is served`,
        );
        return null;
      }
      return this.successor(current, held, [], 'system', now);
    });
  }

  /** The keys of `root`'s root role that the key store holds. */
  private async heldRootKeys(root: Root): Promise<PlatformKey[]> {
    const held: PlatformKey[] = [];
    for (const id of root.roles.root!.keyIDs) {
      const key = await this.heldKey('root', id, root.version);
      if (key) held.push(key);
    }
    return held;
  }

  /**
   * Make, verify and store root version N+1 after `current`: fresh keys for the `rotated` roles
   * (none: the same keys, a re-signing before expiry), the rest carried over, a fresh expiry; signed
   * by the threshold of `current`'s root keys (`oldRootKeys`, held) and by a new root key. Audited
   * as `director.rotate`, or `director.root-resign` when nothing rotated. Run inside `exclusive`.
   */
  private async successor(
    current: Metadata<Root>,
    oldRootKeys: PlatformKey[],
    rotated: DirectorRole[],
    actor: string,
    now = Date.now(),
  ): Promise<DirectorRotation> {
    const db = this.storage.db;
    const cur = current.signed;
    const version = cur.version + 1;
    const oldRoot = cur.roles.root!;
    const oldTargets = cur.roles.targets!;
    const keys: Record<string, Key> = {};
    const fresh = async (role: DirectorRole) => {
      const key = await this.key(directorKeyLabel(role, version));
      const tuf = tufKeyOf(key.publicKey);
      const id = tufKeyId(tuf);
      keys[id] = Key.fromJSON(id, tuf as unknown as TufJSON);
      return { key, id };
    };
    const carried = (ids: string[]) => {
      for (const id of ids) keys[id] = cur.keys[id]!;
      return ids;
    };
    const newRoot = rotated.includes('root') ? await fresh('root') : null;
    const newTargets = rotated.includes('targets') ? await fresh('targets') : null;
    const rootIds = newRoot ? [newRoot.id] : carried(oldRoot.keyIDs);
    const targetsIds = newTargets ? [newTargets.id] : carried(oldTargets.keyIDs);
    const targetsRole = () =>
      new Role({ keyIDs: targetsIds, threshold: newTargets ? 1 : oldTargets.threshold });
    const root = new Root({
      version,
      specVersion: cur.specVersion,
      expires: expiresIn(this.settings.rootLifetimeMs, now),
      consistentSnapshot: false,
      keys,
      roles: {
        root: new Role({ keyIDs: rootIds, threshold: newRoot ? 1 : oldRoot.threshold }),
        targets: targetsRole(),
        // Not used by the director's chain, present for TUF's schema (as in version 1).
        snapshot: targetsRole(),
        timestamp: targetsRole(),
      },
    });
    const md = new Metadata(root);
    for (const key of oldRootKeys.slice(0, oldRoot.threshold)) await Director.sign(md, key);
    if (newRoot) await Director.sign(md, newRoot.key);
    // What devices check: the previous root's threshold, and the new root's own.
    current.verifyDelegate('root', md);
    md.verifyDelegate('root', md);
    const signedBy = Object.keys(md.signatures);
    const result: DirectorRotation = {
      version,
      rotated,
      rootKeyIds: rootIds,
      targetsKeyIds: targetsIds,
      signedBy,
      expires: root.expires,
    };
    const resign = rotated.length === 0;
    await db.transaction().execute(async (tx) => {
      await tx
        .insertInto('director_roots')
        .values({
          version,
          document: JSON.stringify(md.toJSON()),
          expires: root.expires,
          created_at: isoNow(),
        })
        .execute();
      await this.audit.append(tx, {
        actor,
        action: resign ? 'director.root-resign' : 'director.rotate',
        target: 'director:root',
        outcome: 'success',
        details: resign
          ? {
              version,
              expires: root.expires,
              previousExpires: cur.expires,
              rootKeyIds: rootIds,
              targetsKeyIds: targetsIds,
            }
          : {
              version,
              rotated,
              rootKeyIds: rootIds,
              targetsKeyIds: targetsIds,
              previousRootKeyIds: oldRoot.keyIDs,
              previousTargetsKeyIds: oldTargets.keyIDs,
            },
      });
    });
    this.audit.sealSoon();
    // Device documents are signed with the targets key of the new root from now on.
    this.signing = null;
    if (resign)
      this.logger.info(
        { event: 'director.root-resign', version, expires: root.expires, previousExpires: cur.expires },
        `director root version ${version}: re-signed with the same keys before version ${cur.version} expires (${cur.expires}); it expires ${root.expires}`,
      );
    else
      this.logger.info(
        { event: 'director.rotate', version, rotated, rootKeyIds: rootIds, targetsKeyIds: targetsIds },
        `director root version ${version}: rotated ${rotated.join(' and ')}`,
      );
    return result;
  }

  async rootDocument(db: Db | Tx, version?: number): Promise<string | null> {
    let q = db.selectFrom('director_roots').select('document').orderBy('version', 'desc').limit(1);
    if (version !== undefined) q = q.where('version', '=', version);
    return (await q.executeTakeFirst())?.document ?? null;
  }

  /** What the device must install, as the director lists it (before signing), or null for nothing. */
  private async plannedTarget(db: Db, deviceId: string): Promise<PlannedTarget | null> {
    const assignment = await this.assignments.forDevice(db, deviceId);
    if (!assignment) return null;
    const release = await db
      .selectFrom('update_releases')
      .select(['sha256', 'length', 'custom'])
      .where('path', '=', assignment.path)
      .where('state', '=', 'published')
      .executeTakeFirst();
    if (!release) {
      this.logger.warn(
        { deviceId, path: assignment.path },
        'the device is assigned a target that is not published: the director lists nothing for it',
      );
      return null;
    }
    return {
      path: assignment.path,
      length: Number(release.length),
      sha256: release.sha256,
      release: JSON.parse(release.custom) as RampartTarget,
      deploymentId: assignment.deploymentId,
    };
  }

  private static targetFile(deviceId: string, planned: PlannedTarget, contentKey?: string): TargetFile {
    const custom: DirectorCustom = {
      deviceId,
      deploymentId: planned.deploymentId,
      ...(contentKey ? { contentKey } : {}),
    };
    return new TargetFile({
      path: planned.path,
      length: planned.length,
      hashes: { sha256: planned.sha256 },
      unrecognizedFields: {
        custom: JSON.parse(
          JSON.stringify({ [CUSTOM_KEY]: planned.release, [DIRECTOR_CUSTOM_KEY]: custom }),
        ) as Record<string, never>,
      },
    });
  }

  /** The device's current certificate: its newest good, unexpired device certificate. */
  private async currentCertificate(
    db: Db | Tx,
    deviceId: string,
  ): Promise<{ serial: string; pem: string } | null> {
    const row = await db
      .selectFrom('certificates')
      .select(['serial', 'certificate'])
      .where('device_id', '=', deviceId)
      .where('profile', '=', 'device')
      .where('status', '=', 'good')
      .where('not_after', '>', isoNow())
      .orderBy('not_before', 'desc')
      .orderBy('created_at', 'desc')
      .limit(1)
      .executeTakeFirst();
    return row ? { serial: row.serial, pem: row.certificate } : null;
  }

  /**
   * Why the director cannot hand the device content keys of encrypted releases (its certificate's
   * key cannot do ECDH), or null when it can or the device has no certificate yet.
   */
  async encryptionProblem(db: Db | Tx, deviceId: string): Promise<string | null> {
    const cert = await this.currentCertificate(db, deviceId);
    return cert ? ecdhProblem(publicKeyOfCertificate(cert.pem)) : null;
  }

  /** The content key of an encrypted target, wrapped to the device's current certificate key. */
  private async wrappedContentKey(
    db: Db,
    deviceId: string,
    planned: PlannedTarget,
    certificate: { serial: string; pem: string } | null,
  ): Promise<string> {
    const refuse = (message: string): never => {
      this.logger.warn(
        { event: 'director.encryption-refused', deviceId, target: planned.path, reason: message },
        `the director cannot give device ${deviceId} the key of ${planned.path}: ${message}`,
      );
      throw new RampartError('CONFLICT', `${planned.path} is encrypted and ${message}`);
    };
    if (!certificate) return refuse(`device ${deviceId} has no good certificate to wrap its key to`);
    const publicKey = publicKeyOfCertificate(certificate.pem);
    const problem = ecdhProblem(publicKey);
    if (problem)
      return refuse(
        `device ${deviceId} cannot receive its key: ${problem}; assign the device an unencrypted release, or enroll it with an EC key`,
      );
    const sealed = await db
      .selectFrom('update_content_keys')
      .select('wrapped_key')
      .where('sha256', '=', planned.sha256)
      .executeTakeFirst();
    if (!sealed) return refuse(`its content key is missing from the database`);
    let contentKey: Buffer;
    try {
      contentKey = await this.contentKeys.open(sealed.wrapped_key, planned.sha256);
    } catch (err) {
      // A sealed key that does not open, or belongs to another artifact: the database was altered.
      this.logger.warn(
        {
          event: 'director.content-key-refused',
          deviceId,
          target: planned.path,
          reason: (err as Error).message,
        },
        `the stored content key of ${planned.path} was refused`,
      );
      await this.audit.record({
        actor: 'system',
        action: 'director.content-key',
        target: `release:${planned.path}`,
        outcome: 'failure',
        details: { deviceId, reason: (err as Error).message.slice(0, 300) },
      });
      throw err;
    }
    try {
      return await wrapForDevice(contentKey, publicKey, { deviceId, sha256: planned.sha256 });
    } finally {
      contentKey.fill(0);
    }
  }

  /**
   * The device's targets metadata: signed anew (a higher version) when what it lists changed or half
   * its lifetime has passed, else the stored one. An encrypted target carries its content key wrapped
   * to the device's current certificate; a new certificate makes a new document.
   */
  async targetsFor(deviceId: string, now = Date.now()): Promise<string> {
    return this.forDevice(deviceId, async () => {
      const db = this.storage.db;
      const planned = await this.plannedTarget(db, deviceId);
      const unsigned = planned ? Director.targetFile(deviceId, planned) : null;
      const encrypted = planned?.release.encryption !== undefined;
      const certificate = encrypted ? await this.currentCertificate(db, deviceId) : null;
      // The signing key is part of what is compared: after a rotation, a document signed by a key
      // the newest root no longer lists is never served again.
      const signing = await this.targetsKey();
      const content =
        canonicalJson(unsigned ? { [unsigned.path]: unsigned.toJSON() } : {}) +
        (certificate ? `\ncontent key wrapped to certificate ${certificate.serial}` : '') +
        `\nsigned by ${signing.keyId}`;
      const stored = await db
        .selectFrom('director_metadata')
        .selectAll()
        .where('device_id', '=', deviceId)
        .executeTakeFirst();
      const fresh =
        stored &&
        stored.content === content &&
        Date.parse(stored.expires) - now > this.settings.targetsLifetimeMs / 2;
      if (fresh) return stored.document;
      const target =
        planned && encrypted
          ? Director.targetFile(
              deviceId,
              planned,
              await this.wrappedContentKey(db, deviceId, planned, certificate),
            )
          : unsigned;
      const targets: Record<string, TargetFile> = target ? { [target.path]: target } : {};
      const version = (stored ? Number(stored.version) : 0) + 1;
      const signed = new Targets({
        version,
        specVersion: '1.0.31',
        expires: expiresIn(this.settings.targetsLifetimeMs, now),
        targets,
      });
      const md = new Metadata(signed);
      await Director.sign(md, signing.key);
      const document = JSON.stringify(md.toJSON());
      const row = { version, content, document, expires: signed.expires, signed_at: isoNow() };
      await this.writes.run((tx) =>
        tx
          .insertInto('director_metadata')
          .values({ device_id: deviceId, ...row })
          .onConflict((oc) => oc.column('device_id').doUpdateSet(row))
          .execute(),
      );
      this.logger.info(
        { deviceId, version, target: target?.path ?? null, ...(encrypted ? { encrypted: true } : {}) },
        'director targets signed',
      );
      return document;
    });
  }

  /**
   * The device a client certificate on the EST listener belongs to: an operational certificate
   * Rampart issued to that device, good and unexpired. Throws UNAUTHORIZED otherwise. With the
   * `connection` (the TLS socket) the answer is reused for its later requests: see `connections`.
   */
  async authenticate(
    certificate: X509Certificate | undefined,
    connection?: object,
  ): Promise<AuthenticatedDevice> {
    if (!certificate)
      throw new RampartError(
        'UNAUTHORIZED',
        'the director needs the device certificate over mutual TLS (an operational certificate Rampart issued)',
      );
    // Read before the database: a revocation while the query runs makes this answer stale at once.
    const generation = certificateStatusGeneration();
    const now = Date.now();
    const known = connection ? this.connections.get(connection) : undefined;
    if (
      known &&
      known.device.certificate === certificate &&
      known.generation === generation &&
      now < known.until
    )
      return known.device;
    const deviceId = deviceIdOf(certificate);
    const serial = normalizeSerial(certificate.serialNumber);
    const record = await this.storage.db
      .selectFrom('certificates')
      .select(['status', 'not_after', 'device_id', 'profile'])
      .where('serial', '=', serial)
      .executeTakeFirst();
    if (!deviceId || !record || record.profile !== 'device' || record.device_id !== deviceId)
      throw new RampartError(
        'UNAUTHORIZED',
        `certificate ${serial} is not a device certificate Rampart issued`,
      );
    if (record.status !== 'good') throw new RampartError('UNAUTHORIZED', `certificate ${serial} is revoked`);
    if (record.not_after <= isoNow())
      throw new RampartError('UNAUTHORIZED', `certificate ${serial} has expired`);
    const device = { deviceId, serial, certificate };
    if (connection)
      this.connections.set(connection, {
        device,
        generation,
        until: Math.min(now + CONNECTION_AUTH_REUSE_MS, Date.parse(record.not_after)),
      });
    return device;
  }

  /** Refuse (and audit) a device asking for another device's metadata. */
  async refuseOther(device: AuthenticatedDevice, asked: string, remoteAddress: string): Promise<never> {
    this.logger.warn(
      { event: 'director.refused', deviceId: device.deviceId, asked, sourceAddress: remoteAddress },
      'a device asked for another device’s director metadata',
    );
    await this.audit.record({
      actor: `device:${device.deviceId}`,
      action: 'director.read',
      target: `device:${asked}`,
      outcome: 'failure',
      details: { reason: 'a device may read only its own director metadata', sourceAddress: remoteAddress },
    });
    throw new RampartError('FORBIDDEN', `device ${device.deviceId} may read only its own director metadata`);
  }

  /**
   * Store a signed install receipt: it must verify with the key of the certificate the device
   * connected with and name that device. Audited; a receipt already stored is accepted again (a
   * device may resend after a lost reply) without a second row.
   */
  async storeReceipt(
    device: AuthenticatedDevice,
    document: unknown,
  ): Promise<{ id: string; stored: boolean; receipt: SignedUpdateReceipt }> {
    // The key id from the certificate's own encoding of the key: no export of the key per receipt.
    const problem = receiptProblem(
      document,
      device.certificate.publicKey,
      spkiBytesOfCertificate(device.certificate.raw),
    );
    if (problem) {
      await this.audit.record({
        actor: `device:${device.deviceId}`,
        action: 'update.receipt',
        target: `device:${device.deviceId}`,
        outcome: 'failure',
        details: { reason: problem.slice(0, 300) },
      });
      this.logger.warn(
        { event: 'receipt.refused', deviceId: device.deviceId, reason: problem },
        'receipt refused',
      );
      throw new RampartError('VALIDATION', `the receipt was refused: ${problem}`);
    }
    const receipt = document as SignedUpdateReceipt;
    if (receipt.deviceId !== device.deviceId)
      throw new RampartError(
        'FORBIDDEN',
        `the receipt names device ${receipt.deviceId}, the certificate ${device.deviceId}`,
      );
    const assignment = await this.assignments.forDevice(this.storage.db, device.deviceId);
    const stored = await this.writes.run(async (tx) => {
      const seen = await tx
        .selectFrom('update_receipts')
        .select('id')
        .where('id', '=', receipt.id)
        .executeTakeFirst();
      if (seen) return false;
      const release =
        (await tx
          .selectFrom('update_releases')
          .select('path')
          .where('sha256', '=', receipt.release.sha256)
          .executeTakeFirst()) ??
        // An encrypted release: the receipt names the plaintext in the slot, the release its ciphertext.
        (await this.releaseOfPlaintext(tx, receipt.release.sha256, assignment?.path));
      const deploymentId =
        assignment && release && assignment.path === release.path ? assignment.deploymentId : null;
      await tx
        .insertInto('update_receipts')
        .values({
          id: receipt.id,
          device_id: device.deviceId,
          outcome: receipt.outcome,
          target_path: release?.path ?? null,
          deployment_id: deploymentId,
          version: receipt.release.version,
          sha256: receipt.release.sha256,
          document: JSON.stringify(receipt),
          certificate_serial: device.serial,
          received_at: isoNow(),
        })
        .execute();
      await this.audit.append(tx, {
        actor: `device:${device.deviceId}`,
        action: 'update.receipt',
        target: `device:${device.deviceId}`,
        outcome: 'success',
        details: {
          receipt: receipt.id,
          outcome: receipt.outcome,
          version: receipt.release.version,
          ...(receipt.reason ? { reason: receipt.reason } : {}),
        },
      });
      // A device that rolled the assigned release back is not asked to install it again.
      if (receipt.outcome !== 'committed' && assignment && release && assignment.path === release.path)
        await unassign(tx, device.deviceId);
      // The deployment that assigned this release counts the device as done (in the same commit).
      if (deploymentId !== null && release)
        await this.outcomes?.(tx, {
          deviceId: device.deviceId,
          deploymentId,
          path: release.path,
          outcome: receipt.outcome,
          receiptId: receipt.id,
          at: isoNow(),
        });
      return true;
    });
    return { id: receipt.id, stored, receipt };
  }

  /** The release whose encrypted artifact decrypts to `sha256` (preferring the assigned one). */
  private async releaseOfPlaintext(
    tx: Tx,
    sha256: string,
    assignedPath: string | undefined,
  ): Promise<{ path: string } | undefined> {
    const rows = await tx
      .selectFrom('update_content_keys')
      .innerJoin('update_releases', 'update_releases.sha256', 'update_content_keys.sha256')
      .select('update_releases.path')
      .where('update_content_keys.plaintext_sha256', '=', sha256)
      .execute();
    return rows.find((r) => r.path === assignedPath) ?? rows[0];
  }

  /** Parse a director root document (for tests and tools). */
  static parseRoot(text: string): Metadata<Root> {
    return Metadata.fromJSON(MetadataKind.Root, JSON.parse(text) as TufJSON);
  }
}
