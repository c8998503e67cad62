import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readFileSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { computeChunkHashes, type ChunkHashes } from '../../../shared/src/updates/chunks.js';
import { AgentError } from '../errors.js';
import { TestPki } from '../test-support/pki.js';
import { testDevice } from './test-support/slots.js';
import {
  BandwidthLimiter,
  downloadArtifact,
  type Clock,
  type DownloadProgress,
  type DownloadRequest,
} from './download.js';

/** The built module, for the child process that is killed mid-download (tests run after `tsc -b`). */
const BUILT = fileURLToPath(new URL('../../dist/updates/download.js', import.meta.url));

const CHUNK = 4096;
const LENGTH = 16 * CHUNK + 1000; // 17 chunks, the last one short

let data: Buffer;
let chunks: ChunkHashes;
let sha256: string;

beforeAll(async () => {
  data = randomBytes(LENGTH);
  const hashed = await computeChunkHashes([data], { chunkSize: CHUNK });
  chunks = hashed.chunks;
  sha256 = hashed.sha256;
});

/** What the test server does on its n-th request (0-based). */
interface Behaviour {
  ignoreRange?: (n: number) => boolean;
  /** Close the connection after sending this many bytes of the body. */
  cutAfter?: (n: number) => number | undefined;
  /** Flip one bit at this absolute offset. */
  flipAt?: (n: number) => number | undefined;
  /** After the body, keep sending bytes (up to 8 MiB), without a Content-Length. */
  endless?: boolean;
  /** Announce this Content-Length (and send that many bytes). */
  announce?: number;
  /** Pause between 4 KiB pieces. */
  pieceDelayMs?: (n: number) => number;
  status?: number;
}

interface TestServer {
  url: string;
  requests: { range: string | undefined }[];
  behaviour: Behaviour;
  close(): Promise<void>;
}

const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(
    servers.splice(0).map(
      (s) =>
        new Promise<void>((resolve) => {
          s.closeAllConnections();
          s.close(() => resolve());
        }),
    ),
  );
});

function handler(state: Omit<TestServer, 'url' | 'close'>, content: () => Buffer) {
  return (req: IncomingMessage, res: ServerResponse) => {
    const n = state.requests.length;
    state.requests.push({ range: req.headers.range });
    const b = state.behaviour;
    if (b.status) {
      res.writeHead(b.status).end('nope');
      return;
    }
    const whole = content();
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    let start = 0;
    let end = whole.length;
    if (m && !b.ignoreRange?.(n)) {
      start = Number(m[1]);
      end = m[2] ? Number(m[2]) + 1 : whole.length;
    }
    const body = Buffer.from(whole.subarray(start, end));
    const flip = b.flipAt?.(n);
    if (flip !== undefined && flip >= start && flip < end) body[flip - start]! ^= 0x01;
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
    if (!b.endless) headers['content-length'] = String(b.announce ?? body.length);
    if (m && !b.ignoreRange?.(n)) headers['content-range'] = `bytes ${start}-${end - 1}/${whole.length}`;
    res.writeHead(m && !b.ignoreRange?.(n) ? 206 : 200, headers);
    const cut = b.cutAfter?.(n);
    const delay = b.pieceDelayMs?.(n) ?? 0;
    void (async () => {
      let sent = 0;
      const limit = b.endless ? 8 * 1024 * 1024 : b.announce !== undefined ? b.announce : body.length;
      while (sent < limit && !res.destroyed) {
        const piece =
          sent < body.length
            ? body.subarray(sent, sent + CHUNK)
            : Buffer.alloc(Math.min(CHUNK, limit - sent));
        const take = cut !== undefined ? piece.subarray(0, Math.max(0, cut - sent)) : piece;
        // Wait until each write is handed to the socket, so that a cut happens after exactly `cut` bytes.
        if (take.length > 0) await new Promise<void>((r) => res.write(take, () => r()));
        sent += take.length;
        if (cut !== undefined && sent >= cut) {
          res.socket?.destroy();
          return;
        }
        if (delay) await new Promise((r) => setTimeout(r, delay));
      }
      res.end();
    })().catch(() => undefined);
  };
}

async function serve(behaviour: Behaviour = {}, content: () => Buffer = () => data): Promise<TestServer> {
  const state = { requests: [] as { range: string | undefined }[], behaviour };
  const server = createServer(handler(state, content));
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    ...state,
    get behaviour() {
      return state.behaviour;
    },
    set behaviour(b: Behaviour) {
      state.behaviour = b;
    },
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/targets/image.bin`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

function request(url: string, dir = mkdtempSync(join(tmpdir(), 'rampart-download-'))): DownloadRequest {
  return { url, destination: join(dir, 'image.bin'), length: LENGTH, sha256, chunks };
}

async function failure(promise: Promise<unknown>): Promise<AgentError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(AgentError);
    return err as AgentError;
  }
  throw new Error('the download succeeded');
}

const fast = { retryDelayMs: 0 };

describe('artifact download', () => {
  it('downloads, verifies every chunk, reports progress and leaves only the file', async () => {
    const server = await serve();
    const req = request(server.url);
    const progress: DownloadProgress[] = [];
    const result = await downloadArtifact(req, { ...fast, onProgress: (p) => progress.push(p) });
    expect(readFileSync(req.destination).equals(data)).toBe(true);
    expect(result).toMatchObject({
      verifiedBytes: LENGTH,
      totalBytes: LENGTH,
      resumedFromBytes: 0,
      discardedChunks: 0,
    });
    expect(progress.map((p) => p.verifiedBytes)).toEqual(
      [...Array(17).keys()].map((i) => Math.min((i + 1) * CHUNK, LENGTH)),
    );
    expect(server.requests).toEqual([{ range: undefined }]);
    expect(existsSync(`${req.destination}.part`)).toBe(false);
    expect(existsSync(`${req.destination}.part.json`)).toBe(false);
    // Asked again, the finished file is recognised and nothing is fetched.
    await downloadArtifact(req, fast);
    expect(server.requests).toHaveLength(1);
  });

  it('resumes with Range after the agent is killed in the middle of a download', async () => {
    const server = await serve({ pieceDelayMs: (n) => (n === 0 ? 40 : 0) });
    const req = request(server.url);
    const child = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import { downloadArtifact } from ${JSON.stringify(pathToFileURL(BUILT).href)};
         await downloadArtifact(JSON.parse(process.env.DOWNLOAD), { retryDelayMs: 0 });`,
      ],
      {
        env: { PATH: process.env.PATH ?? '', DOWNLOAD: JSON.stringify(req) },
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      child.on('exit', (_code, signal) => resolve(signal)),
    );
    const stateFile = `${req.destination}.part.json`;
    const deadline = Date.now() + 15_000;
    for (;;) {
      const state = existsSync(stateFile)
        ? (JSON.parse(readFileSync(stateFile, 'utf8')) as { verifiedChunks: number })
        : null;
      if (state && state.verifiedChunks >= 3) break;
      if (Date.now() > deadline) throw new Error(`the child made no progress: ${stderr}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    expect(existsSync(req.destination)).toBe(false);

    const result = await downloadArtifact(req, fast);
    expect(result.resumedFromBytes).toBeGreaterThanOrEqual(3 * CHUNK);
    expect(result.resumedFromBytes % CHUNK).toBe(0);
    expect(result.transferredBytes).toBe(LENGTH - result.resumedFromBytes);
    expect(server.requests.at(-1)).toEqual({ range: `bytes=${result.resumedFromBytes}-${LENGTH - 1}` });
    expect(readFileSync(req.destination).equals(data)).toBe(true);
  });

  it('resumes after a truncated response and keeps the chunks verified before the cut', async () => {
    const server = await serve({ cutAfter: (n) => (n === 0 ? 5 * CHUNK + 123 : undefined) });
    const req = request(server.url);
    const result = await downloadArtifact(req, fast);
    expect(readFileSync(req.destination).equals(data)).toBe(true);
    expect(server.requests).toEqual([{ range: undefined }, { range: `bytes=${5 * CHUNK}-${LENGTH - 1}` }]);
    expect(result.transferredBytes).toBe(5 * CHUNK + 123 + (LENGTH - 5 * CHUNK));
  });

  it('gives up with DOWNLOAD_UNREACHABLE when every response breaks off without progress, keeping the verified part', async () => {
    const server = await serve({ cutAfter: (n) => (n === 0 ? 2 * CHUNK + 10 : 10) });
    const req = request(server.url);
    const err = await failure(downloadArtifact(req, { ...fast, maxInterruptions: 3 }));
    expect(err.code).toBe('DOWNLOAD_UNREACHABLE');
    expect(err.message).toMatch(/8192 of 66536 bytes are verified and kept; the next try resumes from there/);
    expect(server.requests).toHaveLength(4);
    expect(JSON.parse(readFileSync(`${req.destination}.part.json`, 'utf8'))).toMatchObject({
      verifiedChunks: 2,
    });
  });

  it('discards a bit-flipped chunk and fetches it again', async () => {
    const server = await serve({ flipAt: (n) => (n === 0 ? 2 * CHUNK + 77 : undefined) });
    const req = request(server.url);
    const result = await downloadArtifact(req, fast);
    expect(result.discardedChunks).toBe(1);
    expect(server.requests).toEqual([{ range: undefined }, { range: `bytes=${2 * CHUNK}-${LENGTH - 1}` }]);
    expect(readFileSync(req.destination).equals(data)).toBe(true);
  });

  it('refuses a chunk that keeps failing its hash with DOWNLOAD_CORRUPT, and never writes the file', async () => {
    const server = await serve({ flipAt: () => 3 * CHUNK + 1 });
    const req = request(server.url);
    const err = await failure(downloadArtifact(req, fast));
    expect(err.code).toBe('DOWNLOAD_CORRUPT');
    expect(err.message).toMatch(/chunk 4 of 17 .* failed its SHA-256 check 3 times/);
    expect(server.requests).toHaveLength(3);
    expect(existsSync(req.destination)).toBe(false);
    expect(JSON.parse(readFileSync(`${req.destination}.part.json`, 'utf8'))).toMatchObject({
      verifiedChunks: 3,
    });
    expect(readFileSync(`${req.destination}.part`).equals(data.subarray(0, 3 * CHUNK))).toBe(true);
  });

  it('stops reading a server that sends more than the length (endless data)', async () => {
    const server = await serve({ endless: true });
    const req = request(server.url);
    const err = await failure(downloadArtifact(req, fast));
    expect(err.code).toBe('DOWNLOAD_CORRUPT');
    expect(err.message).toMatch(/sent more than the 66536 bytes/);
    expect(existsSync(req.destination)).toBe(false);
    // The bytes before the overrun were fine and are kept; not one byte after it.
    expect(JSON.parse(readFileSync(`${req.destination}.part.json`, 'utf8'))).toMatchObject({
      verifiedChunks: 17,
    });
    expect(readFileSync(`${req.destination}.part`).equals(data)).toBe(true);
  });

  it('refuses before reading when the server announces more than the length', async () => {
    const server = await serve({ announce: LENGTH + 1 });
    const err = await failure(downloadArtifact(request(server.url), fast));
    expect(err.code).toBe('DOWNLOAD_CORRUPT');
    expect(err.message).toMatch(/announced 66537 bytes .* allows 66536; refused before reading/);
  });

  it('falls back to the full response when the server ignores Range, skipping what is verified', async () => {
    const server = await serve({
      ignoreRange: () => true,
      cutAfter: (n) => (n === 0 ? 6 * CHUNK + 5 : undefined),
    });
    const req = request(server.url);
    const result = await downloadArtifact(req, fast);
    expect(server.requests.map((r) => r.range)).toEqual([undefined, `bytes=${6 * CHUNK}-${LENGTH - 1}`]);
    expect(result.fullResponse).toBe(true);
    expect(result.transferredBytes).toBe(6 * CHUNK + 5 + LENGTH);
    expect(readFileSync(req.destination).equals(data)).toBe(true);
  });

  it('hashes the kept chunks again on resume and fetches a damaged one anew', async () => {
    // The first response breaks off after 4 chunks, the next one at once: the download gives up.
    const server = await serve({ cutAfter: (n) => (n === 0 ? 4 * CHUNK : 0) });
    const req = request(server.url);
    await failure(downloadArtifact(req, { ...fast, maxInterruptions: 1 }));
    server.behaviour = {};
    const part = readFileSync(`${req.destination}.part`);
    expect(part.length).toBe(4 * CHUNK);
    part[CHUNK + 5]! ^= 0x80; // chunk 2 damaged on disk
    writeFileSync(`${req.destination}.part`, part);
    const result = await downloadArtifact(req, fast);
    expect(result.resumedFromBytes).toBe(CHUNK);
    expect(server.requests.at(-1)).toEqual({ range: `bytes=${CHUNK}-${LENGTH - 1}` });
    expect(readFileSync(req.destination).equals(data)).toBe(true);
  });

  it('refuses a download whose chunks all verify but whose whole file has another SHA-256, and discards it', async () => {
    const server = await serve();
    const req = { ...request(server.url), sha256: 'ab'.repeat(32) };
    const err = await failure(downloadArtifact(req, fast));
    expect(err.code).toBe('DOWNLOAD_CORRUPT');
    expect(err.message).toMatch(/every chunk of .* verified, but the whole file does not have the SHA-256/);
    expect(server.requests).toEqual([{ range: undefined }]);
    for (const f of [req.destination, `${req.destination}.part`, `${req.destination}.part.json`])
      expect(existsSync(f)).toBe(false);
  });

  it('checks the whole-file SHA-256 of a resumed download too', async () => {
    // The first run breaks off after 4 chunks; the second resumes from there.
    const server = await serve({ cutAfter: (n) => (n === 0 ? 4 * CHUNK : 0) });
    const req = { ...request(server.url), sha256: 'ab'.repeat(32) };
    await failure(downloadArtifact(req, { ...fast, maxInterruptions: 1 }));
    server.behaviour = {};
    const err = await failure(downloadArtifact(req, fast));
    expect(err.code).toBe('DOWNLOAD_CORRUPT');
    expect(err.message).toMatch(/the whole file does not have the SHA-256/);
    expect(server.requests.at(-1)).toEqual({ range: `bytes=${4 * CHUNK}-${LENGTH - 1}` });
    for (const f of [req.destination, `${req.destination}.part`, `${req.destination}.part.json`])
      expect(existsSync(f)).toBe(false);
  });

  it('reads a resumed download back whole at the end: a kept chunk damaged on disk meanwhile is caught', async () => {
    const server = await serve({ cutAfter: (n) => (n === 0 ? 4 * CHUNK : 0) });
    const req = request(server.url);
    await failure(downloadArtifact(req, { ...fast, maxInterruptions: 1 }));
    server.behaviour = {};
    let damaged = false;
    // After the resume checked the 4 kept chunks and the first new one is kept, a byte of the
    // first chunk goes bad on disk: only reading the file back notices.
    const err = await failure(
      downloadArtifact(req, {
        ...fast,
        onProgress: () => {
          if (damaged) return;
          damaged = true;
          const fd = openSync(`${req.destination}.part`, 'r+');
          try {
            writeSync(fd, Buffer.from([data[5]! ^ 0x80]), 0, 1, 5);
          } finally {
            closeSync(fd);
          }
        },
      }),
    );
    expect(damaged).toBe(true);
    expect(err.code).toBe('DOWNLOAD_CORRUPT');
    expect(err.message).toMatch(/the whole file does not have the SHA-256/);
    expect(existsSync(req.destination)).toBe(false);
  });

  it('a download made in one run is hashed as written; damage on disk after that is refused at install', async () => {
    // A run that wrote every byte itself takes the whole-file hash from the bytes it verified and
    // wrote. A byte that goes bad on disk afterwards is caught before any slot is touched: the
    // installer hashes the artifact against the signed SHA-256 first.
    const server = await serve();
    const req = request(server.url);
    let damaged = false;
    await downloadArtifact(req, {
      ...fast,
      onProgress: (p) => {
        if (damaged || p.verifiedBytes < 2 * CHUNK) return;
        damaged = true;
        const fd = openSync(`${req.destination}.part`, 'r+');
        try {
          writeSync(fd, Buffer.from([data[5]! ^ 0x80]), 0, 1, 5);
        } finally {
          closeSync(fd);
        }
      },
    }).catch(() => undefined); // refused here or not, it must never be installed
    expect(damaged).toBe(true);
    const device = await testDevice();
    const installer = device.installer();
    if (existsSync(req.destination)) {
      const err = await failure(
        installer.install({
          file: req.destination,
          version: '1.0.0',
          kind: 'application',
          releaseCounter: 1,
          sha256,
        }),
      );
      expect(err.code).toBe('UPDATE_REFUSED');
      expect(err.message).toMatch(/has SHA-256 .* not the .* it must have/);
    }
    expect(installer.state().slots).toEqual({ a: null, b: null });
  });

  it('starts over when the partial file belongs to another artifact', async () => {
    // The first response breaks off after 4 chunks, the next one at once: the download gives up.
    const server = await serve({ cutAfter: (n) => (n === 0 ? 4 * CHUNK : 0) });
    const req = request(server.url);
    await failure(downloadArtifact(req, { ...fast, maxInterruptions: 1 }));
    server.behaviour = {};
    const other = randomBytes(LENGTH);
    const hashed = await computeChunkHashes([other], { chunkSize: CHUNK });
    const otherServer = await serve({}, () => other);
    const result = await downloadArtifact(
      { ...req, url: otherServer.url, sha256: hashed.sha256, chunks: hashed.chunks },
      fast,
    );
    expect(result.resumedFromBytes).toBe(0);
    expect(otherServer.requests).toEqual([{ range: undefined }]);
    expect(readFileSync(req.destination).equals(other)).toBe(true);
  });

  it('says what the server answered when it refuses', async () => {
    const server = await serve({ status: 404 });
    const err = await failure(downloadArtifact(request(server.url), fast));
    expect(err).toMatchObject({ code: 'DOWNLOAD_REFUSED', status: 404 });
    expect(err.message).toMatch(/answered 404 .* not \(or no longer\) published there/);
  });

  it('refuses chunk hashes that do not describe the artifact before connecting', async () => {
    const server = await serve();
    const err = await failure(
      downloadArtifact(
        { ...request(server.url), chunks: { chunkSize: CHUNK, sha256: chunks.sha256.slice(1) } },
        fast,
      ),
    );
    expect(err.code).toBe('DOWNLOAD_CORRUPT');
    expect(server.requests).toHaveLength(0);
  });

  it('over HTTPS trusts only the pinned root CA', async () => {
    const pki = new TestPki();
    const root = pki.rootCa('Updates Root');
    const impostorRoot = pki.rootCa('Impostor Root');
    const serveTls = async (cert: { certPem: string; keyPem: string }) => {
      const state = { requests: [] as { range: string | undefined }[], behaviour: {} };
      const server = createTlsServer(
        { cert: cert.certPem, key: cert.keyPem },
        handler(state, () => data),
      );
      servers.push(server);
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      return `https://localhost:${(server.address() as AddressInfo).port}/targets/image.bin`;
    };
    const good = await serveTls(pki.serverCert(root));
    const req = request(good);
    await downloadArtifact(req, { ...fast, caPem: root.pem });
    expect(readFileSync(req.destination).equals(data)).toBe(true);

    const impostor = await serveTls(pki.serverCert(impostorRoot));
    const err = await failure(downloadArtifact(request(impostor), { ...fast, caPem: root.pem }));
    expect(err.code).toBe('DOWNLOAD_UNTRUSTED');
    expect(err.message).toMatch(/not trusted.*pinned root CA/);

    const noCa = await failure(downloadArtifact(request(good), fast));
    expect(noCa.code).toBe('USAGE');
  });

  it('keeps to the bandwidth limit (measured on an injected clock)', async () => {
    const server = await serve();
    const clock = fakeClock();
    const progressAt: number[] = [];
    await downloadArtifact(request(server.url), {
      ...fast,
      clock,
      bandwidthBytesPerSecond: 16 * 1024,
      onProgress: () => progressAt.push(clock.now()),
    });
    // 16 KiB may go at once (the burst), the rest at 16 KiB/s.
    const expectedMs = ((LENGTH - 16 * 1024) / (16 * 1024)) * 1000;
    expect(clock.now()).toBeGreaterThanOrEqual(expectedMs - 1);
    expect(clock.now()).toBeLessThanOrEqual(expectedMs + 1000);
    // Never ahead of the limit: bytes verified by each moment ≤ burst + rate × time.
    progressAt.forEach((t, i) =>
      expect(Math.min((i + 1) * CHUNK, LENGTH)).toBeLessThanOrEqual(16 * 1024 + 16.384 * t + 1),
    );
  });
});

function fakeClock(): Clock & { slept: number[] } {
  let t = 0;
  const slept: number[] = [];
  return {
    slept,
    now: () => t,
    sleep: async (ms) => {
      slept.push(ms);
      t += ms;
      await Promise.resolve();
    },
  };
}

describe('bandwidth limiter', () => {
  it('spaces takes at the rate once the burst is used up', async () => {
    const clock = fakeClock();
    const limiter = new BandwidthLimiter(1000, clock, 0);
    await limiter.take(500);
    await limiter.take(500);
    await limiter.take(250);
    expect(clock.slept).toEqual([500, 500, 250]);
    expect(clock.now()).toBe(1250);
  });

  it('lets an idle stream use its burst, no more', async () => {
    const clock = fakeClock();
    const limiter = new BandwidthLimiter(1000, clock, 400);
    await limiter.take(400);
    expect(clock.slept).toEqual([]);
    await limiter.take(100);
    expect(clock.slept).toEqual([100]);
    // A long pause earns the burst again, not ten seconds' worth of bytes.
    await clock.sleep(10_000);
    clock.slept.length = 0;
    await limiter.take(400);
    await limiter.take(400);
    expect(clock.slept).toEqual([400]);
  });

  it('never lets more than burst + rate × elapsed through, whatever the piece sizes', async () => {
    const clock = fakeClock();
    const rate = 10_000;
    const burst = 2_000;
    const limiter = new BandwidthLimiter(rate, clock, burst);
    let total = 0;
    let idle = 0;
    let seed = 7;
    for (let i = 0; i < 500; i++) {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      const bytes = 1 + (seed % 3000);
      await limiter.take(bytes);
      total += bytes;
      expect(total).toBeLessThanOrEqual(burst + (rate * clock.now()) / 1000 + 1e-6);
      if (i % 50 === 0) {
        idle += seed % 700;
        await clock.sleep(seed % 700);
      }
    }
    // And it holds back no more than needed: while busy, the average is the rate.
    expect(total).toBeGreaterThanOrEqual((rate * (clock.now() - idle)) / 1000 - 3000);
  });

  it('refuses a limit that is not a positive rate', () => {
    expect(() => new BandwidthLimiter(0)).toThrow(/positive number of bytes per second/);
  });
});
