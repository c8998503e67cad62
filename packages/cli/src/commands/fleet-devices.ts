import { createReadStream, statSync } from 'node:fs';
import { extname } from 'node:path';
import { Readable } from 'node:stream';
import { Command, Option } from 'commander';
import {
  DEVICE_STATUSES,
  IMPORT_FORMATS,
  type AttributeIndex,
  type AttributeIndexList,
  type AttributesPatch,
  type Device,
  type ImportFormat,
  type ImportResult,
} from '@rampart/shared/api';
import type { Problem } from '@rampart/shared/problem';
import { globalsOf, withExamples } from '../command.js';
import { shadowCommand } from './shadow.js';
import { deviceCommandCommands } from './device-command.js';
import { deviceProvisioningCommands } from './device-provisioning.js';
import { withClient } from '../connection.js';
import { CliError, EXIT } from '../errors.js';
import { color, output, printJson, printTable, progress, type OutputOptions } from '../output.js';
import {
  ATTR_HELP,
  addListOptions,
  collect,
  listDevices,
  parseAttrs,
  printDevice,
  seg,
  statusColor,
} from './fleet-common.js';

const CONTENT_TYPE: Record<ImportFormat, string> = { csv: 'text/csv', jsonl: 'application/x-ndjson' };
const EXTENSIONS: Record<string, ImportFormat> = { '.csv': 'csv', '.jsonl': 'jsonl', '.ndjson': 'jsonl' };
/** Row errors printed for people; the rest are counted. */
export const MAX_PRINTED_ERRORS = 50;
const UPLOAD_CHUNK = 256 * 1024;

async function readWithProgress(path: string, opts: OutputOptions): Promise<Buffer> {
  let size: number;
  try {
    size = statSync(path).size;
  } catch {
    throw new CliError(`cannot read ${path}: no such file`, EXIT.usage);
  }
  const bar = progress('reading  ', size, opts);
  const chunks: Buffer[] = [];
  try {
    for await (const chunk of createReadStream(path)) {
      chunks.push(chunk as Buffer);
      bar.increment((chunk as Buffer).length);
    }
  } finally {
    bar.stop();
  }
  return Buffer.concat(chunks);
}

/** The file as a stream of slices, moving the progress bar as the connection takes them. */
function uploadStream(data: Buffer, opts: OutputOptions): Readable {
  const bar = progress('uploading', data.length, opts);
  let offset = 0;
  return new Readable({
    read() {
      if (offset >= data.length) {
        bar.stop();
        this.push(null);
        return;
      }
      const end = Math.min(offset + UPLOAD_CHUNK, data.length);
      this.push(data.subarray(offset, end));
      bar.increment(end - offset);
      offset = end;
    },
  });
}

/** `rows[12].attributes.floor` → row 12, field attributes.floor. */
function splitRowField(field: string): [string, string] {
  const m = /^rows\[(\d+)\](?:\.(.*))?$/.exec(field);
  if (m) return [m[1]!, m[2] ?? '(row)'];
  const h = /^header\[(\d+)\]$/.exec(field);
  if (h) return ['header', `column ${h[1]!}`];
  return ['-', field];
}

function printRowErrors(problem: Problem): void {
  const errors = problem.errors ?? [];
  const shown = errors.slice(0, MAX_PRINTED_ERRORS).map((e) => [...splitRowField(e.field), e.message]);
  const rows = [['ROW', 'FIELD', 'PROBLEM'], ...shown];
  const w0 = Math.max(...rows.map((r) => r[0]!.length));
  const w1 = Math.max(...rows.map((r) => r[1]!.length));
  const err = process.stderr;
  err.write(`${color.red('error:')} ${problem.detail ?? problem.title}\n`);
  rows.forEach((r, i) => {
    const text = `  ${r[0]!.padEnd(w0)}  ${r[1]!.padEnd(w1)}  ${r[2]!}\n`;
    err.write(i === 0 ? color.dim(text) : text);
  });
  if (errors.length > MAX_PRINTED_ERRORS) err.write(`  … and ${errors.length - MAX_PRINTED_ERRORS} more\n`);
  err.write(color.dim('fix these rows and run the import again (--dry-run checks without importing)\n'));
}

function deviceCommands(device: Command): void {
  device.addCommand(
    withExamples(
      new Command('create')
        .description('Register a device')
        .requiredOption('--model <model>', 'device model id (must exist)')
        .option('--id <id>', 'device id (default: generated, d-…)')
        .option('--serial <serial>', 'serial number, unique per model')
        .option('--hardware-revision <revision>', 'a hardware revision of the model')
        .option('--attr <name=value>', ATTR_HELP, collect, [])
        .option('--group <group>', 'add it to this static group; repeatable', collect, [])
        .addOption(
          new Option('--status <status>', 'initial status (default pending)').choices([...DEVICE_STATUSES]),
        )
        .action(async (_o, cmd: Command) => {
          const o = globalsOf<{
            model: string;
            id?: string;
            serial?: string;
            hardwareRevision?: string;
            attr: string[];
            group: string[];
            status?: string;
          }>(cmd);
          const attributes = parseAttrs(o.attr);
          const created = await withClient(o, (c) =>
            c.post<Device>('/api/v1/devices', {
              model: o.model,
              ...(o.id ? { id: o.id } : {}),
              ...(o.serial ? { serial: o.serial } : {}),
              ...(o.hardwareRevision ? { hardwareRevision: o.hardwareRevision } : {}),
              ...(o.attr.length ? { attributes } : {}),
              ...(o.group.length ? { groups: o.group } : {}),
              ...(o.status ? { status: o.status } : {}),
            }),
          );
          output(o, created, (d) =>
            process.stdout.write(
              `registered device ${color.bold(d.id)} (${d.model}, ${statusColor(d.status)})\n`,
            ),
          );
        }),
      [
        'rampart device create --model DW100 --serial SN-0001 --attr region=eu --attr floor:=3',
        'rampart device create --model DW100 --id door-17 --hardware-revision rev-b --group berlin --status active',
        'ID=$(rampart device create --model DW100 --json | jq -r .id)',
      ],
    ),
  );

  device.addCommand(
    withExamples(
      addListOptions(
        new Command('list').description('List devices, optionally filtered by a fleet query'),
      ).action(async (_o, cmd: Command) => listDevices(cmd, '/api/v1/devices')),
      [
        'rampart device list',
        'rampart device list --query \'model = "DW100" and attributes.region = "eu"\' --count',
        'rampart device list --query \'status = "quarantined"\' --all --json | jq -r ".items[].id"',
        'rampart device list --limit 50 --cursor k1.ZGV2LTAwNTA',
      ],
    ),
  );

  device.addCommand(
    withExamples(
      new Command('show')
        .description('Show a device, its attributes and the static groups it is in')
        .argument('<id>', 'device id')
        .action(async (id: string, _o, cmd: Command) => {
          const o = globalsOf(cmd);
          const d = await withClient(o, (c) => c.get<Device>(`/api/v1/devices/${seg(id)}`));
          output(o, d, printDevice);
        }),
      ['rampart device show door-17', 'rampart device show door-17 --json | jq .attributes'],
    ),
  );

  device.addCommand(
    withExamples(
      new Command('update')
        .description('Change attributes (merged into the current ones), status, serial or hardware revision')
        .argument('<id>', 'device id')
        .option('--attr <name=value>', ATTR_HELP, collect, [])
        .option('--unset-attr <name>', 'remove this attribute; repeatable', collect, [])
        .addOption(new Option('--status <status>', 'new status').choices([...DEVICE_STATUSES]))
        .option('--serial <serial>', 'new serial number')
        .option('--hardware-revision <revision>', 'new hardware revision of the same model')
        .action(async (id: string, _o, cmd: Command) => {
          const o = globalsOf<{
            attr: string[];
            unsetAttr: string[];
            status?: string;
            serial?: string;
            hardwareRevision?: string;
          }>(cmd);
          const attributes: AttributesPatch = parseAttrs(o.attr);
          for (const name of o.unsetAttr) attributes[name] = null;
          const body = {
            ...(Object.keys(attributes).length ? { attributes } : {}),
            ...(o.status ? { status: o.status } : {}),
            ...(o.serial ? { serial: o.serial } : {}),
            ...(o.hardwareRevision ? { hardwareRevision: o.hardwareRevision } : {}),
          };
          if (Object.keys(body).length === 0) {
            throw new CliError(
              'nothing to change: pass --attr, --unset-attr, --status, --serial or --hardware-revision',
              EXIT.usage,
            );
          }
          const d = await withClient(o, (c) => c.patch<Device>(`/api/v1/devices/${seg(id)}`, body));
          output(o, d, (x) =>
            process.stdout.write(`updated device ${color.bold(x.id)} (${statusColor(x.status)})\n`),
          );
        }),
      [
        'rampart device update door-17 --attr floor:=4 --unset-attr room',
        'rampart device update door-17 --status disabled',
      ],
    ),
  );

  device.addCommand(
    withExamples(
      new Command('delete')
        .description('Delete a device and its group memberships')
        .argument('<id>', 'device id')
        .action(async (id: string, _o, cmd: Command) => {
          const o = globalsOf(cmd);
          const d = await withClient(o, (c) => c.delete<Device>(`/api/v1/devices/${seg(id)}`));
          output(o, d, (x) => process.stdout.write(`deleted device ${x.id}\n`));
        }),
      ['rampart device delete door-17'],
    ),
  );

  device.addCommand(
    withExamples(
      new Command('import')
        .description(
          'Import devices from a CSV or JSON-lines file: every row is checked first, and nothing is imported unless all are valid',
        )
        .argument('<file>', 'the file (.csv, .jsonl or .ndjson)')
        .addOption(
          new Option('--format <format>', 'file format (default: from the file extension)').choices([
            ...IMPORT_FORMATS,
          ]),
        )
        .option('--dry-run', 'check the whole file without importing anything')
        .addHelpText(
          'after',
          `
CSV: a header row with id, model, hardwareRevision, serial, status, groups (";"-separated) and
attributes.<name> columns; values are strings unless the header says attributes.<name>:number or
attributes.<name>:boolean. Empty cells are left out.
  id,model,serial,groups,attributes.region,attributes.floor:number
  door-1,DW100,SN-0001,berlin;eu,eu-central,3

JSON lines: one device per line, as for \`rampart device create --json\`:
  {"id":"door-1","model":"DW100","serial":"SN-0001","attributes":{"floor":3},"groups":["berlin"]}

When rows are invalid, each problem is listed (row numbers count data rows from 1) and the exit code is 2.`,
        )
        .action(async (file: string, _o, cmd: Command) => {
          const o = globalsOf<{ format?: ImportFormat; dryRun?: boolean }>(cmd);
          const format = o.format ?? EXTENSIONS[extname(file).toLowerCase()];
          if (!format) {
            throw new CliError(`cannot tell the format of ${file} from its extension`, EXIT.usage, [
              'pass --format csv or --format jsonl',
            ]);
          }
          const data = await readWithProgress(file, o);
          const { status, body } = await withClient(o, (c) =>
            c.call<ImportResult | Problem>('/api/v1/devices/import', {
              method: 'POST',
              query: { dryRun: Boolean(o.dryRun) },
              // A stream lets the bar follow the upload.
              raw: { contentType: CONTENT_TYPE[format], data: uploadStream(data, o) },
              accept: [400],
            }),
          );
          if (status === 400) {
            const problem = body as Problem;
            if (problem.code !== 'IMPORT_INVALID') {
              throw new CliError(
                problem.detail ?? problem.title,
                EXIT.usage,
                (problem.errors ?? []).map((e) => `${e.field}: ${e.message}`),
              );
            }
            if (o.json) printJson(problem);
            else printRowErrors(problem);
            process.exitCode = EXIT.usage;
            return;
          }
          output(o, body as ImportResult, (r) =>
            process.stdout.write(
              r.dryRun
                ? `${file}: all ${r.imported} devices are valid (dry run: nothing imported)\n`
                : `imported ${color.bold(String(r.imported))} devices from ${file} (sha256 ${r.sha256.slice(0, 16)}…)\n`,
            ),
          );
        }),
      [
        'rampart device import factory-batch-42.csv --dry-run',
        'rampart device import factory-batch-42.csv',
        'rampart device import devices.txt --format jsonl --json',
      ],
    ),
  );

  const index = new Command('index').description(
    'Attribute indexes: make fleet queries on an attribute fast in large fleets',
  );
  index.addCommand(
    withExamples(
      new Command('add')
        .description('Index an attribute')
        .argument('<name>', 'attribute name, e.g. region for attributes.region')
        .action(async (name: string, _o, cmd: Command) => {
          const o = globalsOf(cmd);
          const r = await withClient(o, (c) =>
            c.post<AttributeIndex>('/api/v1/device-attribute-indexes', { name }),
          );
          output(o, r, (x) => process.stdout.write(`indexed attributes.${x.name}\n`));
        }),
      ['rampart device index add region'],
    ),
  );
  index.addCommand(
    withExamples(
      new Command('list').description('List indexed attributes').action(async (_o, cmd: Command) => {
        const o = globalsOf(cmd);
        const { items } = await withClient(o, (c) =>
          c.get<AttributeIndexList>('/api/v1/device-attribute-indexes'),
        );
        output(o, items, (rows) =>
          printTable(
            rows,
            [
              ['ATTRIBUTE', (r) => r.name],
              ['CREATED', (r) => r.createdAt],
            ],
            'no attribute indexes',
          ),
        );
      }),
      ['rampart device index list'],
    ),
  );
  index.addCommand(
    withExamples(
      new Command('remove')
        .description('Drop the index on an attribute (queries keep working, slower)')
        .argument('<name>', 'attribute name')
        .action(async (name: string, _o, cmd: Command) => {
          const o = globalsOf(cmd);
          const r = await withClient(o, (c) =>
            c.delete<AttributeIndex>(`/api/v1/device-attribute-indexes/${seg(name)}`),
          );
          output(o, r, (x) => process.stdout.write(`dropped the index on attributes.${x.name}\n`));
        }),
      ['rampart device index remove region'],
    ),
  );
  device.addCommand(index);
}

/** `rampart device`: the device registry. */
export function deviceCommand(): Command {
  const device = new Command('device').description(
    'Devices: register, list by fleet query, update, import in bulk, index attributes, trace and decommission',
  );
  deviceCommands(device);
  device.addCommand(shadowCommand());
  for (const c of deviceCommandCommands()) device.addCommand(c);
  for (const c of deviceProvisioningCommands()) device.addCommand(c);
  return device;
}
