import { Option, type Command } from 'commander';
import type { Attributes, Device, DeviceList } from '@rampart/shared/api';
import { collect, globalsOf, type GlobalOptions } from '../command.js';
import { withClient, type ApiClient } from '../connection.js';
import { CliError, EXIT } from '../errors.js';
import { color, output, printTable, progress } from '../output.js';

export { collect };

/** Path segment for a URL: ids are validated by the server, but never let one change the path. */
export const seg = (s: string) => encodeURIComponent(s);

export const ATTR_HELP =
  'attribute: name=value sets a string; name:=value sets a JSON value (name:=3, name:=true, name:="3"); repeatable';

/**
 * Parse `--attr` options: `k=v` is the string "v"; `k:=v` is JSON (a number, boolean or quoted string).
 * Everything up to the first `=` is the name.
 */
export function parseAttrs(specs: readonly string[]): Attributes {
  const out: Attributes = {};
  for (const spec of specs) {
    const eq = spec.indexOf('=');
    if (eq <= 0) {
      throw new CliError(`--attr ${JSON.stringify(spec)} is not name=value or name:=json`, EXIT.usage, [
        'examples: --attr region=eu --attr floor:=3 --attr outdoor:=true',
      ]);
    }
    let name = spec.slice(0, eq);
    const raw = spec.slice(eq + 1);
    if (name.endsWith(':')) {
      name = name.slice(0, -1);
      let value: unknown;
      try {
        value = JSON.parse(raw);
      } catch {
        throw new CliError(`--attr ${name}:=${raw}: ${JSON.stringify(raw)} is not a JSON value`, EXIT.usage, [
          'use a number (3, 2.5), true/false, or a quoted string ("3"); for plain text write name=value',
        ]);
      }
      if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'boolean') {
        throw new CliError(`--attr ${name}: attributes are strings, numbers or booleans`, EXIT.usage);
      }
      out[name] = value;
    } else {
      out[name] = raw;
    }
  }
  return out;
}

export function formatAttributes(attributes: Attributes): string {
  return Object.entries(attributes)
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ');
}

export function statusColor(status: string): string {
  switch (status) {
    case 'active':
      return color.green(status);
    case 'pending':
      return color.cyan(status);
    case 'quarantined':
      return color.red(status);
    default:
      return color.yellow(status);
  }
}

export function printDevices(items: readonly Device[]): void {
  printTable(
    items,
    [
      ['ID', (d) => d.id],
      ['MODEL', (d) => d.model],
      ['REVISION', (d) => d.hardwareRevision],
      ['SERIAL', (d) => d.serial],
      ['STATUS', (d) => statusColor(d.status)],
      ['ATTRIBUTES', (d) => formatAttributes(d.attributes)],
    ],
    'no devices match',
  );
}

export function printDevice(d: Device): void {
  const line = (k: string, v: unknown) =>
    process.stdout.write(
      `${color.dim(k.padEnd(18))}${v === null || v === undefined || v === '' ? '-' : String(v)}\n`,
    );
  line('id', color.bold(d.id));
  line('model', d.model);
  line('hardware revision', d.hardwareRevision);
  line('serial', d.serial);
  line('status', `${statusColor(d.status)} (since ${d.statusChangedAt})`);
  line('groups', (d.groups ?? []).join(', '));
  line('created', d.createdAt);
  line('updated', d.updatedAt);
  const attrs = Object.entries(d.attributes);
  if (!attrs.length) line('attributes', '-');
  else process.stdout.write(color.dim('attributes') + '\n');
  for (const [k, v] of attrs) process.stdout.write(`  ${k} = ${JSON.stringify(v)}\n`);
}

/** Options of `device list` and `group devices`. */
export function addListOptions(cmd: Command): Command {
  return cmd
    .option('-q, --query <query>', 'fleet query, e.g. \'model = "DW100" and attributes.region = "eu"\'')
    .addOption(
      new Option('--limit <n>', 'devices per page (1-1000; default 100, or 1000 with --all)').argParser((v) =>
        positiveInt(v, '--limit', 1000),
      ),
    )
    .option('--cursor <cursor>', 'continue after a previous page (its nextCursor)')
    .option('--all', 'follow the cursors and return every matching device')
    .option('--count', 'also report how many devices match');
}

export function positiveInt(value: string, flag: string, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > max) {
    throw new CliError(
      `${flag} must be a whole number from 1 to ${max} (got ${JSON.stringify(value)})`,
      EXIT.usage,
    );
  }
  return n;
}

interface ListOpts {
  query?: string;
  limit?: number;
  cursor?: string;
  all?: boolean;
  count?: boolean;
}

/** List devices from `path` (a device list endpoint): one page, or every page with --all. */
export async function listDevices(cmd: Command, path: string): Promise<void> {
  const o = globalsOf<ListOpts>(cmd);
  const result = await withClient(o, (c) => fetchDevices(c, path, o));
  output(o, result, (r) => {
    printDevices(r.items);
    const notes: string[] = [];
    if (r.total !== undefined) notes.push(`${r.total} device${r.total === 1 ? ' matches' : 's match'}`);
    if (r.nextCursor) {
      notes.push(`more: add --cursor ${r.nextCursor} (or --all)`);
    }
    if (notes.length) process.stdout.write(color.dim(notes.join('; ')) + '\n');
  });
}

async function fetchDevices(c: ApiClient, path: string, o: ListOpts & GlobalOptions): Promise<DeviceList> {
  const limit = o.limit ?? (o.all ? 1000 : 100);
  const query = (cursor: string | undefined, count: boolean) => ({
    limit,
    ...(o.query ? { query: o.query } : {}),
    ...(cursor ? { cursor } : {}),
    ...(count ? { count: true } : {}),
  });
  if (!o.all) return c.get<DeviceList>(path, query(o.cursor, Boolean(o.count)));

  // Every page: the total from the first page drives the progress bar.
  const first = await c.get<DeviceList>(path, query(o.cursor, true));
  const bar = progress('fetching devices', first.total ?? 0, o);
  const items = [...first.items];
  bar.increment(first.items.length);
  let cursor = first.nextCursor;
  try {
    while (cursor) {
      const page = await c.get<DeviceList>(path, query(cursor, false));
      items.push(...page.items);
      bar.increment(page.items.length);
      cursor = page.nextCursor;
    }
  } finally {
    bar.stop();
  }
  return { items, nextCursor: null, ...(o.count ? { total: first.total ?? items.length } : {}) };
}
