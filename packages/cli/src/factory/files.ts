import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  fsyncSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { CliError, EXIT } from '../errors.js';

/**
 * Files of the factory station. Whatever the station records (its key, its CA, its batches) is
 * replaced whole or not at all, so that a station that loses power mid-write keeps its previous
 * state rather than a torn file.
 */

/** Write `path` through a temporary file, flushed and renamed over it. */
export function replaceFile(path: string, content: string, mode: number): void {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    const fd = openSync(tmp, 'wx', mode);
    try {
      writeSync(fd, content);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    chmodSync(tmp, mode);
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw new CliError(`cannot write ${path}: ${(err as Error).message}`, EXIT.failed);
  }
}

/** Create `path`, never replacing a file: the station's key is written once, copies go to new files. */
export function createFile(path: string, content: string, mode: number): void {
  let fd: number;
  try {
    fd = openSync(path, 'wx', mode);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST')
      throw new CliError(`${path} exists already; choose another file or remove it first`, EXIT.usage);
    throw new CliError(`cannot write ${path}: ${(err as Error).message}`, EXIT.usage);
  }
  try {
    writeSync(fd, content);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    rmSync(path, { force: true });
    throw new CliError(`cannot write ${path}: ${(err as Error).message}`, EXIT.failed);
  }
  closeSync(fd);
}

/** The text of a file the station keeps; `what` names it in the error. */
export function readStationFile(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new CliError(
      `cannot read ${what} ${path}: ${code === 'ENOENT' ? 'no such file' : (err as Error).message}`,
      EXIT.failed,
    );
  }
}

/** One JSON object from a file of the station. */
export function readStationJson(path: string, what: string): Record<string, unknown> {
  const text = readStationFile(path, what);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new CliError(`${what} ${path} is not valid JSON: ${(err as Error).message}`, EXIT.failed);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new CliError(`${what} ${path} is not a JSON object`, EXIT.failed);
  return value as Record<string, unknown>;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The pid in a lock file; `starting` while its owner has created it but not yet written its pid
 * (for a moment), null when it is gone or its owner left it unfinished long ago.
 */
function lockOwner(path: string): number | 'starting' | null {
  try {
    const pid = Number.parseInt(readFileSync(path, 'utf8'), 10);
    if (Number.isInteger(pid)) return pid;
    return Date.now() - statSync(path).mtimeMs < 5000 ? 'starting' : null;
  } catch {
    return null;
  }
}

/** Locks this process holds: a lock file with our pid and not among them was left by an earlier process. */
const heldHere = new Set<string>();

/**
 * Hold the station's lock while `fn` reads and changes its batches: two `rampart factory` runs on
 * one station (two devices on the line at once) take turns. The lock file holds the owner's pid; a
 * lock left by a process that died is taken over. Waits up to `waitMs` for a live owner.
 */
export async function withStationLock<T>(dir: string, fn: () => T | Promise<T>, waitMs = 30_000): Promise<T> {
  const path = join(dir, 'station.lock');
  const deadline = Date.now() + waitMs;
  for (;;) {
    let fd: number;
    try {
      fd = openSync(path, 'wx', 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST')
        throw new CliError(`cannot lock the station directory ${dir}: ${(err as Error).message}`, EXIT.usage);
      const owner = lockOwner(path);
      const held =
        owner === 'starting' || (owner === process.pid ? heldHere.has(path) : owner !== null && alive(owner));
      if (held) {
        if (Date.now() > deadline)
          throw new CliError(
            `another rampart factory${typeof owner === 'number' ? ` (pid ${owner})` : ''} has held the station ${dir} for ${Math.ceil(waitMs / 1000)} s`,
            EXIT.conflict,
            ['wait for it to finish and run the command again'],
          );
        await new Promise((r) => setTimeout(r, 100));
      } else {
        rmSync(path, { force: true });
      }
      continue;
    }
    try {
      writeSync(fd, `${process.pid}\n`);
    } finally {
      closeSync(fd);
    }
    heldHere.add(path);
    try {
      return await fn();
    } finally {
      heldHere.delete(path);
      rmSync(path, { force: true });
    }
  }
}
