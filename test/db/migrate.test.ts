import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../src/db/migrate.js';
import { MIGRATIONS_DIR, SCHEMA_PATH, connect, createDatabase, type TestDb } from '../helpers/db.js';

const opts = (url: string) => ({ databaseUrl: url, migrationsDir: MIGRATIONS_DIR, schemaPath: SCHEMA_PATH });
const names = readdirSync(MIGRATIONS_DIR, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort();

let a: TestDb;
let b: TestDb;
beforeAll(async () => {
  [a, b] = await Promise.all([createDatabase(), createDatabase()]);
});
afterAll(async () => {
  await Promise.all([a?.drop(), b?.drop()]);
});

describe('migrate (WASM schema engine, no binary)', () => {
  it('applies every migration once, then is a no-op', async () => {
    expect((await migrate(opts(a.url))).applied).toEqual(names);
    expect((await migrate(opts(a.url))).applied).toEqual([]);
  });

  it('writes _prisma_migrations as prisma migrate deploy does (sha256 checksum, finished, 1 step)', async () => {
    const c = await connect(a.url);
    try {
      const { rows } = await c.query(
        'SELECT migration_name, checksum, finished_at, rolled_back_at, logs, applied_steps_count FROM _prisma_migrations ORDER BY migration_name',
      );
      expect(rows.map((r) => r.migration_name)).toEqual(names);
      for (const r of rows) {
        const sql = readFileSync(`${MIGRATIONS_DIR}/${r.migration_name}/migration.sql`);
        expect(r.checksum).toBe(createHash('sha256').update(sql).digest('hex'));
        expect(r.finished_at).toBeInstanceOf(Date);
        expect(r.rolled_back_at).toBeNull();
        expect(r.logs).toBeNull();
        expect(r.applied_steps_count).toBe(1);
      }
      const ext = await c.query(`SELECT extversion FROM pg_extension WHERE extname = 'vector'`);
      expect(ext.rows[0]?.extversion).toMatch(/^0\.(8|9)|^[1-9]/);
    } finally {
      await c.end();
    }
  });

  it('two concurrent runs apply each migration exactly once', async () => {
    const results = await Promise.all([migrate(opts(b.url)), migrate(opts(b.url)), migrate(opts(b.url))]);
    expect(results.flatMap((r) => r.applied).sort()).toEqual(names);
    const c = await connect(b.url);
    try {
      const { rows } = await c.query('SELECT count(*)::int AS n FROM _prisma_migrations');
      expect(rows[0].n).toBe(names.length);
    } finally {
      await c.end();
    }
  });
});
