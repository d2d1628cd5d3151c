import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../src/migrations/migrate.js';
import { PermanentError } from '../../src/contract/errors.js';
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

describe('migrate on a database with another project\'s migration history', () => {
  // A bot's own Prisma project made these tables (memory-sync's, up to the
  // triggers, plus one of its own) and recorded its migration.
  const init = readFileSync(join(MIGRATIONS_DIR, names[0]!, 'migration.sql'), 'utf8');
  const botSql = init.slice(0, init.indexOf('-- sql/010_notify.sql')) + 'CREATE TABLE "guild_settings" ("id" SERIAL PRIMARY KEY, "prefix" TEXT NOT NULL);';
  let bot: TestDb;
  let botDir: string;
  beforeAll(async () => {
    expect(botSql).toContain('CREATE TABLE "personalities"'); // the fixture cut took
    botDir = mkdtempSync(join(tmpdir(), 'ms-bot-migrations-'));
    mkdirSync(join(botDir, '20250101000000_bot_init'));
    writeFileSync(join(botDir, '20250101000000_bot_init', 'migration.sql'), botSql);
    writeFileSync(join(botDir, 'migration_lock.toml'), readFileSync(join(MIGRATIONS_DIR, 'migration_lock.toml')));
    bot = await createDatabase('ms_migrate_bot');
    await migrate({ ...opts(bot.url), migrationsDir: botDir });
  });
  afterAll(async () => {
    await bot?.drop();
    if (botDir) rmSync(botDir, { recursive: true, force: true });
  });

  async function state(): Promise<unknown> {
    const c = await connect(bot.url);
    try {
      const m = await c.query('SELECT migration_name, finished_at, rolled_back_at, logs FROM _prisma_migrations ORDER BY migration_name');
      const t = await c.query(`SELECT count(*)::int AS n FROM pg_trigger WHERE tgname LIKE 'memory_sync_%'`);
      const i = await c.query(`SELECT count(*)::int AS n FROM pg_class WHERE relname = 'idx_memories_embedding'`);
      return { migrations: m.rows, triggers: t.rows[0].n, vectorIndex: i.rows[0].n };
    } finally {
      await c.end();
    }
  }

  it('refuses before applying anything, pointing at `memory-sync adopt`', async () => {
    const before = await state();
    expect(before).toMatchObject({ migrations: [{ migration_name: '20250101000000_bot_init' }], triggers: 0, vectorIndex: 0 });
    const err = await migrate(opts(bot.url)).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(PermanentError);
    expect((err as PermanentError).code).toBe('permanent');
    expect((err as Error).message).toMatch(/another project's Prisma migration history .*"20250101000000_bot_init"/);
    expect((err as Error).message).toMatch(/Nothing was applied\. Run `memory-sync adopt` instead/);
    expect(await state()).toEqual(before);
  });

  it('still refuses when the history holds a failed row of ours (left by an older memory-sync migrate)', async () => {
    const c = await connect(bot.url);
    try {
      await c.query(
        `INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at, logs, applied_steps_count)
         VALUES (gen_random_uuid()::text, 'x', $1, now(), 'relation "personalities" already exists', 0)`,
        [names[0]],
      );
    } finally {
      await c.end();
    }
    const before = await state();
    await expect(migrate(opts(bot.url))).rejects.toThrow(/Run `memory-sync adopt` instead/);
    expect(await state()).toEqual(before);
  });

  it("applies the bot's own next migration (its history is the folder's)", async () => {
    mkdirSync(join(botDir, '20250102000000_bot_next'));
    writeFileSync(join(botDir, '20250102000000_bot_next', 'migration.sql'), 'ALTER TABLE "guild_settings" ADD COLUMN "locale" TEXT;');
    // The failed row of ours blocks every deploy (P3009) until adopt or resolve clears it.
    const c = await connect(bot.url);
    try {
      await c.query('UPDATE _prisma_migrations SET rolled_back_at = now() WHERE finished_at IS NULL');
    } finally {
      await c.end();
    }
    expect((await migrate({ ...opts(bot.url), migrationsDir: botDir })).applied).toEqual(['20250102000000_bot_next']);
  });
});
