import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSwtpm, type Swtpm } from '../test-support/swtpm.js';
import { FileRollbackCounter, TpmRollbackCounter } from './counter.js';

const run = promisify(execFile);

describe('anti-rollback counter in a file (software trust anchor, weaker)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rampart-counter-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('starts at 0, only goes up, keeps each kind apart and survives a restart', async () => {
    const file = join(dir, 'counters.json');
    const counter = new FileRollbackCounter(file);
    expect(counter.store).toBe('file');
    expect(await counter.read('application')).toBe(0n);
    await counter.advance('application', 7n);
    await counter.advance('application', 3n); // lower: no change
    await counter.advance('os', 2n);
    const again = new FileRollbackCounter(file);
    expect(await again.read('application')).toBe(7n);
    expect(await again.read('os')).toBe(2n);
    expect(await again.read('firmware')).toBe(0n);
  });

  it('refuses a damaged file and names that are not counter names', async () => {
    const file = join(dir, 'bad.json');
    writeFileSync(file, '{"application": -1}');
    await expect(new FileRollbackCounter(file).read('application')).rejects.toThrow(/is not a number/);
    writeFileSync(file, '[1]');
    await expect(new FileRollbackCounter(file).read('application')).rejects.toThrow(/not a JSON object/);
    await expect(new FileRollbackCounter(join(dir, 'x.json')).read('../etc')).rejects.toThrow(
      /not a counter name/,
    );
  });
});

/** A TPM 2.0 NV counter on a real (software) TPM through unmodified tpm2-tools. */
describe('anti-rollback counter in a TPM NV counter (swtpm + tpm2-tools)', () => {
  let tpm: Swtpm;
  beforeAll(async () => {
    tpm = await startSwtpm();
  }, 30_000);
  afterAll(() => tpm?.stop());

  const tpm2 = (tool: string, ...args: string[]) =>
    run(tool, args, { env: { ...process.env, TPM2TOOLS_TCTI: tpm.tcti } });

  it('starts at 0, advances by increments only, and is the same for a new agent process', async () => {
    const counter = new TpmRollbackCounter(tpm.tcti);
    expect(counter.store).toBe('tpm');
    expect(await counter.read('application')).toBe(0n);
    await counter.advance('application', 3n);
    expect(await counter.read('application')).toBe(3n);
    await counter.advance('application', 1n);
    expect(await new TpmRollbackCounter(tpm.tcti).read('application')).toBe(3n);
    // Another kind has its own counter, starting at 0 whatever the others hold.
    expect(await counter.read('os')).toBe(0n);
    await counter.advance('os', 1n);
    expect(await counter.read('os')).toBe(1n);
    expect(await counter.read('application')).toBe(3n);
    // The index really is a TPM counter (TPM_NT_COUNTER), not a writable value.
    const { stdout } = await tpm2('tpm2_nvreadpublic', '0x01520004');
    expect(stdout).toMatch(/friendly: [a-z_|]*nt=0x1\b/);
  });

  it('cannot be lowered: writing the counter or its locked start value is refused by the TPM', async () => {
    const counter = new TpmRollbackCounter(tpm.tcti);
    await counter.advance('firmware', 2n);
    const value = join(mkdtempSync(join(tmpdir(), 'rampart-nv-attack-')), 'zero');
    writeFileSync(value, Buffer.alloc(8));
    // A counter index takes no writes, only increments.
    await expect(tpm2('tpm2_nvwrite', '-C', 'o', '-i', value, '0x01520000')).rejects.toThrow();
    // Raising the start value would lower the counter: the start index is write-locked for good.
    const big = Buffer.alloc(8);
    big.writeBigUInt64BE(1000n);
    writeFileSync(value, big);
    await expect(tpm2('tpm2_nvwrite', '-C', 'o', '-i', value, '0x01520001')).rejects.toThrow();
    expect(await counter.read('firmware')).toBe(2n);
    expect(readFileSync(value).length).toBe(8);
  });

  it('keeps counters only for the artifact kinds', async () => {
    await expect(new TpmRollbackCounter(tpm.tcti).read('bootloader')).rejects.toThrow(
      /keeps anti-rollback counters for firmware, os, application, configuration/,
    );
  });
});
