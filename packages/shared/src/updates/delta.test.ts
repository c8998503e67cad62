import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { SharedError } from '../errors/index.js';
import { applyDelta, chooseDelta, deltaDescriptorProblem, type DeltaDescriptor } from './delta.js';

const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

const base = Buffer.from('hello world');
const target = Buffer.from('hello world!!');

/**
 * A VCDIFF (RFC 3284) patch built by hand from the specification, so the decoder is checked
 * against the standard and not only against one encoder: one window that copies the 11 bytes of
 * the source (COPY size 11, mode VCD_SELF: code 27, address 0) and adds "!!" (ADD size 2: code 3).
 */
const vcdiff = Buffer.from([
  0xd6, 0xc3, 0xc4, 0x00, // magic "VCD" and version 0
  0x00, // Hdr_Indicator: no secondary compressor, default code table
  0x01, // Win_Indicator: VCD_SOURCE
  11, 0, // source segment: 11 bytes from position 0
  10, // length of the delta encoding that follows
  13, // target window length
  0x00, // Delta_Indicator
  2, 2, 1, // lengths of data, instructions, addresses
  0x21, 0x21, // data: "!!"
  27, 3, // instructions: COPY 11 mode 0, ADD 2
  0, // addresses: 0
]); // prettier-ignore

function descriptorFor(patch: Buffer, compression: 'gzip' | 'none'): DeltaDescriptor {
  return {
    format: 'vcdiff',
    compression,
    from: { version: '1.0.0', length: base.length, sha256: sha256(base) },
    path: 'model-x/app-1.0.0-to-1.0.1.vcdiff.gz',
    length: patch.length,
    sha256: sha256(patch),
  };
}

const want = { length: target.length, sha256: sha256(target) };

describe('binary deltas', () => {
  it('applies a standard VCDIFF patch, plain or gzip-compressed', () => {
    expect(applyDelta(base, vcdiff, descriptorFor(vcdiff, 'none'), want).toString()).toBe('hello world!!');
    const gz = gzipSync(vcdiff);
    expect(applyDelta(base, gz, descriptorFor(gz, 'gzip'), want).equals(target)).toBe(true);
  });

  it('refuses to patch an image that is not the base of the delta', () => {
    const other = Buffer.from('hello World');
    expect(() => applyDelta(other, vcdiff, descriptorFor(vcdiff, 'none'), want)).toThrow(
      /installed image is not the base of this delta.*download the full image/,
    );
  });

  it('refuses a patch that is not the one the metadata names, before decoding it', () => {
    const tampered = Buffer.from(vcdiff);
    tampered[tampered.length - 4] = 0x3f; // "?!" instead of "!!"
    const error = (() => {
      try {
        applyDelta(base, tampered, descriptorFor(vcdiff, 'none'), want);
      } catch (err) {
        return err as SharedError;
      }
      throw new Error('a tampered patch was applied');
    })();
    expect(error).toBeInstanceOf(SharedError);
    expect(error.code).toBe('UPDATE_FORMAT');
    expect(error.message).toMatch(/does not have the length and SHA-256 the signed metadata gives/);
  });

  it('refuses a result that is not the target image', () => {
    expect(() =>
      applyDelta(base, vcdiff, descriptorFor(vcdiff, 'none'), {
        length: 13,
        sha256: sha256(Buffer.from('x')),
      }),
    ).toThrow(/did not give the target image/);
  });

  it('refuses a patch that decompresses beyond any plausible size (gzip bomb)', () => {
    const bomb = gzipSync(Buffer.alloc(8 * 1024 * 1024));
    expect(() => applyDelta(base, bomb, descriptorFor(bomb, 'gzip'), want)).toThrow(
      /does not decompress within/,
    );
  });

  it('refuses bytes that are not VCDIFF with a clear error', () => {
    const junk = Buffer.from('not a delta at all');
    expect(() => applyDelta(base, junk, descriptorFor(junk, 'none'), want)).toThrow(
      /not a VCDIFF delta this device can apply/,
    );
  });

  it('chooses the delta whose base is the installed image, or none (full image)', () => {
    const d = descriptorFor(vcdiff, 'none');
    const other: DeltaDescriptor = {
      ...d,
      from: { version: '0.9.0', length: 3, sha256: sha256(Buffer.from('abc')) },
    };
    expect(chooseDelta([other, d], { length: base.length, sha256: sha256(base) })).toBe(d);
    expect(chooseDelta([other], { length: base.length, sha256: sha256(base) })).toBeNull();
    expect(chooseDelta([d], { length: base.length + 1, sha256: sha256(base) })).toBeNull();
    expect(chooseDelta(undefined, { length: base.length, sha256: sha256(base) })).toBeNull();
    expect(chooseDelta([d], null)).toBeNull();
  });

  it('validates descriptors: format, target path, chunk hashes of the patch', () => {
    const d = descriptorFor(vcdiff, 'none');
    expect(deltaDescriptorProblem(d)).toBeNull();
    expect(deltaDescriptorProblem({ ...d, format: 'bsdiff' })).toMatch(
      /field format must be one of "vcdiff"/,
    );
    expect(deltaDescriptorProblem({ ...d, path: '../etc/passwd' })).toMatch(/not a target path/);
    expect(deltaDescriptorProblem({ ...d, chunks: { chunkSize: 4096, sha256: [] } })).toMatch(
      /field chunks: .*has 1/,
    );
    expect(() => applyDelta(base, vcdiff, { ...d, path: '/abs' }, want)).toThrow(/not a target path/);
  });
});
