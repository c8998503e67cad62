import { closeSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { RampartError } from './errors.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * One platform process per data directory: two would both create first-start secrets and write the
 * same runtime file. The lock file holds the owner's pid; a lock left by a process that died
 * (kill -9, power loss) is taken over.
 */
export function lockDataDir(dataDir: string): () => void {
  const path = join(dataDir, 'rampart.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return () => rmSync(path, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number.parseInt(readFileSync(path, 'utf8'), 10);
      if (Number.isInteger(pid) && pid !== process.pid && alive(pid)) {
        throw new RampartError(
          'CONFLICT',
          `another Rampart (pid ${pid}) is using data directory ${dataDir}; stop it first, or start this one with another --data-dir`,
        );
      }
      rmSync(path, { force: true });
    }
  }
  throw new RampartError('CONFLICT', `cannot lock data directory ${dataDir} (${path})`);
}
