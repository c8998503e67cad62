import { createHash, type Hash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fstatSync,
  fsyncSync,
  ftruncateSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { dirname } from 'node:path';
import { ChunkVerifier, type ChunkHashes } from '@rampart/shared/updates';
import { AgentError } from '../errors.js';
import { writeFileAtomic } from '../identity/files.js';

/**
 * The device's download of an update artifact (a full image or a delta patch): HTTP(S) GET with
 * Range, verified chunk by chunk against the chunk hashes of the signed target metadata, and
 * resumable across agent restarts.
 *
 * On disk, next to the destination: `<destination>.part` holds the verified chunks in order (and
 * possibly the unverified start of the next one, cut off on resume), `<destination>.part.json`
 * says which artifact they belong to and how many chunks are verified. Each chunk is flushed
 * before the state that counts it is replaced atomically, so a power cut never makes an unverified
 * byte count as verified. On resume the kept chunks are hashed again, so a damaged partial file
 * costs a download, never a bad image.
 */

/** The artifact to fetch, as the signed target metadata describes it. */
export interface DownloadRequest {
  /** Where to GET it (`http:` or `https:`). */
  url: string;
  /** Where the complete, verified file ends up. */
  destination: string;
  length: number;
  /** SHA-256 (hex) of the whole file. */
  sha256: string;
  chunks: ChunkHashes;
}

export interface DownloadProgress {
  /** Bytes verified and kept so far, including those kept from an earlier run. */
  verifiedBytes: number;
  totalBytes: number;
  /** Verified bytes found on disk from an interrupted earlier run. */
  resumedFromBytes: number;
  /** Bytes received in this run, including those discarded. */
  transferredBytes: number;
}

export interface DownloadResult extends DownloadProgress {
  path: string;
  /** Chunks that failed their hash and were fetched again. */
  discardedChunks: number;
  /** The server ignored Range at least once and sent the whole file (the verified part was skipped). */
  fullResponse: boolean;
}

/** Time, injectable so that the bandwidth limiter can be tested without waiting. */
export interface Clock {
  /** Milliseconds, monotonic. */
  now(): number;
  sleep(ms: number): Promise<void>;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

export interface DownloadOptions {
  /** The pinned root CA (PEM): required for `https:` URLs, the only CA the server's certificate may chain to. */
  caPem?: string | Buffer;
  /** Average bytes per second not to exceed (absent: no limit). */
  bandwidthBytesPerSecond?: number;
  /** Called after every verified chunk. */
  onProgress?: (progress: DownloadProgress) => void;
  /** How often one chunk may fail its hash before the download gives up. Default 3. */
  maxChunkAttempts?: number;
  /** How many requests in a row may break off without a new verified chunk. Default 5. */
  maxInterruptions?: number;
  /** Pause before the next request after a break-off, times the number of break-offs in a row. Default 1 s. */
  retryDelayMs?: number;
  /** A connection that sends nothing for this long is dropped (and the download resumed). Default 30 s. */
  idleTimeoutMs?: number;
  clock?: Clock;
}

const STATE_FORMAT = 'rampart-download/1';

interface DownloadState {
  format: typeof STATE_FORMAT;
  url: string;
  length: number;
  sha256: string;
  chunkSize: number;
  verifiedChunks: number;
}

/**
 * Paces a byte stream to an average rate: every byte costs `1/rate` seconds; a caller that has
 * been idle may use up to `burstBytes` at once. `take` resolves when the bytes may be consumed.
 */
export class BandwidthLimiter {
  private paidUntil: number;

  constructor(
    readonly bytesPerSecond: number,
    private readonly clock: Clock = systemClock,
    readonly burstBytes = Math.min(bytesPerSecond, 64 * 1024),
  ) {
    if (!(bytesPerSecond > 0))
      throw new AgentError(
        'USAGE',
        `a bandwidth limit must be a positive number of bytes per second (got ${bytesPerSecond})`,
      );
    // A fresh limiter is an idle one: it may start with its burst.
    this.paidUntil = clock.now() - (burstBytes * 1000) / bytesPerSecond;
  }

  async take(bytes: number): Promise<void> {
    const now = this.clock.now();
    const burstMs = (this.burstBytes * 1000) / this.bytesPerSecond;
    this.paidUntil = Math.max(this.paidUntil, now - burstMs) + (bytes * 1000) / this.bytesPerSecond;
    const wait = this.paidUntil - now;
    if (wait > 0) await this.clock.sleep(wait);
  }
}

type Attempt =
  | { kind: 'done' }
  | { kind: 'progress' } // the server sent a smaller range than asked; ask for the rest
  | { kind: 'bad-chunk' }
  | { kind: 'interrupted'; reason: string };

/**
 * Download an artifact, resuming from an earlier interrupted run, and return once the destination
 * holds exactly the bytes the metadata describes. Failures are AgentErrors:
 * `DOWNLOAD_CORRUPT` (a chunk failed its hash `maxChunkAttempts` times, more data than the length,
 * whole-file hash wrong), `DOWNLOAD_UNTRUSTED` (TLS), `DOWNLOAD_REFUSED` (HTTP status),
 * `DOWNLOAD_UNREACHABLE` (no progress after `maxInterruptions` tries). Verified chunks stay on disk
 * for the next try, except after a whole-file hash mismatch.
 */
export async function downloadArtifact(
  request: DownloadRequest,
  options: DownloadOptions = {},
): Promise<DownloadResult> {
  return new Download(request, options).run();
}

class Download {
  private readonly verifier: ChunkVerifier;
  private readonly url: URL;
  private readonly partPath: string;
  private readonly statePath: string;
  private readonly clock: Clock;
  private readonly limiter: BandwidthLimiter | null;
  private readonly maxChunkAttempts: number;
  private readonly maxInterruptions: number;
  private readonly retryDelayMs: number;
  private readonly idleTimeoutMs: number;
  private fd = -1;
  private verified = 0;
  private resumedFromBytes = 0;
  private transferred = 0;
  private discarded = 0;
  private fullResponse = false;
  private readonly failures = new Map<number, number>();
  /**
   * The whole file's SHA-256 over the chunks as they were verified and written, when this run
   * wrote every byte of the part file itself, from offset 0 in order; null after a resume, when
   * `finish()` reads the file back instead.
   */
  private wholeHash: Hash | null = null;
  private hashedBytes = 0;

  constructor(
    private readonly request: DownloadRequest,
    private readonly options: DownloadOptions,
  ) {
    try {
      this.verifier = new ChunkVerifier(request.chunks, request.length);
    } catch (err) {
      throw new AgentError('DOWNLOAD_CORRUPT', `cannot download ${request.url}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    if (!/^[0-9a-f]{64}$/.test(request.sha256))
      throw new AgentError('USAGE', `the expected SHA-256 of ${request.url} is not 64 hex digits`);
    try {
      this.url = new URL(request.url);
    } catch (err) {
      throw new AgentError('USAGE', `${request.url} is not a URL`, { cause: err });
    }
    if (this.url.protocol !== 'http:' && this.url.protocol !== 'https:')
      throw new AgentError('USAGE', `${request.url}: only http: and https: downloads are supported`);
    if (this.url.protocol === 'https:' && options.caPem === undefined)
      throw new AgentError(
        'USAGE',
        `${request.url} is https: give the pinned root CA (the platform's ca.pem) to check the server against`,
      );
    this.partPath = `${request.destination}.part`;
    this.statePath = `${request.destination}.part.json`;
    this.clock = options.clock ?? systemClock;
    this.limiter =
      options.bandwidthBytesPerSecond === undefined
        ? null
        : new BandwidthLimiter(options.bandwidthBytesPerSecond, this.clock);
    this.maxChunkAttempts = options.maxChunkAttempts ?? 3;
    this.maxInterruptions = options.maxInterruptions ?? 5;
    this.retryDelayMs = options.retryDelayMs ?? 1000;
    this.idleTimeoutMs = options.idleTimeoutMs ?? 30_000;
  }

  async run(): Promise<DownloadResult> {
    if (this.alreadyComplete()) {
      this.verified = this.verifier.count;
      this.resumedFromBytes = this.request.length;
      return this.result();
    }
    this.resume();
    try {
      let interruptions = 0;
      while (this.verified < this.verifier.count) {
        const before = this.verified;
        const attempt = await this.fetch();
        // A bad chunk is fetched again at once (its own limit is maxChunkAttempts); any other
        // request that ends without a new verified chunk counts towards maxInterruptions.
        if (attempt.kind === 'done' || attempt.kind === 'bad-chunk') continue;
        if (this.verified > before) {
          interruptions = 0;
          continue;
        }
        interruptions++;
        const reason =
          attempt.kind === 'interrupted'
            ? attempt.reason
            : 'the server sends ranges too short to finish a chunk';
        if (interruptions >= this.maxInterruptions) throw this.unreachable(reason);
        await this.clock.sleep(this.retryDelayMs * interruptions);
      }
      this.finish();
    } finally {
      if (this.fd >= 0) closeSync(this.fd);
      this.fd = -1;
    }
    return this.result();
  }

  private result(): DownloadResult {
    return {
      path: this.request.destination,
      ...this.progress(),
      discardedChunks: this.discarded,
      fullResponse: this.fullResponse,
    };
  }

  private progress(): DownloadProgress {
    return {
      verifiedBytes: this.verifiedBytes(),
      totalBytes: this.request.length,
      resumedFromBytes: this.resumedFromBytes,
      transferredBytes: this.transferred,
    };
  }

  private verifiedBytes(): number {
    return this.verified === 0 ? 0 : this.verifier.rangeOf(this.verified - 1).end;
  }

  /** The destination already holds the artifact (a finished earlier run). */
  private alreadyComplete(): boolean {
    if (!existsSync(this.request.destination)) return false;
    const fd = openSync(this.request.destination, 'r');
    try {
      return (
        fstatSync(fd).size === this.request.length && hashOf(fd, this.request.length) === this.request.sha256
      );
    } finally {
      closeSync(fd);
    }
  }

  /** Open the partial file and keep the chunks of an earlier run that still verify. */
  private resume(): void {
    const state = this.readState();
    const matches =
      state !== null &&
      state.length === this.request.length &&
      state.sha256 === this.request.sha256 &&
      state.chunkSize === this.verifier.chunkSize;
    if (!matches) rmSync(this.partPath, { force: true });
    this.fd = openSync(this.partPath, existsSync(this.partPath) ? 'r+' : 'w+', 0o600);
    let kept = 0;
    if (matches) {
      const size = fstatSync(this.fd).size;
      const claimed = Math.min(state.verifiedChunks, this.verifier.count);
      while (kept < claimed) {
        const { start, end } = this.verifier.rangeOf(kept);
        if (end > size) break;
        const data = Buffer.alloc(end - start);
        readSync(this.fd, data, 0, data.length, start);
        if (!this.verifier.verify(kept, data)) break;
        kept++;
      }
    }
    this.verified = kept;
    ftruncateSync(this.fd, this.verifiedBytes());
    this.resumedFromBytes = this.verifiedBytes();
    // Nothing kept from an earlier run: the part file is empty, and every byte of it will be one
    // this run verified and wrote, so the whole-file hash can be taken as they are written.
    if (this.resumedFromBytes === 0) {
      this.wholeHash = createHash('sha256');
      this.hashedBytes = 0;
    }
    // A state file that counts chunks (of this artifact or another) is brought in line with what
    // was kept; with none, there is nothing to correct: the first kept chunk writes it.
    if (state !== null) this.saveState();
  }

  private readState(): DownloadState | null {
    try {
      const value = JSON.parse(readFileSync(this.statePath, 'utf8')) as Partial<DownloadState>;
      if (
        value.format !== STATE_FORMAT ||
        typeof value.length !== 'number' ||
        typeof value.sha256 !== 'string' ||
        typeof value.chunkSize !== 'number' ||
        typeof value.url !== 'string' ||
        !Number.isInteger(value.verifiedChunks) ||
        (value.verifiedChunks as number) < 0
      )
        return null;
      return value as DownloadState;
    } catch {
      return null; // missing or torn: start over, the chunks are checked anyway
    }
  }

  private saveState(): void {
    const state: DownloadState = {
      format: STATE_FORMAT,
      url: this.request.url,
      length: this.request.length,
      sha256: this.request.sha256,
      chunkSize: this.verifier.chunkSize,
      verifiedChunks: this.verified,
    };
    writeFileAtomic(this.statePath, `${JSON.stringify(state)}\n`, 0o600);
  }

  /** Keep a verified chunk: write and flush it, then count it. */
  private keep(index: number, data: Buffer): void {
    const { start } = this.verifier.rangeOf(index);
    let at = 0;
    while (at < data.length) at += writeSync(this.fd, data, at, data.length - at, start + at);
    fsyncSync(this.fd);
    if (this.wholeHash) {
      // Chunks are kept in order; should one ever not follow the last, read the file back instead.
      if (start === this.hashedBytes) {
        this.wholeHash.update(data);
        this.hashedBytes += data.length;
      } else this.wholeHash = null;
    }
    this.verified = index + 1;
    this.saveState();
    this.options.onProgress?.(this.progress());
  }

  /** One GET from the first unverified chunk; reads until the range ends, a chunk fails, or the connection breaks. */
  private async fetch(): Promise<Attempt> {
    const offset = this.verifiedBytes();
    let req: ClientRequest;
    let res: IncomingMessage;
    try {
      ({ req, res } = await this.open(offset));
    } catch (err) {
      if (err instanceof AgentError) throw err;
      return this.transportFailure(err as NodeJS.ErrnoException);
    }
    try {
      const window = this.responseWindow(res, offset);
      if ('kind' in window) return window;
      let pos = window.start;
      let index = this.verified;
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      /** Add received bytes to the chunk being assembled; verify and keep each completed one. */
      const consume = (received: Buffer): Attempt | null => {
        let data = received;
        if (pos < offset) {
          // The server ignored Range: skip what is verified already.
          const skip = Math.min(offset - pos, data.length);
          data = data.subarray(skip);
          pos += skip;
        }
        while (data.length > 0) {
          const { end } = this.verifier.rangeOf(index);
          const take = Math.min(end - pos, data.length);
          pending.push(data.subarray(0, take));
          pendingBytes += take;
          pos += take;
          data = data.subarray(take);
          if (pos === end) {
            const chunk = Buffer.concat(pending, pendingBytes);
            pending = [];
            pendingBytes = 0;
            if (!this.verifier.verify(index, chunk)) return this.badChunk(index);
            this.keep(index, chunk);
            index++;
          }
        }
        return null;
      };
      for await (const piece of res as AsyncIterable<Buffer>) {
        this.transferred += piece.length;
        if (this.limiter) await this.limiter.take(piece.length);
        // Bytes past the announced end are never kept: the part before them is, then the
        // download stops (an endless stream must not fill the disk or the memory).
        const overrun = pos + piece.length > window.end;
        const attempt = consume(overrun ? piece.subarray(0, window.end - pos) : piece);
        if (attempt) return attempt;
        if (overrun)
          throw new AgentError(
            'DOWNLOAD_CORRUPT',
            `the server sent more than the ${window.end - window.start} bytes it announced for ${this.request.url} ` +
              `(the artifact is ${this.request.length} bytes long by its signed metadata); refused. ` +
              'The verified part is kept; check the update server',
          );
      }
      if (pos < window.end)
        return {
          kind: 'interrupted',
          reason: `the connection closed after ${pos} of ${window.end} bytes`,
        };
      return this.verified === this.verifier.count ? { kind: 'done' } : { kind: 'progress' };
    } catch (err) {
      if (err instanceof AgentError) throw err;
      return this.transportFailure(err as NodeJS.ErrnoException);
    } finally {
      req.destroy();
    }
  }

  private badChunk(index: number): Attempt {
    this.discarded++;
    const failures = (this.failures.get(index) ?? 0) + 1;
    this.failures.set(index, failures);
    if (failures >= this.maxChunkAttempts)
      throw new AgentError(
        'DOWNLOAD_CORRUPT',
        `chunk ${index + 1} of ${this.verifier.count} of ${this.request.url} failed its SHA-256 check ` +
          `${failures} times; the server or the network corrupts it. The verified chunks are kept; ` +
          'check the update server and try again',
      );
    return { kind: 'bad-chunk' };
  }

  /** Which bytes the response carries, `[start, end)`, or why it cannot be used. */
  private responseWindow(res: IncomingMessage, offset: number): { start: number; end: number } | Attempt {
    const status = res.statusCode ?? 0;
    const declared = res.headers['content-length'];
    const contentLength = declared === undefined ? undefined : Number(declared);
    if (status === 206) {
      const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers['content-range'] ?? '');
      const start = m ? Number(m[1]) : NaN;
      const end = m ? Number(m[2]) + 1 : NaN;
      if (
        !m ||
        start !== offset ||
        end <= start ||
        end > this.request.length ||
        (m[3] !== '*' && Number(m[3]) !== this.request.length)
      )
        return {
          kind: 'interrupted',
          reason: `the server answered a range request for byte ${offset} with Content-Range "${res.headers['content-range'] ?? ''}"`,
        };
      if (contentLength !== undefined && contentLength > end - start)
        throw this.overlong(contentLength, end - start);
      return { start, end };
    }
    if (status === 200) {
      if (contentLength !== undefined && contentLength > this.request.length)
        throw this.overlong(contentLength, this.request.length);
      if (offset > 0) this.fullResponse = true;
      return { start: 0, end: this.request.length };
    }
    if (status === 429 || status >= 500)
      return { kind: 'interrupted', reason: `the server answered ${status}` };
    throw new AgentError(
      'DOWNLOAD_REFUSED',
      `the update server answered ${status} for ${this.request.url}` +
        (status === 404 ? '; the artifact is not (or no longer) published there' : '') +
        (status === 416 ? '; it does not hold the artifact the signed metadata describes' : ''),
      { status },
    );
  }

  private overlong(announced: number, expected: number): AgentError {
    return new AgentError(
      'DOWNLOAD_CORRUPT',
      `the server announced ${announced} bytes for ${this.request.url} where the signed metadata allows ` +
        `${expected}; refused before reading. Check the update server`,
    );
  }

  private open(offset: number): Promise<{ req: ClientRequest; res: IncomingMessage }> {
    const headers: Record<string, string> = { accept: 'application/octet-stream' };
    if (offset > 0) headers.range = `bytes=${offset}-${this.request.length - 1}`;
    return new Promise((resolve, reject) => {
      const req =
        this.url.protocol === 'https:'
          ? httpsRequest(this.url, {
              headers,
              ca: this.options.caPem,
              minVersion: 'TLSv1.2',
              agent: false,
            })
          : httpRequest(this.url, { headers, agent: false });
      req.setTimeout(this.idleTimeoutMs, () =>
        req.destroy(
          Object.assign(new Error(`no data for ${this.idleTimeoutMs / 1000} s`), { code: 'ETIMEDOUT' }),
        ),
      );
      req.once('error', reject);
      req.once('response', (res) => {
        // Errors on the socket now surface through the response body.
        req.off('error', reject);
        req.on('error', () => undefined);
        resolve({ req, res });
      });
      req.end();
    });
  }

  private transportFailure(err: NodeJS.ErrnoException): Attempt {
    const code = err.code ?? '';
    if (/CERT|SELF_SIGNED|UNABLE_TO_|ALTNAME|HOSTNAME|INVALID_CA|PATH_LENGTH|INVALID_PURPOSE/.test(code))
      throw new AgentError(
        'DOWNLOAD_UNTRUSTED',
        `the update server at ${this.url.origin} is not trusted: ${err.message} (${code}). The device ` +
          "trusts only the pinned root CA; check that it is Rampart's root CA (<server-data-dir>/ca.pem) " +
          'and that the URL names the server as its certificate does',
        { cause: err },
      );
    return { kind: 'interrupted', reason: `${err.message}${code ? ` (${code})` : ''}` };
  }

  private unreachable(reason: string): AgentError {
    return new AgentError(
      'DOWNLOAD_UNREACHABLE',
      `cannot download ${this.request.url}: ${reason}. ${this.verifiedBytes()} of ${this.request.length} ` +
        'bytes are verified and kept; the next try resumes from there. Check the network and the update server',
    );
  }

  /**
   * All chunks verified: check the whole file's hash, then move it into place. The hash is the one
   * taken while writing when this run wrote the whole file, else (a resumed download) the file is
   * read back and hashed.
   */
  private finish(): void {
    const whole =
      this.wholeHash && this.hashedBytes === this.request.length
        ? this.wholeHash.digest('hex')
        : hashOf(this.fd, this.request.length);
    this.wholeHash = null;
    if (whole !== this.request.sha256) {
      closeSync(this.fd);
      this.fd = -1;
      rmSync(this.partPath, { force: true });
      rmSync(this.statePath, { force: true });
      throw new AgentError(
        'DOWNLOAD_CORRUPT',
        `every chunk of ${this.request.url} verified, but the whole file does not have the SHA-256 of ` +
          'its signed metadata: the chunk hashes and the target disagree. The download was discarded; ' +
          'report it to the release owners',
      );
    }
    closeSync(this.fd);
    this.fd = -1;
    renameSync(this.partPath, this.request.destination);
    syncDirectory(dirname(this.request.destination));
    rmSync(this.statePath, { force: true });
  }
}

/** SHA-256 (hex) of the first `length` bytes of an open file; null when it is shorter. */
function hashOf(fd: number, length: number): string | null {
  const hash = createHash('sha256');
  const buffer = Buffer.alloc(Math.min(1024 * 1024, Math.max(length, 1)));
  let at = 0;
  while (at < length) {
    const n = readSync(fd, buffer, 0, Math.min(buffer.length, length - at), at);
    if (n === 0) return null;
    hash.update(buffer.subarray(0, n));
    at += n;
  }
  return hash.digest('hex');
}

function syncDirectory(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Not every file system lets a directory be flushed; the rename itself is still atomic.
  }
}
