import { readFileSync } from 'node:fs';
import { CliError, EXIT } from './errors.js';

/**
 * A passphrase that protects a key file: `--passphrase-file FILE` (`-` for standard input; its first
 * line) or the environment variable `envVar`. Never a flag value: argv is visible to other users.
 * `what` names the key in the message when there is none ("the root key", "the station key").
 */
export function readPassphrase(
  o: { passphraseFile?: string },
  source: { envVar: string; what: string },
  env: Record<string, string | undefined> = process.env,
): string {
  if (o.passphraseFile) {
    let text: string;
    try {
      text = readFileSync(o.passphraseFile === '-' ? 0 : o.passphraseFile, 'utf8');
    } catch (err) {
      throw new CliError(
        `cannot read passphrase file ${o.passphraseFile}: ${(err as Error).message}`,
        EXIT.usage,
      );
    }
    const passphrase = text.split(/\r?\n/)[0] ?? '';
    if (!passphrase) throw new CliError(`passphrase file ${o.passphraseFile} is empty`, EXIT.usage);
    return passphrase;
  }
  const fromEnv = env[source.envVar];
  if (fromEnv) return fromEnv;
  throw new CliError(`no passphrase for ${source.what}`, EXIT.usage, [
    `set ${source.envVar} or pass --passphrase-file FILE (- reads standard input)`,
    'it is never taken as a flag value: other users of the machine can read the command line',
  ]);
}
