import { Command } from 'commander';
import { describeOrigin, settingsOf } from '@rampart/shared/config';
import { SharedError } from '@rampart/shared/errors';
import { loadServer } from '../server.js';
import { globalsOf, withExamples } from '../command.js';
import { CliError, EXIT } from '../errors.js';
import { output, printTable } from '../output.js';

function redact(url: string): string {
  return url.replace(/\/\/([^:/@]+):[^@/]*@/, '//$1:***@').replace(/([?&]password=)[^&]*/gi, '$1***');
}

export function configCommand(): Command {
  const config = new Command('config').description(
    'Inspect configuration: every setting, and the values in effect',
  );

  config.addCommand(
    withExamples(
      new Command('settings')
        .description('List every setting with its environment variable and default')
        .action(async (_o, cmd: Command) => {
          const o = globalsOf(cmd);
          const { ServerConfigSchema } = await loadServer();
          const settings = settingsOf(ServerConfigSchema);
          output(o, settings, (rows) =>
            printTable(rows, [
              ['KEY', (r) => r.key],
              ['ENVIRONMENT', (r) => r.env],
              ['DEFAULT', (r) => (r.default === undefined ? '' : JSON.stringify(r.default))],
              ['DESCRIPTION', (r) => r.description],
            ]),
          );
        }),
      ['rampart config settings', 'rampart config settings --json | jq -r ".[].env"'],
    ),
  );

  config.addCommand(
    withExamples(
      new Command('show')
        .description(
          'Validate and show the configuration `rampart up` would use, and where each value comes from',
        )
        .action(async (_o, cmd: Command) => {
          const o = globalsOf(cmd);
          const { ServerConfigSchema, databaseUrlOf, loadServerConfig } = await loadServer();
          let loaded;
          try {
            // RAMPART_DATA_DIR also fills the option; only a real flag should be shown as one.
            const dataDir = cmd.getOptionValueSourceWithGlobals('dataDir') === 'cli' ? o.dataDir : undefined;
            loaded = loadServerConfig({ file: o.config, flags: { dataDir } });
          } catch (err) {
            if (err instanceof SharedError) throw new CliError(err.message, EXIT.usage);
            throw err;
          }
          const rows = settingsOf(ServerConfigSchema).map((s) => {
            let value: unknown = s.key
              .split('.')
              .reduce<unknown>(
                (node, k) => (node as Record<string, unknown> | undefined)?.[k],
                loaded.config,
              );
            if (s.key === 'database.url') value = redact(databaseUrlOf(loaded.config));
            return {
              key: s.key,
              value,
              origin: describeOrigin(loaded.origins.get(s.key)).replace(/^from /, ''),
            };
          });
          output(o, { settings: rows, warnings: loaded.warnings }, ({ settings, warnings }) => {
            printTable(settings, [
              ['KEY', (r) => r.key],
              ['VALUE', (r) => (r.value === undefined ? '' : JSON.stringify(r.value))],
              ['FROM', (r) => r.origin],
            ]);
            for (const w of warnings) process.stderr.write(`warning: ${w}\n`);
          });
        }),
      ['rampart config show', 'RAMPART_API_PORT=9443 rampart config show --config rampart.yaml'],
    ),
  );
  return config;
}
