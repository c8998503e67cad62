import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { TargetFile } from '@tufjs/models';
import type { Logger } from '@rampart/shared/logging';
import type { CreateReleaseQuery, ReleaseView, RepositoryView } from '@rampart/shared/api';
import {
  CUSTOM_KEY,
  RampartTarget,
  chunkSizeFor,
  computeChunkHashes,
  defaultTargetPath,
  isTargetPath,
  type ArtifactEncryption,
  type ChunkHashes,
  type DetachedSignature,
} from '@rampart/shared/updates';
import { fieldErrors } from '@rampart/shared/schema';
import type { AuditLog } from '../audit/log.js';
import type { ServerConfig } from '../config/index.js';
import { RampartError } from '../errors.js';
import type { KeyStore } from '../keystore/index.js';
import type { Db, Storage, Tx } from '../storage/index.js';
import { isoNow, parseDuration } from '../time.js';
import { FileArtifactStore, type ArtifactStore, type StoredArtifact } from './artifacts/store.js';
import {
  buildDeltas,
  isEncrypted,
  type BuiltDelta,
  type DeltaBase,
  type DeltaSettings,
} from './artifacts/release-deltas.js';
import { encryptArtifact, type ContentKeys } from './artifacts/encryption.js';
import { TufRepository, type Lifetimes, type Proposal } from './repository/repository.js';
import { Director } from './director/director.js';

export const DEVELOPMENT_WARNING =
  'DEVELOPMENT release repository: root and targets keys are kept by the server (threshold 1) — INSECURE, not for production';

export interface UpdatesSettings {
  development: boolean;
  lifetimes: Lifetimes;
  maxArtifactBytes: number;
  /** Memory for the artifacts being served (`updates.artifactCacheBytes`). */
  artifactCacheBytes: number;
  /** Binary deltas generated for new releases (`updates.deltas`). */
  deltas: DeltaSettings;
}

export function updatesSettingsOf(config: ServerConfig): UpdatesSettings {
  const u = config.updates;
  const ms = (text: string, key: string) => {
    const v = parseDuration(text);
    if (!v) throw new RampartError('VALIDATION', `updates.${key} is not a duration: ${text}`);
    return v;
  };
  return {
    development:
      u.development ??
      ((config.database.url === undefined || config.database.url.startsWith('sqlite:')) &&
        config.keystore.backend === 'file'),
    maxArtifactBytes: u.maxArtifactBytes,
    artifactCacheBytes: u.artifactCacheBytes,
    deltas: { ...u.deltas },
    lifetimes: {
      root: ms(u.rootExpiry, 'rootExpiry'),
      targets: ms(u.targetsExpiry, 'targetsExpiry'),
      delegated: ms(u.delegatedExpiry, 'delegatedExpiry'),
      snapshot: ms(u.snapshotExpiry, 'snapshotExpiry'),
      timestamp: ms(u.timestampExpiry, 'timestampExpiry'),
    },
  };
}

interface PlannedRelease {
  path: string;
  role: string;
  name: string;
  version: string;
  custom: RampartTarget;
  /** Store the artifact encrypted: asked for (`encrypt`) or required by one of its models. */
  encrypt: boolean;
}

/** An artifact as stored for a release: chunk hashes, and for an encrypted one its metadata and sealed key. */
export type ReleaseArtifact = StoredArtifact & {
  chunks?: ChunkHashes;
  encryption?: ArtifactEncryption;
  /** The content key sealed for the database (see ContentKeys); never the key in clear. */
  sealedKey?: string;
};

type ReleaseRow = {
  path: string;
  role: string;
  name: string;
  version: string;
  sha256: string;
  length: number | string;
  custom: string;
  state: string;
  signing_request: number | null;
  created_at: string;
  created_by: string;
  failure?: string | null;
};

/** A TUF target for a release: its path, length and SHA-256, and Rampart's metadata in `custom`. */
function targetFileOf(path: string, length: number, sha256: string, custom: RampartTarget): TargetFile {
  return new TargetFile({
    path,
    length,
    hashes: { sha256 },
    unrecognizedFields: { custom: { [CUSTOM_KEY]: custom } },
  });
}

/**
 * Secure updates on the server: the TUF release repository, the artifact store, releases, and the
 * upkeep that re-signs online metadata before it expires.
 */
/** What goes to devices, for the byte counters: the updates listener's metadata, targets and patches, and the director's answers. */
export type ServedKind = 'metadata' | 'target' | 'delta' | 'director';

export class UpdatesService {
  readonly repository: TufRepository;
  readonly artifacts: ArtifactStore;
  /** Per-device targets metadata (Uptane's director repository), served on the EST listener. */
  readonly director: Director;
  /** Content keys of encrypted artifacts, sealed at rest with a key from the key store. */
  readonly contentKeys: ContentKeys;
  /** The updates listener's base URL, once it listens. */
  url: string | null = null;
  private timer: NodeJS.Timeout | null = null;
  /** Releases in `preparing`, prepared one at a time off the request path (deltas), oldest first. */
  private readonly toPrepare: string[] = [];
  private preparing: Promise<void> | null = null;
  private stopped = false;
  private readonly stopPreparing = new AbortController();
  private readonly workDir: string;

  constructor(
    readonly storage: Storage,
    keys: KeyStore,
    private readonly audit: AuditLog,
    readonly settings: UpdatesSettings,
    dataDir: string,
    private readonly logger: Logger,
    artifacts?: ArtifactStore,
  ) {
    this.repository = new TufRepository(
      keys,
      { development: settings.development, lifetimes: settings.lifetimes },
      logger,
    );
    this.artifacts = artifacts ?? new FileArtifactStore(join(dataDir, 'artifacts'));
    this.workDir = join(dataDir, 'artifacts', 'work');
    this.director = new Director(
      storage,
      keys,
      audit,
      { rootLifetimeMs: settings.lifetimes.root, targetsLifetimeMs: settings.lifetimes.timestamp },
      logger.child({ component: 'director' }),
    );
    this.contentKeys = this.director.contentKeys;
  }

  /** Create the development repository on first start (in development mode). */
  async open(): Promise<void> {
    await this.repository.exclusive(() =>
      this.storage.db.transaction().execute(async (tx) => {
        const created = await this.repository.initialise(tx);
        if (created)
          await this.audit.append(tx, {
            actor: 'system',
            action: 'release.repository.init',
            target: 'tuf:root',
            outcome: 'success',
            details: { development: true, warning: DEVELOPMENT_WARNING },
          });
      }),
    );
    this.audit.sealSoon();
    await this.director.open();
    if (this.settings.development) this.logger.warn(DEVELOPMENT_WARNING);
    else if (!(await this.repository.root(this.storage.db)))
      this.logger.warn(
        'the release repository has no root yet: it is not in development mode and offline root keys have not been set up (rampart release init)',
      );
    // Releases a stop interrupted while their deltas were being generated are prepared again.
    const left = await this.storage.db
      .selectFrom('update_releases')
      .select('path')
      .where('state', '=', 'preparing')
      .orderBy('created_at')
      .orderBy('path')
      .execute();
    for (const r of left) this.prepareSoon(r.path);
  }

  /** Re-sign expiring online metadata now and then: at a quarter of the shortest lifetime, at most hourly. */
  start(): void {
    const shortest = Math.min(...Object.values(this.settings.lifetimes));
    const every = Math.min(3_600_000, Math.max(1000, Math.floor(shortest / 4)));
    this.timer = setInterval(() => {
      this.refresh().catch((err: unknown) => this.logger.error({ err }, 're-signing TUF metadata failed'));
    }, every);
    this.timer.unref();
  }

  /** Stop the timer and the preparation of releases (one under way is left `preparing` for the next start). */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.stopped = true;
    this.stopPreparing.abort();
    await this.preparing;
  }

  /** Re-sign what expires soon (the director root included); audited as `system`. */
  async refresh(now = Date.now()): Promise<string[]> {
    const done = await this.repository.exclusive(() =>
      this.storage.db.transaction().execute(async (tx) => {
        const roles = await this.repository.refresh(tx, now);
        if (roles.length)
          await this.audit.append(tx, {
            actor: 'system',
            action: 'release.metadata.refresh',
            target: 'tuf:' + roles.join(','),
            outcome: 'success',
            details: { roles },
          });
        return roles;
      }),
    );
    if (done.length) {
      this.audit.sealSoon();
      this.logger.info({ roles: done }, 'TUF metadata re-signed before expiry');
    }
    // The director root too (its own lock and audit record): devices refuse an expired one.
    if (await this.director.resignRootIfExpiring(now)) done.push('director-root');
    return done;
  }

  private servedSink: ((kind: ServedKind, bytes: number) => void) | null = null;

  /** Count the body bytes of every answer to a device (the platform feeds `rampart_updates_served_bytes_total`). */
  onServed(sink: (kind: ServedKind, bytes: number) => void): void {
    this.servedSink = sink;
  }

  served(kind: ServedKind, bytes: number): void {
    this.servedSink?.(kind, bytes);
  }

  /** What the listener may serve under this hash: a published release's artifact, a patch offered with one, or nothing. */
  async servableKind(sha256: string): Promise<'target' | 'delta' | null> {
    const row = await this.storage.db
      .selectFrom('update_releases')
      .select('path')
      .where('sha256', '=', sha256)
      .where('state', '=', 'published')
      .executeTakeFirst();
    if (row) return 'target';
    const patch = await this.storage.db
      .selectFrom('update_deltas')
      .innerJoin('update_releases', 'update_releases.path', 'update_deltas.release_path')
      .select('update_deltas.release_path')
      .where('update_deltas.sha256', '=', sha256)
      .where('update_releases.state', '=', 'published')
      .executeTakeFirst();
    return patch ? 'delta' : null;
  }

  async view(db: Db): Promise<RepositoryView> {
    const root = await this.repository.root(db);
    return {
      development: this.settings.development,
      warning: this.settings.development ? DEVELOPMENT_WARNING : null,
      initialized: root !== null,
      consistentSnapshot: root?.signed.consistentSnapshot ?? true,
      url: this.url,
      roles: await this.repository.roles(db),
    };
  }

  // -- releases --------------------------------------------------------------------------------

  /** Check a release before its bytes are taken in: valid metadata, a free path, no pending change to its role. */
  async planRelease(db: Db, q: CreateReleaseQuery): Promise<PlannedRelease> {
    const dependencies = (q.dependency ?? []).map((d, i) => {
      const m = /^([A-Za-z0-9][A-Za-z0-9._+-]{0,63})(?:>=([A-Za-z0-9][A-Za-z0-9._+~-]{0,63}))?$/.exec(d);
      if (!m)
        throw new RampartError('VALIDATION', `dependency "${d}" is not NAME or NAME>=VERSION`, [
          { field: `dependency[${i}]`, message: 'must be NAME or NAME>=VERSION' },
        ]);
      return m[2] ? { name: m[1]!, minVersion: m[2] } : { name: m[1]! };
    });
    const measurements = (q.measurement ?? []).map((d, i) => {
      const m = /^([^=]{1,64})=([0-9a-f]{64})$/.exec(d);
      if (!m)
        throw new RampartError('VALIDATION', `measurement "${d}" is not COMPONENT=SHA256`, [
          { field: `measurement[${i}]`, message: 'must be COMPONENT=<64 hex digits>' },
        ]);
      return { component: m[1]!, sha256: m[2]! };
    });
    const firstModel = q.model[0]!;
    let releaseCounter = q.releaseCounter;
    if (releaseCounter === undefined) {
      const top = await db
        .selectFrom('update_releases')
        .select((eb) => eb.fn.max('release_counter').as('n'))
        .where('first_model', '=', firstModel)
        .executeTakeFirst();
      releaseCounter = top?.n === null || top?.n === undefined ? 1 : Number(top.n) + 1;
    }
    const custom: RampartTarget = {
      models: q.model,
      ...(q.hardwareRevision?.length ? { hardwareRevisions: q.hardwareRevision } : {}),
      releaseCounter,
      kind: q.kind ?? 'firmware',
      version: q.version,
      ...(dependencies.length ? { dependencies } : {}),
      ...(measurements.length ? { measurements } : {}),
    };
    const problems = fieldErrors(RampartTarget, custom);
    if (problems.length)
      throw new RampartError(
        'VALIDATION',
        'the release metadata is not valid',
        problems.map((p) => ({ field: p.field, message: p.message })),
      );
    const path = q.path ?? defaultTargetPath(firstModel, q.name, q.version, q.fileName);
    if (!isTargetPath(path))
      throw new RampartError('VALIDATION', `"${path}" is not a valid target path`, [
        {
          field: 'path',
          message: 'segments of letters, digits, . _ + -, separated by /, no .. (at most 200)',
        },
      ]);
    // A release that failed to be signed does not hold its path.
    const exists = await db
      .selectFrom('update_releases')
      .select('path')
      .where('path', '=', path)
      .where('state', '!=', 'failed')
      .executeTakeFirst();
    if (exists)
      throw new RampartError(
        'CONFLICT',
        `a release with target path ${path} exists already; releases are immutable, publish a new version`,
      );
    if (!(await this.repository.root(db)))
      throw new RampartError('CONFLICT', 'the release repository is not initialised yet');
    const role = await this.repository.roleForPath(db, path);
    await this.repository.refuseWhilePending(db, role);
    const encrypt = q.encrypt === true || (await this.modelsRequiringEncryption(db, q.model)).length > 0;
    return { path, role, name: q.name, version: q.version, custom, encrypt };
  }

  /** Which of `models` require encrypted releases. */
  async modelsRequiringEncryption(db: Db, models: readonly string[]): Promise<string[]> {
    const rows = await db
      .selectFrom('device_models')
      .select('id')
      .where('id', 'in', [...models])
      .where('encrypt_updates', '=', 1)
      .execute();
    return rows.map((r) => r.id);
  }

  /**
   * Store the upload, and hash it chunk by chunk for the target metadata (devices verify each chunk).
   * Encrypted (`encrypt`), only the AES-256-GCM ciphertext is stored, and everything TUF and the
   * chunk hashes describe is the ciphertext; the content key comes back sealed for the database.
   */
  async storeArtifact(
    body: Readable,
    options: { encrypt?: boolean } = {},
  ): Promise<ReleaseArtifact & { chunks: ChunkHashes }> {
    if (options.encrypt) {
      const encrypting = encryptArtifact(body);
      try {
        const stored = await this.storeArtifact(encrypting.ciphertext);
        return {
          ...stored,
          encryption: encrypting.metadata(),
          sealedKey: await this.contentKeys.seal(encrypting.contentKey, stored.sha256),
        };
      } finally {
        encrypting.contentKey.fill(0);
      }
    }
    const stored = await this.artifacts.put(body, this.settings.maxArtifactBytes);
    const hashed = await computeChunkHashes(this.artifacts.open(stored.sha256)!, {
      chunkSize: chunkSizeFor(stored.length),
    });
    if (hashed.sha256 !== stored.sha256)
      throw new RampartError('STORAGE', `artifact ${stored.sha256} changed on disk while it was stored`);
    return { ...stored, chunks: hashed.chunks };
  }

  /** Record the release and sign it into its targets role (published now, or waiting for signatures). */
  async recordRelease(
    tx: Tx,
    plan: PlannedRelease,
    artifact: ReleaseArtifact,
    actor: string,
  ): Promise<{ view: ReleaseView; proposal: Proposal | null }> {
    const exists = await tx
      .selectFrom('update_releases')
      .select('path')
      .where('path', '=', plan.path)
      .where('state', '!=', 'failed')
      .executeTakeFirst();
    if (exists) throw new RampartError('CONFLICT', `a release with target path ${plan.path} exists already`);
    await tx
      .deleteFrom('update_releases')
      .where('path', '=', plan.path)
      .where('state', '=', 'failed')
      .execute();
    const known = await tx
      .selectFrom('update_artifacts')
      .select('sha256')
      .where('sha256', '=', artifact.sha256)
      .executeTakeFirst();
    if (!known)
      await tx
        .insertInto('update_artifacts')
        .values({
          sha256: artifact.sha256,
          length: artifact.length,
          location: artifact.location,
          created_at: isoNow(),
        })
        .execute();
    if (artifact.encryption && artifact.sealedKey)
      await tx
        .insertInto('update_content_keys')
        .values({
          sha256: artifact.sha256,
          plaintext_sha256: artifact.encryption.sha256,
          wrapped_key: artifact.sealedKey,
          created_at: isoNow(),
        })
        .onConflict((oc) => oc.column('sha256').doNothing())
        .execute();
    const custom: RampartTarget = {
      ...plan.custom,
      ...(artifact.chunks ? { chunks: artifact.chunks } : {}),
      ...(artifact.encryption ? { encryption: artifact.encryption } : {}),
    };
    const now = isoNow();
    // With earlier releases to build deltas from, the release waits in `preparing` while they are
    // generated off the request path (prepareRelease), and is signed after that.
    const preparing =
      this.settings.deltas.enabled &&
      !isEncrypted(custom) &&
      (await this.deltaBases(tx, { path: plan.path, sha256: artifact.sha256, custom, createdAt: now }))
        .length > 0;
    const proposal = preparing
      ? null
      : await this.repository.addTarget(
          tx,
          plan.role,
          targetFileOf(plan.path, artifact.length, artifact.sha256, custom),
          actor,
        );
    await tx
      .insertInto('update_releases')
      .values({
        path: plan.path,
        role: plan.role,
        name: plan.name,
        version: plan.version,
        sha256: artifact.sha256,
        length: artifact.length,
        first_model: plan.custom.models[0]!,
        release_counter: plan.custom.releaseCounter,
        custom: JSON.stringify(custom),
        state: proposal === null ? 'preparing' : proposal.published ? 'published' : 'pending',
        signing_request: proposal?.requestId ?? null,
        created_at: now,
        created_by: actor,
      })
      .execute();
    const row = await tx
      .selectFrom('update_releases')
      .selectAll()
      .where('path', '=', plan.path)
      .executeTakeFirstOrThrow();
    return { view: this.releaseView(row), proposal };
  }

  // -- deltas ----------------------------------------------------------------------------------

  /**
   * The earlier releases a new release gets deltas from: the `updates.deltas.fromReleases` most
   * recent ones of the same first model and kind, published or pending, not encrypted, with another
   * image that the artifact store holds.
   */
  async deltaBases(
    db: Db | Tx,
    release: { path: string; sha256: string; custom: RampartTarget; createdAt: string },
  ): Promise<DeltaBase[]> {
    const rows = await db
      .selectFrom('update_releases')
      .select(['path', 'version', 'sha256', 'custom'])
      .where('first_model', '=', release.custom.models[0]!)
      .where('state', 'in', ['published', 'pending'])
      .where('path', '!=', release.path)
      .where('created_at', '<=', release.createdAt)
      .orderBy('created_at', 'desc')
      .orderBy('release_counter', 'desc')
      .execute();
    const bases: DeltaBase[] = [];
    const seen = new Set([release.sha256]);
    for (const r of rows) {
      if (bases.length >= this.settings.deltas.fromReleases) break;
      const custom = JSON.parse(r.custom) as RampartTarget;
      if (custom.kind !== release.custom.kind || isEncrypted(custom) || seen.has(r.sha256)) continue;
      if (this.artifacts.size(r.sha256) === null) continue;
      seen.add(r.sha256);
      bases.push({ path: r.path, version: r.version, sha256: r.sha256 });
    }
    return bases;
  }

  /** Queue a release in `preparing`: its deltas are generated and it is signed in the background, one release at a time. */
  prepareSoon(path: string): void {
    if (this.stopped || this.toPrepare.includes(path)) return;
    this.toPrepare.push(path);
    this.preparing ??= this.drainPreparations();
  }

  /** Resolves once no release is being prepared or waiting to be. */
  async preparationsSettled(): Promise<void> {
    while (this.preparing) await this.preparing;
  }

  private async drainPreparations(): Promise<void> {
    try {
      for (let path = this.toPrepare.shift(); path !== undefined; path = this.toPrepare.shift()) {
        if (this.stopped) break;
        try {
          await this.prepareRelease(path);
        } catch (err) {
          this.logger.error(
            { err, release: path },
            `preparing release ${path} failed: ${(err as Error).message}`,
          );
        }
      }
    } finally {
      this.preparing = null;
    }
  }

  /**
   * Prepare a release left in `preparing`: generate its deltas (a delta that cannot be made is left
   * out, see buildDeltas), add them to its signed metadata, and sign it into its targets role as
   * `recordRelease` does for a release without deltas — published now, or pending signatures. A
   * release that cannot be signed then becomes `failed`, logged and audited. A stop in between
   * leaves it `preparing`, for the next start.
   */
  async prepareRelease(path: string): Promise<ReleaseView | null> {
    const db = this.storage.db;
    const row = await db
      .selectFrom('update_releases')
      .selectAll()
      .where('path', '=', path)
      .where('state', '=', 'preparing')
      .executeTakeFirst();
    if (!row) return null;
    const custom = JSON.parse(row.custom) as RampartTarget;
    let built: BuiltDelta[] = [];
    if (this.settings.deltas.enabled && !isEncrypted(custom)) {
      try {
        built = await buildDeltas({
          release: { path, name: row.name, version: row.version, sha256: row.sha256 },
          bases: await this.deltaBases(db, { path, sha256: row.sha256, custom, createdAt: row.created_at }),
          artifacts: this.artifacts,
          workDir: this.workDir,
          settings: this.settings.deltas,
          logger: this.logger,
          signal: this.stopPreparing.signal,
        });
      } catch (err) {
        if (this.stopped) return null;
        this.logger.warn(
          { event: 'release.delta-failed', release: path, err },
          `no deltas for ${path}: ${(err as Error).message}; it is published without them`,
        );
      }
    }
    if (this.stopped) return null;
    const signed: RampartTarget = built.length ? { ...custom, deltas: built.map((b) => b.delta) } : custom;
    const deltas = built.map((b) => ({
      from: b.from.version,
      length: b.patch.length,
      ratio: Math.round(b.ratio * 10_000) / 10_000,
    }));
    try {
      const view = await this.repository.exclusive(() =>
        db.transaction().execute(async (tx) => {
          const current = await tx
            .selectFrom('update_releases')
            .select('state')
            .where('path', '=', path)
            .executeTakeFirst();
          if (current?.state !== 'preparing') return null;
          for (const b of built) {
            await tx
              .insertInto('update_artifacts')
              .values({
                sha256: b.patch.sha256,
                length: b.patch.length,
                location: b.patch.location,
                created_at: isoNow(),
              })
              .onConflict((oc) => oc.column('sha256').doNothing())
              .execute();
            await tx
              .insertInto('update_deltas')
              .values({
                release_path: path,
                from_path: b.from.path,
                from_version: b.from.version,
                from_sha256: b.from.sha256,
                target_path: b.delta.path,
                sha256: b.patch.sha256,
                length: b.patch.length,
                ratio: b.ratio,
                created_at: isoNow(),
              })
              .execute();
          }
          const proposal = await this.repository.addTarget(
            tx,
            row.role,
            targetFileOf(path, Number(row.length), row.sha256, signed),
            row.created_by,
          );
          const state = proposal.published ? 'published' : 'pending';
          await tx
            .updateTable('update_releases')
            .set({ custom: JSON.stringify(signed), state, signing_request: proposal.requestId })
            .where('path', '=', path)
            .execute();
          await this.audit.append(tx, {
            actor: 'system',
            action: 'release.prepare',
            target: `release:${path}`,
            outcome: 'success',
            details: { state, signingRequest: proposal.requestId, deltas },
          });
          return this.releaseView(
            await tx
              .selectFrom('update_releases')
              .selectAll()
              .where('path', '=', path)
              .executeTakeFirstOrThrow(),
          );
        }),
      );
      this.audit.sealSoon();
      if (view)
        this.logger.info(
          { release: path, state: view.state, deltas },
          `release ${path} prepared with ${deltas.length} delta(s): ${view.state}`,
        );
      return view;
    } catch (err) {
      if (this.stopped) return null;
      for (const b of built) await this.dropUnreferenced(b.patch.sha256);
      const failure =
        `it could not be signed after its deltas were prepared: ${(err as Error).message}; ` +
        'create it again (the same path may be used) once that is resolved';
      this.logger.error(
        { event: 'release.prepare-failed', release: path, err },
        `release ${path}: ${failure}`,
      );
      await db.transaction().execute(async (tx) => {
        await tx
          .updateTable('update_releases')
          .set({ state: 'failed', failure })
          .where('path', '=', path)
          .where('state', '=', 'preparing')
          .execute();
        await this.audit.append(tx, {
          actor: 'system',
          action: 'release.prepare',
          target: `release:${path}`,
          outcome: 'failure',
          details: { reason: failure },
        });
      });
      this.audit.sealSoon();
      return null;
    }
  }

  /** Remove an artifact no release refers to (after a refused upload). */
  async dropUnreferenced(sha256: string): Promise<void> {
    const used = await this.storage.db
      .selectFrom('update_artifacts')
      .select('sha256')
      .where('sha256', '=', sha256)
      .executeTakeFirst();
    if (!used && this.artifacts instanceof FileArtifactStore) {
      const { rmSync } = await import('node:fs');
      rmSync(this.artifacts.pathOf(sha256), { force: true });
    }
  }

  releaseView(row: ReleaseRow): ReleaseView {
    const slash = row.path.lastIndexOf('/');
    const dir = slash >= 0 ? row.path.slice(0, slash + 1) : '';
    const file = row.path.slice(slash + 1);
    const custom = JSON.parse(row.custom) as RampartTarget;
    const length = Number(row.length);
    return {
      path: row.path,
      role: row.role,
      name: row.name,
      version: row.version,
      sha256: row.sha256,
      length,
      custom,
      state: row.state as ReleaseView['state'],
      signingRequest: row.state === 'pending' ? row.signing_request : null,
      deltas: (custom.deltas ?? []).map((d) => ({
        fromVersion: d.from.version,
        fromSha256: d.from.sha256,
        path: d.path,
        length: d.length,
        ratio: length === 0 ? 1 : Math.round((d.length / length) * 10_000) / 10_000,
      })),
      failure: row.state === 'failed' ? (row.failure ?? null) : null,
      createdAt: row.created_at,
      createdBy: row.created_by,
      url: row.state === 'published' && this.url ? `${this.url}/targets/${dir}${row.sha256}.${file}` : null,
    };
  }

  async listReleases(
    db: Db,
    filter: { model?: string; state?: string; path?: string } = {},
  ): Promise<ReleaseView[]> {
    let q = db.selectFrom('update_releases').selectAll().orderBy('created_at', 'desc').orderBy('path');
    if (filter.state) q = q.where('state', '=', filter.state);
    if (filter.path) q = q.where('path', '=', filter.path);
    const rows = await q.execute();
    return rows
      .map((r) => this.releaseView(r))
      .filter((r) => !filter.model || r.custom.models.includes(filter.model));
  }

  // -- signatures ------------------------------------------------------------------------------

  /** Add a detached signature; when it completes the request, the releases waiting on it are published. */
  async sign(
    tx: Tx,
    id: number,
    signature: DetachedSignature,
  ): Promise<{ published: boolean; role: string; version: number }> {
    const out = await this.repository.addSignature(tx, id, signature);
    if (out.published)
      await tx
        .updateTable('update_releases')
        .set({ state: 'published' })
        .where('signing_request', '=', id)
        .execute();
    return out;
  }

  async cancel(tx: Tx, id: number): Promise<string> {
    const role = await this.repository.cancel(tx, id);
    // Releases waiting on it will never be signed: they go, so that their paths can be used again.
    await tx
      .deleteFrom('update_releases')
      .where('signing_request', '=', id)
      .where('state', '=', 'pending')
      .execute();
    return role;
  }
}
