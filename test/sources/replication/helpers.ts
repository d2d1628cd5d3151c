import { randomBytes } from 'node:crypto';
import pg from 'pg';
import pino from 'pino';
import { replicationTables } from '../../../src/capture/publication.js';
import { bindingMapper } from '../../../src/sources/replication/mapper.js';
import { migrate } from '../../../src/migrations/migrate.js';
import { BUILTIN_DECLARATION } from '../../../src/schema/builtin.js';
import { bindDeclaration } from '../../../src/schema/load.js';
import { MIGRATIONS_DIR, SCHEMA_PATH, type TestDb } from '../../helpers/db.js';

/**
 * The private cluster with wal_level = logical (scripts/ensure-logical-cluster.sh),
 * where replication tests create their databases. The shared 5432 cluster
 * runs wal_level = replica and is only read.
 */
export const REPLICATION_URL = process.env.TEST_REPLICATION_URL ?? 'postgresql://postgres@127.0.0.1:5441/postgres';
export const silent = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
export const FAST = { minMs: 20, maxMs: 200 };

async function admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: REPLICATION_URL });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/** What a host on the built-in declaration publishes, and its event mapper (as MemorySync builds them). */
export function builtinCapture(schema = 'public') {
  const binding = bindDeclaration({ declaration: BUILTIN_DECLARATION, source: 'built-in', baseDir: process.cwd() });
  return { binding, tables: replicationTables(binding, schema), mapper: bindingMapper(binding, schema) };
}

export const uniqueName = (prefix: string) => `${prefix}_${process.pid}_${randomBytes(4).toString('hex')}`;

/**
 * A migrated database on the logical cluster, with memory-sync's NOTIFY
 * triggers dropped: the replication source must not need them. drop() also
 * drops the slots made in it (a slot keeps WAL for the whole cluster).
 */
export async function createReplicationDatabase(prefix = 'ms_repl', options: { triggers?: boolean; migrationsDir?: string; schemaPath?: string } = {}): Promise<TestDb> {
  const name = uniqueName(prefix);
  await admin((c) => c.query(`CREATE DATABASE "${name}"`));
  const u = new URL(REPLICATION_URL);
  u.pathname = `/${name}`;
  const url = u.toString();
  await migrate({ databaseUrl: url, migrationsDir: options.migrationsDir ?? MIGRATIONS_DIR, schemaPath: options.schemaPath ?? SCHEMA_PATH });
  if (!options.triggers) {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    await c.query(`SELECT format('DROP TRIGGER %I ON %I', tgname, tgrelid::regclass) AS sql FROM pg_trigger WHERE tgname LIKE 'memory_sync_%'`).then(async (r) => {
      for (const row of r.rows as Array<{ sql: string }>) await c.query(row.sql);
    });
    await c.end();
  }
  return {
    name,
    url,
    drop: () =>
      admin(async (c) => {
        await c.query('SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL', [name]);
        await c.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [name]);
        for (let i = 0; i < 50; i++) {
          const { rows } = await c.query<{ slot_name: string; active: boolean }>('SELECT slot_name, active FROM pg_replication_slots WHERE database = $1', [name]);
          if (rows.length === 0) break;
          for (const r of rows) await c.query('SELECT pg_drop_replication_slot($1)', [r.slot_name]).catch(() => {});
          await new Promise((r) => setTimeout(r, 50));
        }
        await c.query(`DROP DATABASE IF EXISTS "${name}"`);
      }),
  };
}

export async function insertPersonality(c: pg.Client | pg.Pool, name: string, displayName = name): Promise<string> {
  const r = await c.query<{ id: string }>(
    `INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt") VALUES ($1, $2, 'p', now()) RETURNING id`,
    [name, displayName],
  );
  return r.rows[0]!.id;
}

/** Resolves with the arguments of the next `event` that passes `test`. */
export function next<A extends unknown[]>(emitter: { on(e: string, f: (...a: any[]) => void): unknown; off(e: string, f: (...a: any[]) => void): unknown }, event: string, test: (...args: A) => boolean = () => true): Promise<A> {
  return new Promise((resolve) => {
    const on = (...args: unknown[]) => {
      if (!test(...(args as A))) return;
      emitter.off(event, on);
      resolve(args as A);
    };
    emitter.on(event, on);
  });
}
