import { createHash } from 'node:crypto';
import { parse as parseCsv } from 'csv-parse/sync';
import {
  CreateDeviceBody,
  IMPORT_ATTRIBUTE_TYPES,
  IMPORT_CSV_COLUMNS,
  type Attributes,
  type ImportFormat,
  type ImportResult,
} from '@rampart/shared/api';
import { fieldErrors } from '@rampart/shared/schema';
import { RampartError, type FieldProblem } from '../errors.js';
import { chunks, type Executor } from '../storage/index.js';
import type { Insertable } from 'kysely';
import type { DevicesTable, DeviceGroupMembersTable } from '../storage/schema.js';
import { isoNow } from '../time.js';
import { ATTRIBUTE_NAME_RE, generateDeviceId, isUniqueViolation } from './devices.js';

/** At most this many row errors are returned; the detail says how many rows failed in all. */
export const MAX_REPORTED_ERRORS = 1000;
/** Rows per INSERT: 9 columns × 1000 rows stays far below PostgreSQL's 65535 bind parameters. */
const INSERT_BATCH = 1000;
const MEMBER_BATCH = 2000;
/** Values per `in (...)` lookup of existing ids and serials. */
const LOOKUP_CHUNK = 2000;

/** Numbers in CSV cells: decimal notation only (no hex, no `Infinity`). */
const DECIMAL = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

/** One row of an import file after parsing, before validation. */
interface ParsedRow {
  /** 1-based number of the data row (header and blank lines not counted). */
  n: number;
  value: unknown;
  errors: FieldProblem[];
}

/** A validated device, ready to insert. */
export interface PreparedDevice {
  id: string;
  model: string;
  hardwareRevision: string | null;
  serial: string | null;
  attributes: Attributes;
  status: string;
  groups: string[];
}

export interface PreparedImport {
  format: ImportFormat;
  sha256: string;
  devices: PreparedDevice[];
}

export function sha256Hex(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

// ---------------------------------------------------------------------------------------------
// Parsing

function parseJsonLines(text: string): ParsedRow[] {
  const rows: ParsedRow[] = [];
  let n = 0;
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    n++;
    try {
      const value = JSON.parse(line) as unknown;
      if (value === null || typeof value !== 'object' || Array.isArray(value)) {
        rows.push({
          n,
          value: null,
          errors: [{ field: '', message: 'must be a JSON object describing one device' }],
        });
      } else {
        rows.push({ n, value, errors: [] });
      }
    } catch (err) {
      rows.push({
        n,
        value: null,
        errors: [{ field: '', message: `is not valid JSON: ${(err as Error).message}` }],
      });
    }
  }
  return rows;
}

type AttributeType = (typeof IMPORT_ATTRIBUTE_TYPES)[number];
type Column =
  | { kind: 'field'; name: (typeof IMPORT_CSV_COLUMNS)[number] }
  | { kind: 'attribute'; name: string; type: AttributeType };

function invalidFile(message: string, errors: FieldProblem[]): RampartError {
  return new RampartError('IMPORT_INVALID', message, errors);
}

function parseHeader(header: string[]): Column[] {
  const problems: FieldProblem[] = [];
  const seen = new Set<string>();
  const columns = header.map((raw, i): Column => {
    const text = raw.trim();
    const field = `header[${i + 1}]`;
    let column: Column | null = null;
    if ((IMPORT_CSV_COLUMNS as readonly string[]).includes(text)) {
      column = { kind: 'field', name: text as (typeof IMPORT_CSV_COLUMNS)[number] };
    } else if (text.startsWith('attributes.')) {
      const [name = '', type = 'string', ...rest] = text.slice('attributes.'.length).split(':');
      if (!ATTRIBUTE_NAME_RE.test(name) || rest.length) {
        problems.push({
          field,
          message: `${JSON.stringify(text)} is not a valid attribute column; write attributes.<name> or attributes.<name>:<type>`,
        });
      } else if (!(IMPORT_ATTRIBUTE_TYPES as readonly string[]).includes(type)) {
        problems.push({
          field,
          message: `${JSON.stringify(text)} has unknown type ${JSON.stringify(type)}; use string, number or boolean`,
        });
      } else {
        column = { kind: 'attribute', name, type: type as AttributeType };
      }
    } else {
      problems.push({
        field,
        message: `${JSON.stringify(text)} is not a known column; use ${IMPORT_CSV_COLUMNS.join(', ')} or attributes.<name>[:string|number|boolean]`,
      });
    }
    if (column) {
      const key = column.kind === 'field' ? column.name : `attributes.${column.name}`;
      if (seen.has(key)) problems.push({ field, message: `column ${key} appears more than once` });
      seen.add(key);
    }
    return column ?? { kind: 'field', name: 'id' };
  });
  if (!problems.length && !seen.has('model')) {
    problems.push({ field: 'header', message: 'has no model column; every device needs a model' });
  }
  if (problems.length) {
    throw invalidFile(
      `the CSV header has ${problems.length} problem${problems.length === 1 ? '' : 's'}; nothing was imported`,
      problems,
    );
  }
  return columns;
}

function parseCsvRows(text: string): ParsedRow[] {
  let records: string[][];
  try {
    records = parseCsv(text, {
      bom: true,
      trim: true,
      skip_empty_lines: true,
      relax_column_count: true,
    }) as string[][];
  } catch (err) {
    const e = err as Error & { records?: number };
    const row = typeof e.records === 'number' ? Math.max(e.records, 1) : 1;
    throw invalidFile(`the file is not valid CSV: ${e.message}; nothing was imported`, [
      { field: `rows[${row}]`, message: e.message },
    ]);
  }
  const [header, ...data] = records;
  if (!header) return [];
  const columns = parseHeader(header);
  return data.map((cells, i) => {
    const n = i + 1;
    const errors: FieldProblem[] = [];
    if (cells.length !== columns.length) {
      errors.push({ field: '', message: `has ${cells.length} fields but the header has ${columns.length}` });
      return { n, value: null, errors };
    }
    const value: Record<string, unknown> = {};
    let attributes: Record<string, unknown> | undefined;
    columns.forEach((col, c) => {
      const cell = cells[c] ?? '';
      if (cell === '') return;
      if (col.kind === 'field') {
        if (col.name === 'groups') {
          const groups = cell
            .split(';')
            .map((g) => g.trim())
            .filter((g) => g !== '');
          if (groups.length) value.groups = groups;
        } else {
          value[col.name] = cell;
        }
        return;
      }
      attributes ??= {};
      if (col.type === 'string') attributes[col.name] = cell;
      else if (col.type === 'number') {
        const num = DECIMAL.test(cell) ? Number(cell) : NaN;
        if (Number.isFinite(num)) attributes[col.name] = num;
        else
          errors.push({
            field: `attributes.${col.name}`,
            message: `must be a number (got ${JSON.stringify(cell)})`,
          });
      } else {
        const lower = cell.toLowerCase();
        if (lower === 'true' || lower === 'false') attributes[col.name] = lower === 'true';
        else
          errors.push({
            field: `attributes.${col.name}`,
            message: `must be true or false (got ${JSON.stringify(cell)})`,
          });
      }
    });
    if (attributes) value.attributes = attributes;
    return { n, value, errors };
  });
}

// ---------------------------------------------------------------------------------------------

/**
 * Bulk import of devices from CSV or JSON lines: every row is validated before anything is written,
 * then all devices are inserted in one transaction, in multi-row batches.
 */
export class DeviceImporter {
  /** Parse and validate a whole file; throws IMPORT_INVALID listing every bad row. */
  async prepare(db: Executor, text: string, format: ImportFormat, sha256: string): Promise<PreparedImport> {
    const rows = format === 'csv' ? parseCsvRows(text) : parseJsonLines(text);
    if (rows.length === 0) {
      throw invalidFile('the file contains no devices; nothing was imported', [
        { field: '(body)', message: format === 'csv' ? 'has no data rows after the header' : 'has no lines' },
      ]);
    }

    const [models, revisions, groups] = await Promise.all([
      db.selectFrom('device_models').select('id').execute(),
      db.selectFrom('hardware_revisions').select(['model_id', 'revision']).execute(),
      db.selectFrom('device_groups').select(['id', 'query']).execute(),
    ]);
    const modelIds = new Set(models.map((m) => m.id));
    const revisionKeys = new Set(revisions.map((r) => `${r.model_id}\u0000${r.revision}`));
    const groupKinds = new Map(groups.map((g) => [g.id, g.query === null ? 'static' : 'dynamic']));

    // Check every row completely, so that one pass over the report fixes the file. A field with a
    // schema error is not checked further; the rest of its row still is.
    const idRows = new Map<string, ParsedRow>();
    const serialRows = new Map<string, ParsedRow>();
    const accepted: { row: ParsedRow; body: CreateDeviceBody }[] = [];
    for (const row of rows) {
      if (row.value === null) continue;
      for (const e of fieldErrors(CreateDeviceBody, row.value)) {
        row.errors.push({ field: e.field === '(body)' ? '' : e.field, message: e.message });
      }
      const bad = new Set(row.errors.map((e) => e.field.split('.')[0]));
      if (bad.has('')) continue;
      const body = row.value as CreateDeviceBody;
      const modelOk = !bad.has('model') && modelIds.has(body.model);
      if (!bad.has('model') && !modelOk) {
        row.errors.push({ field: 'model', message: `device model ${body.model} does not exist` });
      }
      if (
        modelOk &&
        !bad.has('hardwareRevision') &&
        body.hardwareRevision !== undefined &&
        !revisionKeys.has(`${body.model}\u0000${body.hardwareRevision}`)
      ) {
        row.errors.push({
          field: 'hardwareRevision',
          message: `${body.hardwareRevision} is not a hardware revision of device model ${body.model}`,
        });
      }
      if (!bad.has('groups')) {
        (body.groups ?? []).forEach((g, i) => {
          const kind = groupKinds.get(g);
          const field = format === 'csv' ? 'groups' : `groups.${i}`;
          if (!kind) row.errors.push({ field, message: `group ${g} does not exist` });
          else if (kind === 'dynamic')
            row.errors.push({ field, message: `group ${g} is dynamic; devices cannot be added to it` });
        });
      }
      if (!bad.has('id') && body.id !== undefined) {
        const first = idRows.get(body.id);
        if (first) row.errors.push({ field: 'id', message: `duplicates the id of row ${first.n}` });
        else idRows.set(body.id, row);
      }
      if (modelOk && !bad.has('serial') && body.serial !== undefined) {
        const key = `${body.model}\u0000${body.serial}`;
        const first = serialRows.get(key);
        if (first) {
          row.errors.push({
            field: 'serial',
            message: `duplicates the serial of row ${first.n} (same model ${body.model})`,
          });
        } else serialRows.set(key, row);
      }
      accepted.push({ row, body });
    }

    // What is already registered: ids and (model, serial) pairs, looked up in chunks.
    for (const part of chunks([...idRows.keys()], LOOKUP_CHUNK)) {
      const found = await db.selectFrom('devices').select('id').where('id', 'in', part).execute();
      for (const f of found) {
        idRows.get(f.id)?.errors.push({ field: 'id', message: `device ${f.id} is already registered` });
      }
    }
    const serialsByModel = new Map<string, Map<string, ParsedRow>>();
    for (const [key, row] of serialRows) {
      const [model = '', serial = ''] = key.split('\u0000');
      const m = serialsByModel.get(model) ?? new Map<string, ParsedRow>();
      m.set(serial, row);
      serialsByModel.set(model, m);
    }
    for (const [model, serials] of serialsByModel) {
      for (const part of chunks([...serials.keys()], LOOKUP_CHUNK)) {
        const found = await db
          .selectFrom('devices')
          .select(['id', 'serial'])
          .where('model_id', '=', model)
          .where('serial', 'in', part)
          .execute();
        for (const f of found) {
          serials.get(f.serial!)?.errors.push({
            field: 'serial',
            message: `device model ${model} already has a device with serial ${f.serial!} (${f.id})`,
          });
        }
      }
    }

    const failed = rows.filter((r) => r.errors.length);
    if (failed.length) {
      const errors = failed.flatMap((r) =>
        r.errors.map((e) => ({
          field: e.field ? `rows[${r.n}].${e.field}` : `rows[${r.n}]`,
          message: e.message,
        })),
      );
      const listed =
        errors.length > MAX_REPORTED_ERRORS ? `; the first ${MAX_REPORTED_ERRORS} errors are listed` : '';
      throw invalidFile(
        `${failed.length} of ${rows.length} row${rows.length === 1 ? '' : 's'} ${failed.length === 1 ? 'is' : 'are'} invalid; nothing was imported${listed}`,
        errors.slice(0, MAX_REPORTED_ERRORS),
      );
    }
    return {
      format,
      sha256,
      devices: accepted.map(({ body }) => ({
        id: body.id ?? generateDeviceId(),
        model: body.model,
        hardwareRevision: body.hardwareRevision ?? null,
        serial: body.serial ?? null,
        attributes: body.attributes ?? {},
        status: body.status ?? 'pending',
        groups: [...new Set(body.groups ?? [])],
      })),
    };
  }

  /** Insert prepared devices and their group memberships (call inside a transaction). */
  async insert(db: Executor, prepared: PreparedImport): Promise<number> {
    const now = isoNow();
    try {
      for (const part of chunks(prepared.devices, INSERT_BATCH)) {
        await db
          .insertInto('devices')
          .values(
            part.map((d): Insertable<DevicesTable> => ({
              id: d.id,
              model_id: d.model,
              hardware_revision: d.hardwareRevision,
              serial: d.serial,
              attributes: JSON.stringify(d.attributes),
              status: d.status,
              created_at: now,
              updated_at: now,
              status_changed_at: now,
            })),
          )
          .execute();
      }
    } catch (err) {
      if (isUniqueViolation(err)) {
        throw new RampartError(
          'CONFLICT',
          'a device id or serial in the file was registered by someone else while the import ran; nothing was imported, run it again',
        );
      }
      throw err;
    }
    const members: Insertable<DeviceGroupMembersTable>[] = [];
    for (const d of prepared.devices) {
      for (const g of d.groups) members.push({ group_id: g, device_id: d.id, added_at: now });
    }
    for (const part of chunks(members, MEMBER_BATCH)) {
      await db.insertInto('device_group_members').values(part).execute();
    }
    return prepared.devices.length;
  }

  /** Validate, and unless `dryRun`, insert. `db` must be a transaction when not a dry run. */
  async run(
    db: Executor,
    input: { text: string; format: ImportFormat; sha256: string; dryRun: boolean },
  ): Promise<ImportResult> {
    const prepared = await this.prepare(db, input.text, input.format, input.sha256);
    const imported = input.dryRun ? prepared.devices.length : await this.insert(db, prepared);
    return { imported, dryRun: input.dryRun, format: input.format, sha256: input.sha256 };
  }
}
