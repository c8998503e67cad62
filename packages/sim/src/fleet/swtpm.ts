import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Software TPMs for virtual devices: one `swtpm` process per device (Debian packages `swtpm` and
 * `tpm2-tools`), each on its own state directory and a pair of loopback ports (the TPM command
 * port and, right above it, the control port the swtpm TCTI expects). The state directory is the
 * device's, so a TPM keeps its keys from one run of the simulator to the next; its PCRs start
 * from zero at every start, as after a reboot.
 *
 * With a resource manager, `tpm2-abrmd` stands in front of the swtpm, as the kernel's
 * `/dev/tpmrm0` does on a device: the agent's TLS tunnel keeps a TPM connection open for as long as
 * the device is connected, beside the agent's own tpm2-tools commands. The resource managers are
 * reached over one private D-Bus session bus of the simulator's (`dbus-daemon`), which this process
 * and its children (tpm2-tools, openssl) use while any TPM runs.
 */
export interface SoftwareTpm {
  /**
   * The TSS2 TCTI to use: `tabrmd:bus_name=…,bus_type=session` behind a resource manager, else
   * `swtpm:host=127.0.0.1,port=N`.
   */
  readonly tcti: string;
  readonly stateDir: string;
  readonly pid: number;
  stop(): Promise<void>;
}

function installed(command: string): boolean {
  return (
    spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0 ||
    existsSync(`/usr/sbin/${command}`)
  );
}

/** OpenSSL's TPM 2.0 provider, which the agent's TLS tunnel signs with. */
function opensslTpmProvider(): boolean {
  const out = spawnSync('openssl', ['version', '-m'], { encoding: 'utf8' });
  const dir = /MODULESDIR: "([^"]+)"/.exec(out.stdout ?? '')?.[1];
  return dir !== undefined && existsSync(join(dir, 'tpm2.so'));
}

/**
 * What a TPM device of the simulator needs and is not installed (the first of it), or null: swtpm
 * and tpm2-tools; with `connect`, also tpm2-abrmd, dbus-daemon and OpenSSL's tpm2 provider.
 */
export function missingTpmTools(connect = true): string | null {
  for (const tool of ['swtpm', 'tpm2_createprimary', 'tpm2_quote']) if (!installed(tool)) return tool;
  if (!connect) return null;
  for (const tool of ['tpm2-abrmd', 'dbus-daemon']) if (!installed(tool)) return tool;
  if (!opensslTpmProvider()) return "OpenSSL's tpm2 provider (tpm2-openssl)";
  return null;
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

/** The simulator exiting, however it exits, takes its TPMs and their resource managers along. */
function track(child: ChildProcess): void {
  running.add(child);
  child.once('exit', () => running.delete(child));
  child.once('error', () => running.delete(child));
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const c of running) c.kill('SIGTERM');
  });
}

function stopped(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || !child.pid) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

function listenOn(port: number): Promise<number | null> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(null));
    server.listen(port, '127.0.0.1', () => {
      const bound = (server.address() as { port: number }).port;
      server.close(() => resolve(bound));
    });
  });
}

/** Two consecutive free loopback ports (the kernel picks the first). */
async function portPair(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await listenOn(0);
    if (port !== null && port < 65535 && (await listenOn(port + 1)) !== null) return port;
  }
  throw new Error('no two consecutive free loopback ports for swtpm');
}

function accepting(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Poll `ready` until it holds; fail when the process exits first or the time is up. */
async function waitFor(
  what: string,
  child: ChildProcess,
  stderr: () => string,
  ready: () => Promise<boolean>,
  timeoutMs: number,
): Promise<void> {
  let spawnFailure: Error | null = null;
  child.once('error', (err) => (spawnFailure = err));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    await new Promise((r) => setTimeout(r, 25));
    if (spawnFailure) throw new Error(`cannot start ${what}: ${(spawnFailure as Error).message}`);
    if (child.exitCode !== null) throw new Error(`${what} exited (${child.exitCode}): ${stderr().trim()}`);
    if (await ready()) return;
    if (Date.now() > deadline) {
      await stopped(child);
      throw new Error(`${what} was not ready within ${timeoutMs} ms: ${stderr().trim()}`);
    }
  }
}

function spawnTracked(command: string, args: string[]): { child: ChildProcess; stderr: () => string } {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  track(child);
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  child.stdout!.resume();
  return { child, stderr: () => err };
}

/** The simulator's private session bus, shared by its resource managers while any runs. */
let bus: { child: ChildProcess; dir: string; users: number; previous: string | undefined } | null = null;
let busStarting: Promise<void> | null = null;

async function acquireBus(): Promise<void> {
  if (busStarting) await busStarting;
  if (bus) {
    bus.users++;
    return;
  }
  busStarting = (async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rampart-sim-dbus-'));
    const socket = join(dir, 'bus');
    const { child, stderr } = spawnTracked('dbus-daemon', [
      '--session',
      '--nofork',
      '--nopidfile',
      `--address=unix:path=${socket}`,
    ]);
    try {
      await waitFor('dbus-daemon', child, stderr, async () => existsSync(socket), 10_000);
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
    bus = { child, dir, users: 0, previous: process.env.DBUS_SESSION_BUS_ADDRESS };
    // tpm2-tools and openssl, started by the agent's code, find the resource managers through it.
    process.env.DBUS_SESSION_BUS_ADDRESS = `unix:path=${socket}`;
  })();
  try {
    await busStarting;
  } finally {
    busStarting = null;
  }
  bus!.users++;
}

async function releaseBus(): Promise<void> {
  if (!bus || --bus.users > 0) return;
  const { child, dir, previous } = bus;
  bus = null;
  if (previous === undefined) delete process.env.DBUS_SESSION_BUS_ADDRESS;
  else process.env.DBUS_SESSION_BUS_ADDRESS = previous;
  await stopped(child);
  rmSync(dir, { recursive: true, force: true });
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
 * Start swtpm on `stateDir` (created if missing), with tpm2-abrmd in front of it when
 * `resourceManager` is set, and resolve once it answers.
 */
export async function startSoftwareTpm(
  stateDir: string,
  options: { resourceManager?: boolean; timeoutMs?: number } = {},
): Promise<SoftwareTpm> {
  const timeoutMs = options.timeoutMs ?? 15_000;
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const port = await portPair();
  const swtpm = spawnTracked('swtpm', [
    'socket',
    '--tpm2',
    '--tpmstate',
    `dir=${stateDir}`,
    '--server',
    `type=tcp,port=${port},bindaddr=127.0.0.1`,
    '--ctrl',
    `type=tcp,port=${port + 1},bindaddr=127.0.0.1`,
    // Started and initialised by itself: no TPM2_Startup needed from the device.
    '--flags',
    'not-need-init,startup-clear',
  ]);
  await waitFor('swtpm', swtpm.child, swtpm.stderr, () => accepting(port), timeoutMs);
  const direct = `swtpm:host=127.0.0.1,port=${port}`;
  if (!options.resourceManager)
    return { tcti: direct, stateDir, pid: swtpm.child.pid!, stop: () => stopped(swtpm.child) };

  let abrmd: ReturnType<typeof spawnTracked> | null = null;
  let onBus = false;
  try {
    await acquireBus();
    onBus = true;
    const name = `com.intel.tss2.Tabrmd.rampartsim${randomBytes(4).toString('hex')}`;
    abrmd = spawnTracked('tpm2-abrmd', [
      '--session',
      `--dbus-name=${name}`,
      `--tcti=${direct}`,
      '--flush-all',
      ...(process.getuid?.() === 0 ? ['--allow-root'] : []),
    ]);
    const tcti = `tabrmd:bus_name=${name},bus_type=session`;
    await waitFor('tpm2-abrmd', abrmd.child, abrmd.stderr, () => tpmAnswers(tcti), timeoutMs);
    const manager = abrmd.child;
    return {
      tcti,
      stateDir,
      pid: swtpm.child.pid!,
      async stop() {
        await stopped(manager);
        await releaseBus();
        await stopped(swtpm.child);
      },
    };
  } catch (err) {
    if (abrmd) await stopped(abrmd.child);
    if (onBus) await releaseBus();
    await stopped(swtpm.child);
    throw err;
  }
}
