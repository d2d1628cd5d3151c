import { createHash, randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adopt, compareTables, IncompatibleSchemaError, missingIndexes, type TableShape } from '../../src/capture/adopt.js';
import { migrate } from '../../src/migrations/migrate.js';
import {
  MIGRATIONS_DIR,
  SCHEMA_PATH,
  connect,
  createDatabase,
  createMigratedDatabase,
  seededVectors,
  vectorLiteral,
  type TestDb,
} from '../helpers/db.js';
import { NotificationRecorder } from '../helpers/notifications.js';
import { parsePayload } from '../../src/contract/change-event.js';

const OURS = readdirSync(MIGRATIONS_DIR, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort();
const opts = (url: string) => ({ databaseUrl: url, migrationsDir: MIGRATIONS_DIR, schemaPath: SCHEMA_PATH });

// The bot's tables as its own Prisma project made them: memory-sync's tables
// (the init migration up to the triggers) plus its own columns and tables.
const INIT = readFileSync(join(MIGRATIONS_DIR, '20261124000000_init', 'migration.sql'), 'utf8');
const TABLES = INIT.slice(0, INIT.indexOf('-- sql/010_notify.sql'));
const BOT_EXTRAS = `
ALTER TABLE "personalities" ADD COLUMN "avatarUrl" TEXT NOT NULL DEFAULT '', ADD COLUMN "ownerId" TEXT;
ALTER TABLE "memories" ADD COLUMN "importance" INTEGER NOT NULL DEFAULT 0;
CREATE TABLE "guild_settings" ("id" SERIAL PRIMARY KEY, "guildId" TEXT NOT NULL, "prefix" TEXT NOT NULL);
-- The bot's own row trigger: every write to memories leaves a line.
CREATE TABLE "memory_audit" ("id" SERIAL PRIMARY KEY, "op" TEXT NOT NULL, "at" TIMESTAMPTZ NOT NULL DEFAULT now());
CREATE FUNCTION bot_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO memory_audit (op) VALUES (TG_OP); RETURN NULL; END $$;
CREATE TRIGGER bot_audit AFTER INSERT OR UPDATE OR DELETE ON "memories" FOR EACH ROW EXECUTE FUNCTION bot_audit();
`;

/** A database made by the bot's Prisma migrations (so `_prisma_migrations` holds the bot's row). */
async function botDatabase(sql: string): Promise<TestDb> {
  const dir = mkdtempSync(join(tmpdir(), 'ms-bot-'));
  mkdirSync(join(dir, '20250101000000_bot_init'));
  writeFileSync(join(dir, '20250101000000_bot_init', 'migration.sql'), sql);
  writeFileSync(join(dir, 'migration_lock.toml'), readFileSync(join(MIGRATIONS_DIR, 'migration_lock.toml')));
  const db = await createDatabase('ms_adopt');
  try {
    await migrate({ databaseUrl: db.url, migrationsDir: dir, schemaPath: SCHEMA_PATH });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return db;
}

/** Everything adopt could touch: relations, columns, triggers, functions, indexes, extensions, migration rows. */
async function catalog(url: string): Promise<string> {
  const c = await connect(url);
  try {
    const r = await c.query<{ x: string }>(`
      SELECT x FROM (
        SELECT 'class ' || relname || ' ' || relkind::text AS x FROM pg_class WHERE relnamespace = 'public'::regnamespace
        UNION ALL
        SELECT 'column ' || attrelid::regclass || '.' || attname || ' ' || format_type(atttypid, atttypmod) || ' ' || attnotnull
          FROM pg_attribute WHERE attrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'public'::regnamespace) AND attnum > 0
        UNION ALL
        SELECT 'trigger ' || tgrelid::regclass || ' ' || tgname || ' ' || tgenabled::text FROM pg_trigger WHERE NOT tgisinternal
        UNION ALL
        SELECT 'function ' || oid::regprocedure || ' ' || md5(prosrc) FROM pg_proc WHERE pronamespace = 'public'::regnamespace
        UNION ALL
        SELECT 'index ' || pg_get_indexdef(indexrelid) || ' ' || indisvalid FROM pg_index
         WHERE indrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'public'::regnamespace)
        UNION ALL
        SELECT 'extension ' || extname || ' ' || extversion FROM pg_extension
      ) s ORDER BY x`);
    const rows = await c.query(`SELECT to_jsonb(m) AS m FROM _prisma_migrations m ORDER BY migration_name`).catch(() => ({ rows: [] }));
    return [...r.rows.map((row) => row.x), ...rows.rows.map((row) => JSON.stringify(row.m))].join('\n');
  } finally {
    await c.end();
  }
}

/** memory-sync's own objects (triggers, generated functions with their fingerprints, vector index), as defined in the catalog. */
async function memorySyncObjects(url: string): Promise<string[]> {
  const c = await connect(url);
  try {
    const r = await c.query<{ x: string }>(`
      SELECT x FROM (
        SELECT pg_get_triggerdef(oid) || ' ' || tgenabled::text AS x FROM pg_trigger WHERE tgname LIKE 'memory\\_sync\\_%'
        UNION ALL
        SELECT 'function ' || proname || ' ' || md5(prosrc) || ' ' || coalesce(obj_description(oid, 'pg_proc'), '-')
          FROM pg_proc WHERE proname LIKE 'memory\\_sync\\_%'
        UNION ALL
        SELECT pg_get_indexdef(indexrelid) || ' ' || indisvalid FROM pg_index WHERE indexrelid = to_regclass('idx_memories_embedding')
      ) s ORDER BY x`);
    return r.rows.map((row) => row.x);
  } finally {
    await c.end();
  }
}

/** Every index of memory-sync's four tables, as defined. */
async function indexDefinitions(url: string): Promise<string[]> {
  const c = await connect(url);
  try {
    const r = await c.query<{ d: string }>(
      `SELECT pg_get_indexdef(indexrelid) AS d FROM pg_index
        WHERE indrelid IN ('personalities'::regclass, 'llm_configs'::regclass, 'memories'::regclass, 'conversation_history'::regclass) ORDER BY 1`,
    );
    return r.rows.map((row) => row.d);
  } finally {
    await c.end();
  }
}

describe('adopt: a database whose tables the bot already made', () => {
  let bot: TestDb;
  let reference: TestDb;
  let personalityId: string;

  beforeAll(async () => {
    [bot, reference] = await Promise.all([botDatabase(TABLES + BOT_EXTRAS), createMigratedDatabase('ms_adopt_ref')]);
    const c = await connect(bot.url);
    try {
      const p = await c.query<{ id: string }>(
        `INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt", "avatarUrl") VALUES ('ada', 'Ada', 'You are Ada', now(), 'a.png') RETURNING id`,
      );
      personalityId = p.rows[0]!.id;
      const [v] = seededVectors(7, 1);
      await c.query(`INSERT INTO memories ("personalityId", "channelId", content, embedding, importance) VALUES ($1, 'c1', 'hello', $2::vector, 3)`, [
        personalityId,
        vectorLiteral(v!),
      ]);
      await c.query(`INSERT INTO guild_settings ("guildId", prefix) VALUES ('g1', '!')`);
    } finally {
      await c.end();
    }
  });
  afterAll(async () => {
    await Promise.all([bot?.drop(), reference?.drop()]);
  });

  it('installs triggers and the index, records the migrations, keeps the rows; migrate is then a no-op', async () => {
    expect(await memorySyncObjects(bot.url)).toEqual([]);
    const listener = await connect(bot.url);
    const recorder = await NotificationRecorder.on(listener);
    const rowVersions = async () =>
      (await listener.query(`SELECT 'p' || xmin::text || ctid::text AS v FROM personalities UNION ALL SELECT 'm' || xmin::text || ctid::text FROM memories ORDER BY 1`)).rows;
    const versions = await rowVersions();
    const auditLines = async () => (await listener.query('SELECT count(*)::int AS n FROM memory_audit')).rows[0].n as number;
    const audited = await auditLines();
    expect(audited).toBe(1); // the fixture's insert
    // Sequences ignore rollbacks: the audit ids drawn show the bot's trigger ran during the proof.
    const drawn = async () => Number((await listener.query('SELECT last_value FROM memory_audit_id_seq')).rows[0].last_value);
    const drawnBefore = await drawn();
    let result: Awaited<ReturnType<typeof adopt>>;
    try {
      result = await adopt(opts(bot.url));
      // The proof ran its INSERT, UPDATE and DELETE (and a real update, delete and re-insert of a
      // row, through the bot's own triggers) in a transaction that was rolled back: nothing was
      // notified, no row has a new version, the bot's audit trigger left no new line.
      await recorder.settle(listener);
      expect(recorder.take()).toEqual([]);
      expect(await rowVersions()).toEqual(versions);
      expect(await auditLines()).toBe(audited);
      expect(await drawn()).toBeGreaterThan(drawnBefore);
    } finally {
      await listener.end();
    }
    // The bot's tables lack the TTL index a later migration adds: built, so the record is true.
    expect(result).toEqual({ tables: ['"llm_configs"', '"memories"', '"personalities"'], recorded: OURS, alreadyRecorded: [], vectorIndex: 'created', indexesCreated: ['conversation_history_createdAt_idx'] });

    // Same triggers, function and indexes as a database memory-sync migrated itself.
    expect(await memorySyncObjects(bot.url)).toEqual(await memorySyncObjects(reference.url));
    expect(await indexDefinitions(bot.url)).toEqual(await indexDefinitions(reference.url));

    const c = await connect(bot.url);
    try {
      const rows = await c.query(`SELECT (SELECT count(*)::int FROM personalities) AS p, (SELECT count(*)::int FROM memories) AS m,
        (SELECT "avatarUrl" FROM personalities) AS avatar, (SELECT importance FROM memories) AS importance,
        (SELECT count(*)::int FROM guild_settings) AS g`);
      expect(rows.rows[0]).toEqual({ p: 1, m: 1, avatar: 'a.png', importance: 3, g: 1 });

      // As `prisma migrate resolve --applied` writes them (the engine's
      // markMigrationApplied): the file's checksum, started = finished,
      // logs '' and no applied steps; the bot's own row untouched.
      const m = await c.query(
        'SELECT migration_name, checksum, started_at, finished_at, rolled_back_at, logs, applied_steps_count FROM _prisma_migrations ORDER BY migration_name',
      );
      expect(m.rows.map((r) => r.migration_name)).toEqual(['20250101000000_bot_init', ...OURS]);
      expect(m.rows[0]).toMatchObject({ logs: null, applied_steps_count: 1, rolled_back_at: null });
      for (const r of m.rows.slice(1)) {
        const file = readFileSync(join(MIGRATIONS_DIR, r.migration_name, 'migration.sql'));
        expect(r.checksum).toBe(createHash('sha256').update(file).digest('hex'));
        expect(r.finished_at).toEqual(r.started_at);
        expect(r).toMatchObject({ logs: '', applied_steps_count: 0, rolled_back_at: null });
      }
    } finally {
      await c.end();
    }

    expect((await migrate({ databaseUrl: bot.url, migrationsDir: MIGRATIONS_DIR, schemaPath: SCHEMA_PATH })).applied).toEqual([]);
  });

  it('the triggers then fire on memory_sync, with v2 payloads naming the keys', async () => {
    const listener = await connect(bot.url);
    const writer = await connect(bot.url);
    try {
      const recorder = await NotificationRecorder.on(listener); // LISTENs on 0.1's cache_invalidation too: nothing comes there
      const id = randomUUID();
      const [v] = seededVectors(8, 1);
      await writer.query(`INSERT INTO memories (id, "personalityId", "channelId", content, embedding) VALUES ($1, $2, 'c2', 'more', $3::vector)`, [
        id,
        personalityId,
        vectorLiteral(v!),
      ]);
      await writer.query(`UPDATE personalities SET "displayName" = 'Ada L.' WHERE id = $1`, [personalityId]);
      await writer.query(`DELETE FROM memories WHERE id = $1`, [id]);
      await recorder.settle(writer);
      expect(recorder.received.map((r) => r.channel)).toEqual(['memory_sync', 'memory_sync', 'memory_sync']);
      const events = recorder.take();
      for (const e of events) expect(parsePayload(e.raw)).toMatchObject({ ok: true });
      expect(events).toMatchObject([
        { ms: 2, model: 'Memory', op: 'INSERT', scope: 'rows', fields: ['id', 'personalityId'], rows: [[id, personalityId]], gone: [] },
        { ms: 2, model: 'Personality', op: 'UPDATE', scope: 'rows', fields: ['id'], rows: [[personalityId]], gone: [] },
        { ms: 2, model: 'Memory', op: 'DELETE', scope: 'rows', rows: [], gone: [[id]] },
      ]);
      // Keys only: not the bot's extra columns, not the content.
      for (const e of events) expect(e.raw).not.toMatch(/more|importance|Ada L\./);
    } finally {
      await Promise.all([listener.end(), writer.end()]);
    }
  });

  it('is idempotent', async () => {
    const before = await catalog(bot.url);
    expect(await adopt(opts(bot.url))).toEqual({ tables: ['"llm_configs"', '"memories"', '"personalities"'], recorded: [], alreadyRecorded: OURS, vectorIndex: 'present', indexesCreated: [] });
    expect(await catalog(bot.url)).toBe(before);
  });
});

describe('adopt with record: false (your own migrations carry the SQL)', () => {
  let db: TestDb;
  beforeAll(async () => {
    db = await botDatabase(TABLES);
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('installs the triggers and the index and records nothing', async () => {
    expect(await adopt({ ...opts(db.url), record: false })).toMatchObject({ recorded: [], alreadyRecorded: [], vectorIndex: 'created' });
    const objects = await memorySyncObjects(db.url);
    expect(objects).toHaveLength(16); // 12 triggers, 3 generated functions, the index
    expect(objects.filter((o) => o.startsWith('function ')).every((o) => / memory-sync v2 [0-9a-f]{64}$/.test(o))).toBe(true);
    const c = await connect(db.url);
    try {
      const r = await c.query('SELECT migration_name FROM _prisma_migrations');
      expect(r.rows.map((row) => row.migration_name)).toEqual(['20250101000000_bot_init']);
    } finally {
      await c.end();
    }
  });
});

describe('adopt after `memory-sync migrate` failed on the bot database', () => {
  let db: TestDb;
  let botMigrations: string;
  beforeAll(async () => {
    db = await botDatabase(TABLES);
    botMigrations = mkdtempSync(join(tmpdir(), 'ms-bot-'));
    mkdirSync(join(botMigrations, '20250101000000_bot_init'));
    writeFileSync(join(botMigrations, '20250101000000_bot_init', 'migration.sql'), TABLES);
  });
  afterAll(async () => {
    await db?.drop();
    if (botMigrations) rmSync(botMigrations, { recursive: true, force: true });
  });

  it("repairs the failed row that blocks the bot's own migrate deploy", async () => {
    // `memory-sync migrate` now refuses a bot's history before doing anything ...
    await expect(migrate({ databaseUrl: db.url, migrationsDir: MIGRATIONS_DIR, schemaPath: SCHEMA_PATH })).rejects.toThrow(/memory-sync adopt/);
    // ... but an older version (or `prisma migrate deploy` with our folder) applied the init
    // migration, which collided with the bot's tables and was recorded as failed ...
    const f = await connect(db.url);
    try {
      await f.query(
        `INSERT INTO _prisma_migrations (id, checksum, migration_name, logs, started_at, applied_steps_count) VALUES (gen_random_uuid()::text, 'x', $1, 'relation "personalities" already exists', now(), 0)`,
        [OURS[0]],
      );
    } finally {
      await f.end();
    }
    // ... which stops the bot's deploys (P3009).
    await expect(migrate({ databaseUrl: db.url, migrationsDir: botMigrations, schemaPath: SCHEMA_PATH })).rejects.toThrow(/failed migrations/);

    expect((await adopt(opts(db.url))).recorded).toEqual(OURS);
    const c = await connect(db.url);
    try {
      const r = await c.query(`SELECT migration_name, rolled_back_at IS NOT NULL AS rolled_back FROM _prisma_migrations WHERE finished_at IS NULL`);
      expect(r.rows).toEqual([{ migration_name: OURS[0], rolled_back: true }]);
    } finally {
      await c.end();
    }
    expect((await migrate({ databaseUrl: db.url, migrationsDir: botMigrations, schemaPath: SCHEMA_PATH })).applied).toEqual([]);
    expect((await migrate({ databaseUrl: db.url, migrationsDir: MIGRATIONS_DIR, schemaPath: SCHEMA_PATH })).applied).toEqual([]);
  });
});

describe('adopt: an incompatible database', () => {
  let bad: TestDb;
  let empty: TestDb;
  beforeAll(async () => {
    const sql = TABLES.replace(`    "channelId" TEXT NOT NULL,\n    "content" TEXT NOT NULL,\n    "embedding"`, `    "content" TEXT NOT NULL,\n    "embedding"`)
      .replace(`CREATE INDEX "memories_personalityId_channelId_idx" ON "memories"("personalityId", "channelId");`, '')
      .replace(`"isActive" BOOLEAN NOT NULL DEFAULT true`, `"isActive" TEXT NOT NULL DEFAULT 'yes'`);
    expect(sql).not.toContain(`"isActive" BOOLEAN`); // the fixture edits took
    [bad, empty] = await Promise.all([botDatabase(sql), createDatabase('ms_adopt_empty')]);
    const c = await connect(bad.url);
    try {
      await c.query(`INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt") VALUES ('bob', 'Bob', 'You are Bob', now())`);
    } finally {
      await c.end();
    }
  });
  afterAll(async () => {
    await Promise.all([bad?.drop(), empty?.drop()]);
  });

  it('names every problem and changes nothing', async () => {
    const before = await catalog(bad.url);
    const err = await adopt(opts(bad.url)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IncompatibleSchemaError);
    expect((err as IncompatibleSchemaError).code).toBe('permanent');
    expect((err as IncompatibleSchemaError).problems).toEqual([
      'column "memories"."channelId" is missing (memory-sync needs text NOT NULL)',
      'column "personalities"."isActive" is text, memory-sync needs boolean',
    ]);
    expect((err as Error).message).toContain('nothing was changed');
    expect(await catalog(bad.url)).toBe(before);
  });

  it('points a database without the tables to migrate', async () => {
    const before = await catalog(empty.url);
    const err = (await adopt(opts(empty.url)).catch((e: unknown) => e)) as IncompatibleSchemaError;
    expect(err.problems).toContain('table "personalities" is missing');
    expect(err.problems.at(-1)).toMatch(/run `memory-sync migrate` instead/);
    expect(await catalog(empty.url)).toBe(before);
  });
});

describe('compareTables', () => {
  const col = (name: string, type: string, notNull = true, hasDefault = false) => ({ name, type, notNull, hasDefault });
  const byChannel = { name: 'memories_personalityId_channelId_idx', unique: false, definition: 'USING btree ("personalityId", "channelId")' };
  const nameKey = { name: 'personalities_name_key', unique: true, definition: 'USING btree (name)' };
  const required: TableShape[] = [
    {
      name: 'memories',
      columns: [col('id', 'uuid', true, true), col('metadata', 'jsonb', false), col('createdAt', 'timestamp(3) with time zone', true, true)],
      primaryKey: ['id'],
      indexes: [byChannel],
    },
    { name: 'personalities', columns: [col('id', 'uuid', true, true), col('name', 'text')], primaryKey: ['id'], indexes: [nameKey] },
  ];
  const existing = (tables: TableShape[]) => new Map(tables.map((t) => [t.name, t]));

  it('accepts extra nullable or defaulted columns, extra tables, and indexes under other names', () => {
    const ok = existing([
      { ...required[0]!, columns: [...required[0]!.columns, col('importance', 'integer', true, true), col('note', 'text', false)], indexes: [] },
      { ...required[1]!, columns: [...required[1]!.columns, col('ownerId', 'text', true, false)], indexes: [{ ...nameKey, name: 'bot_unique_name' }] },
      { name: 'other', columns: [col('x', 'text')], primaryKey: [], indexes: [] },
    ]);
    expect(compareTables(required, ok, new Set(['memories']))).toEqual([]);
    expect(missingIndexes(required, ok)).toEqual([{ table: 'memories', index: byChannel }]);
  });

  it('flags what breaks inserts into memories, NULLs read as NOT NULL, keys and unique indexes', () => {
    const bad = existing([
      {
        name: 'memories',
        columns: [col('id', 'uuid', true, true), col('metadata', 'jsonb', true), col('createdAt', 'timestamp(3) with time zone', true, false), col('score', 'real', true, false)],
        primaryKey: [],
        indexes: [{ ...byChannel, definition: 'USING btree ("channelId")' }],
      },
      { name: 'personalities', columns: [col('id', 'uuid', true, true), col('name', 'text', false)], primaryKey: ['name'], indexes: [{ ...nameKey, unique: false }] },
    ]);
    expect(compareTables(required, bad, new Set(['memories']))).toEqual([
      'column "memories"."metadata" is NOT NULL, memory-sync inserts rows with it NULL',
      'column "memories"."createdAt" has no default, memory-sync inserts rows relying on one',
      'column "memories"."score" is NOT NULL without a default, memory-sync inserts rows without it',
      'table "memories" has no primary key, memory-sync needs ("id")',
      'column "personalities"."name" allows NULL, memory-sync reads it as NOT NULL',
      'table "personalities" has no unique index USING btree (name), memory-sync needs one (personalities_name_key)',
      'table "personalities" has primary key ("name"), memory-sync needs ("id")',
      'index "memories_personalityId_channelId_idx" on "memories" is USING btree ("channelId"), memory-sync needs USING btree ("personalityId", "channelId")',
    ]);
  });
});
