import { readdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import pg from 'pg';
import type { MigrationList } from '@prisma/schema-engine-wasm';
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
 * Applies pending migrations as `prisma migrate deploy` does (same
 * `_prisma_migrations` rows and checksums), through the WASM schema engine.
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
