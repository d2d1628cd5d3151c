import { readdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import pg from 'pg';
import type { MigrationList } from '@prisma/schema-engine-wasm';
import { PermanentError } from '../contract/errors.js';
import { openSchemaEngine } from './schema-engine.js';

// Our own lock, distinct from the engine's internal one (72707369), so that a
// start-up migration and a release-phase migration never interleave.
export const MIGRATE_LOCK_KEY = 0x6d656d73; // 'mems'

export interface MigrateOptions {
  databaseUrl: string;
  /** Folder holding <timestamp>_<name>/migration.sql and migration_lock.toml. */
  migrationsDir: string;
  schemaPath: string;
  log?: (line: string) => void;
}

export interface MigrateResult {
  applied: string[];
}

export async function loadMigrationList(migrationsDir: string): Promise<MigrationList> {
  const baseDir = resolve(migrationsDir);
  const entries = await readdir(baseDir, { withFileTypes: true });
  const dirs = entries.filter((e) => e.isDirectory()).map((e) => e.name).sort();
  const migrationDirectories = await Promise.all(
    dirs.map(async (name) => {
      const file = join(baseDir, name, 'migration.sql');
      const content = await readFile(file, 'utf8').then(
        (value) => ({ tag: 'ok' as const, value }),
        (err: Error) => ({ tag: 'error' as const, value: err.message }),
      );
      return { path: name, migrationFile: { path: 'migration.sql', content } };
    }),
  );
  const lockContent = await readFile(join(baseDir, 'migration_lock.toml'), 'utf8').catch(() => null);
  return {
    baseDir,
    lockfile: { path: 'migration_lock.toml', content: lockContent },
    shadowDbInitScript: '',
    migrationDirectories,
  };
}

/**
 * Refuses a database whose `_prisma_migrations` is another project's history:
 * rows, none of them an applied migration of this folder. That is a bot's own
 * Prisma database; applying memory-sync's first migration there would fail on
 * the existing tables and leave a failed row that blocks the bot's own
 * `prisma migrate deploy` (P3009). A failed row of ours does not count as
 * applied, so the same advice is given after such a failure.
 */
async function refuseForeignHistory(c: pg.Client, migrationsList: MigrationList, migrationsDir: string): Promise<void> {
  const exists = await c.query<{ ok: boolean }>(`SELECT to_regclass('_prisma_migrations') IS NOT NULL AS ok`);
  if (!exists.rows[0]?.ok) return;
  const { rows } = await c.query<{ name: string; applied: boolean }>(
    'SELECT migration_name AS name, finished_at IS NOT NULL AND rolled_back_at IS NULL AS applied FROM _prisma_migrations ORDER BY migration_name',
  );
  const ours = new Set(migrationsList.migrationDirectories.map((d) => d.path));
  const foreign = rows.filter((r) => !ours.has(r.name));
  if (foreign.length === 0 || rows.some((r) => ours.has(r.name) && r.applied)) return;
  throw new PermanentError(
    `the database already has another project's Prisma migration history (${foreign.length} migration(s) in _prisma_migrations, e.g. "${foreign[0]!.name}") ` +
      `and none of the migrations in ${migrationsDir} is applied: its tables were made by your own project. Nothing was applied. ` +
      'Run `memory-sync adopt` instead: it checks the existing tables, installs the triggers and the vector index, and records the migrations (docs/adopting.md).',
    undefined,
  );
}

/**
 * Applies pending migrations as `prisma migrate deploy` does (same
 * `_prisma_migrations` rows and checksums), through the WASM schema engine.
 * Throws a PermanentError, having applied nothing, on a database whose
 * migration history is another project's (adopt it instead).
 */
export async function migrate(options: MigrateOptions): Promise<MigrateResult> {
  const log = options.log ?? (() => {});
  const migrationsList = await loadMigrationList(options.migrationsDir);
  const schema = { path: options.schemaPath, content: await readFile(options.schemaPath, 'utf8') };

  const lock = new pg.Client({ connectionString: options.databaseUrl });
  lock.on('error', () => {}); // a lost lock connection surfaces as a query error below
  await lock.connect();
  try {
    await lock.query('SELECT pg_advisory_lock($1)', [MIGRATE_LOCK_KEY]);
    // Under the lock: a concurrent adopt may be recording our migrations.
    await refuseForeignHistory(lock, migrationsList, options.migrationsDir);
    const handle = await openSchemaEngine(options.databaseUrl, schema, log);
    try {
      const out = await handle.engine.applyMigrations({
        migrationsList,
        filters: { externalTables: [], externalEnums: [] },
      });
      return { applied: out.appliedMigrationNames };
    } finally {
      await handle.close();
    }
  } finally {
    await lock.query('SELECT pg_advisory_unlock($1)', [MIGRATE_LOCK_KEY]).catch(() => {});
    await lock.end().catch(() => {});
  }
}
