import { join, resolve } from 'node:path';
import { Command } from 'commander';
import type { CreatedEnrollmentToken, DeviceList } from '@rampart/shared/api';
import { parseDuration } from '@rampart/shared/duration';
import {
  DEFAULT_MODEL,
  DEFAULT_PREFIX,
  FleetSimulator,
  PROFILES,
  PROFILE_NAMES,
  parseProfileMix,
  type FleetStats,
  type ProfileShare,
  type Provisioner,
} from '@rampart/sim/fleet';
import { globalsOf, withExamples } from '../command.js';
import { dataDirOf, resolveConnection, runtimeListeners, ApiClient } from '../connection.js';
import { CliError, EXIT } from '../errors.js';
import { color, printJsonLine, progress } from '../output.js';
import { positiveInt } from './fleet-common.js';

/** Devices looked up per fleet query when registering (well under the query's condition limit). */
const LOOKUP_CHUNK = 200;

/**
 * Registers simulated devices and creates their enrollment tokens through the management API, with
 * a token that needs `device:write`, `model:write` and `enrollment:manage` (the operator role).
 */
export class ApiProvisioner implements Provisioner {
  constructor(private readonly client: ApiClient) {}

  async register(deviceIds: readonly string[], model: string): Promise<void> {
    await this.client.call('/api/v1/device-models', {
      method: 'POST',
      body: { id: model, name: model, description: 'Simulated devices (rampart sim)' },
      accept: [409],
    });
    const existing = new Set<string>();
    for (let i = 0; i < deviceIds.length; i += LOOKUP_CHUNK) {
      const chunk = deviceIds.slice(i, i + LOOKUP_CHUNK);
      const page = await this.client.get<DeviceList>('/api/v1/devices', {
        query: `id in (${chunk.map((id) => JSON.stringify(id)).join(', ')})`,
        limit: LOOKUP_CHUNK,
      });
      for (const d of page.items) existing.add(d.id);
    }
    const missing = deviceIds.filter((id) => !existing.has(id));
    if (missing.length === 0) return;
    await this.client.call('/api/v1/devices/import', {
      method: 'POST',
      raw: {
        contentType: 'application/x-ndjson',
        data: missing.map((id) => JSON.stringify({ id, model, attributes: { simulated: true } })).join('\n'),
      },
    });
  }

  async enrollmentToken(deviceId: string): Promise<string> {
    const created = await this.client.post<CreatedEnrollmentToken>('/api/v1/enrollment-tokens', {
      deviceId,
      expiresIn: '1h',
    });
    return created.token;
  }
}

/** The platform's EST and MQTT URLs: flags, otherwise the runtime file `rampart up` writes. */
export function deviceEndpoints(
  dataDir: string,
  flags: { estUrl?: string; mqttUrl?: string },
): { estUrl: string; mqttUrl: string } {
  const listeners = runtimeListeners(dataDir) ?? [];
  const find = (name: string, flag: string, given?: string): string => {
    const url = given ?? listeners.find((l) => l.name === name)?.url;
    if (!url)
      throw new CliError(`cannot find the platform's ${name} listener`, EXIT.usage, [
        `pass ${flag}, or point --data-dir at the data directory of a running \`rampart up\``,
      ]);
    return url;
  };
  return {
    estUrl: find('est', '--est-url', flags.estUrl),
    mqttUrl: find('mqtt', '--mqtt-url', flags.mqttUrl),
  };
}

export function describeMix(mix: readonly ProfileShare[]): string {
  return mix.length === 1 ? mix[0]!.profile : mix.map((s) => `${s.profile}=${s.weight}`).join(',');
}

/** One status line: online count, per profile, and what the fleet has done so far. */
export function statusLine(s: FleetStats): string {
  const profiles = Object.entries(s.byProfile)
    .map(([name, p]) => `${name} ${p.online}/${p.devices}`)
    .join(', ');
  const t = s.totals;
  return (
    `${s.online}/${s.devices} online (${profiles}) · telemetry ${t.telemetry}, delivered ${t.delivered}` +
    `, dropped ${t.dropped} · commands ${t.commands}, shadow deltas ${t.deltas}` +
    ` · reconnects ${Math.max(0, t.connects - s.devices)}, crashes ${t.crashes}, refused attempts ${t.attacks}`
  );
}

interface SimOptions {
  devices: number;
  profile: string;
  prefix: string;
  model: string;
  duration: string;
  every: string;
  simDir?: string;
  estUrl?: string;
  mqttUrl?: string;
  concurrency: number;
  speed: number;
}

function durationMs(text: string, flag: string, allowZero: boolean): number {
  if (allowZero && text.trim() === '0') return 0;
  const ms = parseDuration(text);
  if (ms === null || ms <= 0)
    throw new CliError(`${flag} must be a duration such as 30s, 10m or 2h (got "${text}")`, EXIT.usage);
  return ms;
}

const PROFILE_HELP = PROFILE_NAMES.map((n) => `  ${n.padEnd(12)} ${PROFILES[n].summary}`).join('\n');

export function simCommand(): Command {
  return withExamples(
    new Command('sim')
      .description(
        'Run a simulated fleet: N virtual devices in this process, each enrolled over EST with its own key and certificate, sending telemetry over mutual-TLS MQTT, answering commands and following its shadow',
      )
      .option(
        '--devices <n>',
        'number of virtual devices',
        (v: string) => positiveInt(v, '--devices', 100_000),
        10,
      )
      .option(
        '--profile <mix>',
        `how they behave: one of ${PROFILE_NAMES.join(', ')}, or a weighted mix such as normal=8,crashy=1,compromised=1`,
        'normal',
      )
      .option('--prefix <prefix>', 'device ids are <prefix>-0001, <prefix>-0002, …', DEFAULT_PREFIX)
      .option('--model <id>', 'device model they are registered as (created if missing)', DEFAULT_MODEL)
      .option('--duration <d>', 'stop after this long (30s, 10m, 2h); 0 runs until Ctrl-C', '0')
      .option('--every <d>', 'print a status line this often', '10s')
      .option(
        '--sim-dir <dir>',
        'where the devices keep keys and certificates, reused by the next run (default <data-dir>/sim/<prefix>)',
      )
      .option('--est-url <url>', "the platform's EST server (default: from <data-dir>/runtime.json)")
      .option('--mqtt-url <url>', "the platform's MQTT gateway (default: from <data-dir>/runtime.json)")
      .option(
        '--concurrency <n>',
        'enrollments in parallel',
        (v: string) => positiveInt(v, '--concurrency', 256),
        8,
      )
      .option(
        '--speed <factor>',
        'divide every period of the profiles by this: 10 makes a minute of behaviour happen in 6 s',
        (v: string) => positiveInt(v, '--speed', 1000),
        1,
      )
      .addHelpText('after', `\nProfiles:\n${PROFILE_HELP}\n`)
      .action(async (_o, cmd: Command) => {
        const o = globalsOf<SimOptions>(cmd);
        let mix: ProfileShare[];
        try {
          mix = parseProfileMix(o.profile);
        } catch (err) {
          throw new CliError(`--profile: ${(err as Error).message}`, EXIT.usage);
        }
        const runFor = durationMs(o.duration, '--duration', true);
        const every = durationMs(o.every, '--every', false);
        const dataDir = dataDirOf(o);
        const connection = resolveConnection(o);
        if (!connection.caPem)
          throw new CliError("Rampart's CA certificate is needed to pin it on every device", EXIT.usage, [
            'pass --ca <server-data-dir>/ca.pem, or --data-dir of the running platform',
          ]);
        const { estUrl, mqttUrl } = deviceEndpoints(dataDir, o);
        const client = new ApiClient(connection);
        const fleet = new FleetSimulator({
          count: o.devices,
          prefix: o.prefix,
          model: o.model,
          mix,
          dir: resolve(o.simDir ?? join(dataDir, 'sim', o.prefix)),
          estUrl,
          mqttUrl,
          rootPem: connection.caPem,
          provisioner: new ApiProvisioner(client),
          concurrency: o.concurrency,
          speed: o.speed,
        });
        await runSimulation(fleet, { json: o.json === true, runForMs: runFor, everyMs: every, mix });
        await client.close();
      }),
    [
      'rampart sim --devices 100',
      'rampart sim --devices 1000 --profile normal=90,chatty=4,crashy=4,compromised=2 --duration 10m',
      'rampart sim --devices 5 --profile compromised --every 2s',
      'rampart sim --devices 50 --json --duration 1m > fleet.jsonl',
    ],
  );
}

/**
 * Enroll (with a progress bar), start, print status until the time is up or Ctrl-C, and stop. With
 * --json every status is one JSON line on standard output.
 */
export async function runSimulation(
  fleet: FleetSimulator,
  opts: { json: boolean; runForMs: number; everyMs: number; mix: readonly ProfileShare[] },
): Promise<void> {
  const out = process.stdout;
  const bar = progress('enrolling', fleet.devices.length, { json: opts.json });
  let shown = 0;
  const provisioned = await fleet
    .provision((done) => {
      bar.increment(done - shown);
      shown = done;
    })
    .finally(() => bar.stop());
  const header = {
    event: 'started',
    devices: fleet.devices.length,
    profile: describeMix(opts.mix),
    enrolled: provisioned.enrolled,
    reused: provisioned.reused,
  };
  if (opts.json) printJsonLine(header);
  else
    out.write(
      `${color.bold('sim')}: ${fleet.devices.length} devices (${describeMix(opts.mix)}); enrolled ${provisioned.enrolled}, reused ${provisioned.reused} certificates\n`,
    );
  fleet.start();

  const report = (event: string) => {
    const s = fleet.stats();
    if (opts.json) printJsonLine({ event, at: new Date().toISOString(), ...s });
    else out.write(`${new Date().toISOString().slice(11, 19)} ${statusLine(s)}\n`);
  };
  await new Promise<void>((done) => {
    const ticker = setInterval(() => report('status'), opts.everyMs);
    let timer: NodeJS.Timeout | null = null;
    const finish = () => {
      clearInterval(ticker);
      if (timer) clearTimeout(timer);
      process.off('SIGINT', finish);
      process.off('SIGTERM', finish);
      done();
    };
    if (opts.runForMs > 0) timer = setTimeout(finish, opts.runForMs);
    process.once('SIGINT', finish);
    process.once('SIGTERM', finish);
  });
  await fleet.stop();
  report('stopped');
}
