import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent } from 'undici';
import { withOpenFileLimit } from '@rampart/sim/load';

export const CLI = fileURLToPath(new URL('../../../cli/dist/bin/rampart.js', import.meta.url));
export const BENCH_ENV = { RAMPART_KEYSTORE_PASSPHRASE: 'benchmark passphrase, not secret' };

export interface RunningRampart {
  url: string;
  token: string;
  dispatcher: Agent;
  dataDir: string;
  databaseUrl: string;
  /** Every listener's URL by name (`api`, `est`, `pki`), from runtime.json. */
  listeners: Record<string, string>;
  /** Process id of `rampart up`. */
  pid: number;
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Environment on top of BENCH_ENV (an undefined value removes a variable). */
  env?: Record<string, string | undefined>;
  /** Node options for the server process, e.g. `--cpu-prof`. */
  nodeArgs?: string[];
  /** Raise the open-file limit to this (or the hard limit, if lower): one descriptor per connection. */
  maxOpenFiles?: number;
}

/** Start `rampart up` as its own process (the load generator gets the other core). */
export async function startRampart(
  dataDir: string,
  databaseUrl: string,
  settings: Record<string, string> = {},
  options: StartOptions = {},
): Promise<RunningRampart> {
  const args = [
    ...(options.nodeArgs ?? []),
    CLI,
    'up',
    '--data-dir',
    dataDir,
    '--api-port',
    '0',
    '--database-url',
    databaseUrl,
    '--log-level',
    'warn',
  ];
  for (const [k, v] of Object.entries({ 'api.rateLimit.max': '100000000', ...settings }))
    args.push('--set', `${k}=${v}`);
  const [command, argv] = options.maxOpenFiles
    ? withOpenFileLimit(options.maxOpenFiles, [process.execPath, ...args])
    : [process.execPath, args];
  const child = spawn(command, argv, {
    // The EST and PKI listeners on free ports too (by environment: it works with every version of `up`).
    env: {
      ...process.env,
      ...BENCH_ENV,
      RAMPART_EST_PORT: '0',
      RAMPART_PKI_PORT: '0',
      RAMPART_GATEWAY_PORT: '0',
      RAMPART_UPDATES_PORT: '0',
      ...options.env,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const url = await waitForLine(child, /^listening api (\S+)$/m);
  const token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim();
  const runtime = JSON.parse(readFileSync(join(dataDir, 'runtime.json'), 'utf8')) as {
    listeners: { name: string; url: string }[];
  };
  const dispatcher = new Agent({
    connect: { ca: readFileSync(join(dataDir, 'ca.pem'), 'utf8') },
    connections: 64,
  });
  return {
    url,
    token,
    dispatcher,
    dataDir,
    databaseUrl,
    listeners: Object.fromEntries(runtime.listeners.map((l) => [l.name, l.url])),
    pid: child.pid!,
    async stop() {
      await dispatcher.close();
      await stopChild(child);
    },
  };
}

export function waitForLine(child: ChildProcess, pattern: RegExp, timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(
      () => reject(new Error(`timed out waiting for ${pattern}; output so far:\n${out}`)),
      timeoutMs,
    );
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = pattern.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`process exited (${code}) before printing ${pattern}:\n${out}`));
    });
  });
}

export function stopChild(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

/** Spawn a compiled module of this package with arguments and wait for it to print `pattern`. */
export function spawnModule(
  module: string,
  args: string[],
  pattern: RegExp,
  env: Record<string, string> = {},
) {
  const child = spawn(process.execPath, [fileURLToPath(new URL(`../${module}`, import.meta.url)), ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return { child, ready: waitForLine(child, pattern) };
}

/** Resolve once something accepts TCP connections on 127.0.0.1:`port`; fail if `child` exits first. */
export async function waitForPort(
  port: number,
  child: ChildProcess,
  name: string,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${name} exited (${child.exitCode}) before listening`);
    const ok = await new Promise<boolean>((resolve) => {
      const c = connect(port, '127.0.0.1');
      c.once('connect', () => {
        c.destroy();
        resolve(true);
      });
      c.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${name} did not listen on port ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
