import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TpmResourceManager {
  /** The TCTI of the resource manager: `tabrmd:bus_name=…,bus_type=session`. */
  tcti: string;
  stop(): Promise<void>;
}

function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve()
    : new Promise((resolve) => child.once('exit', () => resolve()));
}

/** A private D-Bus session bus for this test process (tpm2-abrmd is reached over D-Bus). */
let bus: { child: ChildProcess; dir: string; users: number; previous: string | undefined } | null = null;

async function acquireBus(): Promise<void> {
  if (bus) {
    bus.users++;
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'rampart-dbus-'));
  const child = spawn(
    'dbus-daemon',
    ['--session', '--nofork', '--nopidfile', `--address=unix:path=${join(dir, 'bus')}`, '--print-address=1'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const address = await new Promise<string>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`dbus-daemon did not start: ${stderr}`)), 10_000);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(
        new Error(
          'dbus-daemon is missing: run `bash scripts/ensure-system-deps.sh` (apt-get install dbus-daemon)',
          {
            cause: err,
          },
        ),
      );
    });
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.startsWith('unix:'));
      if (line) {
        clearTimeout(timer);
        resolve(line.trim());
      }
    });
  });
  bus = { child, dir, users: 1, previous: process.env.DBUS_SESSION_BUS_ADDRESS };
  // Child processes (tpm2-tools, openssl with tpm2-openssl) find the resource manager through it.
  process.env.DBUS_SESSION_BUS_ADDRESS = address;
}

async function releaseBus(): Promise<void> {
  if (!bus || --bus.users > 0) return;
  const { child, dir, previous } = bus;
  bus = null;
  child.kill('SIGTERM');
  await exited(child);
  rmSync(dir, { recursive: true, force: true });
  if (previous === undefined) delete process.env.DBUS_SESSION_BUS_ADDRESS;
  else process.env.DBUS_SESSION_BUS_ADDRESS = previous;
}

function tpmAnswers(tcti: string): Promise<boolean> {
  return new Promise((resolve) =>
    execFile(
      'tpm2_getcap',
      ['properties-fixed'],
      { env: { ...process.env, TPM2TOOLS_TCTI: tcti }, timeout: 5000 },
      (err) => resolve(!err),
    ),
  );
}

/**
 * tpm2-abrmd (Debian `tpm2-abrmd`, with `libtss2-tcti-tabrmd0`) in front of a TPM reached at `tcti`
 * (a swtpm), on a private session bus: the resource manager a device has in its kernel
 * (/dev/tpmrm0), which lets several clients (the agent's tpm2-tools, the TLS tunnel) share the TPM
 * and its few object slots.
 */
export async function startTpmResourceManager(tcti: string): Promise<TpmResourceManager> {
  await acquireBus();
  const name = `com.intel.tss2.Tabrmd.rampart${randomBytes(4).toString('hex')}`;
  const child = spawn(
    'tpm2-abrmd',
    [
      '--session',
      `--dbus-name=${name}`,
      `--tcti=${tcti}`,
      '--flush-all',
      ...(process.getuid?.() === 0 ? ['--allow-root'] : []),
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  const managed = `tabrmd:bus_name=${name},bus_type=session`;
  const deadline = Date.now() + 15_000;
  for (;;) {
    const failed = await Promise.race([spawnError, new Promise<null>((r) => setTimeout(() => r(null), 100))]);
    if (failed) {
      await releaseBus();
      throw new Error(
        'tpm2-abrmd is missing: run `bash scripts/ensure-system-deps.sh` (apt-get install tpm2-abrmd)',
        {
          cause: failed,
        },
      );
    }
    if (child.exitCode !== null) {
      await releaseBus();
      throw new Error(`tpm2-abrmd exited: ${stderr}`);
    }
    if (await tpmAnswers(managed)) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      await releaseBus();
      throw new Error(`tpm2-abrmd did not answer on ${name}: ${stderr}`);
    }
  }
  return {
    tcti: managed,
    async stop() {
      child.kill('SIGTERM');
      await exited(child);
      await releaseBus();
    },
  };
}
