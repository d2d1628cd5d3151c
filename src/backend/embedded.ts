import { createHash, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { vector } from '@electric-sql/pglite-pgvector';
import type { Logger } from 'pino';
import { ConfigError, PermanentError } from '../contract/errors.js';
import { DEFAULT_MIGRATIONS_DIR } from '../paths.js';
import { MIGRATE_LOCK_KEY } from '../migrations/migrate.js';
import { pgliteDatabase, type PgliteDatabase } from './queryable.js';

export interface EmbeddedOptions {
  /**
   * Directory holding the database (created if missing).
   * @defaultValue undefined: in memory, gone at close (tests). The sidecar
   * passes MEMORY_SYNC_DATA_DIR (default ./.memory-sync/).
   */
  dataDir?: string | undefined;
  logger: Logger;
  /**
   * Folder of <timestamp>_<name>/migration.sql.
   * @defaultValue the package's prisma/migrations, the same ones `memory-sync migrate` applies.
   */
  migrationsDir?: string;
  /**
   * ivfflat lists probed first; iterative scans add more until LIMIT is met.
   * @defaultValue 1, as on PostgreSQL (the client's `ivfflatProbes` default).
   */
  ivfflatProbes?: number;
  /**
   * PostgreSQL shared_buffers, in MB. PGlite's buffers live in the WASM heap,
   * so all of them count in this process's RSS.
   * @defaultValue 32: PGlite's 128 cost ~100 MB more RSS on reopen; the
   * embedded default is for small data sets, and pages also sit in the OS cache.
   */
  sharedBuffersMb?: number;
}

export interface EmbeddedInfo {
  /** Absolute data directory, or null when in memory. */
  dataDir: string | null;
  /** From the call to a migrated, queryable database. */
  coldStartMs: number;
  /** True when the directory already held a database. */
  reopened: boolean;
  /** Migrations applied by this open (empty on a reopen with nothing new). */
  applied: string[];
  /** e.g. "PostgreSQL 18.6 (PGlite 0.5.14) …". */
  version: string;
}

export interface EmbeddedDatabase {
  /** The PGlite instance (with the pgvector extension). */
  db: PGlite;
  /** The same database behind the seam the SQL in src/store uses. */
  queryable: PgliteDatabase;
  /** Closes the database and releases the data directory. Idempotent. */
  close(): Promise<void>;
  info: EmbeddedInfo;
}

/** Written into the data directory while a process has it open. */
export const DATA_DIR_LOCK_FILE = 'memory-sync.pid';

const openDirs = new Set<string>();

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * PGlite opens a directory that another instance has open without a word,
 * and two writers corrupt it: refuse instead. A lock left by a dead process
 * is taken over.
 */
function lockDataDir(dir: string): () => void {
  const inUse = (by: string) =>
    new ConfigError('MEMORY_SYNC_DATA_DIR', `${dir} is in use by ${by}; stop it or choose another directory`);
  if (openDirs.has(dir)) throw inUse('this process');
  const file = join(dir, DATA_DIR_LOCK_FILE);
  for (let attempt = 0; ; attempt++) {
    try {
      writeFileSync(file, `${process.pid}\n`, { flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number.parseInt(readFileSync(file, 'utf8'), 10);
      if (attempt > 0 || (pid !== process.pid && pid > 0 && processAlive(pid))) throw inUse(`process ${pid}`);
      rmSync(file, { force: true });
    }
  }
  openDirs.add(dir);
  return () => {
    openDirs.delete(dir);
    rmSync(file, { force: true });
  };
}

/** `_prisma_migrations` exactly as Prisma's schema engine creates it on PostgreSQL. */
const MIGRATIONS_TABLE = `CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
    "id"                    VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum"              VARCHAR(64) NOT NULL,
    "finished_at"           TIMESTAMPTZ,
    "migration_name"        VARCHAR(255) NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        TIMESTAMPTZ,
    "started_at"            TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count"   INTEGER NOT NULL DEFAULT 0
)`;

interface MigrationFile {
  name: string;
  script: string;
  /** sha256 of the file, hex: Prisma's checksum. */
  checksum: string;
}

async function readMigrations(dir: string): Promise<MigrationFile[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  const names = entries.filter((e) => e.isDirectory()).map((e) => e.name).sort();
  return Promise.all(
    names.map(async (name) => {
      const bytes = await readFile(join(dir, name, 'migration.sql'));
      return { name, script: bytes.toString('utf8'), checksum: createHash('sha256').update(bytes).digest('hex') };
    }),
  );
}

/**
 * Applies pending migrations to a PGlite database the way `prisma migrate
 * deploy` does on PostgreSQL: in directory order, one transaction each, under
 * `memory-sync migrate`'s advisory lock, recorded in `_prisma_migrations`
 * with Prisma's checksum. Prisma's WASM schema engine is not used here: it
 * needs a driver adapter, and there is none for PGlite in this package.
 */
export async function applyEmbeddedMigrations(
  db: PGlite,
  migrationsDir: string,
  logger?: Logger,
): Promise<string[]> {
  const migrations = await readMigrations(migrationsDir);
  await db.query('SELECT pg_advisory_lock($1)', [MIGRATE_LOCK_KEY]);
  try {
    await db.exec(MIGRATIONS_TABLE);
    const done = await db.query<{ migration_name: string; checksum: string; finished_at: Date | null; rolled_back_at: Date | null }>(
      'SELECT migration_name, checksum, finished_at, rolled_back_at FROM "_prisma_migrations"',
    );
    const failed = done.rows.find((r) => r.finished_at === null && r.rolled_back_at === null);
    if (failed) {
      // Prisma's P3009: a half-applied migration must be resolved by hand.
      throw new PermanentError(`migration ${failed.migration_name} failed earlier and was not rolled back; resolve it before starting`, undefined);
    }
    const applied = new Map(done.rows.filter((r) => r.finished_at !== null).map((r) => [r.migration_name, r.checksum]));
    const names: string[] = [];
    for (const m of migrations) {
      const recorded = applied.get(m.name);
      if (recorded !== undefined) {
        if (recorded !== m.checksum) {
          logger?.warn({ migration: m.name }, 'an applied migration was edited since (checksum differs); not re-applied');
        }
        continue;
      }
      try {
        await db.transaction(async (tx) => {
          const id = randomUUID();
          await tx.query('INSERT INTO "_prisma_migrations" (id, checksum, migration_name) VALUES ($1, $2, $3)', [id, m.checksum, m.name]);
          await tx.exec(m.script);
          await tx.query(
            'UPDATE "_prisma_migrations" SET finished_at = clock_timestamp(), applied_steps_count = applied_steps_count + 1 WHERE id = $1',
            [id],
          );
        });
      } catch (err) {
        const e = err as { message?: string; code?: string };
        throw new PermanentError(`migration ${m.name} failed: ${e.message ?? String(err)}`, e.code, { cause: err });
      }
      names.push(m.name);
    }
    return names;
  } finally {
    await db.query('SELECT pg_advisory_unlock($1)', [MIGRATE_LOCK_KEY]).catch(() => {});
  }
}

/**
 * Opens the embedded PostgreSQL: PGlite (PostgreSQL 18, WASM) with pgvector,
 * in process, migrated. The data directory is locked against a second
 * process; a new directory costs a few seconds (initdb), a reopen well under one.
 */
export async function openEmbedded(options: EmbeddedOptions): Promise<EmbeddedDatabase> {
  const started = performance.now();
  const probes = options.ivfflatProbes ?? 1;
  if (!Number.isInteger(probes) || probes < 1) throw new ConfigError('ivfflatProbes', 'must be a positive integer');
  const sharedBuffersMb = options.sharedBuffersMb ?? 32;
  if (!Number.isInteger(sharedBuffersMb) || sharedBuffersMb < 1) throw new ConfigError('sharedBuffersMb', 'must be a positive integer');
  const dataDir = options.dataDir === undefined ? null : resolve(options.dataDir);
  let release = () => {};
  let reopened = false;
  if (dataDir) {
    mkdirSync(dataDir, { recursive: true });
    reopened = existsSync(join(dataDir, 'PG_VERSION'));
    release = lockDataDir(dataDir);
  }
  let db: PGlite;
  try {
    db = await PGlite.create({
      ...(dataDir ? { dataDir } : {}),
      extensions: { vector },
      // On the command line, not in postgresql.conf: PGlite's postgresqlconf option rewrites the whole file.
      startParams: [...PGlite.defaultStartParams, '-c', `shared_buffers=${sharedBuffersMb}MB`],
    });
  } catch (err) {
    release();
    throw new PermanentError(`cannot open the embedded database${dataDir ? ` in ${dataDir}` : ''}: ${(err as Error).message}`, undefined, {
      cause: err,
    });
  }
  try {
    const applied = await applyEmbeddedMigrations(db, options.migrationsDir ?? DEFAULT_MIGRATIONS_DIR, options.logger);
    // One session for everything: its settings hold for every later query.
    await db.exec(`SET ivfflat.iterative_scan = relaxed_order; SET hnsw.iterative_scan = relaxed_order; SET ivfflat.probes = ${probes}`);
    const version = (await db.query<{ v: string }>('SELECT version() AS v')).rows[0]!.v;
    const info: EmbeddedInfo = { dataDir, coldStartMs: performance.now() - started, reopened, applied, version };
    let closing: Promise<void> | undefined;
    options.logger.info(
      { dataDir: dataDir ?? 'memory', reopened, applied, coldStartMs: Math.round(info.coldStartMs) },
      'embedded PostgreSQL (PGlite + pgvector) ready; set DATABASE_URL to use a PostgreSQL server instead',
    );
    return {
      db,
      queryable: pgliteDatabase(db),
      info,
      close: () =>
        (closing ??= (async () => {
          try {
            if (!db.closed) await db.close();
          } finally {
            release();
          }
        })()),
    };
  } catch (err) {
    await db.close().catch(() => {});
    release();
    throw err;
  }
}
