import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import type { ShadowDocument } from '@rampart/shared/shadow';
import { globalsOf, withExamples } from '../command.js';
import { withClient } from '../connection.js';
import { CliError, EXIT } from '../errors.js';
import { output, printFields } from '../output.js';
import { positiveInt } from './fleet-common.js';

/**
 * `key=value` pairs as a merge patch: dotted keys nest (`config.rate=5`), values are JSON when
 * they parse (`5`, `true`, `null`, `"5"`, `[1,2]`) and strings otherwise; `null` removes a key.
 */
export function patchFromPairs(pairs: string[]): Record<string, unknown> {
  const patch: Record<string, unknown> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0)
      throw new CliError(`expected key=value, got "${pair}"`, EXIT.usage, ['e.g. led=on config.rate=5']);
    const path = pair.slice(0, eq).split('.');
    if (path.some((p) => p === '' || p === '__proto__'))
      throw new CliError(`"${pair.slice(0, eq)}" is not a key`, EXIT.usage);
    const raw = pair.slice(eq + 1);
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch {
      value = raw;
    }
    let node = patch;
    for (const key of path.slice(0, -1)) {
      if (typeof node[key] !== 'object' || node[key] === null) node[key] = {};
      node = node[key] as Record<string, unknown>;
    }
    node[path.at(-1)!] = value;
  }
  return patch;
}

function printShadow(doc: ShadowDocument): void {
  printFields([
    ['device', doc.deviceId],
    ['version', doc.version],
    ['desired', JSON.stringify(doc.state.desired)],
    ['reported', JSON.stringify(doc.state.reported)],
    ['delta', Object.keys(doc.state.delta).length ? JSON.stringify(doc.state.delta) : '(in sync)'],
    ['updated', doc.updatedAt ?? '-'],
  ]);
}

export function shadowCommand(): Command {
  const shadow = new Command('shadow').description(
    "A device's shadow: the desired state operators set, the state it reported, and the delta",
  );
  shadow.addCommand(
    withExamples(
      new Command('show')
        .description('Show desired, reported and delta with the version')
        .argument('<device>', 'device id')
        .action(async (id: string, _o, cmd: Command) => {
          const o = globalsOf(cmd);
          const doc = await withClient(o, (c) =>
            c.get<ShadowDocument>(`/api/v1/devices/${encodeURIComponent(id)}/shadow`),
          );
          output(o, doc, printShadow);
        }),
      ['rampart device shadow show dw-0001', 'rampart device shadow show dw-0001 --json | jq .state.delta'],
    ),
  );
  shadow.addCommand(
    withExamples(
      new Command('set')
        .description('Change the desired state; a connected device receives the delta at once')
        .argument('<device>', 'device id')
        .argument('[pairs...]', 'key=value changes (dotted keys nest; value null removes)')
        .option('--file <file>', 'a JSON merge patch from a file (- for standard input) instead of pairs')
        .option(
          '--version <n>',
          'apply only if the shadow is still at this version (exit 6 otherwise)',
          positiveIntOrZero,
        )
        .action(async (id: string, pairs: string[], _o, cmd: Command) => {
          const o = globalsOf<{ file?: string; version?: number }>(cmd);
          let desired: Record<string, unknown>;
          if (o.file) {
            try {
              desired = JSON.parse(readFileSync(o.file === '-' ? 0 : o.file, 'utf8')) as Record<
                string,
                unknown
              >;
            } catch (err) {
              throw new CliError(
                `cannot read a JSON object from ${o.file}: ${(err as Error).message}`,
                EXIT.usage,
              );
            }
          } else if (pairs.length) desired = patchFromPairs(pairs);
          else throw new CliError('nothing to change: give key=value pairs or --file', EXIT.usage);
          const doc = await withClient(o, (c) =>
            c.patch<ShadowDocument>(`/api/v1/devices/${encodeURIComponent(id)}/shadow`, {
              desired,
              ...(o.version !== undefined ? { version: o.version } : {}),
            }),
          );
          output(o, doc, printShadow);
        }),
      [
        'rampart device shadow set dw-0001 led=on config.rate=5',
        'rampart device shadow set dw-0001 led=null --version 7',
        'rampart device shadow set dw-0001 --file desired.json --json',
      ],
    ),
  );
  return shadow;
}

function positiveIntOrZero(value: string): number {
  return value === '0' ? 0 : positiveInt(value, '--version', 2 ** 31 - 1);
}
