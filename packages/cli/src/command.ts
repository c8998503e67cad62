import type { Command } from 'commander';
import { Option } from 'commander';
import type { ConnectionOptions } from './connection.js';
import type { OutputOptions } from './output.js';

export type GlobalOptions = ConnectionOptions & OutputOptions & { config?: string };

/** Attach an "Examples" section to a command's --help. */
export function withExamples(cmd: Command, examples: string[]): Command {
  return cmd.addHelpText('after', `\nExamples:\n${examples.map((e) => `  $ ${e}`).join('\n')}\n`);
}

/** Options of the command merged with the global ones (--url, --token, --ca, --data-dir, --json). */
export function globalsOf<T extends object>(cmd: Command): T & GlobalOptions {
  return cmd.optsWithGlobals() as T & GlobalOptions;
}

export function addGlobalOptions(program: Command): Command {
  return program
    .addOption(new Option('--url <url>', 'management API of a running Rampart').env('RAMPART_URL'))
    .addOption(
      new Option('--token <token>', 'API token (prefer RAMPART_TOKEN: argv is visible to other users)').env(
        'RAMPART_TOKEN',
      ),
    )
    .addOption(
      new Option('--ca <file>', "CA certificate to trust for the API's TLS certificate").env('RAMPART_CA'),
    )
    .addOption(
      new Option('--data-dir <dir>', 'local data directory (default ./rampart-data)').env('RAMPART_DATA_DIR'),
    )
    .addOption(new Option('--config <file>', 'config file (YAML or JSON)').env('RAMPART_CONFIG'))
    .option('--json', 'machine-readable JSON output');
}

/** Collect repeatable `--set key=value` options. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}
