import { Command } from 'commander';
import type { DeviceModel, DeviceModelList } from '@rampart/shared/api';
import { globalsOf, withExamples } from '../command.js';
import { withClient } from '../connection.js';
import { CliError, EXIT } from '../errors.js';
import { color, output, printTable } from '../output.js';
import { collect, seg } from './fleet-common.js';

function printModel(m: DeviceModel): void {
  process.stdout.write(
    `${color.bold(m.id)}  ${m.name}\n` +
      (m.description ? `${m.description}\n` : '') +
      `updates: ${m.encryptUpdates ? 'encrypted (every release for this model)' : 'not encrypted'}\n` +
      color.dim(`created ${m.createdAt}, updated ${m.updatedAt}\n\n`),
  );
  printTable(
    m.hardwareRevisions,
    [
      ['REVISION', (r) => r.revision],
      ['DESCRIPTION', (r) => r.description],
      ['ADDED', (r) => r.createdAt],
    ],
    'no hardware revisions',
  );
}

/** `rampart model`: device models and their hardware revisions. */
export function modelCommand(): Command {
  const model = new Command('model').description('Device models and their hardware revisions');

  model.addCommand(
    withExamples(
      new Command('create')
        .description('Create a device model')
        .argument('<id>', 'model id, e.g. DW100 (letters, digits, ".", "_", "-")')
        .option('--name <name>', 'display name (default: the id)')
        .option('--description <text>', 'what the model is')
        .option('--revision <revision>', 'a hardware revision of the model; repeatable', collect, [])
        .option(
          '--encrypt-updates',
          'encrypt every release for this model (AES-256-GCM; devices need an EC P-256/P-384 key and the software trust anchor)',
        )
        .action(async (id: string, _o, cmd: Command) => {
          const o = globalsOf<{
            name?: string;
            description?: string;
            revision: string[];
            encryptUpdates?: boolean;
          }>(cmd);
          const created = await withClient(o, (c) =>
            c.post<DeviceModel>('/api/v1/device-models', {
              id,
              ...(o.name ? { name: o.name } : {}),
              ...(o.description ? { description: o.description } : {}),
              ...(o.revision.length
                ? { hardwareRevisions: o.revision.map((revision) => ({ revision })) }
                : {}),
              ...(o.encryptUpdates ? { encryptUpdates: true } : {}),
            }),
          );
          output(o, created, (m) =>
            process.stdout.write(
              `created device model ${color.bold(m.id)}` +
                (m.hardwareRevisions.length
                  ? ` with revisions ${m.hardwareRevisions.map((r) => r.revision).join(', ')}`
                  : '') +
                '\n',
            ),
          );
        }),
      [
        'rampart model create DW100 --name "Door sensor" --revision rev-a --revision rev-b',
        'rampart model create GW-2 --description "LTE gateway" --json',
        'rampart model create DW300 --encrypt-updates',
      ],
    ),
  );

  model.addCommand(
    withExamples(
      new Command('list').description('List device models').action(async (_o, cmd: Command) => {
        const o = globalsOf(cmd);
        const { items } = await withClient(o, (c) => c.get<DeviceModelList>('/api/v1/device-models'));
        output(o, items, (rows) =>
          printTable(
            rows,
            [
              ['ID', (m) => m.id],
              ['NAME', (m) => m.name],
              ['REVISIONS', (m) => m.hardwareRevisions.map((r) => r.revision).join(', ')],
              ['ENCRYPTED', (m) => (m.encryptUpdates ? 'yes' : 'no')],
              ['DESCRIPTION', (m) => m.description],
              ['CREATED', (m) => m.createdAt],
            ],
            'no device models yet: create one with rampart model create <id>',
          ),
        );
      }),
      ['rampart model list', "rampart model list --json | jq -r '.[].id'"],
    ),
  );

  model.addCommand(
    withExamples(
      new Command('show')
        .description('Show a device model and its hardware revisions')
        .argument('<id>', 'model id')
        .action(async (id: string, _o, cmd: Command) => {
          const o = globalsOf(cmd);
          const m = await withClient(o, (c) => c.get<DeviceModel>(`/api/v1/device-models/${seg(id)}`));
          output(o, m, printModel);
        }),
      ['rampart model show DW100'],
    ),
  );

  model.addCommand(
    withExamples(
      new Command('update')
        .description('Change the name, the description or the update encryption of a device model')
        .argument('<id>', 'model id')
        .option('--name <name>', 'new display name')
        .option('--description <text>', 'new description')
        .option(
          '--encrypt-updates',
          'encrypt releases created from now on for this model (AES-256-GCM, key wrapped to each device)',
        )
        .option('--no-encrypt-updates', 'stop requiring encryption for new releases of this model')
        .action(async (id: string, _o, cmd: Command) => {
          const o = globalsOf<{ name?: string; description?: string; encryptUpdates?: boolean }>(cmd);
          if (o.name === undefined && o.description === undefined && o.encryptUpdates === undefined) {
            throw new CliError(
              'nothing to change: pass --name, --description, --encrypt-updates or --no-encrypt-updates',
              EXIT.usage,
            );
          }
          const m = await withClient(o, (c) =>
            c.patch<DeviceModel>(`/api/v1/device-models/${seg(id)}`, {
              ...(o.name !== undefined ? { name: o.name } : {}),
              ...(o.description !== undefined ? { description: o.description } : {}),
              ...(o.encryptUpdates !== undefined ? { encryptUpdates: o.encryptUpdates } : {}),
            }),
          );
          output(o, m, (x) =>
            process.stdout.write(
              `updated device model ${color.bold(x.id)} (${x.name}${x.encryptUpdates ? ', updates encrypted' : ''})\n`,
            ),
          );
        }),
      [
        'rampart model update DW100 --name "Door sensor v1" --description "battery powered"',
        'rampart model update DW100 --encrypt-updates',
        'rampart model update DW100 --no-encrypt-updates',
      ],
    ),
  );

  model.addCommand(
    withExamples(
      new Command('delete')
        .description('Delete a device model and its revisions (refused while devices use it)')
        .argument('<id>', 'model id')
        .action(async (id: string, _o, cmd: Command) => {
          const o = globalsOf(cmd);
          const m = await withClient(o, (c) => c.delete<DeviceModel>(`/api/v1/device-models/${seg(id)}`));
          output(o, m, (x) => process.stdout.write(`deleted device model ${x.id}\n`));
        }),
      ['rampart model delete DW100'],
    ),
  );

  const revision = new Command('revision').description('Hardware revisions of a device model');
  revision.addCommand(
    withExamples(
      new Command('add')
        .description('Add a hardware revision to a device model')
        .argument('<model>', 'model id')
        .argument('<revision>', 'revision name, e.g. rev-c')
        .option('--description <text>', 'what changed in this revision')
        .action(async (modelId: string, rev: string, _o, cmd: Command) => {
          const o = globalsOf<{ description?: string }>(cmd);
          const m = await withClient(o, (c) =>
            c.post<DeviceModel>(`/api/v1/device-models/${seg(modelId)}/hardware-revisions`, {
              revision: rev,
              ...(o.description ? { description: o.description } : {}),
            }),
          );
          output(o, m, (x) => process.stdout.write(`added hardware revision ${rev} to ${x.id}\n`));
        }),
      ['rampart model revision add DW100 rev-c --description "new antenna"'],
    ),
  );
  revision.addCommand(
    withExamples(
      new Command('remove')
        .description('Remove a hardware revision (refused while devices have it)')
        .argument('<model>', 'model id')
        .argument('<revision>', 'revision name')
        .action(async (modelId: string, rev: string, _o, cmd: Command) => {
          const o = globalsOf(cmd);
          const m = await withClient(o, (c) =>
            c.delete<DeviceModel>(`/api/v1/device-models/${seg(modelId)}/hardware-revisions/${seg(rev)}`),
          );
          output(o, m, (x) => process.stdout.write(`removed hardware revision ${rev} from ${x.id}\n`));
        }),
      ['rampart model revision remove DW100 rev-a'],
    ),
  );
  model.addCommand(revision);
  return model;
}
