import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { DEFAULT_MODEL, FleetSimulator, parseProfileMix } from '@rampart/sim/fleet';
import type { Platform } from '@rampart/server';
import { loadServer } from '../server.js';
import { SharedError } from '@rampart/shared/errors';
import { CliError, EXIT } from '../errors.js';
import { collect, globalsOf, withExamples } from '../command.js';
import { color } from '../output.js';
import { ApiClient } from '../connection.js';
import { positiveInt } from './fleet-common.js';
import { ApiProvisioner, statusLine } from './sim.js';

interface UpOptions {
  apiPort?: string;
  apiHost?: string;
  estPort?: string;
  pkiPort?: string;
  updatesPort?: string;
  mqttPort?: string;
  insecureMqttPort?: string;
  databaseUrl?: string;
  logLevel?: string;
  logFormat?: string;
  set?: string[];
  demo?: boolean | string;
}

/** The demo fleet's mix: mostly well-behaved, one of each kind of trouble. */
export const DEMO_MIX = 'normal=7,chatty=1,crashy=1,compromised=1';
export const DEMO_DEVICES = 10;

/**
 * Start a small simulated fleet beside the platform: registered and enrolled through the API and
 * EST with a short-lived operator token that the platform issues (audited, never written to disk).
 */
async function startDemoFleet(platform: Platform, devices: number): Promise<FleetSimulator> {
  const url = (name: string) => platform.listeners.find((l) => l.name === name)?.url;
  const api = url('api');
  const estUrl = url('est');
  const mqttUrl = url('mqtt');
  if (!api || !estUrl || !mqttUrl) throw new CliError('the demo fleet needs the api, est and mqtt listeners');
  const caPem = readFileSync(join(platform.config.dataDir, 'ca.pem'), 'utf8');
  const token = await platform.issueServiceToken({
    name: 'demo fleet',
    role: 'operator',
    ttlMs: 15 * 60_000,
    reason: 'rampart up --demo',
  });
  const client = new ApiClient({ url: api, token, caPem, source: 'rampart up --demo' });
  const fleet = new FleetSimulator({
    count: devices,
    prefix: 'demo',
    mix: parseProfileMix(DEMO_MIX),
    dir: join(platform.config.dataDir, 'demo-fleet'),
    estUrl,
    mqttUrl,
    rootPem: caPem,
    provisioner: new ApiProvisioner(client),
    log: platform.logger.child({ component: 'demo-fleet' }),
  });
  try {
    await fleet.provision();
  } finally {
    await client.close();
  }
  fleet.start();
  return fleet;
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
      '--updates-port <port>',
      'HTTP port of the updates listener: TUF metadata and release artifacts (0 = any free port; default 8082)',
    )
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
    .option(
      '--demo [devices]',
      `also run a small simulated fleet (default ${DEMO_DEVICES} devices: ${DEMO_MIX}), ids demo-0001…`,
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
        'updates.port': opts.updatesPort,
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
            'updates.port': '--updates-port',
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

      let demo: FleetSimulator | null = null;
      if (opts.demo !== undefined && opts.demo !== false) {
        const n = typeof opts.demo === 'string' ? positiveInt(opts.demo, '--demo', 1000) : DEMO_DEVICES;
        demo = await startDemoFleet(platform, n);
        out.write(
          `demo fleet: ${n} simulated devices (${DEMO_MIX}), ids demo-0001…; try: rampart device list --query 'model = "${DEFAULT_MODEL}"'\n`,
        );
        const status = setInterval(
          () => platform.logger.info({ component: 'demo-fleet' }, statusLine(demo!.stats())),
          60_000,
        );
        status.unref();
      }

      let signals = 0;
      const shutdown = (signal: string) => {
        signals++;
        if (signals > 1) {
          platform.logger.warn('second signal: exiting without a clean shutdown');
          process.exit(EXIT.failed);
        }
        platform.logger.info({ signal }, 'shutting down');
        (demo ? demo.stop() : Promise.resolve())
          .then(() => platform.stop(signal))
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
