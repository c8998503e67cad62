import { createHash } from 'node:crypto';
import { sql, type RawBuilder } from 'kysely';
import { isAttributeName } from '@rampart/shared/fleet-query';
import { conflict, invalid, notFound } from '../errors.js';
import type { Db, Executor, SqlDialect } from '../storage/index.js';
import { isoNow } from '../time.js';

/*
 * Attribute indexes are expression indexes on one attribute of `devices.attributes`. A database only
 * uses an expression index for a query whose expression is the same as the index's, with the JSON
 * path written as a literal: a bound parameter (`json_extract(attributes, ?)`) never matches. So the
 * attribute name is embedded as an SQL literal, in the index and in fleet queries alike, and only
 * after it has been checked against the attribute name pattern (letters, digits, `_`, `-`), which
 * leaves no room for quotes. Values are always bound parameters.
 */

/*
 * Each index also holds the device id after the attribute: fleet queries page in id order, so for
 * `attributes.region = "eu"` the database walks the "eu" entries already sorted by id and stops after
 * one page, instead of sorting every match.
 */

export const MAX_ATTRIBUTE_INDEXES = 64;
const INDEX_PREFIX = 'devices_attr_';
/** PostgreSQL truncates identifiers longer than this; SQLite has no limit, but names stay the same in both. */
const MAX_IDENTIFIER_LENGTH = 63;

export interface AttributeIndexInfo {
  name: string;
  createdAt: string;
}

function assertAttributeName(name: string): void {
  if (!isAttributeName(name)) {
    throw invalid(
      'name',
      'must be an attribute name: letters, digits, "_" and "-", starting with a letter or "_", at most 64 characters',
    );
  }
}

/**
 * The text of attribute `name` as `->>`/`json_extract` give it, whatever its JSON type:
 * SQLite `json_extract(attributes, '$.name')`, PostgreSQL `(attributes->>'name')`.
 * `qualified` prefixes the column with its table (in queries); index definitions use the bare column.
 */
export function attributeTextExpression(
  dialect: SqlDialect,
  name: string,
  qualified = true,
): RawBuilder<unknown> {
  assertAttributeName(name);
  const column = sql.ref(qualified ? 'devices.attributes' : 'attributes');
  return dialect === 'sqlite'
    ? sql`json_extract(${column}, ${sql.lit(`$.${name}`)})`
    : sql`(${column}->>${sql.lit(name)})`;
}

/**
 * The value of attribute `name` when it is a JSON string, NULL otherwise: the expression attribute
 * indexes are built on, and the one string comparisons use, so that `attributes.floor = "3"` never
 * matches the number 3. SQLite's `json_extract` already yields text only for JSON strings; on
 * PostgreSQL the type test is part of the expression, which also gives the planner statistics on
 * exactly what is compared (a separate `jsonb_typeof` condition made it misjudge selectivity and
 * sort every match instead of reading one page from the index).
 */
export function attributeStringExpression(
  dialect: SqlDialect,
  name: string,
  qualified = true,
): RawBuilder<unknown> {
  const text = attributeTextExpression(dialect, name, qualified);
  if (dialect === 'sqlite') return text;
  const column = sql.ref(qualified ? 'devices.attributes' : 'attributes');
  return sql`(case when jsonb_typeof(${column}->${sql.lit(name)}) = 'string' then ${text} end)`;
}

/**
 * Name of the index on attribute `name`: `devices_attr_<name>` for lower-case names that fit; other
 * names are lower-cased, `-` becomes `_`, and a digest of the exact name keeps them distinct (`Region`
 * and `region` are different attributes).
 */
export function attributeIndexName(name: string): string {
  assertAttributeName(name);
  const plain = INDEX_PREFIX + name;
  if (/^[a-z0-9_]+$/.test(name) && plain.length <= MAX_IDENTIFIER_LENGTH) return plain;
  const digest = createHash('sha256').update(name).digest('hex').slice(0, 8);
  const base = name.toLowerCase().replace(/-/g, '_');
  return `${INDEX_PREFIX}${base.slice(0, MAX_IDENTIFIER_LENGTH - INDEX_PREFIX.length - digest.length - 1)}_${digest}`;
}

export async function listAttributeIndexes(db: Executor): Promise<AttributeIndexInfo[]> {
  const rows = await db.selectFrom('attribute_indexes').selectAll().orderBy('name').execute();
  return rows.map((r) => ({ name: r.name, createdAt: r.created_at }));
}

/**
 * Declare attribute `name` as often queried: build an expression index on it and record it. On
 * PostgreSQL outside a transaction the index is built concurrently, so that device writes go on
 * while it is built. Throws VALIDATION for a bad name, CONFLICT when it is already indexed.
 */
export async function createAttributeIndex(
  db: Db,
  dialect: SqlDialect,
  name: string,
): Promise<AttributeIndexInfo> {
  assertAttributeName(name);
  const indexName = attributeIndexName(name);
  const existing = await listAttributeIndexes(db);
  if (existing.some((i) => i.name === name)) throw conflict(`attribute "${name}" is already indexed`);
  const clash = existing.find((i) => attributeIndexName(i.name) === indexName);
  if (clash)
    throw conflict(`attribute "${name}" would share index ${indexName} with attribute "${clash.name}"`);
  if (existing.length >= MAX_ATTRIBUTE_INDEXES) {
    throw invalid('name', `cannot be indexed: at most ${MAX_ATTRIBUTE_INDEXES} attributes can be indexed`);
  }

  const info: AttributeIndexInfo = { name, createdAt: isoNow() };
  const expression = attributeStringExpression(dialect, name, false);
  const record = (e: Executor) =>
    e
      .insertInto('attribute_indexes')
      .values({ name, created_at: info.createdAt })
      .onConflict((oc) => oc.column('name').doNothing())
      .execute();

  if (dialect === 'postgres' && !db.isTransaction) {
    try {
      await sql`create index concurrently if not exists ${sql.id(indexName)} on devices (${expression}, id)`.execute(
        db,
      );
    } catch (err) {
      // A failed concurrent build leaves an invalid index behind; remove it so that a retry rebuilds it.
      await sql`drop index concurrently if exists ${sql.id(indexName)}`.execute(db).catch(() => undefined);
      throw err;
    }
    await record(db);
    // Statistics on the new expression let the planner see how selective a value is.
    await sql`analyze devices`.execute(db);
    return info;
  }

  const build = async (e: Executor) => {
    await sql`create index if not exists ${sql.id(indexName)} on devices (${expression}, id)`.execute(e);
    await record(e);
  };
  if (db.isTransaction) await build(db);
  else await db.transaction().execute(build);
  return info;
}

/** Drop the index on attribute `name` and forget it. Throws NOT_FOUND when it is not indexed. */
export async function dropAttributeIndex(db: Db, dialect: SqlDialect, name: string): Promise<void> {
  assertAttributeName(name);
  const indexName = attributeIndexName(name);
  const row = await db
    .selectFrom('attribute_indexes')
    .select('name')
    .where('name', '=', name)
    .executeTakeFirst();
  if (!row) throw notFound(`attribute index "${name}"`);

  const forget = (e: Executor) => e.deleteFrom('attribute_indexes').where('name', '=', name).execute();
  if (dialect === 'postgres' && !db.isTransaction) {
    await sql`drop index concurrently if exists ${sql.id(indexName)}`.execute(db);
    await forget(db);
    return;
  }
  const drop = async (e: Executor) => {
    await sql`drop index if exists ${sql.id(indexName)}`.execute(e);
    await forget(e);
  };
  if (db.isTransaction) await drop(db);
  else await db.transaction().execute(drop);
}
