import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import { applyDelta, chunkSizeFor, computeChunkHashes, type DeltaDescriptor } from '@rampart/shared/updates';
import { RampartError } from '../../errors.js';

const run = promisify(execFile);
const gzipAsync = promisify(gzip);

/**
 * Binary deltas between releases, generated on the server with `xdelta3` (Debian package
 * `xdelta3`) and applied on devices by the pure JavaScript decoder in @rampart/shared/updates.
 * The encoder runs with the xdelta extensions off (`-A -n -S none`) so that its output is plain
 * RFC 3284 VCDIFF, then gzip replaces the secondary compression the decoder does not support.
 * Every patch is applied here once before it is offered, with the very code devices run.
 */

export interface DeltaGeneratorOptions {
  /** The xdelta3 program. Default `xdelta3` (on PATH). */
  xdelta3?: string;
  /** Larger images get no delta (the device decodes in memory). Default 256 MiB. */
  maxImageBytes?: number;
  /** A patch larger than this fraction of the new image is not worth offering. Default 0.6. */
  maxRatio?: number;
  /** Time limit for the encoder. Default 10 minutes. */
  timeoutMs?: number;
  /** Stops the encoder (the server is shutting down). */
  signal?: AbortSignal;
}

export interface DeltaRequest {
  /** The earlier release's image, and its version as the device reports it. */
  from: { path: string; version: string };
  /** The new release's image. */
  to: { path: string };
  /** Where to write the patch file (gzip of the VCDIFF). */
  outputPath: string;
  /** The patch's path under the repository's targets URL, as it goes into the descriptor. */
  targetPath: string;
}

export type DeltaOutcome =
  | {
      delta: DeltaDescriptor;
      /** Patch length ÷ new image length. */
      ratio: number;
      patchPath: string;
    }
  | { skipped: string };

const DEFAULT_MAX_IMAGE = 256 * 1024 * 1024;
const DEFAULT_MAX_RATIO = 0.6;
const DEFAULT_TIMEOUT_MS = 10 * 60_000;
/** xdelta3 refuses a smaller source window. */
const MIN_SOURCE_WINDOW = 512 * 1024;

/**
 * Generate the patch from one release image to the next. Returns the delta descriptor to publish
 * in the new target's metadata, or `skipped` with the reason when a delta is not worth offering
 * (image too large, patch not much smaller than the image); devices then download the full image.
 */
export async function generateDelta(
  request: DeltaRequest,
  options: DeltaGeneratorOptions = {},
): Promise<DeltaOutcome> {
  const maxImage = options.maxImageBytes ?? DEFAULT_MAX_IMAGE;
  const maxRatio = options.maxRatio ?? DEFAULT_MAX_RATIO;
  const [fromSize, toSize] = await Promise.all([sizeOf(request.from.path), sizeOf(request.to.path)]);
  if (fromSize > maxImage || toSize > maxImage)
    return { skipped: `an image is larger than ${maxImage} bytes; devices download the full image` };

  const raw = join(
    dirname(request.outputPath),
    `.${basename(request.outputPath)}.vcdiff-${randomBytes(4).toString('hex')}`,
  );
  try {
    await encode(options.xdelta3 ?? 'xdelta3', request, raw, Math.max(MIN_SOURCE_WINDOW, fromSize), options);
    const patch = await gzipAsync(await readFile(raw), { level: 9 });
    const ratio = toSize === 0 ? 1 : patch.length / toSize;
    if (ratio > maxRatio)
      return {
        skipped: `the patch would be ${(ratio * 100).toFixed(1)}% of the image (limit ${maxRatio * 100}%); devices download the full image`,
      };

    const [base, image] = await Promise.all([readFile(request.from.path), readFile(request.to.path)]);
    const delta: DeltaDescriptor = {
      format: 'vcdiff',
      compression: 'gzip',
      from: { version: request.from.version, length: base.length, sha256: sha256Hex(base) },
      path: request.targetPath,
      length: patch.length,
      sha256: sha256Hex(patch),
      chunks: (await computeChunkHashes([patch], { chunkSize: chunkSizeFor(patch.length) })).chunks,
    };
    // Apply it as a device would: a patch the device-side decoder cannot use is never offered.
    try {
      applyDelta(base, patch, delta, { length: image.length, sha256: sha256Hex(image) });
    } catch (err) {
      throw new RampartError(
        'INTERNAL',
        `the generated delta from ${request.from.version} does not rebuild the new image: ${(err as Error).message}`,
        [],
        { cause: err },
      );
    }
    await writeFile(request.outputPath, patch);
    return { delta, ratio, patchPath: request.outputPath };
  } finally {
    await rm(raw, { force: true });
  }
}

async function encode(
  program: string,
  request: DeltaRequest,
  output: string,
  sourceWindow: number,
  options: DeltaGeneratorOptions,
): Promise<void> {
  // -e encode, -9 best compression of the instruction stream, -A no application header,
  // -n no per-window Adler-32 (an xdelta extension), -S none no secondary compression,
  // -B the whole base image as source window, so that copies can reach anywhere in it.
  const args = ['-e', '-9', '-A', '-n', '-S', 'none', '-f', '-B', String(sourceWindow)];
  args.push('-s', request.from.path, request.to.path, output);
  try {
    await run(program, args, {
      timeout: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      maxBuffer: 1024 * 1024,
      ...(options.signal ? { signal: options.signal } : {}),
    });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string; killed?: boolean };
    if (e.code === 'ENOENT')
      throw new RampartError(
        'INTERNAL',
        `cannot run ${program}: it is not installed. Install the Debian package xdelta3 ` +
          '(apt-get install xdelta3) to offer deltas; full images work without it',
        [],
        { cause: err },
      );
    throw new RampartError(
      'INTERNAL',
      `${program} failed to encode the delta from ${request.from.version}` +
        (e.killed ? ' (time limit reached)' : `: ${(e.stderr ?? e.message).trim()}`),
      [],
      { cause: err },
    );
  }
}

async function sizeOf(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch (err) {
    throw new RampartError(
      'STORAGE',
      `cannot read the release image ${path}: ${(err as Error).message}`,
      [],
      {
        cause: err,
      },
    );
  }
}

function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}
