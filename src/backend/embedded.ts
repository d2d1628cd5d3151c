import { execFile } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { createGunzip } from 'node:zlib';
import type { PGlite } from '@electric-sql/pglite';
import { unpackTar } from 'modern-tar/fs';
import type { Logger } from 'pino';
import { ConfigError, PermanentError } from '../contract/errors.js';
import { DEFAULT_MIGRATIONS_DIR, PACKAGE_ROOT } from '../paths.js';
import { MIGRATE_LOCK_KEY } from '../migrations/migrate.js';
import { pgliteDatabase, type PgliteDatabase, type PgliteHandle } from './queryable.js';

export interface EmbeddedOptions {
  /**
   * Directory holding the database (created if missing).
   * @defaultValue undefined: a throwaway database, gone at close (tests,
   * demos). It lives in a new directory under the OS temp directory rather
   * than in PGlite's in-memory file system, which keeps every file in this
   * process's heap (about 100 MB more RSS); a directory left by a process
   * that died is removed by the next open. The sidecar passes
   * MEMORY_SYNC_DATA_DIR (default ./.memory-sync/).
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
   * @defaultValue 16: PostgreSQL zeroes all of shared_buffers at start, so
   * every MB is resident from the first second (PGlite's 128 cost ~150 MB);
   * the embedded default is for small data sets, and a data directory's pages
   * also sit in the OS cache.
   */
  sharedBuffersMb?: number;
  /**
   * How a new database (a new data directory, or one in memory) is made:
   * `image` unpacks the data directory image that `npm run build` prepares
   * (PGlite's initdb output, {@link ensureEmbeddedImage}), then applies the
   * migrations; `initdb` runs PGlite's initdb in this process, as before
   * issue 18: 4–9 s, and a second WASM instance plus a copy of its heap that
   * stay resident until a garbage collection (400–800 MB). Kept for the bench.
   * @defaultValue 'image'
   */
  create?: 'image' | 'initdb';
  /**
   * The data directory image for `create: 'image'`; made here (initdb in a
   * short-lived child process) when the file is missing.
   * @defaultValue {@link defaultImagePath}(): in the package's dist/embedded/.
   */
  imagePath?: string;
}

export interface EmbeddedInfo {
  /** Absolute data directory, or null for a throwaway database. */
  dataDir: string | null;
  /** From the call to a migrated, queryable database. */
  coldStartMs: number;
  /** Where that time went: unpacking the image (0 on a reopen), starting PGlite, applying migrations. */
  phasesMs: { unpack: number; start: number; migrate: number };
  /** True when the directory already held a database. */
  reopened: boolean;
  /** Migrations applied by this open (empty on a reopen with nothing new). */
  applied: string[];
  /** How a new database was made ("image" or "initdb"); null on a reopen. */
  created: 'image' | 'initdb' | null;
  /** e.g. "PostgreSQL 18.6 (PGlite 0.5.14) …". */
  version: string;
}

export interface EmbeddedDatabase {
  /** The PGlite instance (with the pgvector extension), behind memory-sync's own interface. */
  db: PgliteHandle;
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
  db: PgliteHandle,
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

const require = createRequire(import.meta.url);
const PGLITE_ENTRY = require.resolve('@electric-sql/pglite');
/** The installed PGlite's version: an image is only reused by the PGlite that made it. */
export const PGLITE_VERSION: string = (JSON.parse(readFileSync(join(dirname(PGLITE_ENTRY), '..', 'package.json'), 'utf8')) as { version: string }).version;

/** Where `npm run build` puts the data directory image, one per PGlite version. */
export function defaultImagePath(): string {
  return join(PACKAGE_ROOT, 'dist', 'embedded', `pgdata-pglite-${PGLITE_VERSION}.tar.gz`);
}

/*
 * initdb in a child process: PGlite's initdb runs in a second WASM instance and
 * copies that instance's whole heap to reset it between steps; in a child all
 * of it is returned to the system when the child exits, not at some later
 * garbage collection of this one. The file is written under a temporary name
 * and renamed, so concurrent makers and a crash leave no half file.
 */
const MAKE_IMAGE = `
const [entry, out] = process.argv.slice(1);
const { writeFileSync, renameSync } = await import('node:fs');
const { PGlite } = await import(entry);
const db = await PGlite.create();
const image = await db.dumpDataDir('gzip');
await db.close();
const tmp = out + '.' + process.pid + '.tmp';
writeFileSync(tmp, Buffer.from(await image.arrayBuffer()));
renameSync(tmp, out);
`;

const run = promisify(execFile);

/** Throwaway databases' directories: <tmpdir>/memory-sync-scratch-<random>. */
const SCRATCH_PREFIX = 'memory-sync-scratch-';

/** Removes throwaway directories whose process died before close(). */
function removeDeadScratchDirs(): void {
  let names: string[];
  try {
    names = readdirSync(tmpdir()).filter((n) => n.startsWith(SCRATCH_PREFIX));
  } catch {
    return;
  }
  for (const name of names) {
    const dir = join(tmpdir(), name);
    try {
      const pid = Number.parseInt(readFileSync(join(dir, DATA_DIR_LOCK_FILE), 'utf8'), 10);
      if (pid > 0 && pid !== process.pid && !processAlive(pid)) rmSync(dir, { recursive: true, force: true });
    } catch {
      // No lock file: being created right now, or not ours to judge.
    }
  }
}

/**
 * Returns the path of a data directory image (a gzipped tar of a new PGDATA,
 * PGlite's initdb output, no migrations), making it first when missing: at
 * `path`, or in the OS temp directory when that folder is not writable (an
 * installed package in a read-only image). Every database made from one image
 * shares its system identifier, which only physical replication would read.
 */
export async function ensureEmbeddedImage(path: string = defaultImagePath()): Promise<string> {
  if (existsSync(path)) return path;
  const fallback = join(tmpdir(), 'memory-sync', `pgdata-pglite-${PGLITE_VERSION}.tar.gz`);
  for (const target of path === defaultImagePath() ? [path, fallback] : [path]) {
    if (existsSync(target)) return target;
    try {
      mkdirSync(dirname(target), { recursive: true });
      await run(process.execPath, ['--input-type=module', '-e', MAKE_IMAGE, pathToFileURL(PGLITE_ENTRY.replace(/\.cjs$/, '.js')).href, target], {
        maxBuffer: 1 << 20,
      });
      return target;
    } catch (err) {
      if (target === fallback || !isUnwritable(err)) {
        throw new PermanentError(`cannot make the embedded database image ${target}: ${(err as Error).message}`, undefined, { cause: err });
      }
    }
  }
  throw new Error('unreachable');
}

function isUnwritable(err: unknown): boolean {
  const e = err as { code?: unknown; stderr?: unknown };
  return ['EACCES', 'EROFS', 'EPERM'].includes(String(e.code)) || /EACCES|EROFS|EPERM/.test(String(e.stderr ?? ''));
}

/**
 * Unpacks the image into a new data directory. PG_VERSION is what marks a
 * directory as a database (here and in PGlite): it is written last, so an
 * unpack cut short is redone from scratch on the next open.
 */
async function unpackImage(image: string, dataDir: string): Promise<void> {
  const marker = 'PG_VERSION';
  const partial = `${marker}.partial`;
  await pipeline(
    createReadStream(image),
    createGunzip(),
    unpackTar(dataDir, { map: (h) => (h.name.replace(/^\/+/, '') === marker ? { ...h, name: partial } : h) }),
  );
  if (!existsSync(join(dataDir, partial))) throw new Error(`${image} holds no ${marker}: not a data directory image`);
  renameSync(join(dataDir, partial), join(dataDir, marker));
}

/**
 * Opens the embedded PostgreSQL: PGlite (PostgreSQL 18, WASM) with pgvector,
 * in process, migrated. The data directory is locked against a second
 * process. A new database starts from the prepared image (no initdb here),
 * then the migrations are applied; a reopen applies only new migrations.
 */
export async function openEmbedded(options: EmbeddedOptions): Promise<EmbeddedDatabase> {
  const started = performance.now();
  const probes = options.ivfflatProbes ?? 1;
  if (!Number.isInteger(probes) || probes < 1) throw new ConfigError('ivfflatProbes', 'must be a positive integer');
  const sharedBuffersMb = options.sharedBuffersMb ?? 16;
  if (!Number.isInteger(sharedBuffersMb) || sharedBuffersMb < 1) throw new ConfigError('sharedBuffersMb', 'must be a positive integer');
  const create = options.create ?? 'image';
  const dataDir = options.dataDir === undefined ? null : resolve(options.dataDir);
  // A throwaway database made from the image goes to a scratch directory (see `dataDir`);
  // with `create: 'initdb'` it stays in PGlite's in-memory file system, as before.
  let scratch: string | null = null;
  if (!dataDir && create === 'image') {
    removeDeadScratchDirs();
    scratch = mkdtempSync(join(tmpdir(), SCRATCH_PREFIX));
  }
  const dir = dataDir ?? scratch;
  const removeScratch = () => {
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  };
  let release = () => {};
  let reopened = false;
  let db: PGlite;
  let unpackStarted = started;
  let startStarted = started;
  try {
    if (dir) {
      mkdirSync(dir, { recursive: true });
      const unlock = lockDataDir(dir);
      release = () => {
        unlock();
        removeScratch();
      };
      reopened = existsSync(join(dir, 'PG_VERSION'));
    }
    // Loaded on first use: a process on a PostgreSQL server never pays for PGlite.
    const [{ PGlite }, { vector }] = await Promise.all([import('@electric-sql/pglite'), import('@electric-sql/pglite-pgvector')]);
    unpackStarted = performance.now();
    if (dir && !reopened && create === 'image') await unpackImage(await ensureEmbeddedImage(options.imagePath), dir);
    startStarted = performance.now();
    db = await PGlite.create({
      ...(dir ? { dataDir: dir } : {}),
      extensions: { vector },
      // On the command line, not in postgresql.conf: PGlite's postgresqlconf option rewrites the whole file.
      startParams: [...PGlite.defaultStartParams, '-c', `shared_buffers=${sharedBuffersMb}MB`],
    });
  } catch (err) {
    release();
    removeScratch();
    if (err instanceof ConfigError || err instanceof PermanentError) throw err;
    throw new PermanentError(`cannot open the embedded database${dataDir ? ` in ${dataDir}` : ''}: ${(err as Error).message}`, undefined, {
      cause: err,
    });
  }
  const migrateStarted = performance.now();
  try {
    const applied = await applyEmbeddedMigrations(db, options.migrationsDir ?? DEFAULT_MIGRATIONS_DIR, options.logger);
    // One session for everything: its settings hold for every later query.
    await db.exec(`SET ivfflat.iterative_scan = relaxed_order; SET hnsw.iterative_scan = relaxed_order; SET ivfflat.probes = ${probes}`);
    const version = (await db.query<{ v: string }>('SELECT version() AS v')).rows[0]!.v;
    const now = performance.now();
    const phasesMs = { unpack: startStarted - unpackStarted, start: migrateStarted - startStarted, migrate: now - migrateStarted };
    const info: EmbeddedInfo = { dataDir, coldStartMs: now - started, phasesMs, reopened, applied, created: reopened ? null : create, version };
    let closing: Promise<void> | undefined;
    options.logger.info(
      { dataDir: dataDir ?? 'memory', reopened, applied, coldStartMs: Math.round(info.coldStartMs), phasesMs: Object.fromEntries(Object.entries(phasesMs).map(([k, v]) => [k, Math.round(v)])) },
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
