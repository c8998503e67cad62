import { execFile, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
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

/**
 * One connection to the TPM for raw TPM 2.0 commands, through `tpm2_send` (which relays each command
 * it reads on standard input to the TPM and writes the response to standard output). For what no
 * single tpm2-tools command does: transient handles stay valid for the whole connection, also
 * behind a resource manager (`/dev/tpmrm0`), which flushes them when the connection closes. One
 * command at a time.
 */
export class TpmConnection {
  private readonly child: ChildProcessWithoutNullStreams;
  private received = Buffer.alloc(0);
  private stderr = '';
  private failure: Error | null = null;
  private pending: { resolve: (response: Buffer) => void; reject: (err: Error) => void } | null = null;
  private readonly exited: Promise<void>;

  constructor(
    private readonly tcti: string,
    private readonly timeoutMs = 30_000,
  ) {
    this.child = spawn('tpm2_send', [], { env: { ...process.env, TPM2TOOLS_TCTI: tcti } });
    this.exited = new Promise((resolve) => this.child.once('close', () => resolve()));
    this.child.stdout.on('data', (chunk: Buffer) => {
      this.received = Buffer.concat([this.received, chunk]);
      this.deliver();
    });
    this.child.stderr.on('data', (chunk: Buffer) => (this.stderr += chunk.toString()));
    this.child.stdin.on('error', () => undefined); // reported when the process closes
    this.child.once('error', (err: NodeJS.ErrnoException) =>
      this.fail(
        err.code === 'ENOENT'
          ? new AgentError(
              'TRUST_ANCHOR',
              'tpm2_send is not installed: the TPM needs tpm2-tools (apt-get install tpm2-tools)',
            )
          : new AgentError('TRUST_ANCHOR', `tpm2_send failed on the TPM at ${this.tcti}: ${err.message}`),
      ),
    );
    // 'close', not 'exit': by then every response it wrote has been read.
    this.child.once('close', (code, signal) =>
      this.fail(
        new AgentError(
          'TRUST_ANCHOR',
          `tpm2_send failed on the TPM at ${this.tcti}: ${lastLine(this.stderr) || `it exited (${signal ?? code})`}`,
        ),
      ),
    );
  }

  /** Send one marshalled command; resolves with the whole response (header included). */
  send(command: Uint8Array): Promise<Buffer> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.pending) return Promise.reject(new Error('TpmConnection: one command at a time'));
    return new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.fail(
          new AgentError(
            'TRUST_ANCHOR',
            `the TPM at ${this.tcti} did not answer within ${this.timeoutMs} ms`,
          ),
        );
        this.child.kill();
      }, this.timeoutMs);
      this.pending = {
        resolve: (response) => {
          clearTimeout(timer);
          resolve(response);
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      this.child.stdin.write(command);
    });
  }

  /** End the connection (the resource manager, if any, flushes what it loaded). */
  async close(): Promise<void> {
    this.child.stdin.end();
    const timer = setTimeout(() => this.child.kill(), this.timeoutMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** Hand over a response once all of it has arrived: its size is in its header (bytes 2–5). */
  private deliver(): void {
    if (!this.pending || this.received.length < 6) return;
    const size = this.received.readUInt32BE(2);
    if (size < 10) {
      this.fail(new AgentError('TRUST_ANCHOR', `the TPM at ${this.tcti} sent a response of ${size} bytes`));
      this.child.kill();
      return;
    }
    if (this.received.length < size) return;
    const response = this.received.subarray(0, size);
    this.received = this.received.subarray(size);
    const { resolve } = this.pending;
    this.pending = null;
    resolve(Buffer.from(response));
  }

  private fail(err: Error): void {
    this.failure ??= err;
    const pending = this.pending;
    this.pending = null;
    pending?.reject(this.failure);
  }
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
