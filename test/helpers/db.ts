import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { migrate } from '../../src/migrations/migrate.js';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const MIGRATIONS_DIR = `${ROOT}prisma/migrations`;
export const SCHEMA_PATH = `${ROOT}prisma/schema.prisma`;

/** Server the tests create their databases on (trust auth locally, as in CI). */
export const ADMIN_URL = process.env.TEST_DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres';

export function urlFor(database: string): string {
  const u = new URL(ADMIN_URL);
  u.pathname = `/${database}`;
  return u.toString();
}

async function admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: ADMIN_URL });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

export interface TestDb {
  name: string;
  url: string;
  drop(): Promise<void>;
}

/** A new, uniquely named, empty database. */
export async function createDatabase(prefix = 'ms_test'): Promise<TestDb> {
  const name = `${prefix}_${process.pid}_${randomBytes(4).toString('hex')}`;
  await admin((c) => c.query(`CREATE DATABASE "${name}"`));
  return {
    name,
    url: urlFor(name),
    drop: () =>
      admin(async (c) => {
        await c.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [name]);
        await c.query(`DROP DATABASE IF EXISTS "${name}"`);
      }),
  };
}

/** A new database with every migration applied. */
export async function createMigratedDatabase(prefix = 'ms_test'): Promise<TestDb> {
  const db = await createDatabase(prefix);
  await migrate({ databaseUrl: db.url, migrationsDir: MIGRATIONS_DIR, schemaPath: SCHEMA_PATH });
  return db;
}

export async function connect(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  c.on('error', () => {});
  await c.connect();
  return c;
}

/** Deterministic pseudo-random unit-ish vectors, so failures reproduce. */
export function seededVectors(seed: number, count: number, dim = 1536): Float32Array[] {
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return ((s >>> 0) / 0xffffffff) * 2 - 1;
  };
  return Array.from({ length: count }, () => {
    const v = new Float32Array(dim);
    for (let i = 0; i < dim; i++) v[i] = next();
    return v;
  });
}

export const vectorLiteral = (v: Float32Array | number[]) => `[${Array.from(v).join(',')}]`;

export async function insertPersonality(c: pg.Client | pg.Pool, name: string): Promise<string> {
  const r = await c.query<{ id: string }>(
    `INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt") VALUES ($1, $1, 'You are ' || $1, now()) RETURNING id`,
    [name],
  );
  return r.rows[0]!.id;
}
