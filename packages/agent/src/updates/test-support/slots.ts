import { createHash } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '@rampart/shared/logging';
import { SoftwareTrustAnchor } from '../../trust-anchor/software.js';
import { FileRollbackCounter } from '../counter.js';
import { Installer, type InstallerOptions } from '../installer.js';
import { runningSlot, type ReleaseInfo } from '../state.js';

export const silentLog = createLogger({ level: 'silent' });

export function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** A device data directory with a software identity key, and artifacts to install. */
export async function testDevice(prefix = 'rampart-slots-') {
  const dataDir = mkdtempSync(join(tmpdir(), prefix));
  const anchor = new SoftwareTrustAnchor(join(dataDir, 'identity', 'device-key.pem'));
  const publicKey = await anchor.ensureKey();
  const artifacts = join(dataDir, 'artifacts');
  mkdirSync(artifacts);
  const artifact = (name: string, content: string) => {
    const file = join(artifacts, name);
    writeFileSync(file, content);
    return file;
  };
  const counter = new FileRollbackCounter(join(dataDir, 'slots', 'counters.json'));
  const installer = (overrides: Partial<InstallerOptions> = {}) =>
    new Installer({
      dataDir,
      counter,
      log: silentLog,
      selfTest: { timeoutMs: 5000 },
      maxBootAttempts: 3,
      commitTimeoutMs: 600_000,
      signer: async () => ({ deviceId: 'dev-1', publicKey, sign: (d) => anchor.sign(d) }),
      ...overrides,
    });
  return { dataDir, anchor, publicKey, artifact, counter, installer };
}

/** Write an executable hook script into `dir`. */
export function hook(dir: string, step: string, script: string): void {
  mkdirSync(dir, { recursive: true });
  const file = join(dir, step);
  writeFileSync(file, `#!/bin/sh\n${script}\n`);
  chmodSync(file, 0o755);
}

/**
 * What the device would run, read from disk alone: the slot the state file names, its release
 * record, and whether the artifact in it is whole (its SHA-256 matches). Throws when the running
 * slot is not whole — a device that would run neither the old nor the new software.
 */
export function runningRelease(dataDir: string): { slot: string; release: ReleaseInfo; link: string } {
  const slots = join(dataDir, 'slots');
  const state = JSON.parse(readFileSync(join(slots, 'state.json'), 'utf8'));
  const slot = runningSlot(state);
  const recordFile = join(slots, slot, 'release.json');
  if (!existsSync(recordFile)) throw new Error(`the running slot ${slot} holds no release`);
  const release = JSON.parse(readFileSync(recordFile, 'utf8')) as ReleaseInfo;
  const content = readFileSync(join(slots, slot, release.name));
  if (sha256(content) !== release.sha256)
    throw new Error(`the running slot ${slot} holds a damaged ${release.name}`);
  if (state.slots[slot]?.sha256 !== release.sha256)
    throw new Error(`the state file and slot ${slot} disagree about what it holds`);
  return { slot, release, link: readlinkSync(join(slots, 'current')) };
}
