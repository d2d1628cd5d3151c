import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import pg from 'pg';
import { z } from 'zod';
import { NotMigratedError, PermanentError } from '../contract/errors.js';
import { MAX_INDEXED_DIMENSION, type Binding } from '../schema/binding.js';
import { BUILTIN, BUILTIN_DECLARATION } from '../schema/builtin.js';
import { readCatalog, resolveAgainst, type ResolvedCollection } from '../schema/catalog.js';
import { bindDeclaration, type LoadedDeclaration } from '../schema/load.js';
import { createIndexSql, dropIndexSql, inspectIndex } from '../store/vector-index.js';
import { captureScript, proveCapture, uninstallScript, type ProofResult } from './install.js';
import { generateTriggers, removalScript, triggerScript } from './triggers.js';
import { replicationTables } from './publication.js';
import { ensurePublication, uninstallCapture, type CaptureNames, type PublicationResult, type UninstallResult } from './replication.js';
import { parseInput } from '../validation/parse.js';
import { postgresUrl } from '../contract/primitives.js';
import { PROTECTED_INDEXES } from '../migrations/check-migrations.js';
import { withShadowDatabase } from '../migrations/create-migration.js';
import { loadMigrationList, migrate, MIGRATE_LOCK_KEY } from '../migrations/migrate.js';
import { openSchemaEngine } from '../migrations/schema-engine.js';

/**
 * The existing tables cannot serve memory-sync as they are. `problems` names
 * each missing table or column and each type, nullability, default or key
 * mismatch; nothing was changed in the database.
 */
export class IncompatibleSchemaError extends PermanentError {
  override readonly name = 'IncompatibleSchemaError';
  constructor(readonly problems: string[]) {
    super(`the database cannot be adopted as it is (nothing was changed):\n${problems.map((p) => `  - ${p}`).join('\n')}`, undefined);
  }
}

export interface ColumnShape {
  name: string;
  /** format_type() spelling: "uuid", "timestamp(3) with time zone", "vector(1536)". */
  type: string;
  notNull: boolean;
  hasDefault: boolean;
}

export interface IndexShape {
  name: string;
  unique: boolean;
  /** pg_get_indexdef() from USING on: "USING btree (\"createdAt\")". */
  definition: string;
}

export interface ForeignKeyShape {
  columns: string[];
  refTable: string;
  refColumns: string[];
  /** 'a' no action, 'r' restrict, 'c' cascade, 'n' set null, 'd' set default. */
  onDelete: string;
}

export interface TableShape {
  name: string;
  columns: ColumnShape[];
  /** Primary key columns in key order; empty when there is none. */
  primaryKey: string[];
  /** Valid indexes other than the primary key's. */
  indexes: IndexShape[];
  foreignKeys?: ForeignKeyShape[];
}


const TABLES_SQL = `
  SELECT c.relname AS table, a.attname AS column, format_type(a.atttypid, a.atttypmod) AS type,
         a.attnotnull AS "notNull", a.atthasdef AS "hasDefault"
    FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
   WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
     AND a.attnum > 0 AND NOT a.attisdropped
   ORDER BY c.relname, a.attnum`;

const KEYS_SQL = `
  SELECT c.relname AS table, array_agg(a.attname::text ORDER BY k.ord) AS columns
    FROM pg_index i
    JOIN pg_class c ON c.oid = i.indrelid
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
   WHERE i.indisprimary AND c.relnamespace = current_schema()::regnamespace
   GROUP BY c.relname`;

const INDEXES_SQL = `
  SELECT c.relname AS table, x.relname AS name, i.indisunique AS unique,
         substring(pg_get_indexdef(i.indexrelid) FROM ' (USING .*)$') AS definition
    FROM pg_index i
    JOIN pg_class c ON c.oid = i.indrelid
    JOIN pg_class x ON x.oid = i.indexrelid
   WHERE NOT i.indisprimary AND i.indisvalid AND c.relnamespace = current_schema()::regnamespace
   ORDER BY c.relname, x.relname`;

const FOREIGN_KEYS_SQL = `
  SELECT c.relname AS table, r.relname AS "refTable", x.confdeltype::text AS "onDelete",
         ARRAY(SELECT a.attname::text FROM unnest(x.conkey) WITH ORDINALITY k(n, o) JOIN pg_attribute a ON a.attrelid = x.conrelid AND a.attnum = k.n ORDER BY k.o) AS columns,
         ARRAY(SELECT a.attname::text FROM unnest(x.confkey) WITH ORDINALITY k(n, o) JOIN pg_attribute a ON a.attrelid = x.confrelid AND a.attnum = k.n ORDER BY k.o) AS "refColumns"
    FROM pg_constraint x JOIN pg_class c ON c.oid = x.conrelid JOIN pg_class r ON r.oid = x.confrelid
   WHERE x.contype = 'f' AND c.relnamespace = current_schema()::regnamespace`;

/** The tables of the connection's current schema, as the catalog has them. */
export async function describeTables(c: pg.ClientBase): Promise<Map<string, TableShape>> {
  const tables = new Map<string, TableShape>();
  const cols = await c.query<ColumnShape & { table: string; column: string }>(TABLES_SQL);
  for (const r of cols.rows) {
    let t = tables.get(r.table);
    if (!t) tables.set(r.table, (t = { name: r.table, columns: [], primaryKey: [], indexes: [] }));
    t.columns.push({ name: r.column, type: r.type, notNull: r.notNull, hasDefault: r.hasDefault });
  }
  const keys = await c.query<{ table: string; columns: string[] }>(KEYS_SQL);
  for (const r of keys.rows) {
    const t = tables.get(r.table);
    if (t) t.primaryKey = r.columns;
  }
  const indexes = await c.query<IndexShape & { table: string }>(INDEXES_SQL);
  for (const r of indexes.rows) tables.get(r.table)?.indexes.push({ name: r.name, unique: r.unique, definition: r.definition });
  const fks = await c.query<ForeignKeyShape & { table: string }>(FOREIGN_KEYS_SQL);
  for (const r of fks.rows) {
    const t = tables.get(r.table);
    if (t) (t.foreignKeys ??= []).push({ columns: r.columns, refTable: r.refTable, refColumns: r.refColumns, onDelete: r.onDelete });
  }
  return tables;
}

export interface RequirementOptions {
  /** memory-sync's migrations: the one source of what the tables must look like. */
  migrationsDir: string;
  schemaPath: string;
  /** Server for the temporary scratch database (CREATEDB privilege). */
  databaseUrl?: string;
  /** An empty database to use instead of a temporary one; emptied again after use. */
  shadowDatabaseUrl?: string;
  /**
   * Progress lines: shadow databases made and dropped, the schema engine's log.
   * @defaultValue none: quiet, as a library call should be
   */
  log?: (line: string) => void;
}

/**
 * What the triggers and the engine need, derived from the migrations rather
 * than listed by hand: they are applied to an empty scratch database and its
 * catalog is read back (every table but `_prisma_migrations`).
 */
export async function requiredTables(options: RequirementOptions): Promise<TableShape[]> {
  return withShadowDatabase(options, async (url) => {
    await migrate({ databaseUrl: url, migrationsDir: options.migrationsDir, schemaPath: options.schemaPath });
    const c = new pg.Client({ connectionString: url });
    c.on('error', () => {});
    await c.connect();
    try {
      const tables = await describeTables(c);
      tables.delete('_prisma_migrations');
      return [...tables.values()];
    } finally {
      await c.end().catch(() => {});
    }
  });
}

const ON_DELETE: Record<string, string> = { c: ' ON DELETE CASCADE', n: ' ON DELETE SET NULL', d: ' ON DELETE SET DEFAULT', r: ' ON DELETE RESTRICT' };
const q = (s: string) => `"${s.replace(/"/g, '""')}"`;
const spell = (c: ColumnShape) => `${c.type}${c.notNull ? ' NOT NULL' : ''}`;

/**
 * Every way the existing tables fall short of the requirements, one line each.
 * Extra tables and columns are fine, except a NOT NULL column without a
 * default in a table memory-sync inserts into.
 */
export function compareTables(
  required: TableShape[],
  existing: Map<string, TableShape>,
  /** Tables memory-sync inserts rows into (its collections): every column it leaves out needs a default or NULL. */
  inserted: ReadonlySet<string> = new Set(),
): string[] {
  const problems: string[] = [];
  for (const want of required) {
    const have = existing.get(want.name);
    if (!have) {
      problems.push(`table ${q(want.name)} is missing`);
      continue;
    }
    const inserts = inserted.has(want.name);
    const byName = new Map(have.columns.map((c) => [c.name, c]));
    for (const w of want.columns) {
      const h = byName.get(w.name);
      const col = `column ${q(want.name)}.${q(w.name)}`;
      if (!h) {
        problems.push(`${col} is missing (memory-sync needs ${spell(w)})`);
        continue;
      }
      if (h.type !== w.type) problems.push(`${col} is ${h.type}, memory-sync needs ${w.type}`);
      if (w.notNull && !h.notNull) problems.push(`${col} allows NULL, memory-sync reads it as NOT NULL`);
      if (inserts && !w.notNull && h.notNull) problems.push(`${col} is NOT NULL, memory-sync inserts rows with it NULL`);
      if (inserts && w.hasDefault && !h.hasDefault) problems.push(`${col} has no default, memory-sync inserts rows relying on one`);
    }
    if (inserts) {
      const known = new Set(want.columns.map((c) => c.name));
      for (const h of have.columns) {
        if (!known.has(h.name) && h.notNull && !h.hasDefault) {
          problems.push(`column ${q(want.name)}.${q(h.name)} is NOT NULL without a default, memory-sync inserts rows without it`);
        }
      }
    }
    for (const w of want.indexes.filter((i) => i.unique)) {
      // Creating a unique index could fail on the rows already there: the owner decides.
      if (!have.indexes.some((h) => h.unique && h.definition === w.definition)) {
        problems.push(`table ${q(want.name)} has no unique index ${w.definition}, memory-sync needs one (${w.name})`);
      }
    }
    // The caches rely on these: a personality's delete takes its config and memories with it.
    for (const fk of want.foreignKeys ?? []) {
      const same = (have.foreignKeys ?? []).find((h) => h.columns.join(',') === fk.columns.join(',') && h.refTable === fk.refTable && h.refColumns.join(',') === fk.refColumns.join(','));
      const spell = `(${fk.columns.map(q).join(', ')}) REFERENCES ${q(fk.refTable)} (${fk.refColumns.map(q).join(', ')})${ON_DELETE[fk.onDelete] ?? ''}`;
      if (!same) problems.push(`table ${q(want.name)} has no foreign key ${spell}, memory-sync relies on it`);
      else if (same.onDelete !== fk.onDelete) problems.push(`table ${q(want.name)} has foreign key ${spell.replace(/ ON DELETE .*$/, '')}${ON_DELETE[same.onDelete] ?? ''}, memory-sync needs${ON_DELETE[fk.onDelete] ?? ' NO ACTION'}`);
    }
    if (want.primaryKey.join(',') !== have.primaryKey.join(',')) {
      const key = (k: string[]) => `(${k.map(q).join(', ')})`;
      problems.push(
        have.primaryKey.length
          ? `table ${q(want.name)} has primary key ${key(have.primaryKey)}, memory-sync needs ${key(want.primaryKey)}`
          : `table ${q(want.name)} has no primary key, memory-sync needs ${key(want.primaryKey)}`,
      );
    }
  }
  for (const w of missingIndexes(required, existing)) {
    const taken = existing.get(w.table)?.indexes.find((h) => h.name === w.index.name);
    if (taken) problems.push(`index ${q(w.index.name)} on ${q(w.table)} is ${taken.definition}, memory-sync needs ${w.index.definition}`);
  }
  if (required.length && required.every((t) => !existing.has(t.name))) {
    problems.push('none of the tables exist: on a database without them, run `memory-sync migrate` instead');
  }
  return problems;
}

/**
 * Non-unique indexes the migrations make that the tables lack (compared by
 * definition, whatever their name): adopt builds them CONCURRENTLY, so the
 * migrations it records as applied are true of the database. The vector
 * index is handled apart, by name, as the sidecar's index guard finds it.
 */
export function missingIndexes(required: TableShape[], existing: Map<string, TableShape>): { table: string; index: IndexShape }[] {
  const out: { table: string; index: IndexShape }[] = [];
  for (const want of required) {
    const have = existing.get(want.name);
    if (!have) continue;
    for (const w of want.indexes) {
      if (w.unique || PROTECTED_INDEXES.includes(w.name)) continue;
      if (!have.indexes.some((h) => h.definition === w.definition)) out.push({ table: want.name, index: w });
    }
  }
  return out;
}

export interface AdoptOptions {
  /** The existing database. */
  databaseUrl: string;
  /** memory-sync's migrations, recorded as applied. */
  migrationsDir: string;
  /** memory-sync's Prisma schema (the engine needs one to start). */
  schemaPath: string;
  /**
   * An empty database to derive the requirements in, instead of a temporary
   * one created next to `databaseUrl`; emptied again after use.
   * @defaultValue undefined: a temporary database (needs CREATEDB)
   */
  shadowDatabaseUrl?: string;
  /**
   * lock_timeout for the trigger DDL: CREATE TRIGGER queues behind a long
   * transaction on the table, and every query on it would queue behind the DDL.
   * Failing fast leaves nothing half-done; run adopt again.
   * @defaultValue 5000 ms
   */
  lockTimeoutMs?: number;
  /**
   * Record memory-sync's migrations in `_prisma_migrations`. Off when your own
   * migrations folder carries memory-sync's SQL (one history, see
   * docs/adopting.md): rows your folder lacks make `prisma migrate dev` ask
   * for a reset.
   * @defaultValue true
   */
  record?: boolean;
  /**
   * Progress lines: shadow databases made and dropped, the schema engine's log.
   * @defaultValue none: quiet, as a library call should be
   */
  log?: (line: string) => void;
}

export interface AdoptResult {
  /** Tables that got triggers. */
  tables: string[];
  /** Migrations recorded as applied by this run, as `prisma migrate resolve --applied` does. */
  recorded: string[];
  /** Migrations that were already recorded. */
  alreadyRecorded: string[];
  /** What happened to the vector index. */
  vectorIndex: 'created' | 'present' | 'rebuilt' | 'none';
  /** Other indexes of memory-sync's migrations the tables lacked, built CONCURRENTLY. */
  indexesCreated: string[];
}

const adoptSchema = z.object({
  databaseUrl: postgresUrl,
  shadowDatabaseUrl: postgresUrl.optional(),
  migrationsDir: z.string().min(1),
  schemaPath: z.string().min(1),
  lockTimeoutMs: z.number().int().min(0).max(2_147_483_647).default(5_000),
  record: z.boolean().default(true),
});


/** The extension, then the generated triggers, proven in a rolled-back transaction first, then installed. */
async function installCapture(
  c: pg.Client,
  binding: Binding,
  lockTimeoutMs: number,
  log: (line: string) => void,
  publication: string,
): Promise<{ script: string; proved: ProofResult[]; published?: PublicationResult }> {
  const script = await captureScript(c, binding);
  await c.query(`SET lock_timeout = ${lockTimeoutMs}`);
  if (binding.collections.size) await c.query('CREATE EXTENSION IF NOT EXISTS vector');
  if (binding.captureSource === 'replication') {
    // No triggers (the script drops any): a publication over the key columns, proven with the bot's writes first.
    const schema = (await c.query<{ s: string }>('SELECT current_schema() AS s')).rows[0]!.s;
    const tables = replicationTables(binding, schema);
    const proved = await proveCapture(c, binding, script, (db) => ensurePublication(db, publication, tables));
    for (const p of proved) log(`proved on ${p.table}: ${p.statements.length} statements, rolled back`);
    if (script) await c.query(script);
    const published = await ensurePublication(c, publication, tables);
    const list = Object.entries(published.tables).map(([t, x]) => `${t} (${x.columns?.join(', ') ?? 'every column'})`);
    log(`publication ${publication} ${published.created ? 'created' : published.altered ? 'updated' : 'unchanged'}: ${list.join(', ')}; no triggers (source "replication")`);
    return { script, proved, published };
  }
  const proved = await proveCapture(c, binding, script);
  for (const p of proved) log(`proved on ${p.table}: ${p.statements.length} statements, rolled back`);
  await c.query(script); // one simple-protocol query: one implicit transaction
  log(`change capture installed on ${generateTriggers(binding).map((t) => t.table).join(', ') || 'no table'} (channel ${binding.channel})`);
  return { script, proved };
}

/** Each collection's vector index, CONCURRENTLY, unless the column has a valid cosine index already. */
async function installIndexes(c: pg.Client, binding: Binding, resolved: Map<string, ResolvedCollection>, log: (line: string) => void): Promise<Record<string, AdoptResult['vectorIndex']>> {
  await c.query('SET lock_timeout = 0'); // CONCURRENTLY waits for older transactions by design
  const out: Record<string, AdoptResult['vectorIndex']> = {};
  for (const col of binding.collections.values()) {
    if (!resolved.get(col.name)!.indexed) {
      out[col.name] = 'none';
      log(`${col.name}: no vector index (${col.indexed === 'none' ? 'index: false' : `pgvector indexes at most ${MAX_INDEXED_DIMENSION} dimensions`}); a miss scans the partition exactly`);
      continue;
    }
    const { state, name } = await inspectIndex(c, binding, col);
    if (state === 'valid') {
      out[col.name] = 'present';
      log(`${col.name}: vector index ${name} present`);
      continue;
    }
    if (state === 'invalid') await c.query(dropIndexSql(binding, col, name));
    await c.query(createIndexSql(binding, col, resolved.get(col.name)!, true));
    out[col.name] = state === 'invalid' ? 'rebuilt' : 'created';
    log(`${col.name}: vector index ${col.index.name} ${out[col.name]} (CONCURRENTLY)`);
  }
  return out;
}

/**
 * Adopts a database whose tables already exist (created by the bot's own
 * Prisma project) for memory-sync's own schema: checks them against
 * memory-sync's migrations (columns, keys, indexes, foreign keys), installs
 * the generated triggers (proven in a rolled-back transaction first) and the
 * vector index (CONCURRENTLY), and records memory-sync's migrations as
 * applied with the engine's markMigrationApplied, the call behind `prisma
 * migrate resolve --applied`. Throws IncompatibleSchemaError, having changed
 * nothing, when the tables do not fit.
 */
export async function adopt(options: AdoptOptions): Promise<AdoptResult> {
  const o = parseInput(adoptSchema, {
    databaseUrl: options.databaseUrl,
    shadowDatabaseUrl: options.shadowDatabaseUrl,
    migrationsDir: options.migrationsDir,
    schemaPath: options.schemaPath,
    lockTimeoutMs: options.lockTimeoutMs,
    record: options.record,
  });
  const log = options.log ?? (() => {});
  const binding = bindDeclaration({ declaration: { ...BUILTIN_DECLARATION, schema: o.schemaPath }, source: 'built-in', baseDir: process.cwd() });
  const required = await requiredTables({ ...o, log });
  const migrationsList = await loadMigrationList(o.migrationsDir);

  const c = new pg.Client({ connectionString: o.databaseUrl, application_name: 'memory-sync adopt' });
  c.on('error', () => {}); // a lost connection surfaces as a query error
  await c.connect();
  try {
    // Serialize with `memory-sync migrate` and a second adopt.
    await c.query('SELECT pg_advisory_lock($1)', [MIGRATE_LOCK_KEY]);
    const existing = await describeTables(c);
    const problems = compareTables(required, existing, new Set([...binding.collections.values()].map((col) => binding.models.get(col.model)!.table)));
    const recorded = await recordedMigrations(c);
    for (const d of migrationsList.migrationDirectories) {
      const r = recorded.get(d.path);
      if (r && d.migrationFile.content.tag === 'ok' && r !== sha256(d.migrationFile.content.value)) {
        problems.push(`migration ${d.path} is recorded with a different checksum: it was edited after being applied`);
      }
    }
    if (problems.length) throw new IncompatibleSchemaError(problems);

    await installCapture(c, binding, o.lockTimeoutMs, log, 'memory_sync');
    const resolved = resolveAgainst(binding, await readCatalog(c, binding)).collections;
    const vectorIndex = (await installIndexes(c, binding, resolved, log))[BUILTIN.memories]!;
    const indexesCreated: string[] = [];
    for (const { table, index } of missingIndexes(required, existing)) {
      await ensureIndex(c, index.name, `CREATE INDEX CONCURRENTLY IF NOT EXISTS ${q(index.name)} ON ${q(table)} ${index.definition}`);
      indexesCreated.push(index.name);
      log(`${index.name}: created`);
    }

    const pending = o.record ? migrationsList.migrationDirectories.map((d) => d.path).filter((name) => !recorded.has(name)) : [];
    if (pending.length) await markApplied(o.databaseUrl, o.schemaPath, migrationsList, pending, log);
    const alreadyRecorded = [...recorded.keys()].filter((n) => migrationsList.migrationDirectories.some((d) => d.path === n));
    return { tables: generateTriggers(binding).map((t) => t.table), recorded: pending, alreadyRecorded, vectorIndex, indexesCreated };
  } finally {
    await c.query('SELECT pg_advisory_unlock($1)', [MIGRATE_LOCK_KEY]).catch(() => {});
    await c.end().catch(() => {});
  }
}

async function markApplied(databaseUrl: string, schemaPath: string, migrationsList: Awaited<ReturnType<typeof loadMigrationList>>, names: string[], log: (line: string) => void): Promise<void> {
  const schema = { path: schemaPath, content: await readFile(schemaPath, 'utf8') };
  const handle = await openSchemaEngine(databaseUrl, schema, log);
  try {
    for (const migrationName of names) await handle.engine.markMigrationApplied({ migrationName, migrationsList });
  } finally {
    await handle.close();
  }
}

export interface AdoptDeclarationOptions {
  databaseUrl: string;
  /** The declaration (memory-sync.config.*), loaded. */
  declaration: LoadedDeclaration;
  /**
   * The bot's own migrations folder: the capture SQL is written there as a
   * migration, and recorded as applied, so a team with one history keeps one.
   * @defaultValue "prisma/migrations" next to the bot's schema; null writes none
   */
  migrationDir?: string | null;
  /** @defaultValue 5000 ms (see AdoptOptions.lockTimeoutMs) */
  lockTimeoutMs?: number;
  log?: (line: string) => void;
  /** The migration's timestamp. @defaultValue now */
  now?: Date;
  /**
   * The publication a declaration with `source: "replication"` gets (MEMORY_SYNC_REPLICATION_PUBLICATION).
   * @defaultValue "memory_sync"
   */
  publication?: string;
}

export interface AdoptDeclarationResult {
  /** Source "replication": what the publication carries (per table, its columns and identity). */
  published?: PublicationResult;
  /** Tables that got triggers. */
  tables: string[];
  proved: ProofResult[];
  /** Per collection. */
  vectorIndexes: Record<string, AdoptResult['vectorIndex']>;
  /** The migration written (its folder), or null (unchanged since the last adopt, or none asked for). */
  migration: string | null;
  /** Whether that migration was recorded in _prisma_migrations. */
  recorded: boolean;
  /** Relations the declaration follows that have no foreign key (fine; said so). */
  unconstrained: string[];
}

const MIGRATION_SUFFIX = '_memory_sync_capture';

/** The newest memory-sync capture migration in the folder, and its SQL. */
function latestCapture(dir: string): { name: string; sql: string } | null {
  if (!existsSync(dir)) return null;
  const names = readdirSync(dir).filter((n) => n.endsWith(MIGRATION_SUFFIX)).sort();
  const name = names[names.length - 1];
  if (!name) return null;
  const file = join(dir, name, 'migration.sql');
  return existsSync(file) ? { name, sql: readFileSync(file, 'utf8') } : null;
}

/** Prisma's migration folder timestamp: YYYYMMDDHHMMSS, UTC. */
const stamp = (d: Date) => d.toISOString().replace(/[-:T]/g, '').slice(0, 14);

/**
 * Adopts a bot's own schema for a declaration: checks the declaration
 * against the catalog (every table, column and type the declaration uses,
 * the vector columns' dimensions), proves the generated triggers on every
 * declared table in a rolled-back transaction (an INSERT, an UPDATE and a
 * DELETE each; a failure names the table and the statement and nothing is
 * changed), installs them and the vector indexes, and writes the same SQL
 * as a Prisma migration into the bot's migrations folder, recorded as
 * applied.
 */
export async function adoptDeclaration(options: AdoptDeclarationOptions): Promise<AdoptDeclarationResult> {
  const log = options.log ?? (() => {});
  const lockTimeoutMs = options.lockTimeoutMs ?? 5_000;
  const binding = bindDeclaration(options.declaration);
  const migrationDir = options.migrationDir === undefined ? join(dirname(binding.schemaPath), 'migrations') : options.migrationDir;
  const c = new pg.Client({ connectionString: options.databaseUrl, application_name: 'memory-sync adopt' });
  c.on('error', () => {});
  await c.connect();
  try {
    await c.query('SELECT pg_advisory_lock($1)', [MIGRATE_LOCK_KEY]);
    let resolved;
    try {
      resolved = resolveAgainst(binding, await readCatalog(c, binding));
    } catch (err) {
      if (err instanceof NotMigratedError) throw new IncompatibleSchemaError(err.message.split('\n').slice(1).map((l) => l.replace(/^\s*- /, '')));
      throw err;
    }
    for (const u of resolved.unconstrained) log(`note: ${u}; changes are still followed`);
    const { proved, published } = await installCapture(c, binding, lockTimeoutMs, log, options.publication ?? 'memory_sync');
    const vectorIndexes = await installIndexes(c, binding, resolved.collections, log);

    let migration: string | null = null;
    let recorded = false;
    if (migrationDir) {
      const sql = migrationSql(binding, resolved.collections);
      const last = latestCapture(migrationDir);
      if (last?.sql !== sql) {
        migration = `${stamp(options.now ?? new Date())}${MIGRATION_SUFFIX}`;
        mkdirSync(join(migrationDir, migration), { recursive: true });
        writeFileSync(join(migrationDir, migration, 'migration.sql'), sql);
        log(`wrote ${join(migrationDir, migration, 'migration.sql')}`);
        if (await hasMigrationTable(c)) {
          await markApplied(options.databaseUrl, binding.schemaPath, await loadMigrationList(migrationDir), [migration], log);
          recorded = true;
          log(`recorded ${migration} as applied`);
        }
      }
    }
    return {
      tables: binding.captureSource === 'triggers' ? generateTriggers(binding).map((t) => t.table) : [],
      proved,
      vectorIndexes,
      migration,
      recorded,
      unconstrained: resolved.unconstrained,
      ...(published ? { published } : {}),
    };
  } finally {
    await c.query('SELECT pg_advisory_unlock($1)', [MIGRATE_LOCK_KEY]).catch(() => {});
    await c.end().catch(() => {});
  }
}

/** The capture as a migration: the triggers, and each vector index (plain CREATE INDEX: a migration runs in a transaction). */
export function migrationSql(binding: Binding, resolved: Map<string, ResolvedCollection>): string {
  const indexes = [...binding.collections.values()].filter((col) => resolved.get(col.name)!.indexed).map((col) => `${createIndexSql(binding, col, resolved.get(col.name)!, false)};`);
  const capture = binding.captureSource === 'triggers' ? triggerScript(binding) : removalScript(binding);
  return `${binding.collections.size ? 'CREATE EXTENSION IF NOT EXISTS vector;\n\n' : ''}${capture}${indexes.length ? `\n-- Vector indexes (adopt built them CONCURRENTLY; here for a database made from this history)\n${indexes.join('\n')}\n` : ''}`;
}

async function hasMigrationTable(c: pg.Client): Promise<boolean> {
  const r = await c.query(`SELECT to_regclass('_prisma_migrations') IS NOT NULL AS ok`);
  return r.rows[0]?.ok === true;
}

/** Removes what adopt installed: the triggers and their functions (and, with `slot`, replication's slot and publication). */
export interface UninstallOptions {
  databaseUrl: string;
  declaration: LoadedDeclaration;
  /** The slot and publication of the replication source. @defaultValue "memory_sync" both */
  replication?: CaptureNames;
  log?: (line: string) => void;
}

/**
 * Removes the capture, whichever source it was for: the triggers and their
 * functions, then the slot and publication (a slot still being read refuses:
 * the memory-sync reading it would make them again).
 */
export async function uninstall(options: UninstallOptions): Promise<{ dropped: string[] } & UninstallResult> {
  const binding = bindDeclaration(options.declaration);
  const c = new pg.Client({ connectionString: options.databaseUrl, application_name: 'memory-sync uninstall' });
  c.on('error', () => {});
  await c.connect();
  try {
    const names = options.replication ?? { slot: 'memory_sync', publication: 'memory_sync' };
    const captured = await uninstallCapture(c, names);
    const script = await uninstallScript(c, binding);
    await c.query(script);
    const dropped = script.split('\n').filter(Boolean);
    for (const l of dropped) options.log?.(l);
    return { dropped, ...captured };
  } finally {
    await c.end().catch(() => {});
  }
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** Finished, not rolled back migrations and their checksums; empty without the table. */
async function recordedMigrations(c: pg.Client): Promise<Map<string, string>> {
  const exists = await c.query(`SELECT to_regclass('_prisma_migrations') IS NOT NULL AS ok`);
  if (!exists.rows[0]?.ok) return new Map();
  const r = await c.query<{ migration_name: string; checksum: string }>(
    'SELECT migration_name, checksum FROM _prisma_migrations WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL',
  );
  return new Map(r.rows.map((row) => [row.migration_name, row.checksum]));
}

/** Builds the index unless a valid one has the name; `create` is a CONCURRENTLY statement. */
async function ensureIndex(c: pg.Client, name: string, create: string): Promise<AdoptResult['vectorIndex']> {
  const found = await c.query<{ valid: boolean }>(
    `SELECT i.indisvalid AS valid FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid
      WHERE x.relname = $1 AND x.relnamespace = current_schema()::regnamespace`,
    [name],
  );
  if (found.rows[0]?.valid) return 'present';
  // An invalid index is what an interrupted CONCURRENTLY build leaves behind.
  if (found.rows[0]) await c.query(`DROP INDEX CONCURRENTLY IF EXISTS ${q(name)}`);
  await c.query(create);
  return found.rows[0] ? 'rebuilt' : 'created';
}
