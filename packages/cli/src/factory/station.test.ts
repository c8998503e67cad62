import { createPrivateKey } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CliError } from '../errors.js';
import { withStationLock } from './files.js';
import { initStation, loadStation, openStationKey, readStationPassphrase } from './station.js';

const work = mkdtempSync(join(tmpdir(), 'rampart-station-unit-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const PASSPHRASE = 'unit test station passphrase';

function failure(fn: () => unknown): CliError {
  try {
    fn();
  } catch (err) {
    if (err instanceof CliError) return err;
    throw err;
  }
  throw new Error('expected a CliError');
}

describe('the station key', () => {
  it('is encrypted at rest and opens with the passphrase only', () => {
    const dir = join(work, 'key');
    const { station } = initStation(dir, 'line-9', PASSPHRASE);
    const loaded = loadStation(dir);
    expect(loaded.record).toEqual(station.record);
    expect(openStationKey(loaded, PASSPHRASE).asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    const wrong = failure(() => openStationKey(loaded, 'another passphrase'));
    expect(wrong.exitCode).toBe(2);
    expect(wrong.message).toContain('wrong passphrase');
  });

  it('refuses a key that was decrypted onto the disk', () => {
    const dir = join(work, 'plain');
    const { station } = initStation(dir, 'line-8', PASSPHRASE);
    const key = createPrivateKey({ key: readFileSync(station.paths.key, 'utf8'), passphrase: PASSPHRASE });
    writeFileSync(station.paths.key, key.export({ type: 'pkcs8', format: 'pem' }) as string);
    expect(failure(() => openStationKey(loadStation(dir), PASSPHRASE)).message).toContain(
      'is not an encrypted PKCS#8 key',
    );
  });

  it('refuses a station name the platform would refuse, creating nothing', () => {
    const dir = join(work, 'bad-name');
    expect(failure(() => initStation(dir, 'Line 1', PASSPHRASE)).exitCode).toBe(2);
    expect(existsSync(dir)).toBe(false);
  });

  it('takes the passphrase from a file or the environment, never without one', () => {
    const file = join(work, 'pass');
    writeFileSync(file, 'from the file\nsecond line\n');
    expect(readStationPassphrase({ passphraseFile: file }, {})).toBe('from the file');
    expect(readStationPassphrase({}, { RAMPART_STATION_PASSPHRASE: 'from env' })).toBe('from env');
    const none = failure(() => readStationPassphrase({}, {}));
    expect(none.exitCode).toBe(2);
    expect(none.hints.join('\n')).toContain('RAMPART_STATION_PASSPHRASE');
  });
});

describe('the station lock', () => {
  it('lets two runs on one station take turns', async () => {
    const dir = mkdtempSync(join(work, 'lock-'));
    const order: string[] = [];
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const first = withStationLock(dir, async () => {
      order.push('first in');
      await held;
      order.push('first out');
    });
    await new Promise((r) => setTimeout(r, 50));
    const second = withStationLock(dir, () => order.push('second in'));
    await new Promise((r) => setTimeout(r, 250));
    expect(order).toEqual(['first in']);
    release();
    await Promise.all([first, second]);
    expect(order).toEqual(['first in', 'first out', 'second in']);
    expect(existsSync(join(dir, 'station.lock'))).toBe(false);
  });

  it('takes over a lock its owner left behind, and gives up on a live owner after waiting', async () => {
    const dir = mkdtempSync(join(work, 'lock-'));
    // No process has this pid (above the kernel's pid limit).
    writeFileSync(join(dir, 'station.lock'), '4194305\n');
    expect(await withStationLock(dir, () => 'taken over')).toBe('taken over');

    // A live owner (the test runner's parent) is waited for, then refused with exit 6.
    writeFileSync(join(dir, 'station.lock'), `${process.ppid}\n`);
    const refused = await withStationLock(dir, () => 'never', 300).catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(CliError);
    expect((refused as CliError).exitCode).toBe(6);
    expect((refused as CliError).message).toContain(`pid ${process.ppid}`);
    expect(readFileSync(join(dir, 'station.lock'), 'utf8')).toBe(`${process.ppid}\n`);
  });
});
