import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { Agent as HttpAgent, request as httpRequest, type ClientRequestArgs } from 'node:http';
import type { Duplex } from 'node:stream';
import { join } from 'node:path';
import type { Root, Targets } from '@tufjs/models';
import { Metadata, MetadataKind } from '@tufjs/models';
import { Updater } from 'tuf-js';
import type { Logger } from '@rampart/shared/logging';
import {
  CUSTOM_KEY,
  applyDelta,
  chooseDelta,
  type DeltaDescriptor,
  type ImageDigest,
  type RampartTarget,
} from '@rampart/shared/updates';
import type { AgentConfig } from '../config.js';
import { AgentError } from '../errors.js';
import { mutualTlsIdentity } from '../identity/current.js';
import type { IdentityStore } from '../identity/store.js';
import type { TrustAnchor } from '../trust-anchor/trust-anchor.js';
import { writeFileAtomic } from '../identity/files.js';
import type { MutualTls } from '../tls/mutual-tls.js';
import { downloadArtifact, type DownloadOptions } from './download.js';
import { decryptArtifact, wrappedContentKey } from './decrypt.js';
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
  /** The trust anchor, to unwrap the content keys of encrypted releases (refused without `unwrapKey`). */
  anchor?: Pick<TrustAnchor, 'kind' | 'unwrapKey'>;
  log: Logger;
  timeoutMs?: number;
  /** Retry tuning of the artifact download (the pinned root is always its CA for https). */
  download?: Pick<
    DownloadOptions,
    'retryDelayMs' | 'maxInterruptions' | 'maxChunkAttempts' | 'idleTimeoutMs'
  >;
  now?: () => Date;
}

/** What came of posting a receipt: see `UpdateClient.sendReceipt`. */
export type ReceiptDelivery = 'delivered' | 'refused' | 'unreachable';

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
  /** When something was downloaded: a patch from the running image (`delta`) or the whole image (`full`). */
  transfer?: 'delta' | 'full';
  /** Bytes received over the network for it in this check (a resumed download counts only the rest). */
  downloadedBytes?: number;
  /**
   * Milliseconds: `metadata` from the start of the check until both repositories were refreshed,
   * verified and found to agree (or until it was clear nothing is assigned); `total` the whole check.
   */
  timings?: { metadataMs: number; totalMs: number };
}

/** How many director root versions one check walks at most (the rest at the next check). */
export const MAX_DIRECTOR_ROOT_STEPS = 32;

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
  private session: DirectorConnection | null = null;
  /** The identity for the check under way: read once per check (parsing certificates is not free on a device). */
  private checking: DirectorIdentity | null = null;
  /** When the check under way had both repositories' metadata verified (for `timings`). */
  private metadataDone: number | null = null;

  constructor(options: UpdateClientOptions) {
    this.o = options;
    this.dir = join(options.dataDir, 'updates');
  }

  private identity(): Promise<DirectorIdentity> {
    return this.checking ? Promise.resolve(this.checking) : this.o.identity();
  }

  private get now(): Date {
    return this.o.now?.() ?? new Date();
  }

  private refuse(reason: string, details: Record<string, unknown> = {}): never {
    this.o.log.warn({ event: 'update.refused', reason, ...details }, `update refused: ${reason}`);
    throw new AgentError('UPDATE_REFUSED', `update refused: ${reason}; nothing was installed`);
  }

  /**
   * Open one mutual-TLS connection to the director for the requests of a check: the repository,
   * the director root, this device's targets and the receipt go over a single handshake, which on a
   * TPM or a token is the slow part. Closed at the end of the check.
   */
  private async beginSession(): Promise<void> {
    this.endSession();
    const id = await this.identity();
    const url = new URL(this.o.estUrl);
    const timeoutMs = this.o.timeoutMs ?? 30_000;
    this.session = new DirectorConnection(() =>
      id.tls.connect({
        host: url.hostname.replace(/^\[|\]$/g, ''),
        port: Number(url.port || 443),
        certPem: id.certPem,
        caPem: id.caPem,
        timeoutMs,
      }),
    );
  }

  private endSession(): void {
    this.session?.destroy();
    this.session = null;
  }

  /**
   * A request to the director over mutual TLS with the device certificate, over the session's
   * connection when one is open. A kept-alive connection the server closed meanwhile (its idle
   * time-out, during a long install) fails before any answer: the request is sent once more on a
   * new connection.
   */
  private async director(method: 'GET' | 'POST', path: string, body?: unknown): Promise<Reply> {
    try {
      return await this.directorOnce(method, path, body, true);
    } catch (err) {
      if (!(err instanceof StaleConnection)) throw err;
      this.endSession();
      return this.directorOnce(method, path, body, false);
    }
  }

  private async directorOnce(
    method: 'GET' | 'POST',
    path: string,
    body: unknown,
    reuse: boolean,
  ): Promise<Reply> {
    const id = await this.identity();
    const url = new URL(path, this.o.estUrl);
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const timeoutMs = this.o.timeoutMs ?? 30_000;
    const connect = () =>
      id.tls.connect({
        host: url.hostname.replace(/^\[|\]$/g, ''),
        port: Number(url.port || 443),
        certPem: id.certPem,
        caPem: id.caPem,
        timeoutMs,
      });
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
        ...(this.session && reuse ? { agent: this.session } : { createConnection: connect }),
      });
      req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs / 1000} s`)));
      req.on('error', (err: NodeJS.ErrnoException) =>
        reject(
          req.reusedSocket && ['ECONNRESET', 'EPIPE', 'ECONNABORTED'].includes(err.code ?? '')
            ? new StaleConnection()
            : err instanceof AgentError
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
    return this.replyJson(path, await this.director('GET', path));
  }

  /** The JSON of a director reply, or EST_REFUSED / EST_BAD_RESPONSE. */
  private replyJson(path: string, r: Reply): unknown {
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

  /**
   * The director root: pinned at the first check (over mutual TLS, to the pinned platform CA), then
   * moved forward the TUF way at every check — see `followDirectorRoots`. The newest root must not
   * have expired: an expired one is refused (`update.refused`) and nothing is installed.
   */
  private async directorRoot(): Promise<Metadata<Root>> {
    const file = join(this.dir, 'director', 'root.json');
    let root: Metadata<Root>;
    if (!existsSync(file)) {
      const doc = await this.directorJson('/director/v1/root.json');
      root = Metadata.fromJSON(MetadataKind.Root, doc as TufJSON);
      root.verifyDelegate('root', root);
      mkdirSync(join(this.dir, 'director'), { recursive: true, mode: 0o700 });
      writeFileAtomic(file, JSON.stringify(doc), 0o644);
      this.o.log.info({ file, version: root.signed.version }, 'director root pinned');
    } else root = Metadata.fromJSON(MetadataKind.Root, JSON.parse(readFileSync(file, 'utf8')) as TufJSON);
    const newest = await this.followDirectorRoots(root, file);
    // TUF 5.3.10: the newest root, after the walk, must not have expired (a frozen director).
    if (newest.signed.isExpired(this.now))
      this.refuse(
        `the director root expired at ${newest.signed.expires} (version ${newest.signed.version}, the newest the director serves: a frozen director)`,
        { directorRoot: newest.signed.version, expires: newest.signed.expires },
      );
    return newest;
  }

  /**
   * Walk from the pinned director root (version N) to the newest: `N+1.root.json`, `N+2…` until the
   * director answers 404, each verified with the threshold of the previous root and of its own and
   * of exactly the next version, and pinned (written) as soon as it verifies. One that fails is
   * refused (`update.refused`): the last root that verified stays pinned. When the targets keys
   * change, the recorded targets version is let go (TUF's recovery from a fast-forward attack by a
   * retired key). At most `MAX_DIRECTOR_ROOT_STEPS` versions per check.
   */
  private async followDirectorRoots(pinned: Metadata<Root>, file: string): Promise<Metadata<Root>> {
    let root = pinned;
    for (let step = 0; step < MAX_DIRECTOR_ROOT_STEPS; step++) {
      const version = root.signed.version + 1;
      const path = `/director/v1/${version}.root.json`;
      const r = await this.director('GET', path);
      if (r.status === 404) return root;
      const doc = this.replyJson(path, r);
      let next: Metadata<Root>;
      try {
        next = Metadata.fromJSON(MetadataKind.Root, doc as TufJSON);
        if (next.signed.version !== version)
          throw new Error(`it is version ${next.signed.version}, not ${version}`);
        root.verifyDelegate('root', next);
        next.verifyDelegate('root', next);
      } catch (err) {
        this.refuse(
          `director root version ${version} does not verify with the pinned version ${root.signed.version} and itself (${(err as Error).message}); version ${root.signed.version} stays pinned`,
          { directorRoot: version },
        );
      }
      writeFileAtomic(file, JSON.stringify(doc), 0o644);
      const keysOf = (md: Metadata<Root>) => [...(md.signed.roles.targets?.keyIDs ?? [])].sort().join(',');
      if (keysOf(next) !== keysOf(root))
        rmSync(join(this.dir, 'director', 'targets-version'), { force: true });
      this.o.log.info(
        { event: 'update.director-root', file, from: root.signed.version, version },
        `director root version ${version} verified and pinned`,
      );
      root = next;
    }
    return root;
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
    const recorded = existsSync(versionFile) ? Number(readFileSync(versionFile, 'utf8')) : null;
    const last = recorded ?? 0;
    if (md.signed.version < last)
      this.refuse(
        `the director's targets metadata is version ${md.signed.version}, older than version ${last} seen before (rollback)`,
      );
    // Recorded (durably) only when it moved: the same version again needs no write.
    if (md.signed.version !== recorded) writeFileAtomic(versionFile, `${md.signed.version}\n`, 0o644);
    return md;
  }

  /** Run one update cycle. Throws UPDATE_REFUSED (logged as `update.refused`) for every check that fails. */
  async check(): Promise<UpdateCheck> {
    const started = performance.now();
    this.metadataDone = null;
    this.checking = await this.o.identity();
    try {
      await this.beginSession();
      const r = await this.cycle();
      const now = performance.now();
      return { ...r, timings: { metadataMs: (this.metadataDone ?? now) - started, totalMs: now - started } };
    } finally {
      this.endSession();
      this.checking = null;
    }
  }

  private async cycle(): Promise<UpdateCheck> {
    const { deviceId } = await this.identity();
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
    this.metadataDone = performance.now();
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
    // A slot holds the plaintext: for an encrypted release that is the signed plaintext hash.
    const encryption = release.encryption;
    if (running?.sha256 === (encryption?.sha256 ?? info.hashes.sha256))
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
    const refuse = (reason: string, details?: Record<string, unknown>) => this.refuse(reason, details);
    const wrappedKey = encryption
      ? wrappedContentKey(
          this.o.anchor,
          wanted.path,
          (wanted.custom as { director?: unknown }).director,
          refuse,
        )
      : null;

    // Download, chunk-verified and resumable, from the consistent-snapshot target URL.
    const slash = wanted.path.lastIndexOf('/');
    const file = wanted.path.slice(slash + 1);
    const url = `${repo.url}/targets/${wanted.path.slice(0, slash + 1)}${info.hashes.sha256}.${file}`;
    const destination = join(downloads, `${info.hashes.sha256}.${file}`);
    const caPem = (await this.identity()).caPem;
    // A patch from the image in the active slot, when the release offers one (encrypted ones never do).
    const patched = encryption
      ? null
      : await this.buildFromDelta({
          repoUrl: repo.url,
          target: wanted.path,
          deltas: release.deltas,
          image: { length: info.length, sha256: info.hashes.sha256! },
          destination,
          downloads,
          caPem,
        });
    let transfer: Pick<UpdateCheck, 'transfer' | 'downloadedBytes'>;
    if (patched) transfer = { transfer: 'delta', downloadedBytes: patched.downloadedBytes };
    else
      try {
        const got = await downloadArtifact(
          {
            url,
            destination,
            length: info.length,
            sha256: info.hashes.sha256!,
            chunks: release.chunks,
          },
          { ...this.o.download, caPem },
        );
        transfer = { transfer: 'full', downloadedBytes: got.transferredBytes };
      } catch (err) {
        this.o.log.warn(
          { event: 'update.download-failed', target: wanted.path, err },
          `the download of ${wanted.path} failed: ${(err as Error).message}`,
        );
        throw err;
      }
    // Encrypted: the verified ciphertext is decrypted next to it; the plaintext is removed after the install.
    const image = encryption ? join(downloads, `${encryption.sha256}.${file}`) : destination;
    if (encryption)
      await decryptArtifact({
        anchor: this.o.anchor!,
        target: wanted.path,
        ciphertext: destination,
        destination: image,
        encryption,
        wrappedKey: wrappedKey!,
        refuse,
      });
    let result: UpdateResult;
    try {
      result = await this.o.installer.install({
        file: image,
        version: release.version,
        kind,
        releaseCounter: release.releaseCounter,
        sha256: encryption?.sha256 ?? info.hashes.sha256!,
        name: file,
      });
    } finally {
      if (encryption) rmSync(image, { force: true });
    }
    const receiptSent = result.receipt ? (await this.sendReceipt(result.receipt)) === 'delivered' : false;
    return {
      outcome: 'installed',
      detail: result.detail,
      target: wanted.path,
      version: release.version,
      result,
      receiptSent,
      ...transfer,
    };
  }

  /**
   * Rebuild the target image from a patch, when the signed target offers one whose base is exactly
   * the image in the active slot (length and SHA-256). The patch is downloaded like an image
   * (chunk-verified against the signed descriptor, resumable) from its consistent-snapshot URL,
   * applied by `applyDelta`, which accepts only the signed patch and only a result with the target's
   * length and SHA-256, and written where the full download would have gone. Null when no patch
   * fits, or when anything fails — logged as `update.delta-failed`; the caller then downloads the
   * full image.
   */
  private async buildFromDelta(o: {
    repoUrl: string;
    target: string;
    deltas: readonly DeltaDescriptor[] | undefined;
    image: ImageDigest;
    destination: string;
    downloads: string;
    caPem: string;
  }): Promise<{ downloadedBytes: number } | null> {
    const state = this.o.installer.state();
    const running = state.slots[state.active];
    const delta = chooseDelta(o.deltas, running);
    if (!delta || !running) return null;
    const slash = delta.path.lastIndexOf('/');
    const file = delta.path.slice(slash + 1);
    const patchFile = join(o.downloads, `${delta.sha256}.${file}`);
    const context = { target: o.target, patch: delta.path, from: delta.from.version };
    try {
      if (!delta.chunks)
        throw new AgentError(
          'UPDATE_REFUSED',
          'the delta has no chunk hashes to verify its download against',
        );
      const got = await downloadArtifact(
        {
          url: `${o.repoUrl}/targets/${delta.path.slice(0, slash + 1)}${delta.sha256}.${file}`,
          destination: patchFile,
          length: delta.length,
          sha256: delta.sha256,
          chunks: delta.chunks,
        },
        { ...this.o.download, caPem: o.caPem },
      );
      const base = readFileSync(join(this.o.installer.slotDir(state.active), running.name));
      writeFileAtomic(o.destination, applyDelta(base, readFileSync(patchFile), delta, o.image), 0o600);
      this.o.log.info(
        {
          event: 'update.delta',
          ...context,
          downloadedBytes: got.transferredBytes,
          imageBytes: o.image.length,
        },
        `${o.target} rebuilt from a ${delta.length}-byte patch from version ${delta.from.version} (image ${o.image.length} bytes)`,
      );
      return { downloadedBytes: got.transferredBytes };
    } catch (err) {
      this.o.log.warn(
        { event: 'update.delta-failed', ...context, err },
        `the delta from version ${delta.from.version} for ${o.target} could not be used (${(err as Error).message}); downloading the full image`,
      );
      return null;
    } finally {
      for (const f of [patchFile, `${patchFile}.part`, `${patchFile}.part.json`]) rmSync(f, { force: true });
    }
  }

  /**
   * Post a signed receipt file to the director. `delivered`: the director took it (or had it);
   * `refused`: it answered with a refusal (a bad or foreign receipt — sending it again cannot help);
   * `unreachable`: no answer (no network yet, the platform down) — worth sending again. Logged.
   */
  async sendReceipt(file: string): Promise<ReceiptDelivery> {
    try {
      const r = await this.director('POST', '/director/v1/receipts', JSON.parse(readFileSync(file, 'utf8')));
      if (r.status === 200 || r.status === 201) return 'delivered';
      this.o.log.warn(
        { status: r.status, body: r.body.toString('utf8').slice(0, 300) },
        'the director refused the receipt',
      );
      return r.status >= 500 ? 'unreachable' : 'refused';
    } catch (err) {
      this.o.log.warn({ err }, `the receipt could not be sent: ${(err as Error).message}`);
      return 'unreachable';
    }
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
    anchor,
    log: opts.log,
    timeoutMs: config.est.timeoutMs,
    identity: async () => {
      const m = await mutualTlsIdentity(store, anchor, Date.now(), 'the director');
      return { deviceId: m.deviceId, certPem: store.clientCertificatePem(), tls: m.tls, caPem: m.rootPem };
    },
  });
}

/** A kept-alive connection that the server had closed: the request goes again on a new one. */
class StaleConnection extends Error {}

/**
 * Keeps one connection to the director open across the requests of an update check. The socket
 * may be an `openssl s_client` tunnel rather than a net.Socket, so keep-alive and ref/unref are
 * applied only where the socket has them.
 */
class DirectorConnection extends HttpAgent {
  constructor(private readonly open: () => Duplex) {
    super({ keepAlive: true, maxSockets: 1 });
  }

  override createConnection(_options: ClientRequestArgs): Duplex {
    return this.open();
  }

  override keepSocketAlive(socket: Duplex): boolean {
    const s = socket as Duplex & { setKeepAlive?: (on: boolean, ms: number) => void; unref?: () => void };
    s.setKeepAlive?.(true, 1000);
    s.unref?.();
    return true;
  }

  override reuseSocket(socket: Duplex): void {
    (socket as Duplex & { ref?: () => void }).ref?.();
  }
}
