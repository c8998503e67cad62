import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { AgentError } from '../errors.js';
import { writeFileAtomic } from '../identity/files.js';
import { runTpm2 } from '../trust-anchor/tpm-tools.js';

/**
 * The anti-rollback counter: per name (the artifact kind), the lowest release counter the device
 * still accepts. It only ever goes up: an update whose release counter is below it is refused, and it
 * is advanced when an update is committed, so that a once-replaced release (with its known holes)
 * cannot be installed again, even one signed by the release owners.
 */
export interface RollbackCounter {
  /** `tpm`: a TPM NV counter (monotonic in hardware); `file`: a file on the device (weaker). */
  readonly store: 'tpm' | 'file';
  /** The current value; 0 when the counter was never advanced. */
  read(name: string): Promise<bigint>;
  /** Raise the counter to at least `to`; a lower `to` changes nothing. */
  advance(name: string, to: bigint): Promise<void>;
}

const NAME = /^[a-z][a-z0-9-]{0,63}$/;

function checkName(name: string): void {
  if (!NAME.test(name)) throw new AgentError('USAGE', `not a counter name: ${JSON.stringify(name)}`);
}

/**
 * The counter of devices without a TPM: a JSON file, written atomically. Anyone who can write the
 * file can lower it, so it is labelled weaker wherever it shows; it keeps the protocol the same.
 */
export class FileRollbackCounter implements RollbackCounter {
  readonly store = 'file';
  constructor(readonly file: string) {}

  private load(): Record<string, string> {
    if (!existsSync(this.file)) return {};
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(this.file, 'utf8'));
    } catch {
      throw new AgentError('UPDATE_STATE', `the anti-rollback counter file ${this.file} is not JSON`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
      throw new AgentError(
        'UPDATE_STATE',
        `the anti-rollback counter file ${this.file} is not a JSON object`,
      );
    for (const [k, v] of Object.entries(parsed))
      if (typeof v !== 'string' || !/^[0-9]+$/.test(v))
        throw new AgentError(
          'UPDATE_STATE',
          `the anti-rollback counter ${k} in ${this.file} is not a number`,
        );
    return parsed as Record<string, string>;
  }

  async read(name: string): Promise<bigint> {
    checkName(name);
    return BigInt(this.load()[name] ?? '0');
  }

  async advance(name: string, to: bigint): Promise<void> {
    checkName(name);
    const values = this.load();
    if (BigInt(values[name] ?? '0') >= to) return;
    values[name] = to.toString();
    mkdirSync(dirname(this.file), { recursive: true, mode: 0o700 });
    writeFileAtomic(this.file, JSON.stringify(values, null, 2) + '\n', 0o600);
  }
}

/** The names a TPM counter exists for, in the order of their NV indexes. */
export const TPM_COUNTER_NAMES = ['firmware', 'os', 'application', 'configuration'] as const;

/**
 * The counter in a TPM 2.0: an NV index of type counter (TPM2_NV_Increment only adds one; nothing
 * lowers it short of deleting the index with the owner's authorisation), through tpm2-tools.
 *
 * A new counter index starts at the highest value any counter of the TPM ever had, not at zero, so
 * each counter has a companion ordinary index holding that start value, written once and then
 * write-locked for good (TPMA_NV_WRITEDEFINE); the value reported is the difference. Two indexes per
 * name from `baseIndex`: name i uses baseIndex + 2i (counter) and baseIndex + 2i + 1 (start).
 */
export class TpmRollbackCounter implements RollbackCounter {
  readonly store = 'tpm';

  constructor(
    private readonly tcti: string,
    private readonly baseIndex = 0x01520000,
  ) {}

  private indexes(name: string): { counter: string; start: string } {
    checkName(name);
    const i = (TPM_COUNTER_NAMES as readonly string[]).indexOf(name);
    if (i < 0)
      throw new AgentError(
        'USAGE',
        `the TPM keeps anti-rollback counters for ${TPM_COUNTER_NAMES.join(', ')}, not "${name}"`,
      );
    const hex = (n: number) => `0x${n.toString(16).padStart(8, '0')}`;
    return { counter: hex(this.baseIndex + 2 * i), start: hex(this.baseIndex + 2 * i + 1) };
  }

  private async defined(): Promise<Set<number>> {
    // Not through runTpm2: its -Q would silence the list itself.
    const out = await new Promise<string>((resolve, reject) =>
      execFile(
        'tpm2_getcap',
        ['handles-nv-index'],
        { env: { ...process.env, TPM2TOOLS_TCTI: this.tcti }, timeout: 30_000 },
        (err, stdout, stderr) =>
          err
            ? reject(
                new AgentError(
                  'TRUST_ANCHOR',
                  `tpm2_getcap failed on the TPM at ${this.tcti}: ${stderr.trim().split('\n').at(-1) || err.message}`,
                ),
              )
            : resolve(stdout),
      ),
    );
    return new Set([...out.matchAll(/0x([0-9a-fA-F]+)/g)].map((m) => parseInt(m[1]!, 16)));
  }

  private async readIndex(index: string): Promise<bigint> {
    const out = await this.withTemp((file) =>
      runTpm2('tpm2_nvread', ['-C', 'o', '-s', '8', '-o', file, index], this.tcti).then(() =>
        readFileSync(file),
      ),
    );
    if (out.length !== 8)
      throw new AgentError('TRUST_ANCHOR', `tpm2_nvread returned ${out.length} bytes for NV index ${index}`);
    return out.readBigUInt64BE(0);
  }

  private async withTemp<T>(fn: (file: string) => Promise<T>): Promise<T> {
    const dir = mkdtempSync(join(tmpdir(), 'rampart-nv-'));
    try {
      return await fn(join(dir, 'value'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  /**
   * Define the two indexes if needed. Safe to repeat after a power cut at any point: a counter
   * without a locked start value gets its current value as start (it cannot have been advanced
   * yet: advancing needs the start value).
   */
  private async ensure(name: string): Promise<{ counter: string; start: string }> {
    const ix = this.indexes(name);
    const have = await this.defined();
    const attrs = 'ownerread|ownerwrite|authread|no_da';
    if (!have.has(parseInt(ix.counter, 16))) {
      await runTpm2(
        'tpm2_nvdefine',
        ['-C', 'o', '-s', '8', '-a', `nt=counter|${attrs}`, ix.counter],
        this.tcti,
      );
    }
    if (!have.has(parseInt(ix.start, 16))) {
      await runTpm2(
        'tpm2_nvdefine',
        ['-C', 'o', '-s', '8', '-a', `${attrs}|writedefine`, ix.start],
        this.tcti,
      );
    }
    // Defined but never written (a power cut while it was being set up) reads as missing.
    const start = await this.readIndex(ix.start).catch(() => null);
    if (start === null) {
      let current: bigint;
      try {
        current = await this.readIndex(ix.counter);
      } catch {
        // A counter reads only after its first increment.
        await runTpm2('tpm2_nvincrement', ['-C', 'o', ix.counter], this.tcti);
        current = await this.readIndex(ix.counter);
      }
      const value = Buffer.alloc(8);
      value.writeBigUInt64BE(current);
      await this.withTemp(async (file) => {
        writeFileSync(file, value);
        await runTpm2('tpm2_nvwrite', ['-C', 'o', '-i', file, ix.start], this.tcti);
      });
      await runTpm2('tpm2_nvwritelock', ['-C', 'o', ix.start], this.tcti);
    }
    return ix;
  }

  async read(name: string): Promise<bigint> {
    const ix = await this.ensure(name);
    const [value, start] = [await this.readIndex(ix.counter), await this.readIndex(ix.start)];
    if (value < start)
      throw new AgentError(
        'TRUST_ANCHOR',
        `the TPM anti-rollback counter ${ix.counter} is below its start value`,
      );
    return value - start;
  }

  async advance(name: string, to: bigint): Promise<void> {
    const ix = await this.ensure(name);
    const start = await this.readIndex(ix.start);
    let value = (await this.readIndex(ix.counter)) - start;
    if (to - value > 100_000n)
      throw new AgentError(
        'UPDATE_REFUSED',
        `advancing the TPM anti-rollback counter ${name} from ${value} to ${to} would take too many increments; release counters should grow by small steps`,
      );
    if (value >= to) return;
    // Each increment adds exactly one; read back once at the end.
    for (; value < to; value++) await runTpm2('tpm2_nvincrement', ['-C', 'o', ix.counter], this.tcti);
    const now = (await this.readIndex(ix.counter)) - start;
    if (now < to)
      throw new AgentError(
        'TRUST_ANCHOR',
        `the TPM anti-rollback counter ${name} reads ${now} after advancing to ${to}`,
      );
  }
}
