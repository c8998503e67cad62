import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Logger } from '@rampart/shared/logging';
import { isTargetPath, type DeltaDescriptor } from '@rampart/shared/updates';
import { RampartError } from '../../errors.js';
import { generateDelta } from './delta.js';
import { FileArtifactStore, type ArtifactStore, type StoredArtifact } from './store.js';

/**
 * The deltas a new release is offered with: a patch from each of a few earlier releases' images,
 * generated with `generateDelta` and kept content-addressed in the artifact store beside the
 * images. A delta that cannot be made (not worth it, xdelta3 missing or failing) is logged and left
 * out; it never holds the release back, devices then download the full image.
 */

export interface DeltaSettings {
  /** `updates.deltas.enabled`. */
  enabled: boolean;
  /** `updates.deltas.fromReleases`: how many earlier releases get a patch. */
  fromReleases: number;
  /** `updates.deltas.xdelta3`: the encoder program. */
  xdelta3: string;
}

/** An earlier release whose image a patch applies to. */
export interface DeltaBase {
  path: string;
  version: string;
  sha256: string;
}

/** The release the patches build. */
export interface DeltaRelease {
  path: string;
  name: string;
  version: string;
  sha256: string;
}

export interface BuiltDelta {
  /** What goes, signed, into the release's `custom.rampart.deltas`. */
  delta: DeltaDescriptor;
  /** Patch length ÷ image length. */
  ratio: number;
  from: DeltaBase;
  /** The patch file in the artifact store. */
  patch: StoredArtifact;
}

/** Encrypted releases get no deltas and serve as no base: the store holds ciphertext, a device's slot plaintext. */
export function isEncrypted(custom: object): boolean {
  return Object.hasOwn(custom, 'encryption');
}

const UNSAFE = /[^A-Za-z0-9._+-]/g;

/**
 * Where a patch is served, relative to the targets URL: beside its release, as
 * `<dir>/<name>-<version>.from-<fromVersion>.vcdiff.gz` (characters a target path cannot hold become
 * `_`). Null when that is not a valid target path (too long).
 */
export function patchTargetPath(release: DeltaRelease, fromVersion: string): string | null {
  const slash = release.path.lastIndexOf('/');
  const dir = slash >= 0 ? release.path.slice(0, slash + 1) : '';
  const file = `${release.name}-${release.version}.from-${fromVersion}.vcdiff.gz`.replace(UNSAFE, '_');
  const path = dir + file;
  return isTargetPath(path) ? path : null;
}

/** A file holding an artifact: the store's own file when it keeps them as files, else a copy in `dir`. */
async function localFile(artifacts: ArtifactStore, sha256: string, dir: string): Promise<string> {
  if (artifacts instanceof FileArtifactStore) return artifacts.pathOf(sha256);
  const stream = artifacts.open(sha256);
  if (!stream) throw new RampartError('STORAGE', `artifact ${sha256} is not in the artifact store`);
  const file = join(dir, sha256);
  await pipeline(stream, createWriteStream(file, { mode: 0o600 }));
  return file;
}

/**
 * Generate, check and store a patch from each base to the release, one after the other. Returns the
 * deltas that were made; the others are logged (`release.delta-skipped` when not worth offering,
 * `release.delta-failed` when the encoder or the store failed). Throws only when `signal` aborts.
 */
export async function buildDeltas(opts: {
  release: DeltaRelease;
  bases: readonly DeltaBase[];
  artifacts: ArtifactStore;
  /** A directory for the work files (a fresh one is made inside and removed afterwards). */
  workDir: string;
  settings: DeltaSettings;
  logger: Logger;
  signal?: AbortSignal;
}): Promise<BuiltDelta[]> {
  const { release, artifacts, logger } = opts;
  const built: BuiltDelta[] = [];
  if (opts.bases.length === 0) return built;
  await mkdir(opts.workDir, { recursive: true, mode: 0o700 });
  const work = await mkdtemp(join(opts.workDir, 'delta-'));
  try {
    const image = await localFile(artifacts, release.sha256, work);
    for (const base of opts.bases) {
      opts.signal?.throwIfAborted();
      const context = { release: release.path, from: base.path };
      const targetPath = patchTargetPath(release, base.version);
      if (!targetPath) {
        logger.info(
          { ...context, event: 'release.delta-skipped' },
          `no delta from ${base.path}: its patch would have no valid target path`,
        );
        continue;
      }
      try {
        const outcome = await generateDelta(
          {
            from: { path: await localFile(artifacts, base.sha256, work), version: base.version },
            to: { path: image },
            outputPath: join(work, 'patch.vcdiff.gz'),
            targetPath,
          },
          { xdelta3: opts.settings.xdelta3, ...(opts.signal ? { signal: opts.signal } : {}) },
        );
        if ('skipped' in outcome) {
          logger.info(
            { ...context, event: 'release.delta-skipped', reason: outcome.skipped },
            `no delta from ${base.path}: ${outcome.skipped}`,
          );
          continue;
        }
        const patch = await artifacts.put(createReadStream(outcome.patchPath), Number.MAX_SAFE_INTEGER);
        if (patch.sha256 !== outcome.delta.sha256 || patch.length !== outcome.delta.length)
          throw new RampartError(
            'STORAGE',
            `the patch from ${base.path} changed on its way into the artifact store`,
          );
        built.push({ delta: outcome.delta, ratio: outcome.ratio, from: base, patch });
        logger.info(
          { ...context, event: 'release.delta', length: patch.length, ratio: outcome.ratio },
          `delta from ${base.path}: ${patch.length} bytes (${(outcome.ratio * 100).toFixed(1)}% of the image)`,
        );
      } catch (err) {
        if (opts.signal?.aborted) throw err;
        logger.warn(
          { ...context, event: 'release.delta-failed', err },
          `no delta from ${base.path}: ${(err as Error).message}; devices running it download the full image`,
        );
      }
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return built;
}
