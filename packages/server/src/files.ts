import { renameSync, writeFileSync } from 'node:fs';

/** Write a file so that readers see the old content or the new, never a torn one. */
export function writeFileAtomic(path: string, content: string, mode: number): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, content, { mode });
  renameSync(tmp, path);
}
