import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The built `rampart` entry point (tests run after `tsc -b`, as `npm test` does). */
export const CLI_BIN = fileURLToPath(new URL('../../dist/bin/rampart.js', import.meta.url));

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Run the real `rampart` command as a user would, with a clean environment: only PATH, HOME and
 * what the test passes. NODE_EXTRA_CA_CERTS and friends never leak in from the outer shell.
 */
export function runCli(
  args: string[],
  options: { env?: Record<string, string>; input?: string; cwd?: string; timeoutMs?: number } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_BIN, ...args], {
      cwd: options.cwd,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
    child.stdin.end(options.input ?? '');
  });
}

/** Environment that points the CLI at a test platform through its data directory. */
export function cliEnvFor(dataDir: string, extra: Record<string, string> = {}): Record<string, string> {
  return { RAMPART_DATA_DIR: dataDir, ...extra };
}
