import { Command } from 'commander';
import type { Platform } from '@rampart/server';
import { loadServer } from '../server.js';
import { SharedError } from '@rampart/shared/errors';
import { CliError, EXIT } from '../errors.js';
import { collect, globalsOf, withExamples } from '../command.js';
import { color } from '../output.js';

interface UpOptions {
  apiPort?: string;
  apiHost?: string;
  estPort?: string;
  pkiPort?: string;
  mqttPort?: string;
  insecureMqttPort?: string;
  databaseUrl?: string;
  logLevel?: string;
  logFormat?: string;
  set?: string[];
}

/** Parse `--set a.b=c` pairs into flag values keyed by dotted path. */
export function parseSets(sets: readonly string[] = []): Record<string, string> {
  const out: Record<string, string> = {};
  for (const s of sets) {
    const eq = s.indexOf('=');
    if (eq <= 0) throw new CliError(`--set expects key=value, got "${s}"`, EXIT.usage);
    out[s.slice(0, eq)] = s.slice(eq + 1);
  }
  return out;
}

export function upCommand(): Command {
  const cmd = new Command('up')
    .description(
      'Start every Rampart service on this machine (embedded SQLite unless database.url says otherwise)',
    )
    .option('--api-port <port>', 'HTTPS port of the management API (0 = any free port)')
    .option('--api-host <address>', 'address the management API listens on')
    .option('--est-port <port>', 'HTTPS port of the EST enrollment server (0 = any free port; default 8444)')
    .option('--pki-port <port>', 'HTTP port of the CRL and OCSP listener (0 = any free port; default 8080)')
    .option(
      '--mqtt-port <port>',
      'MQTT over TLS port of the device gateway (0 = any free port; default 8883)',
    )
    .option(
      '--insecure-mqtt-port <port>',
      'DEVELOPMENT ONLY: also accept plain MQTT without TLS or certificates on this port (logs a warning)',
    )
    .option('--database-url <url>', 'sqlite:<path> or postgres://user:pass@host:port/db')
    .option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent')
    .option('--log-format <format>', 'json or pretty')
    .option(
      '--set <key=value>',
      'any setting by its dotted key (repeatable), e.g. --set audit.checkpointIntervalSeconds=30',
      collect,
    )
    .action(async (_o, command: Command) => {
      const opts = globalsOf<UpOptions>(command);
      const explicit: Record<string, unknown> = {
        // RAMPART_DATA_DIR also fills the option; the loader reads it itself, with the right origin.
        dataDir: command.getOptionValueSourceWithGlobals('dataDir') === 'cli' ? opts.dataDir : undefined,
        'api.port': opts.apiPort,
        'api.host': opts.apiHost,
        'est.port': opts.estPort,
        'pki.port': opts.pkiPort,
        'gateway.port': opts.mqttPort,
        'gateway.insecurePlainPort': opts.insecureMqttPort,
        'database.url': opts.databaseUrl,
        'log.level': opts.logLevel,
        'log.format': opts.logFormat,
      };
      // A dedicated flag wins over --set for the same key, but an absent flag must not erase --set.
      const flags: Record<string, unknown> = { ...parseSets(opts.set) };
      for (const [k, v] of Object.entries(explicit)) if (v !== undefined) flags[k] = v;
      const { loadServerConfig, startPlatform } = await loadServer();
      let loaded;
      try {
        loaded = loadServerConfig({
          file: opts.config,
          flags,
          flagNames: {
            'api.port': '--api-port',
            'api.host': '--api-host',
            'est.port': '--est-port',
            'pki.port': '--pki-port',
            'gateway.port': '--mqtt-port',
            'gateway.insecurePlainPort': '--insecure-mqtt-port',
            'database.url': '--database-url',
            'log.level': '--log-level',
            'log.format': '--log-format',
          },
        });
      } catch (err) {
        if (err instanceof SharedError)
          throw new CliError(err.message, EXIT.usage, ['see `rampart config settings` for every key']);
        throw err;
      }
      const { config, origins, warnings } = loaded;
      if (!origins.has('log.format') && process.stderr.isTTY) config.log.format = 'pretty';

      const platform: Platform = await startPlatform(config);
      for (const w of warnings) platform.logger.warn(w);
      const out = process.stdout;
      out.write(`rampart ${color.bold('up')}: data in ${config.dataDir} (${platform.storage.dialect})\n`);
      if (platform.initialAdminToken) {
        out.write(
          `first start: created the admin token. It is shown once; a copy is in ${config.dataDir}/admin-token (mode 0600):\n` +
            `  ${platform.initialAdminToken}\n`,
        );
      }
      for (const l of platform.listeners) out.write(`listening ${l.name} ${l.url}\n`);

      let signals = 0;
      const shutdown = (signal: string) => {
        signals++;
        if (signals > 1) {
          platform.logger.warn('second signal: exiting without a clean shutdown');
          process.exit(EXIT.failed);
        }
        platform.logger.info({ signal }, 'shutting down');
        platform
          .stop(signal)
          .then(() => {
            out.write('stopped\n');
            process.exit(EXIT.ok);
          })
          .catch((err: unknown) => {
            platform.logger.error({ err }, 'shutdown failed');
            process.exit(EXIT.failed);
          });
      };
      process.on('SIGINT', () => shutdown('SIGINT'));
      process.on('SIGTERM', () => shutdown('SIGTERM'));
    });
  return withExamples(cmd, [
    'rampart up',
    'rampart up --data-dir /var/lib/rampart --api-port 0 --est-port 0 --pki-port 0 --mqtt-port 0',
    'RAMPART_DATABASE_URL=postgres://rampart@db/rampart rampart up --api-host 0.0.0.0',
    'rampart up --config rampart.yaml --set api.rateLimit.max=10000',
  ]);
}
