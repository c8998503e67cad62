import { Command } from 'commander';
import type {
  DeviceGroup,
  DeviceGroupList,
  GroupMemberRemoved,
  GroupMembersResult,
} from '@rampart/shared/api';
import { globalsOf, withExamples } from '../command.js';
import { withClient } from '../connection.js';
import { CliError, EXIT } from '../errors.js';
import { color, output, printTable } from '../output.js';
import { addListOptions, listDevices, seg } from './fleet-common.js';

function describeGroup(g: DeviceGroup): string {
  const name = g.name !== g.id ? ` ${color.dim(`"${g.name}"`)}` : '';
  const kind = g.kind === 'dynamic' ? ` ${color.cyan('dynamic')} ${color.dim(g.query ?? '')}` : '';
  return `${color.bold(g.id)}${name}${kind}`;
}

/** Groups as a tree: static hierarchies nest, every root at the left margin. */
export function groupTree(groups: readonly DeviceGroup[]): string[] {
  const ids = new Set(groups.map((g) => g.id));
  const children = new Map<string | null, DeviceGroup[]>();
  for (const g of groups) {
    const parent = g.parentId !== null && ids.has(g.parentId) ? g.parentId : null;
    const list = children.get(parent) ?? [];
    list.push(g);
    children.set(parent, list);
  }
  const lines: string[] = [];
  const walk = (parent: string, prefix: string) => {
    const list = children.get(parent) ?? [];
    list.forEach((g, i) => {
      const last = i === list.length - 1;
      lines.push(`${prefix}${last ? '└── ' : '├── '}${describeGroup(g)}`);
      walk(g.id, prefix + (last ? '    ' : '│   '));
    });
  };
  for (const root of children.get(null) ?? []) {
    lines.push(describeGroup(root));
    walk(root.id, '');
  }
  return lines;
}

/** `rampart group`: static and dynamic device groups. */
export function groupCommand(): Command {
  const group = new Command('group').description(
    'Device groups: static hierarchies of explicit members, and dynamic groups defined by a fleet query',
  );

  group.addCommand(
    withExamples(
      new Command('create')
        .description('Create a static group, or a dynamic one with --query')
        .argument('<id>', 'group id, e.g. plant-berlin')
        .option('--name <name>', 'display name (default: the id)')
        .option('--description <text>', 'what the group is for')
        .option('--parent <group>', 'parent static group (a device in this group is also in its ancestors)')
        .option(
          '--query <query>',
          'makes the group dynamic: its members are the devices matching this fleet query',
        )
        .action(async (id: string, _o, cmd: Command) => {
          const o = globalsOf<{ name?: string; description?: string; parent?: string; query?: string }>(cmd);
          const g = await withClient(o, (c) =>
            c.post<DeviceGroup>('/api/v1/device-groups', {
              id,
              ...(o.name ? { name: o.name } : {}),
              ...(o.description ? { description: o.description } : {}),
              ...(o.parent ? { parentId: o.parent } : {}),
              ...(o.query ? { query: o.query } : {}),
            }),
          );
          output(o, g, (x) =>
            process.stdout.write(
              `created ${x.kind} group ${color.bold(x.id)}${x.parentId ? ` under ${x.parentId}` : ''}${x.query ? `: ${x.query}` : ''}\n`,
            ),
          );
        }),
      [
        'rampart group create europe --name "Europe"',
        'rampart group create plant-berlin --parent europe',
        'rampart group create eu-outdoor --query \'attributes.region = "eu" and attributes.outdoor = true\'',
      ],
    ),
  );

  group.addCommand(
    withExamples(
      new Command('list')
        .description('List groups as a tree of static hierarchies')
        .option('--flat', 'a table instead of a tree')
        .action(async (_o, cmd: Command) => {
          const o = globalsOf<{ flat?: boolean }>(cmd);
          const { items } = await withClient(o, (c) => c.get<DeviceGroupList>('/api/v1/device-groups'));
          output(o, items, (rows) => {
            if (o.flat) {
              printTable(
                rows,
                [
                  ['ID', (g) => g.id],
                  ['NAME', (g) => g.name],
                  ['KIND', (g) => g.kind],
                  ['PARENT', (g) => g.parentId],
                  ['QUERY', (g) => g.query],
                ],
                'no groups yet',
              );
              return;
            }
            if (!rows.length) {
              process.stdout.write(
                color.dim('no groups yet: create one with rampart group create <id>') + '\n',
              );
              return;
            }
            process.stdout.write(groupTree(rows).join('\n') + '\n');
          });
        }),
      ['rampart group list', 'rampart group list --flat', "rampart group list --json | jq -r '.[].id'"],
    ),
  );

  group.addCommand(
    withExamples(
      new Command('show')
        .description('Show a group')
        .argument('<id>', 'group id')
        .action(async (id: string, _o, cmd: Command) => {
          const o = globalsOf(cmd);
          const g = await withClient(o, (c) => c.get<DeviceGroup>(`/api/v1/device-groups/${seg(id)}`));
          output(o, g, (x) => {
            const line = (k: string, v: unknown) =>
              process.stdout.write(`${color.dim(k.padEnd(12))}${v === null || v === '' ? '-' : String(v)}\n`);
            line('id', color.bold(x.id));
            line('name', x.name);
            line('kind', x.kind);
            line('parent', x.parentId);
            line('query', x.query);
            line('description', x.description);
            line('created', x.createdAt);
            line('updated', x.updatedAt);
          });
        }),
      ['rampart group show plant-berlin'],
    ),
  );

  group.addCommand(
    withExamples(
      new Command('update')
        .description('Rename a group, move it, or change the query of a dynamic group')
        .argument('<id>', 'group id')
        .option('--name <name>', 'new display name')
        .option('--description <text>', 'new description')
        .option('--parent <group>', 'move it under this static group')
        .option('--top-level', 'move it to the top level (no parent)')
        .option('--query <query>', 'new fleet query (dynamic groups only)')
        .action(async (id: string, _o, cmd: Command) => {
          const o = globalsOf<{
            name?: string;
            description?: string;
            parent?: string;
            topLevel?: boolean;
            query?: string;
          }>(cmd);
          if (o.parent && o.topLevel) throw new CliError('use either --parent or --top-level', EXIT.usage);
          const body = {
            ...(o.name !== undefined ? { name: o.name } : {}),
            ...(o.description !== undefined ? { description: o.description } : {}),
            ...(o.parent ? { parentId: o.parent } : {}),
            ...(o.topLevel ? { parentId: null } : {}),
            ...(o.query ? { query: o.query } : {}),
          };
          if (Object.keys(body).length === 0) {
            throw new CliError(
              'nothing to change: pass --name, --description, --parent, --top-level or --query',
              EXIT.usage,
            );
          }
          const g = await withClient(o, (c) =>
            c.patch<DeviceGroup>(`/api/v1/device-groups/${seg(id)}`, body),
          );
          output(o, g, (x) => process.stdout.write(`updated group ${color.bold(x.id)}\n`));
        }),
      [
        'rampart group update plant-berlin --parent germany',
        'rampart group update eu-outdoor --query \'attributes.region = "eu"\'',
      ],
    ),
  );

  group.addCommand(
    withExamples(
      new Command('delete')
        .description('Delete a group (refused while it has child groups); its devices stay registered')
        .argument('<id>', 'group id')
        .action(async (id: string, _o, cmd: Command) => {
          const o = globalsOf(cmd);
          const g = await withClient(o, (c) => c.delete<DeviceGroup>(`/api/v1/device-groups/${seg(id)}`));
          output(o, g, (x) => process.stdout.write(`deleted group ${x.id}\n`));
        }),
      ['rampart group delete plant-berlin'],
    ),
  );

  group.addCommand(
    withExamples(
      new Command('add')
        .description('Add devices to a static group')
        .argument('<group>', 'static group id')
        .argument('<devices...>', 'device ids')
        .action(async (groupId: string, devices: string[], _o, cmd: Command) => {
          const o = globalsOf(cmd);
          const r = await withClient(o, (c) =>
            c.post<GroupMembersResult>(`/api/v1/device-groups/${seg(groupId)}/members`, {
              deviceIds: devices,
            }),
          );
          output(o, r, (x) =>
            process.stdout.write(
              `added ${x.added} device${x.added === 1 ? '' : 's'} to ${x.groupId}` +
                (x.alreadyMembers ? ` (${x.alreadyMembers} already in it)` : '') +
                '\n',
            ),
          );
        }),
      [
        'rampart group add plant-berlin door-17 door-18',
        'rampart device list -q \'attributes.site = "berlin"\' --all --json | jq -r ".items[].id" | xargs rampart group add plant-berlin',
      ],
    ),
  );

  group.addCommand(
    withExamples(
      new Command('remove')
        .description('Remove devices from a static group')
        .argument('<group>', 'static group id')
        .argument('<devices...>', 'device ids')
        .action(async (groupId: string, devices: string[], _o, cmd: Command) => {
          const o = globalsOf(cmd);
          const removed = await withClient(o, async (c) => {
            const out: GroupMemberRemoved[] = [];
            for (const d of devices) {
              out.push(
                await c.delete<GroupMemberRemoved>(`/api/v1/device-groups/${seg(groupId)}/members/${seg(d)}`),
              );
            }
            return out;
          });
          output(o, removed, (x) =>
            process.stdout.write(`removed ${x.length} device${x.length === 1 ? '' : 's'} from ${groupId}\n`),
          );
        }),
      ['rampart group remove plant-berlin door-17'],
    ),
  );

  group.addCommand(
    withExamples(
      addListOptions(
        new Command('devices')
          .description(
            'List the devices in a group: members of it and of the groups below it, or the matches of a dynamic group',
          )
          .argument('<group>', 'group id'),
      ).action(async (groupId: string, _o, cmd: Command) =>
        listDevices(cmd, `/api/v1/device-groups/${seg(groupId)}/devices`),
      ),
      [
        'rampart group devices europe --count',
        'rampart group devices eu-outdoor --all --json',
        'rampart group devices europe -q \'status = "active"\'',
      ],
    ),
  );
  return group;
}
