import { spawn } from 'node:child_process';
import { accessSync, constants, existsSync } from 'node:fs';
import { join } from 'node:path';
import { AgentError } from '../errors.js';

/**
 * The steps a bootloader hook can be attached to. Each is an executable named after the step in
 * `updates.hooksDir`, called with `RAMPART_UPDATE_*` variables (see docs/agent.md); exit 0 means
 * done. The built-in directory slots always do their part; a hook adds what a real bootloader needs
 * (U-Boot `fw_setenv`, GRUB `grub-editenv`, writing a partition).
 */
export const HOOK_STEPS = [
  'install',
  'activate',
  'restart',
  'reboot',
  'booted',
  'commit',
  'rollback',
] as const;
export type HookStep = (typeof HOOK_STEPS)[number];

export interface ProcessResult {
  /** Exit code, or null when killed (time-out) or it could not start. */
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
  durationMs: number;
  /** Why it could not be started, when it could not. */
  spawnError?: string;
}

/**
 * Run a program in its own process group, killing the whole group when it outlives `timeoutMs`
 * (a self-test that started a server must not leave it behind). Output is kept to 64 KiB each.
 */
export function runProcess(
  file: string,
  args: readonly string[],
  options: { env: Record<string, string>; timeoutMs: number; cwd?: string },
): Promise<ProcessResult> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(file, args, {
      env: { ...process.env, ...options.env },
      cwd: options.cwd,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    const keep = (acc: string, chunk: Buffer) => (acc.length < 65_536 ? acc + chunk.toString() : acc);
    child.stdout.on('data', (d: Buffer) => (stdout = keep(stdout, d)));
    child.stderr.on('data', (d: Buffer) => (stderr = keep(stderr, d)));
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, options.timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      resolve({
        code: null,
        signal: null,
        timedOut: false,
        stdout,
        stderr,
        durationMs: Date.now() - started,
        spawnError: err.message,
      });
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, timedOut, stdout, stderr, durationMs: Date.now() - started });
    });
  });
}

/** How a finished process is described in logs and receipts. */
export function describeResult(r: ProcessResult, timeoutMs: number): string {
  if (r.spawnError) return `could not be started: ${r.spawnError}`;
  if (r.timedOut)
    return `did not finish within ${timeoutMs >= 1000 ? `${Math.round(timeoutMs / 1000)} s` : `${timeoutMs} ms`} and was killed`;
  const tail = lastLine(r.stderr) || lastLine(r.stdout);
  const how = r.code !== null ? `exited with ${r.code}` : `was killed by ${r.signal}`;
  return tail ? `${how}: ${tail}` : how;
}

function lastLine(text: string): string {
  return (
    text
      .trim()
      .split('\n')
      .filter((l) => l.trim())
      .at(-1)
      ?.slice(0, 300) ?? ''
  );
}

/** The hooks of `dir`: which exist, and running one. */
export class Hooks {
  constructor(
    readonly dir: string | undefined,
    private readonly timeoutMs = 10 * 60_000,
  ) {}

  path(step: HookStep): string | null {
    if (!this.dir) return null;
    const file = join(this.dir, step);
    if (!existsSync(file)) return null;
    try {
      accessSync(file, constants.X_OK);
    } catch {
      throw new AgentError(
        'UPDATE_FAILED',
        `the update hook ${file} is not executable: chmod +x it, or remove it`,
      );
    }
    return file;
  }

  has(step: HookStep): boolean {
    return this.path(step) !== null;
  }

  /** Run the hook of `step` if there is one; null when there is none. */
  async run(step: HookStep, env: Record<string, string>): Promise<ProcessResult | null> {
    const file = this.path(step);
    if (!file) return null;
    return runProcess(file, [], { env: { ...env, RAMPART_UPDATE_STEP: step }, timeoutMs: this.timeoutMs });
  }

  describe(r: ProcessResult): string {
    return describeResult(r, this.timeoutMs);
  }
}
