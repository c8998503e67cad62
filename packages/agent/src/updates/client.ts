import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import type { Root, Targets } from '@tufjs/models';
import { Metadata, MetadataKind } from '@tufjs/models';
import { Updater } from 'tuf-js';
import type { Logger } from '@rampart/shared/logging';
import { CUSTOM_KEY, type RampartTarget } from '@rampart/shared/updates';
import type { AgentConfig } from '../config.js';
import { AgentError } from '../errors.js';
import { mutualTlsIdentity } from '../identity/current.js';
import type { IdentityStore } from '../identity/store.js';
import type { TrustAnchor } from '../trust-anchor/trust-anchor.js';
import { writeFileAtomic } from '../identity/files.js';
import type { MutualTls } from '../tls/mutual-tls.js';
import { downloadArtifact, type DownloadOptions } from './download.js';
import type { Installer, UpdateResult } from './installer.js';

type TufJSON = Parameters<typeof Metadata.fromJSON>[1];

/** What the device presents to the director: its certificate over mutual TLS, trusting the pinned root. */
export interface DirectorIdentity {
  deviceId: string;
  certPem: string;
  tls: MutualTls;
  caPem: string;
}

export interface UpdateClientOptions {
  /** The agent's data directory: pinned roots and TUF metadata go under `<dataDir>/updates/`. */
  dataDir: string;
  /** The EST server's origin, https://host:port: the director is served there under `/director/v1/`. */
  estUrl: string;
  identity: () => Promise<DirectorIdentity>;
  /** The device's model and hardware revision, as the releases name them. */
  model: string;
  hardwareRevision?: string;
  installer: Installer;
  log: Logger;
  timeoutMs?: number;
  /** Retry tuning of the artifact download (the pinned root is always its CA for https). */
  download?: Pick<
    DownloadOptions,
    'retryDelayMs' | 'maxInterruptions' | 'maxChunkAttempts' | 'idleTimeoutMs'
  >;
  now?: () => Date;
}

/** What one update check came to. */
export interface UpdateCheck {
  outcome: 'nothing-assigned' | 'up-to-date' | 'installed';
  detail: string;
  target: string | null;
  version: string | null;
  /** The installer's result when something was installed. */
  result: UpdateResult | null;
  /** Whether the signed receipt reached the platform. */
  receiptSent: boolean;
}

interface Reply {
  status: number;
  body: Buffer;
}

/**
 * One update cycle on the device, Uptane style: refresh the release repository (the unmodified
 * tuf-js client, from the root pinned at the first check), fetch the targets metadata the director
 * signed for this device (verified against the director root pinned likewise), and install only
 * what both agree on — same path, length and hash, a model and hardware revision that fit, a
 * release counter not below the device's. The artifact is downloaded chunk-verified and resumable,
 * installed into the inactive slot, and the signed receipt is posted to the director.
 */
export class UpdateClient {
  readonly dir: string;
  private readonly o: UpdateClientOptions;

  constructor(options: UpdateClientOptions) {
    this.o = options;
    this.dir = join(options.dataDir, 'updates');
  }

  private get now(): Date {
    return this.o.now?.() ?? new Date();
  }

  private refuse(reason: string, details: Record<string, unknown> = {}): never {
    this.o.log.warn({ event: 'update.refused', reason, ...details }, `update refused: ${reason}`);
    throw new AgentError('UPDATE_REFUSED', `update refused: ${reason}; nothing was installed`);
  }

  /** A request to the director over mutual TLS with the device certificate. */
  private async director(method: 'GET' | 'POST', path: string, body?: unknown): Promise<Reply> {
    const id = await this.o.identity();
    const url = new URL(path, this.o.estUrl);
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const timeoutMs = this.o.timeoutMs ?? 30_000;
    return new Promise<Reply>((resolve, reject) => {
      const req = httpRequest({
        host: url.hostname,
        port: url.port || 443,
        path: url.pathname,
        method,
        headers: {
          host: url.host,
          accept: 'application/json',
          ...(data ? { 'content-type': 'application/json', 'content-length': String(data.length) } : {}),
        },
        timeout: timeoutMs,
        createConnection: () =>
          id.tls.connect({
            host: url.hostname.replace(/^\[|\]$/g, ''),
            port: Number(url.port || 443),
            certPem: id.certPem,
            caPem: id.caPem,
            timeoutMs,
          }),
      });
      req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs / 1000} s`)));
      req.on('error', (err) =>
        reject(
          err instanceof AgentError
            ? err
            : new AgentError(
                'EST_UNREACHABLE',
                `cannot reach the director at ${url.origin}: ${err.message}; check the network and est.url`,
                { cause: err },
              ),
        ),
      );
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          // Endless data: a director reply is small; stop reading at 1 MiB.
          if (size > 1024 * 1024) {
            req.destroy();
            reject(
              new AgentError(
                'EST_BAD_RESPONSE',
                `the director's reply to ${path} is larger than 1 MiB; refused`,
              ),
            );
          } else chunks.push(c);
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      });
      req.end(data);
    });
  }

  private async directorJson(path: string): Promise<unknown> {
    const r = await this.director('GET', path);
    if (r.status !== 200) {
      let detail = r.body.toString('utf8').slice(0, 300);
      try {
        detail = (JSON.parse(detail) as { detail?: string }).detail ?? detail;
      } catch {
        // text as it is
      }
      throw new AgentError(
        r.status === 401 || r.status === 403 ? 'EST_REFUSED' : 'EST_BAD_RESPONSE',
        `the director answered ${r.status} to ${path}: ${detail}`,
      );
    }
    try {
      return JSON.parse(r.body.toString('utf8')) as unknown;
    } catch {
      throw new AgentError('EST_BAD_RESPONSE', `the director's reply to ${path} is not JSON`);
    }
  }

  /** The director root: pinned at the first check (over mutual TLS, to the pinned platform CA), then always that. */
  private async directorRoot(): Promise<Metadata<Root>> {
    const file = join(this.dir, 'director', 'root.json');
    if (!existsSync(file)) {
      const doc = await this.directorJson('/director/v1/root.json');
      const root = Metadata.fromJSON(MetadataKind.Root, doc as TufJSON);
      root.verifyDelegate('root', root);
      mkdirSync(join(this.dir, 'director'), { recursive: true, mode: 0o700 });
      writeFileAtomic(file, JSON.stringify(doc), 0o644);
      this.o.log.info({ file }, 'director root pinned');
    }
    return Metadata.fromJSON(MetadataKind.Root, JSON.parse(readFileSync(file, 'utf8')) as TufJSON);
  }

  /** The release repository's URL, and its root pinned at the first check. */
  private async repository(): Promise<{ url: string; metadataDir: string }> {
    const info = (await this.directorJson('/director/v1/repository')) as { url?: unknown; root?: unknown };
    if (typeof info.url !== 'string' || !/^https?:\/\//.test(info.url))
      throw new AgentError('EST_BAD_RESPONSE', 'the director did not say where the release repository is');
    const metadataDir = join(this.dir, 'repository');
    const rootFile = join(metadataDir, 'root.json');
    if (!existsSync(rootFile)) {
      const root = Metadata.fromJSON(MetadataKind.Root, info.root as TufJSON);
      root.verifyDelegate('root', root);
      mkdirSync(metadataDir, { recursive: true, mode: 0o700 });
      writeFileAtomic(rootFile, JSON.stringify(info.root), 0o644);
      this.o.log.info({ file: rootFile }, 'release repository root pinned');
    }
    return { url: info.url.replace(/\/$/, ''), metadataDir };
  }

  /** The director's targets for this device, verified: signature, expiry, version never going back, device id. */
  private async directorTargets(deviceId: string): Promise<Metadata<Targets>> {
    const root = await this.directorRoot();
    const doc = await this.directorJson(`/director/v1/devices/${encodeURIComponent(deviceId)}/targets.json`);
    let md: Metadata<Targets>;
    try {
      md = Metadata.fromJSON(MetadataKind.Targets, doc as TufJSON);
      root.verifyDelegate('targets', md);
    } catch (err) {
      this.refuse(
        `the director's targets metadata does not verify with the pinned director root (${(err as Error).message})`,
      );
    }
    if (md.signed.isExpired(this.now))
      this.refuse(
        `the director's targets metadata expired at ${md.signed.expires} (a frozen or replayed director)`,
      );
    const versionFile = join(this.dir, 'director', 'targets-version');
    const last = existsSync(versionFile) ? Number(readFileSync(versionFile, 'utf8')) : 0;
    if (md.signed.version < last)
      this.refuse(
        `the director's targets metadata is version ${md.signed.version}, older than version ${last} seen before (rollback)`,
      );
    writeFileAtomic(versionFile, `${md.signed.version}\n`, 0o644);
    return md;
  }

  /** Run one update cycle. Throws UPDATE_REFUSED (logged as `update.refused`) for every check that fails. */
  async check(): Promise<UpdateCheck> {
    const { deviceId } = await this.o.identity();
    const targets = await this.directorTargets(deviceId);
    const listed = Object.values(targets.signed.targets);
    if (listed.length === 0)
      return {
        outcome: 'nothing-assigned',
        detail: 'the director assigns nothing to this device',
        target: null,
        version: null,
        result: null,
        receiptSent: false,
      };
    if (listed.length > 1)
      this.refuse(`the director lists ${listed.length} targets; a device installs one at a time`);
    const wanted = listed[0]!;
    const directorCustom = (wanted.custom as { director?: { deviceId?: string } }).director;
    if (directorCustom?.deviceId !== deviceId)
      this.refuse(
        `the director's metadata was signed for device ${String(directorCustom?.deviceId)}, not ${deviceId}`,
      );

    // The release repository, through the unmodified TUF client.
    const repo = await this.repository();
    const downloads = join(this.dir, 'downloads');
    mkdirSync(downloads, { recursive: true, mode: 0o700 });
    const updater = new Updater({
      metadataDir: repo.metadataDir,
      metadataBaseUrl: `${repo.url}/metadata`,
      targetDir: downloads,
      targetBaseUrl: `${repo.url}/targets`,
      config: { fetchRetries: 0 },
    });
    try {
      await updater.refresh();
    } catch (err) {
      this.refuse(`the release repository's metadata does not verify: ${(err as Error).message}`);
    }
    const info = await updater.getTargetInfo(wanted.path);
    if (!info)
      this.refuse(`the director assigns ${wanted.path}, which the release repository does not have`, {
        target: wanted.path,
      });
    if (info.length !== wanted.length || info.hashes.sha256 !== wanted.hashes.sha256)
      this.refuse(
        `the director and the release repository disagree on ${wanted.path}: length ${wanted.length} vs ${info.length}, sha256 ${wanted.hashes.sha256} vs ${info.hashes.sha256}`,
        { target: wanted.path },
      );
    const release = (info.custom as Record<string, unknown>)[CUSTOM_KEY] as RampartTarget | undefined;
    if (!release) this.refuse(`${wanted.path} carries no Rampart metadata in the release repository`);
    const told = ((wanted.custom as Record<string, unknown>)[CUSTOM_KEY] ?? {}) as Partial<RampartTarget>;
    if (told.releaseCounter !== release.releaseCounter)
      this.refuse(
        `the director and the release repository disagree on the release counter of ${wanted.path}`,
      );
    if (!release.models.includes(this.o.model))
      this.refuse(`${wanted.path} is for ${release.models.join(', ')}, this device is a ${this.o.model}`, {
        target: wanted.path,
      });
    if (
      release.hardwareRevisions &&
      (!this.o.hardwareRevision || !release.hardwareRevisions.includes(this.o.hardwareRevision))
    )
      this.refuse(
        `${wanted.path} is for hardware revisions ${release.hardwareRevisions.join(', ')}, this device is ${this.o.hardwareRevision ?? 'of no configured revision'}`,
      );
    const kind = release.kind;
    const state = this.o.installer.state();
    const running = state.slots[state.active];
    if (running?.sha256 === info.hashes.sha256)
      return {
        outcome: 'up-to-date',
        detail: `${wanted.path} (version ${release.version}) runs already`,
        target: wanted.path,
        version: release.version,
        result: null,
        receiptSent: false,
      };
    if (running && running.kind === kind && release.releaseCounter < running.releaseCounter)
      this.refuse(
        `release counter ${release.releaseCounter} of ${wanted.path} is below the ${running.releaseCounter} of the running version ${running.version} (rollback)`,
      );
    if (!release.chunks) this.refuse(`${wanted.path} has no chunk hashes to verify its download against`);

    // Download, chunk-verified and resumable, from the consistent-snapshot target URL.
    const slash = wanted.path.lastIndexOf('/');
    const file = wanted.path.slice(slash + 1);
    const url = `${repo.url}/targets/${wanted.path.slice(0, slash + 1)}${info.hashes.sha256}.${file}`;
    const destination = join(downloads, `${info.hashes.sha256}.${file}`);
    try {
      await downloadArtifact(
        {
          url,
          destination,
          length: info.length,
          sha256: info.hashes.sha256!,
          chunks: release.chunks,
        },
        { ...this.o.download, caPem: (await this.o.identity()).caPem },
      );
    } catch (err) {
      this.o.log.warn(
        { event: 'update.download-failed', target: wanted.path, err },
        `the download of ${wanted.path} failed: ${(err as Error).message}`,
      );
      throw err;
    }
    const result = await this.o.installer.install({
      file: destination,
      version: release.version,
      kind,
      releaseCounter: release.releaseCounter,
      sha256: info.hashes.sha256!,
      name: file,
    });
    const receiptSent = result.receipt ? await this.sendReceipt(result.receipt) : false;
    return {
      outcome: 'installed',
      detail: result.detail,
      target: wanted.path,
      version: release.version,
      result,
      receiptSent,
    };
  }

  /** Post a signed receipt file to the director; false (logged) when it could not be delivered. */
  async sendReceipt(file: string): Promise<boolean> {
    try {
      const r = await this.director('POST', '/director/v1/receipts', JSON.parse(readFileSync(file, 'utf8')));
      if (r.status === 200 || r.status === 201) return true;
      this.o.log.warn(
        { status: r.status, body: r.body.toString('utf8').slice(0, 300) },
        'the director refused the receipt',
      );
    } catch (err) {
      this.o.log.warn({ err }, `the receipt could not be sent: ${(err as Error).message}`);
    }
    return false;
  }
}

/**
 * The update client the configuration describes: the director on the EST server the device
 * enrolled with, mutual TLS with its current certificate. Throws USAGE when updates.model is unset.
 */
export function updateClientFor(opts: {
  config: AgentConfig;
  anchor: TrustAnchor;
  store: IdentityStore;
  installer: Installer;
  log: Logger;
}): UpdateClient {
  const { config, anchor, store } = opts;
  if (!config.updates.model)
    throw new AgentError(
      'USAGE',
      "updates.model is not set: the agent must know the device's model to check releases against it; set it in the config file or RAMPART_AGENT_UPDATES_MODEL",
    );
  const estUrl = config.est.url ?? store.server()?.estUrl;
  if (!estUrl)
    throw new AgentError(
      'USAGE',
      'no EST server is known: enroll first or set est.url (RAMPART_AGENT_EST_URL)',
    );
  return new UpdateClient({
    dataDir: config.dataDir,
    estUrl: new URL(estUrl).origin,
    model: config.updates.model,
    ...(config.updates.hardwareRevision ? { hardwareRevision: config.updates.hardwareRevision } : {}),
    installer: opts.installer,
    log: opts.log,
    timeoutMs: config.est.timeoutMs,
    identity: async () => {
      const m = await mutualTlsIdentity(store, anchor, Date.now(), 'the director');
      return { deviceId: m.deviceId, certPem: store.clientCertificatePem(), tls: m.tls, caPem: m.rootPem };
    },
  });
}
