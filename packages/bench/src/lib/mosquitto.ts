import { execFileSync, spawn } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { withOpenFileLimit } from '@rampart/sim/load';
import { stopChild, waitForPort } from './processes.js';

export const MOSQUITTO =
  ['/usr/sbin/mosquitto', '/usr/local/sbin/mosquitto'].find((p) => existsSync(p)) ?? 'mosquitto';

export interface MosquittoOptions {
  /** Scratch directory for the configuration, TLS files and ACL. */
  dir: string;
  port: number;
  /** PEM: the CA certificates client certificates must chain to (Rampart's root and issuing CAs). */
  cafile: string;
  /** PEM: the server certificate with its chain, and its key. */
  certfile: string;
  keyfile: string;
  maxOpenFiles: number;
}

export interface RunningMosquitto {
  pid: number;
  port: number;
  version: string;
  config: string;
  stop(): Promise<void>;
}

/**
 * The ACL equivalent to Rampart's default device policy: a device (its certificate's CN, which is
 * its id, as user name) may publish and subscribe under its own topics only.
 */
export const MOSQUITTO_ACL = 'pattern readwrite devices/%u/#\npattern readwrite $rampart/devices/%u/#\n';

export function mosquittoVersion(): string {
  try {
    const out = execFileSync(MOSQUITTO, ['-h'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    return /mosquitto version (\S+)/.exec(out)?.[1] ?? 'unknown';
  } catch (err) {
    // `-h` exits 3 after printing the usage.
    const out = String((err as { stdout?: string }).stdout ?? '');
    const m = /mosquitto version (\S+)/.exec(out);
    if (m) return m[1]!;
    throw new Error(
      'mosquitto is not installed: run `bash scripts/ensure-system-deps.sh` (apt-get install mosquitto)',
      { cause: err },
    );
  }
}

/**
 * Mosquitto as the peer broker: one TLS listener that requires a client certificate from Rampart's
 * CAs, takes the certificate's CN as the user name and authorizes every publish and subscribe by
 * the ACL; no persistence, no anonymous access, no connection limit.
 */
export async function startMosquitto(o: MosquittoOptions): Promise<RunningMosquitto> {
  mkdirSync(o.dir, { recursive: true });
  const acl = join(o.dir, 'acl');
  writeFileSync(acl, MOSQUITTO_ACL);
  const config = join(o.dir, 'mosquitto.conf');
  const text = [
    'per_listener_settings false',
    'persistence false',
    'allow_anonymous false',
    'log_dest stderr',
    'log_type error',
    'log_type warning',
    'connection_messages false',
    'max_connections -1',
    `acl_file ${acl}`,
    `listener ${o.port} 127.0.0.1`,
    `cafile ${o.cafile}`,
    `certfile ${o.certfile}`,
    `keyfile ${o.keyfile}`,
    'require_certificate true',
    'use_identity_as_username true',
    '',
  ].join('\n');
  writeFileSync(config, text);
  // Started as root, mosquitto drops to its own user before reading the ACL: let that user read the files.
  if (process.getuid?.() === 0) {
    try {
      const uid = Number(execFileSync('id', ['-u', 'mosquitto'], { encoding: 'utf8' }).trim());
      const gid = Number(execFileSync('id', ['-g', 'mosquitto'], { encoding: 'utf8' }).trim());
      for (const f of [o.dir, acl, config, o.cafile, o.certfile, o.keyfile]) chownSync(f, uid, gid);
    } catch {
      // No mosquitto user: it keeps running as root and reads the files as they are.
    }
  }
  const version = mosquittoVersion();
  const [cmd, args] = withOpenFileLimit(o.maxOpenFiles, [MOSQUITTO, '-c', config]);
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  try {
    await waitForPort(o.port, child, 'mosquitto');
  } catch (err) {
    child.kill('SIGKILL');
    throw new Error(`${(err as Error).message}\n${stderr}`, { cause: err });
  }
  return { pid: child.pid!, port: o.port, version, config: text, stop: () => stopChild(child) };
}
