import { Command } from 'commander';
import type { CommandRecord } from '@rampart/shared/command';
import type { DeviceConnection } from '@rampart/shared/api';
import { parseDuration } from '@rampart/shared/duration';
import { globalsOf, withExamples } from '../command.js';
import { withClient } from '../connection.js';
import { CliError, EXIT } from '../errors.js';
import { output, printFields, printTable, shortTime } from '../output.js';
import { patchFromPairs } from './shadow.js';
import { positiveInt } from './fleet-common.js';

/** `10s`, `2m`, `1h` or plain seconds → seconds (1 s to 1 h). */
export function timeoutSeconds(text: string): number {
  const t = text.trim();
  const seconds = /^\d+$/.test(t) ? Number(t) : (parseDuration(t) ?? NaN) / 1000;
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > 3600)
    throw new CliError(`--timeout must be between 1s and 1h, such as 10s or 2m (got "${text}")`, EXIT.usage);
  return seconds;
}

function printCommand(c: CommandRecord): void {
  printFields([
    ['command', `${c.name} (${c.id})`],
    ['device', c.deviceId],
    ['status', c.status],
    ...(c.result !== null ? ([['result', JSON.stringify(c.result)]] as [string, unknown][]) : []),
    ...(c.error ? ([['error', c.error]] as [string, unknown][]) : []),
    ['sent', c.createdAt],
    ['completed', c.completedAt ?? '-'],
  ]);
}

/** `rampart device command D NAME` and `rampart device commands D`. */
export function deviceCommandCommands(): Command[] {
  const send = withExamples(
    new Command('command')
      .description(
        'Send a command to a connected device over MQTT and wait for its answer (exit 1 if it failed or timed out)',
      )
      .argument('<device>', 'device id')
      .argument('<name>', 'command name, e.g. reboot')
      .option(
        '--arg <key=value>',
        'an argument (repeatable; dotted keys nest, values are JSON when they parse)',
        (v: string, p: string[]) => [...p, v],
        [] as string[],
      )
      .option('--timeout <duration>', 'how long to wait for the answer: 10s, 2m, 1h', '30s')
      .option(
        '--no-wait',
        'return at once with the command id; read the outcome with rampart device commands',
      )
      .action(async (id: string, name: string, _o, cmd: Command) => {
        const o = globalsOf<{ arg: string[]; timeout: string; wait: boolean }>(cmd);
        const record = await withClient(o, (c) =>
          c.post<CommandRecord>(`/api/v1/devices/${encodeURIComponent(id)}/commands`, {
            name,
            args: patchFromPairs(o.arg),
            timeoutSeconds: timeoutSeconds(o.timeout),
            wait: o.wait,
          }),
        );
        output(o, record, printCommand);
        if (record.status === 'failed' || record.status === 'timed-out') process.exitCode = EXIT.failed;
      }),
    [
      'rampart device command dw-0001 reboot --timeout 10s',
      'rampart device command dw-0001 set-interval --arg seconds=30 --json',
      'rampart device command dw-0001 collect-logs --no-wait',
    ],
  );
  const list = withExamples(
    new Command('commands')
      .description('Commands sent to a device, newest first, with their outcome')
      .argument('<device>', 'device id')
      .option(
        '--limit <n>',
        'at most this many (default 20)',
        (v: string) => positiveInt(v, '--limit', 1000),
        20,
      )
      .action(async (id: string, _o, cmd: Command) => {
        const o = globalsOf<{ limit: number }>(cmd);
        const r = await withClient(o, (c) =>
          c.get<{ items: CommandRecord[] }>(`/api/v1/devices/${encodeURIComponent(id)}/commands`, {
            limit: o.limit,
          }),
        );
        output(o, r, (v) =>
          printTable(
            v.items,
            [
              ['ID', (c) => c.id],
              ['NAME', (c) => c.name],
              ['STATUS', (c) => c.status],
              ['SENT', (c) => shortTime(c.createdAt)],
              ['RESULT / ERROR', (c) => c.error ?? (c.result === null ? '-' : JSON.stringify(c.result))],
            ],
            'no commands sent to this device yet',
          ),
        );
      }),
    ['rampart device commands dw-0001', 'rampart device commands dw-0001 --json | jq ".items[0].status"'],
  );
  const connection = withExamples(
    new Command('connection')
      .description(
        "A device's live MQTT sessions and connection statistics (messages, bytes, denials, disconnects)",
      )
      .argument('<device>', 'device id')
      .action(async (id: string, _o, cmd: Command) => {
        const o = globalsOf(cmd);
        const r = await withClient(o, (c) =>
          c.get<DeviceConnection>(`/api/v1/devices/${encodeURIComponent(id)}/connection`),
        );
        output(o, r, (v) =>
          printFields([
            ['device', v.deviceId],
            [
              'connected',
              v.connected
                ? v.sessions
                    .map((s) => `${s.clientId} from ${s.sourceAddress} since ${s.connectedAt}`)
                    .join('; ')
                : 'no',
            ],
            ['attempts', v.stats.connectAttempts],
            ['connects', v.stats.connects],
            [
              'disconnects',
              v.stats.disconnects +
                (v.stats.lastDisconnectReason ? ` (last: ${v.stats.lastDisconnectReason})` : ''),
            ],
            ['messages in/out', `${v.stats.messagesIn} / ${v.stats.messagesOut}`],
            ['bytes in/out', `${v.stats.bytesIn} / ${v.stats.bytesOut}`],
            ['denials', v.stats.authorizationFailures],
            ['last address', v.stats.lastSourceAddress ?? '-'],
          ]),
        );
      }),
    ['rampart device connection dw-0001', 'rampart device connection dw-0001 --json | jq .stats'],
  );
  return [send, list, connection];
}
