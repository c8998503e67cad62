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
import { TufRepository, type Lifetimes, type Proposal } from './repository/repository.js';
import { Director } from './director/director.js';

export const DEVELOPMENT_WARNING =
  'DEVELOPMENT release repository: root and targets keys are kept by the server (threshold 1) — INSECURE, not for production';

export interface UpdatesSettings {
  development: boolean;
  lifetimes: Lifetimes;
  maxArtifactBytes: number;
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
}

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
};

/**
 * Secure updates on the server: the TUF release repository, the artifact store, releases, and the
 * upkeep that re-signs online metadata before it expires.
 */
export class UpdatesService {
  readonly repository: TufRepository;
  readonly artifacts: ArtifactStore;
  /** Per-device targets metadata (Uptane's director repository), served on the EST listener. */
  readonly director: Director;
  /** The updates listener's base URL, once it listens. */
  url: string | null = null;
  private timer: NodeJS.Timeout | null = null;

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
    this.director = new Director(
      storage,
      keys,
      audit,
      { rootLifetimeMs: settings.lifetimes.root, targetsLifetimeMs: settings.lifetimes.timestamp },
      logger.child({ component: 'director' }),
    );
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
        'the release repository has no root yet: it is not in development mode and offline root keys have not been set up',
      );
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

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Re-sign what expires soon; audited as `system`. */
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
    return done;
  }

  async isPublished(sha256: string): Promise<boolean> {
    const row = await this.storage.db
      .selectFrom('update_releases')
      .select('path')
      .where('sha256', '=', sha256)
      .where('state', '=', 'published')
      .executeTakeFirst();
    return row !== undefined;
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
    const exists = await db
      .selectFrom('update_releases')
      .select('path')
      .where('path', '=', path)
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
    return { path, role, name: q.name, version: q.version, custom };
  }

  /** Store the upload, and hash it chunk by chunk for the target metadata (devices verify each chunk). */
  async storeArtifact(body: Readable): Promise<StoredArtifact & { chunks: ChunkHashes }> {
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
    artifact: StoredArtifact & { chunks?: ChunkHashes },
    actor: string,
  ): Promise<{ view: ReleaseView; proposal: Proposal }> {
    const exists = await tx
      .selectFrom('update_releases')
      .select('path')
      .where('path', '=', plan.path)
      .executeTakeFirst();
    if (exists) throw new RampartError('CONFLICT', `a release with target path ${plan.path} exists already`);
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
    const custom: RampartTarget = artifact.chunks ? { ...plan.custom, chunks: artifact.chunks } : plan.custom;
    const target = new TargetFile({
      path: plan.path,
      length: artifact.length,
      hashes: { sha256: artifact.sha256 },
      unrecognizedFields: { custom: { [CUSTOM_KEY]: custom } },
    });
    const proposal = await this.repository.addTarget(tx, plan.role, target, actor);
    const now = isoNow();
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
        state: proposal.published ? 'published' : 'pending',
        signing_request: proposal.requestId,
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
    return {
      path: row.path,
      role: row.role,
      name: row.name,
      version: row.version,
      sha256: row.sha256,
      length: Number(row.length),
      custom: JSON.parse(row.custom) as RampartTarget,
      state: row.state as ReleaseView['state'],
      signingRequest: row.state === 'pending' ? row.signing_request : null,
      createdAt: row.created_at,
      createdBy: row.created_by,
      url: row.state === 'published' && this.url ? `${this.url}/targets/${dir}${row.sha256}.${file}` : null,
    };
  }

  async listReleases(db: Db, filter: { model?: string; state?: string } = {}): Promise<ReleaseView[]> {
    let q = db.selectFrom('update_releases').selectAll().orderBy('created_at', 'desc').orderBy('path');
    if (filter.state) q = q.where('state', '=', filter.state);
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
