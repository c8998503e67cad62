import { setTimeout as sleep } from 'node:timers/promises';
import { Command, Option } from 'commander';
import { MultiBar, Presets, type SingleBar } from 'cli-progress';
import type {
  CreateDeploymentBody,
  DeploymentDetail,
  DeploymentPhaseView,
  DeploymentView,
  DeviceDeploymentHistory,
} from '@rampart/shared/api';
import { DEPLOYMENT_STATES } from '@rampart/shared/api';
import { globalsOf, withExamples } from '../command.js';
import { withClient } from '../connection.js';
import { CliError, EXIT } from '../errors.js';
import { color, output, printFields, printJsonLine, printTable, shortTime } from '../output.js';

const FINAL = ['completed', 'aborted', 'cancelled'];

/** `PUT /api/v1/devices/{id}/update-assignment`: what the director tells one device to install. */
interface UpdateAssignment {
  deviceId: string;
  path: string;
  /** null for an assignment made by hand (`rampart deploy assign`). */
  deploymentId: string | null;
}

/** What `rampart deploy unassign --json` prints: the assignment's fields, cleared. */
interface UpdateAssignmentCleared {
  deviceId: string;
  path: null;
  deploymentId: null;
}

function positiveNumber(text: string, flag: string, example: string): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0)
    throw new CliError(`${flag} must be a positive number`, EXIT.usage, [`e.g. ${example}`]);
  return n;
}

function wholeNumber(text: string, flag: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) throw new CliError(`${flag} must be a whole number ≥ 0`, EXIT.usage);
  return n;
}

/** `10/min`, `10/m`, `10` (per minute) or `1/s` → devices per minute. */
export function parseRate(text: string): number {
  const m = /^([0-9]+(?:\.[0-9]+)?)(?:\/(min|m|s|sec|h|hour))?$/.exec(text.trim());
  if (!m)
    throw new CliError(`--rate "${text}" is not a rate`, EXIT.usage, [
      'e.g. --rate 10/min, --rate 1/s, --rate 600/h',
    ]);
  const n = Number(m[1]);
  const per = m[2] ?? 'min';
  const rate = per.startsWith('s') ? n * 60 : per.startsWith('h') ? n / 60 : n;
  if (rate <= 0) throw new CliError('--rate must be above zero', EXIT.usage);
  return rate;
}

function idOf(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1)
    throw new CliError(`"${text}" is not a deployment id`, EXIT.usage, ['see `rampart deploy list`']);
  return n;
}

function progressText(c: DeploymentView['counts']): string {
  return `${c.succeeded} ok, ${c.failed} failed, ${c.assigned} in progress, ${c.pending} pending`;
}

function printDeployment(d: DeploymentView): void {
  printFields([
    ['id', d.id],
    ['release', d.release],
    ['target', `${d.target.kind} ${d.target.value}`],
    [
      'state',
      d.state === 'completed' ? color.green(d.state) : d.state === 'aborted' ? color.red(d.state) : d.state,
    ],
    ['reason', d.reason],
    ['priority', d.priority],
    ['continuous', d.continuous ? 'yes' : 'no'],
    ['canary', `${d.canary} (${d.canarySize} devices)`],
    [
      'rate',
      `${d.ratePerMinute}/min${d.rateGrowth > 1 ? ` ×${d.rateGrowth} every ${d.phaseMinutes} min` : ''}`,
    ],
    ['window', d.window ? `${d.window} (${d.windowOpen ? 'open' : 'closed'} now)` : 'always'],
    [
      'abort rule',
      d.abortAtPercent === null ? 'none' : `${d.abortAtPercent}% failed of at least ${d.minSample}`,
    ],
    ['receipt time-out', `${Math.round(d.receiptTimeoutMs / 60_000)} min`],
    [
      'canary wait',
      `${Math.round(d.canaryWaitTimeoutMs / 60_000)} min` +
        (d.canaryWaitingSince
          ? color.yellow(` (canary short of devices since ${shortTime(d.canaryWaitingSince)})`)
          : ''),
    ],
    ['devices', `${d.counts.total}: ${progressText(d.counts)}`],
    ['created', `${shortTime(d.createdAt)} by ${d.createdBy}`],
    ['finished', shortTime(d.finishedAt)],
  ]);
  printTable(d.phases, [
    ['PHASE', (p) => p.name],
    ['RATE', (p) => (p.ratePerMinute === null ? 'all at once' : `${p.ratePerMinute}/min`)],
    ['SUCCEEDED', (p) => p.counts.succeeded],
    ['FAILED', (p) => p.counts.failed],
    ['IN PROGRESS', (p) => p.counts.assigned],
    ['PENDING', (p) => p.counts.pending],
  ]);
}

const phaseDone = (p: DeploymentPhaseView) => p.counts.succeeded + p.counts.failed + p.counts.other;

export function deployCommand(): Command {
  const cmd = new Command('deploy').description(
    'Roll releases out to the fleet: canary, rate-limited phases, maintenance windows, abort rule',
  );

  withExamples(
    cmd
      .command('create')
      .description('Start a deployment of a published release')
      .argument('<release-path>', 'target path of the release (see `rampart release list`)')
      .option('--group <group>', 'target: a static or dynamic group')
      .option('--query <query>', 'target: a fleet query')
      .option('--devices <ids>', 'target: device ids, comma-separated')
      .option('--canary <n|p%>', 'devices in the canary phase, a count or a percentage', '0')
      .option('--rate <n/min>', 'devices per minute after the canary (also n/s, n/h)', '10/min')
      .option('--rate-growth <factor>', 'multiply the rate by this at every phase (≥ 1)')
      .option('--phase-minutes <m>', 'length of a rate phase in minutes (with --rate-growth)')
      .option('--window <spec>', 'maintenance windows, e.g. "Mon-Fri 01:00-05:00 Europe/Berlin"')
      .option('--abort-at <p%>', 'abort when this share of finished devices failed')
      .option('--min-sample <n>', 'finished devices needed before the abort rule applies', '5')
      .option('--receipt-timeout <duration>', 'time a device has to send its signed receipt', '30m')
      .option(
        '--canary-wait <duration>',
        'how long a canary short of devices (held by a higher-priority deployment, none free to replace them) ' +
          'waits before the deployment pauses itself (default 1h; 0s: at once)',
      )
      .option('--continuous', 'keep going: devices entering the target later get the release too')
      .option('--priority <n>', 'higher takes devices over from lower-priority deployments', '0')
      .action(async (release: string, _o, command: Command) => {
        const o = globalsOf<{
          group?: string;
          query?: string;
          devices?: string;
          canary: string;
          rate: string;
          rateGrowth?: string;
          phaseMinutes?: string;
          window?: string;
          abortAt?: string;
          minSample: string;
          receiptTimeout: string;
          canaryWait?: string;
          continuous?: boolean;
          priority: string;
        }>(command);
        const targets = [o.group, o.query, o.devices].filter((x) => x !== undefined);
        if (targets.length !== 1)
          throw new CliError('give exactly one of --group, --query or --devices', EXIT.usage, [
            'e.g. --group eu-sensors, --query \'model = "DW100"\', --devices dw-1,dw-2',
          ]);
        const target: CreateDeploymentBody['target'] =
          o.group !== undefined
            ? { group: o.group }
            : o.query !== undefined
              ? { query: o.query }
              : {
                  devices: o
                    .devices!.split(',')
                    .map((d) => d.trim())
                    .filter(Boolean),
                };
        const canary = /%$/.test(o.canary) ? o.canary : wholeNumber(o.canary, '--canary');
        const body: CreateDeploymentBody = {
          release,
          target,
          canary,
          ratePerMinute: parseRate(o.rate),
          minSample: wholeNumber(o.minSample, '--min-sample'),
          receiptTimeout: o.receiptTimeout,
          priority: wholeNumber(o.priority, '--priority'),
          ...(o.rateGrowth
            ? { rateGrowth: positiveNumber(o.rateGrowth, '--rate-growth', '--rate-growth 2') }
            : {}),
          ...(o.phaseMinutes ? { phaseMinutes: wholeNumber(o.phaseMinutes, '--phase-minutes') } : {}),
          ...(o.window ? { window: o.window } : {}),
          ...(o.abortAt
            ? { abortAtPercent: positiveNumber(o.abortAt.replace(/%$/, ''), '--abort-at', '--abort-at 20%') }
            : {}),
          ...(o.canaryWait !== undefined ? { canaryWaitTimeout: o.canaryWait } : {}),
          ...(o.continuous ? { continuous: true } : {}),
        };
        await withClient(o, async (client) => {
          const d = await client.post<DeploymentView>('/api/v1/deployments', body);
          output(o, d, (v) => {
            printDeployment(v);
            process.stdout.write(color.dim(`\nfollow it with: rampart deploy watch ${v.id}\n`));
          });
        });
      }),
    [
      'rampart deploy create DW100/sensor-fw-1.4.2.bin --group eu-sensors --canary 5% --rate 10/min --abort-at 20% --min-sample 5',
      'rampart deploy create DW100/sensor-fw-1.4.2.bin --group eu-sensors --canary 10 --canary-wait 30m',
      'rampart deploy create DW100/sensor-fw-1.4.2.bin --query \'model = "DW100"\' --window "Mon-Fri 01:00-05:00 Europe/Berlin" --continuous',
      'rampart deploy create DW100/hotfix-1.4.3.bin --devices dw-0001,dw-0002 --priority 10 --receipt-timeout 15m --json',
    ],
  );

  withExamples(
    cmd
      .command('list')
      .description('List deployments, newest first')
      .addOption(
        new Option('--state <state>', 'only deployments in this state').choices([...DEPLOYMENT_STATES]),
      )
      .action(async (_o, command: Command) => {
        const o = globalsOf<{ state?: string }>(command);
        await withClient(o, async (client) => {
          const r = await client.get<{ items: DeploymentView[] }>('/api/v1/deployments', { state: o.state });
          output(o, r, (v) =>
            printTable(
              v.items,
              [
                ['ID', (x) => x.id],
                ['RELEASE', (x) => x.release],
                ['TARGET', (x) => `${x.target.kind} ${x.target.value}`],
                ['STATE', (x) => x.state],
                ['PRIORITY', (x) => x.priority],
                ['DEVICES', (x) => x.counts.total],
                ['OK', (x) => x.counts.succeeded],
                ['FAILED', (x) => x.counts.failed],
                ['CREATED', (x) => shortTime(x.createdAt)],
              ],
              'no deployments; start one with `rampart deploy create`',
            ),
          );
        });
      }),
    ['rampart deploy list', 'rampart deploy list --state running --json'],
  );

  withExamples(
    cmd
      .command('show')
      .description('A deployment: settings, progress per phase, and (with --devices) every device')
      .argument('<id>', 'deployment id')
      .option('--devices', 'list every device and its state')
      .action(async (id: string, _o, command: Command) => {
        const o = globalsOf<{ devices?: boolean }>(command);
        await withClient(o, async (client) => {
          const r = await client.get<DeploymentDetail>(`/api/v1/deployments/${idOf(id)}`);
          output(o, r, (v) => {
            printDeployment(v.deployment);
            if (o.devices) {
              process.stdout.write('\n');
              printTable(v.devices, [
                ['DEVICE', (x) => x.deviceId],
                ['STATE', (x) => x.state],
                ['PHASE', (x) => x.phase],
                ['ASSIGNED', (x) => shortTime(x.assignedAt)],
                ['FINISHED', (x) => shortTime(x.finishedAt)],
              ]);
            }
          });
        });
      }),
    ['rampart deploy show 3', 'rampart deploy show 3 --devices', 'rampart deploy show 3 --json'],
  );

  for (const action of ['pause', 'resume', 'cancel'] as const) {
    withExamples(
      cmd
        .command(action)
        .description(
          action === 'pause'
            ? 'Pause: assign no more devices (receipts of assigned devices still count)'
            : action === 'resume'
              ? 'Resume a paused deployment'
              : 'Cancel: assign no more devices; devices not done yet are unassigned',
        )
        .argument('<id>', 'deployment id')
        .action(async (id: string, _o, command: Command) => {
          const o = globalsOf(command);
          await withClient(o, async (client) => {
            const d = await client.post<DeploymentView>(`/api/v1/deployments/${idOf(id)}/${action}`);
            output(o, d, (v) =>
              process.stdout.write(`deployment ${v.id} is ${v.state}: ${progressText(v.counts)}\n`),
            );
          });
        }),
      [`rampart deploy ${action} 3`, `rampart deploy ${action} 3 --json`],
    );
  }

  withExamples(
    cmd
      .command('assign')
      .summary('Make one device install a release, outside any deployment (a field test, a fix)')
      .description(
        'Make one device install a published release, outside any deployment: an override for a ' +
          'field test or a fix. It replaces what the device is assigned now, also by a deployment ' +
          '(which goes on waiting for that receipt); a deployment that reaches the device later replaces it in turn.',
      )
      .argument('<device-id>', 'device id')
      .argument('<release-path>', 'target path of the release (see `rampart release list`)')
      .action(async (deviceId: string, path: string, _o, command: Command) => {
        const o = globalsOf(command);
        await withClient(o, async (client) => {
          const a = await client.put<UpdateAssignment>(
            `/api/v1/devices/${encodeURIComponent(deviceId)}/update-assignment`,
            { path },
          );
          output(o, a, (v) => process.stdout.write(`device ${v.deviceId} must install ${v.path}\n`));
        });
      }),
    [
      'rampart deploy assign dw-0001 DW100/sensor-fw-1.4.3-rc1.bin     # field test on one device',
      'rampart deploy assign dw-0042 DW100/hotfix-1.4.3.bin --json',
      'rampart deploy unassign dw-0001                                 # back to nothing assigned',
    ],
  );

  withExamples(
    cmd
      .command('unassign')
      .summary("Clear one device's update assignment")
      .description(
        "Clear one device's update assignment (set by `rampart deploy assign` or a deployment): " +
          'the director then lists nothing for it and the device keeps what it runs. ' +
          'Exit 5 when the device has none.',
      )
      .argument('<device-id>', 'device id')
      .action(async (deviceId: string, _o, command: Command) => {
        const o = globalsOf(command);
        await withClient(o, async (client) => {
          await client.delete(`/api/v1/devices/${encodeURIComponent(deviceId)}/update-assignment`);
        });
        const cleared: UpdateAssignmentCleared = { deviceId, path: null, deploymentId: null };
        output(o, cleared, (v) =>
          process.stdout.write(
            `device ${v.deviceId}: update assignment cleared, the director lists nothing for it\n`,
          ),
        );
      }),
    ['rampart deploy unassign dw-0001', 'rampart deploy unassign dw-0001 --json'],
  );

  withExamples(
    cmd
      .command('history')
      .description("A device's deployment history, newest first")
      .argument('<device-id>', 'device id')
      .action(async (deviceId: string, _o, command: Command) => {
        const o = globalsOf(command);
        await withClient(o, async (client) => {
          const r = await client.get<DeviceDeploymentHistory>(
            `/api/v1/devices/${encodeURIComponent(deviceId)}/deployments`,
          );
          output(o, r, (v) =>
            printTable(
              v.items,
              [
                ['AT', (x) => shortTime(x.at)],
                ['DEPLOYMENT', (x) => x.deploymentId],
                ['RELEASE', (x) => x.release],
                ['EVENT', (x) => x.event],
                ['DETAIL', (x) => x.detail],
              ],
              `no deployments touched ${v.deviceId}`,
            ),
          );
        });
      }),
    ['rampart deploy history dw-0001', 'rampart deploy history dw-0001 --json'],
  );

  withExamples(
    cmd
      .command('watch')
      .description(
        'Follow a deployment until it ends: progress bars per phase (--json: one JSON line per change). ' +
          'Exit 0 when it completed, 1 when it was aborted or cancelled.',
      )
      .argument('<id>', 'deployment id')
      .option('--interval <seconds>', 'seconds between polls', '2')
      .action(async (id: string, _o, command: Command) => {
        const o = globalsOf<{ interval: string }>(command);
        const every = positiveNumber(o.interval, '--interval', '--interval 5') * 1000;
        const n = idOf(id);
        const tty = !o.json && process.stderr.isTTY;
        const multi = tty
          ? new MultiBar(
              {
                format: '{phase} [{bar}] {value}/{total} | {status}',
                stream: process.stderr,
                hideCursor: true,
                clearOnComplete: false,
              },
              Presets.shades_classic,
            )
          : null;
        const bars = new Map<number, SingleBar>();
        let last = '';
        const final = await withClient(o, async (client) => {
          for (;;) {
            const { deployment: d } = await client.get<DeploymentDetail>(`/api/v1/deployments/${n}`);
            const snapshot = JSON.stringify({
              state: d.state,
              reason: d.reason,
              counts: d.counts,
              phases: d.phases,
            });
            if (snapshot !== last) {
              last = snapshot;
              if (o.json)
                printJsonLine({
                  id: d.id,
                  state: d.state,
                  phase: d.phase,
                  counts: d.counts,
                  phases: d.phases,
                  reason: d.reason,
                });
              else if (multi) {
                for (const p of d.phases) {
                  const status = `${p.counts.succeeded} ok, ${p.counts.failed} failed, ${p.counts.assigned} running`;
                  const payload = { phase: p.name.padEnd(8), status };
                  const bar = bars.get(p.index);
                  if (bar) {
                    bar.setTotal(Math.max(1, p.counts.total));
                    bar.update(phaseDone(p), payload);
                  } else bars.set(p.index, multi.create(Math.max(1, p.counts.total), phaseDone(p), payload));
                }
              } else
                process.stdout.write(
                  `${new Date().toISOString().slice(11, 19)} deployment ${d.id} ${d.state}${d.reason ? ` (${d.reason})` : ''} phase ${d.phase}: ${progressText(d.counts)}\n`,
                );
            }
            if (FINAL.includes(d.state)) return d;
            await sleep(every);
          }
        });
        multi?.stop();
        if (!o.json)
          process.stdout.write(
            `deployment ${final.id} ${final.state}${final.reason ? `: ${final.reason}` : ''} — ${progressText(final.counts)}\n`,
          );
        if (final.state !== 'completed') process.exitCode = EXIT.failed;
      }),
    [
      'rampart deploy watch 3',
      'rampart deploy watch 3 --json | jq -c .counts',
      'rampart deploy watch 3 --interval 10',
    ],
  );

  return cmd;
}
