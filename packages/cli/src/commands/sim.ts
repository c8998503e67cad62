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
  missingTpmTools,
  UPDATE_FAULTS,
  describeUpdateFaults,
  parseProfileMix,
  parseUpdateFaults,
  type FleetStats,
  type UpdateFaults,
  type ProfileShare,
  type ProvisionResult,
  type Provisioner,
} from '@rampart/sim/fleet';
import { globalsOf, withExamples } from '../command.js';
import { dataDirOf, resolveConnection, runtimeListeners, ApiClient } from '../connection.js';
import { CliError, EXIT } from '../errors.js';
import { color, printJsonLine, progress } from '../output.js';
import { positiveInt } from './fleet-common.js';
import { ApiFactory } from './sim-factory.js';

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
  const tpm = s.byTrustAnchor?.tpm;
  const t = s.totals;
  return (
    `${s.online}/${s.devices} online (${profiles}${tpm ? `; with a TPM ${tpm.online}/${tpm.devices}` : ''})` +
    ` · telemetry ${t.telemetry}, delivered ${t.delivered}` +
    `, dropped ${t.dropped} · commands ${t.commands}, shadow deltas ${t.deltas}` +
    ` · reconnects ${Math.max(0, t.connects - s.devices)}, crashes ${t.crashes}, refused attempts ${t.attacks}` +
    (s.updates ? ` · ${updatesText(s.updates)}` : '')
  );
}

/** The update part of a status line. */
export function updatesText(u: NonNullable<FleetStats['updates']>): string {
  return (
    `updates: checked ${u.checked}, installed ${u.installed}, committed ${u.committed}, rolled back ${u.rolledBack}` +
    `, interrupted ${u.interrupted}${u.failed ? `, failed checks ${u.failed}` : ''}`
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
  zeroTouch?: boolean;
  tpm: number;
  station?: string;
  updateEvery: string;
  updateFaults?: string;
}

/** A station name as the platform accepts it (lower case). */
const STATION_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** The provisioning counts of the started, status and stopped lines. */
export function provisioningSummary(p: ProvisionResult): Record<string, unknown> {
  if (!p.zeroTouch) return { mode: 'token', enrolled: p.enrolled, reused: p.reused };
  const z = p.zeroTouch;
  return {
    mode: 'zero-touch',
    station: z.station,
    batch: z.batch,
    manufactured: z.manufactured,
    provisioned: z.provisioned,
    reused: p.reused,
    attestation: z.attestation,
  };
}

function provisioningText(p: ProvisionResult): string {
  const z = p.zeroTouch;
  if (!z) return `enrolled ${p.enrolled}, reused ${p.reused} certificates`;
  const made = z.batch
    ? `station ${z.station} made ${z.manufactured} in batch ${z.batch}`
    : `station ${z.station}`;
  const results = Object.entries(z.attestation)
    .filter(([, n]) => n > 0)
    .map(([status, n]) => `${n} ${status}`)
    .join(', ');
  return (
    `zero-touch: ${made}; provisioned ${z.provisioned.software} with the software trust anchor and ` +
    `${z.provisioned.tpm} with a TPM${results ? ` (attestation: ${results})` : ''}, reused ${p.reused} certificates`
  );
}

function durationMs(text: string, flag: string, allowZero: boolean): number {
  if (allowZero && text.trim() === '0') return 0;
  const ms = parseDuration(text);
  if (ms === null || ms <= 0)
    throw new CliError(`${flag} must be a duration such as 30s, 10m or 2h (got "${text}")`, EXIT.usage);
  return ms;
}

const PROFILE_HELP = PROFILE_NAMES.map((n) => `  ${n.padEnd(12)} ${PROFILES[n].summary}`).join('\n');

const ZERO_TOUCH_HELP = `
Zero-touch (--zero-touch):
  The simulator first acts as the factory: it registers the station (its key is kept in
  <sim-dir>/station/), creates the model with the reference values of the simulated firmware,
  issues every new device a birth certificate and imports the signed batch manifest. Each device
  then measures its boot, attests with a fresh nonce and enrolls over EST with the attestation
  token, as rampart-agent provision does. The token needs model:write and provisioning:manage
  (operator). A device with a TPM (--tpm) gets swtpm behind tpm2-abrmd, started and stopped by the
  simulator, and signs its gateway handshakes in the TPM through the agent's TLS tunnel (an
  openssl s_client per connection). A device keeps the trust anchor it was made with.
`;

const UPDATES_HELP = `
Updates (--update-every):
  Every device runs the agent's own update loop: it asks the director (over mutual TLS) what to
  install, refreshes the release repository with the TUF client, downloads the target chunk by
  chunk, installs it into slot a or b under <sim-dir>/<id>/slots/, self-tests it and commits or
  rolls back, and sends its signed receipt; a deployment to the devices (rampart deploy create)
  rolls out to them. A device does not install again a release it rolled back. The period is
  divided by --speed. --update-faults makes installs fail, on a share of installs (10%) or always
  on the devices named (sim-0003+sim-0007):
    self-test         the self-test fails: rolled back, receipt rolled-back
    crash-after-boot  the new slot crashes at every start until the crash-loop limit (3): rolled back
    power-loss        the device loses power at a random step of the install, and on restart runs the
                      old release or the new one, never neither
`;

/** Software TPMs at most: each is a swtpm process of its own. */
const MAX_TPM_DEVICES = 256;

function tpmCount(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > MAX_TPM_DEVICES)
    throw new CliError(
      `--tpm must be a whole number from 0 to ${MAX_TPM_DEVICES} (got ${JSON.stringify(value)})`,
      EXIT.usage,
    );
  return n;
}

export function simCommand(): Command {
  return withExamples(
    new Command('sim')
      .description(
        'Run a simulated fleet: N virtual devices in this process, each enrolled over EST with its own key and certificate (with a one-time token, or zero-touch: birth certificate and remote attestation), sending telemetry over mutual-TLS MQTT, answering commands and following its shadow',
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
      .option(
        '--zero-touch',
        'make the devices at a simulated factory station (birth certificates, signed batch manifest, reference values) and let each provision itself through remote attestation instead of an enrollment token',
      )
      .option(
        '--tpm <n>',
        'with --zero-touch: the first N devices keep their key in a TPM of their own (swtpm behind tpm2-abrmd, started and stopped by the simulator)',
        tpmCount,
        0,
      )
      .option(
        '--station <name>',
        'with --zero-touch: the factory station, registered on first use (default <prefix>-station)',
      )
      .option(
        '--update-every <d>',
        "run the agent's update loop on every device, checking this often (30s, 5m; divided by --speed); 0: no updates",
        '0',
      )
      .option(
        '--update-faults <spec>',
        `with --update-every: failures to inject, ${UPDATE_FAULTS.map((f) => `${f}=P%`).join(',')} or FAULT=ID+ID (see below)`,
      )
      .addHelpText('after', `\nProfiles:\n${PROFILE_HELP}\n${ZERO_TOUCH_HELP}${UPDATES_HELP}`)
      .action(async (_o, cmd: Command) => {
        const o = globalsOf<SimOptions>(cmd);
        let mix: ProfileShare[];
        try {
          mix = parseProfileMix(o.profile);
        } catch (err) {
          throw new CliError(`--profile: ${(err as Error).message}`, EXIT.usage);
        }
        const runFor = durationMs(o.duration, '--duration', true);
        const updateEvery = durationMs(o.updateEvery, '--update-every', true);
        let faults: UpdateFaults | undefined;
        if (o.updateFaults !== undefined) {
          if (updateEvery === 0)
            throw new CliError('--update-faults applies only when the devices run updates', EXIT.usage, [
              'add --update-every 30s',
            ]);
          try {
            faults = parseUpdateFaults(o.updateFaults);
          } catch (err) {
            throw new CliError(`--update-faults: ${(err as Error).message}`, EXIT.usage);
          }
        }
        const every = durationMs(o.every, '--every', false);
        const dataDir = dataDirOf(o);
        const connection = resolveConnection(o);
        if (!connection.caPem)
          throw new CliError("Rampart's CA certificate is needed to pin it on every device", EXIT.usage, [
            'pass --ca <server-data-dir>/ca.pem, or --data-dir of the running platform',
          ]);
        const zeroTouch = o.zeroTouch === true;
        if (!zeroTouch && (o.tpm > 0 || o.station !== undefined))
          throw new CliError('--tpm and --station apply to zero-touch provisioning only', EXIT.usage, [
            'add --zero-touch',
          ]);
        if (o.tpm > o.devices)
          throw new CliError(`--tpm ${o.tpm} is more than the ${o.devices} devices of the fleet`, EXIT.usage);
        const station = o.station ?? `${o.prefix.toLowerCase()}-station`;
        if (zeroTouch && !STATION_NAME.test(station))
          throw new CliError(
            `"${station}" is not a station name: lower-case letters, digits, ".", "_" or "-", up to 63`,
            EXIT.usage,
            o.station === undefined ? ['pass --station NAME'] : [],
          );
        const missing = o.tpm > 0 ? missingTpmTools() : null;
        if (missing)
          throw new CliError(`--tpm needs ${missing}, which is not installed`, EXIT.failed, [
            'install it (Debian: apt-get install swtpm tpm2-tools tpm2-abrmd libtss2-tcti-tabrmd0 dbus-daemon tpm2-openssl, or bash scripts/ensure-system-deps.sh), or leave out --tpm',
          ]);
        const { estUrl, mqttUrl } = deviceEndpoints(dataDir, o);
        const client = new ApiClient(connection);
        const dir = resolve(o.simDir ?? join(dataDir, 'sim', o.prefix));
        const fleet = new FleetSimulator({
          count: o.devices,
          prefix: o.prefix,
          model: o.model,
          mix,
          dir,
          estUrl,
          mqttUrl,
          rootPem: connection.caPem,
          ...(zeroTouch
            ? { zeroTouch: { factory: new ApiFactory(client, { station, dir }), tpmDevices: o.tpm } }
            : { provisioner: new ApiProvisioner(client) }),
          concurrency: o.concurrency,
          speed: o.speed,
          ...(updateEvery > 0
            ? { updates: { everyMs: updateEvery, faults: faults ?? parseUpdateFaults('') } }
            : {}),
        });
        try {
          await runSimulation(fleet, {
            json: o.json === true,
            runForMs: runFor,
            everyMs: every,
            mix,
            ...(faults ? { faults } : {}),
          });
        } finally {
          await client.close();
        }
      }),
    [
      'rampart sim --devices 100',
      'rampart sim --devices 1000 --profile normal=90,chatty=4,crashy=4,compromised=2 --duration 10m',
      'rampart sim --devices 5 --profile compromised --every 2s',
      'rampart sim --devices 50 --json --duration 1m > fleet.jsonl',
      'rampart sim --devices 200 --zero-touch',
      'rampart sim --devices 20 --zero-touch --tpm 2 --station line-7 --duration 5m',
      'rampart sim --devices 30 --update-every 30s',
      'rampart sim --devices 20 --update-every 1m --speed 10 --update-faults self-test=10%,crash-after-boot=5%,power-loss=5%',
      'rampart sim --devices 5 --update-every 10s --update-faults self-test=sim-0003 --json',
    ],
  );
}

/**
 * Enroll (with a progress bar), start, print status until the time is up or Ctrl-C, and stop. With
 * --json every status is one JSON line on standard output.
 */
export async function runSimulation(
  fleet: FleetSimulator,
  opts: {
    json: boolean;
    runForMs: number;
    everyMs: number;
    mix: readonly ProfileShare[];
    faults?: UpdateFaults;
  },
): Promise<void> {
  const out = process.stdout;
  const bar = progress(fleet.zeroTouch ? 'provisioning' : 'enrolling', fleet.devices.length, {
    json: opts.json,
  });
  let shown = 0;
  let provisioned: ProvisionResult;
  // Interrupted while provisioning: the TPMs started for the devices go with them.
  const interrupted = () => {
    bar.stop();
    process.stderr.write(
      'sim: interrupted while provisioning; devices done so far keep their certificates\n',
    );
    void fleet.stop().finally(() => process.exit(EXIT.failed));
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  try {
    provisioned = await fleet
      .provision((done) => {
        bar.increment(done - shown);
        shown = done;
      })
      .finally(() => bar.stop());
  } catch (err) {
    await fleet.stop();
    throw err;
  } finally {
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
  }
  const summary = provisioningSummary(provisioned);
  const header = {
    event: 'started',
    devices: fleet.devices.length,
    profile: describeMix(opts.mix),
    enrolled: provisioned.enrolled,
    reused: provisioned.reused,
    provisioning: summary,
    ...(opts.faults ? { updateFaults: describeUpdateFaults(opts.faults) } : {}),
  };
  if (opts.json) printJsonLine(header);
  else
    out.write(
      `${color.bold('sim')}: ${fleet.devices.length} devices (${describeMix(opts.mix)}); ${provisioningText(provisioned)}` +
        `${opts.faults ? `; update faults ${describeUpdateFaults(opts.faults)}` : ''}\n`,
    );
  fleet.start();

  const report = (event: string) => {
    const s = fleet.stats();
    if (opts.json) printJsonLine({ event, at: new Date().toISOString(), ...s, provisioning: summary });
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
