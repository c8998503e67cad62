import { execFile } from 'node:child_process';
import { AgentError } from '../errors.js';

/**
 * Run one tpm2-tools command against the TPM at `tcti` (quietly); resolves with its standard
 * output. Every failure is a TRUST_ANCHOR AgentError naming the tool and the TPM.
 */
export function runTpm2(
  tool: string,
  args: readonly string[],
  tcti: string,
  timeoutMs = 30_000,
): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      tool,
      ['-Q', ...args],
      { env: { ...process.env, TPM2TOOLS_TCTI: tcti }, timeout: timeoutMs },
      (err, stdout, stderr) => {
        if (!err) return resolve(stdout);
        const e = err as NodeJS.ErrnoException;
        reject(
          e.code === 'ENOENT'
            ? new AgentError(
                'TRUST_ANCHOR',
                `${tool} is not installed: the TPM needs tpm2-tools (apt-get install tpm2-tools)`,
              )
            : new AgentError(
                'TRUST_ANCHOR',
                `${tool} failed on the TPM at ${tcti}: ${lastLine(stderr) || e.message}`,
              ),
        );
      },
    );
  });
}

function lastLine(text: string): string {
  return (
    text
      .trim()
      .split('\n')
      .filter((l) => l.trim())
      .at(-1) ?? ''
  );
}
