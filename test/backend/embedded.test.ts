import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DATA_DIR_LOCK_FILE, applyEmbeddedMigrations, openEmbedded, type EmbeddedDatabase } from '../../src/backend/embedded.js';
import { insertMemory, searchMemories } from '../../src/store/builtin.js';
import { ConfigError, PermanentError } from '../../src/contract/errors.js';
import { parsePayload } from '../../src/contract/change-event.js';
import { MIGRATIONS_DIR, connect, createMigratedDatabase, seededVectors, type TestDb } from '../helpers/db.js';

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const names = readdirSync(MIGRATIONS_DIR, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort();

/** What must be the same on PostgreSQL (migrated by Prisma's engine) and on PGlite: definitions, not OIDs. */
async function catalog(q: (text: string) => Promise<Array<Record<string, unknown>>>) {
  return {
    migrations: await q(
      `SELECT migration_name, checksum, finished_at IS NOT NULL AS finished, logs, rolled_back_at, applied_steps_count
       FROM _prisma_migrations ORDER BY migration_name`,
    ),
    columns: await q(
      `SELECT table_name, column_name, data_type, is_nullable, column_default, character_maximum_length, datetime_precision
       FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2`,
    ),
    indexes: await q(`SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2`),
    triggers: await q(
      `SELECT tgrelid::regclass::text AS tbl, tgname, tgenabled, pg_get_triggerdef(oid) AS def FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2`,
    ),
    constraints: await q(
      `SELECT conrelid::regclass::text AS tbl, conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
       WHERE connamespace = 'public'::regnamespace AND contype <> 'n' ORDER BY 1, 2`, // PostgreSQL 18 lists NOT NULLs here too
    ),
  };
}

let dir: string;
let first: EmbeddedDatabase | undefined;
let reopened: EmbeddedDatabase | undefined;
let pgDb: TestDb;
let pgClient: pg.Client;
let deadPid: number;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'memory-sync-embedded-'));
  [first, pgDb] = await Promise.all([openEmbedded({ dataDir: dir, logger }), createMigratedDatabase()]);
  pgClient = await connect(pgDb.url);
  deadPid = spawnSync(process.execPath, ['-e', '']).pid!;
});

afterAll(async () => {
  await first?.close();
  await reopened?.close();
  await pgClient?.end();
  await pgDb?.drop();
  rmSync(dir, { recursive: true, force: true });
});

describe('openEmbedded: migrations', () => {
  it('a new data directory is created, migrated, and recorded in _prisma_migrations as prisma migrate deploy does', async () => {
    const db = first!;
    expect(db.info).toMatchObject({ dataDir: dir, reopened: false, applied: names });
    expect(db.info.version).toMatch(/^PostgreSQL 1[4-9]/);
    expect(existsSync(join(dir, 'PG_VERSION'))).toBe(true);
    const { rows } = await db.db.query<{ migration_name: string; checksum: string; finished_at: Date; id: string }>(
      'SELECT id, migration_name, checksum, finished_at FROM _prisma_migrations ORDER BY migration_name',
    );
    expect(rows.map((r) => r.migration_name)).toEqual(names);
    for (const r of rows) {
      const sql = readFileSync(join(MIGRATIONS_DIR, r.migration_name, 'migration.sql'));
      expect(r.checksum).toBe(createHash('sha256').update(sql).digest('hex'));
      expect(r.finished_at).toBeInstanceOf(Date);
      expect(r.id).toMatch(/^[0-9a-f-]{36}$/);
    }
  });

  it('leaves the same catalog and _prisma_migrations rows as Prisma\'s engine on PostgreSQL', async () => {
    const embedded = await catalog(async (text) => (await first!.queryable.query(text)).rows);
    const server = await catalog(async (text) => (await pgClient.query(text)).rows);
    expect(embedded).toEqual(server);
    expect(embedded.triggers).toHaveLength(12);
  });

  it('refuses a second open of a directory this process has open', async () => {
    const err = await openEmbedded({ dataDir: dir, logger }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).variable).toBe('MEMORY_SYNC_DATA_DIR');
    expect((err as Error).message).toContain('this process');
    expect(readFileSync(join(dir, DATA_DIR_LOCK_FILE), 'utf8').trim()).toBe(String(process.pid));
  });

  it('a reopen applies nothing, keeps the data, and takes over a lock left by a dead process', async () => {
    const pid = (
      await first!.queryable.query<{ id: string }>(
        `INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt") VALUES ('kept', 'Kept', 'p', now()) RETURNING id`,
      )
    ).rows[0]!.id;
    const before = (await first!.queryable.query('SELECT id, checksum, started_at, finished_at FROM _prisma_migrations ORDER BY 1')).rows;
    await first!.close();
    expect(existsSync(join(dir, DATA_DIR_LOCK_FILE))).toBe(false);
    await first!.close(); // idempotent

    writeFileSync(join(dir, DATA_DIR_LOCK_FILE), `${process.ppid}\n`); // another live process has it
    const busy = await openEmbedded({ dataDir: dir, logger }).catch((e: unknown) => e);
    expect(busy).toBeInstanceOf(ConfigError);
    expect((busy as Error).message).toContain(`process ${process.ppid}`);

    writeFileSync(join(dir, DATA_DIR_LOCK_FILE), `${deadPid}\n`); // a crash left it behind
    reopened = await openEmbedded({ dataDir: dir, logger });
    expect(reopened.info).toMatchObject({ dataDir: dir, reopened: true, applied: [] });
    expect((await reopened.queryable.query('SELECT id, checksum, started_at, finished_at FROM _prisma_migrations ORDER BY 1')).rows).toEqual(before);
    expect((await reopened.queryable.query('SELECT name FROM personalities WHERE id = $1', [pid])).rows).toEqual([{ name: 'kept' }]);
  });
});

describe('the embedded database (PGlite + pgvector): the facts issue 8 relies on', () => {
  it('statement-level triggers with transition tables: one multi-row statement, one notification naming every row; none on rollback', async () => {
    const db = reopened!.db;
    const seen: string[] = [];
    const old: string[] = [];
    const unlisten = await db.listen('memory_sync', (p) => seen.push(p));
    const unlistenOld = await db.listen('cache_invalidation', (p) => old.push(p));
    let marked!: () => void;
    let marker = new Promise<void>((resolve) => (marked = resolve));
    const unlistenMarker = await db.listen('test_marker', () => marked());
    /** Sends a marker after everything so far and waits for it: all earlier notifications have been delivered. */
    const delivered = async () => {
      await db.query(`NOTIFY test_marker`);
      await marker;
      marker = new Promise<void>((resolve) => (marked = resolve));
      const events = seen.splice(0).map((raw) => {
        const parsed = parsePayload(raw);
        expect(parsed.ok, parsed.ok ? '' : parsed.reason).toBe(true);
        return (parsed as Extract<typeof parsed, { ok: true }>).event;
      });
      return events;
    };
    try {
      const ids = (
        await db.query<{ id: string }>(
          `INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt")
           SELECT 'bulk' || g, 'B', 'p', now() FROM generate_series(1, 3) g RETURNING id`,
        )
      ).rows.map((r) => r.id);
      const keys = ids.map((id) => [id]).sort();
      await db.transaction(async (tx) => {
        await tx.query(`UPDATE personalities SET "displayName" = 'rolled back' WHERE id = $1`, [ids[0]]);
        await tx.rollback();
      });
      let events = await delivered();
      expect(events).toHaveLength(1);
      expect(events[0]).toMatchObject({ ms: 2, model: 'Personality', op: 'INSERT', scope: 'rows', fields: ['id'], gone: [], chunk: 1, chunks: 1 });
      expect([...events[0]!.rows].sort()).toEqual(keys);

      // UPDATE reads both transition tables (old_rows joined to new_rows).
      await db.query(`UPDATE personalities SET "displayName" = 'C' WHERE id = ANY($1::uuid[])`, [ids]);
      events = await delivered();
      expect(events).toHaveLength(1);
      expect(events[0]).toMatchObject({ model: 'Personality', op: 'UPDATE', scope: 'rows', gone: [] });
      expect([...events[0]!.rows].sort()).toEqual(keys);

      await db.query(`DELETE FROM personalities WHERE id = ANY($1::uuid[])`, [ids]);
      events = await delivered();
      expect(events).toHaveLength(1);
      expect(events[0]).toMatchObject({ model: 'Personality', op: 'DELETE', scope: 'rows', rows: [] });
      expect([...events[0]!.gone].sort()).toEqual(keys);
      // 0.1's channel is silent: its trigger function is gone.
      expect(old).toEqual([]);
    } finally {
      await unlisten();
      await unlistenOld();
      await unlistenMarker();
    }
  });

  it('advisory locks and pg_notification_queue_usage() work', async () => {
    const q = reopened!.queryable;
    expect((await q.query('SELECT pg_try_advisory_lock(42) AS ok')).rows[0].ok).toBe(true);
    expect((await q.query('SELECT pg_advisory_unlock(42) AS ok')).rows[0].ok).toBe(true);
    const usage = (await q.query<{ u: number }>('SELECT pg_notification_queue_usage() AS u')).rows[0]!.u;
    expect(usage).toBeGreaterThanOrEqual(0);
    expect(usage).toBeLessThan(1);
  });

  it('pgvector: the ivfflat index serves <=> (exact when every list is probed), and searchMemories ranks exactly', async () => {
    const q = reopened!.queryable;
    const pid = (
      await q.query<{ id: string }>(
        `INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt") VALUES ('vectors', 'V', 'p', now()) RETURNING id`,
      )
    ).rows[0]!.id;
    const vectors = seededVectors(31, 60);
    const ids = vectors.map((_, i) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`);
    for (const [i, v] of vectors.entries()) {
      await insertMemory(q, { id: ids[i]!, personalityId: pid, channelId: i % 2 ? 'odd' : 'even', content: `m${i}`, embedding: v });
    }
    const query = seededVectors(32, 1)[0]!;
    const cosine = (a: Float32Array, b: Float32Array) => {
      let dot = 0;
      let na = 0;
      let nb = 0;
      for (let i = 0; i < a.length; i++) {
        dot += a[i]! * b[i]!;
        na += a[i]! * a[i]!;
        nb += b[i]! * b[i]!;
      }
      return dot / Math.sqrt(na * nb);
    };
    const expected = vectors
      .map((v, i) => ({ id: ids[i]!, similarity: cosine(query, v), odd: i % 2 === 1 }))
      .sort((a, b) => b.similarity - a.similarity);

    const literal = `[${Array.from(query).join(',')}]`;
    const hits = await searchMemories(q, { personalityId: pid, embedding: query, limit: 5 });
    expect(hits.map((h) => h.id)).toEqual(expected.slice(0, 5).map((e) => e.id));
    hits.forEach((h, i) => expect(Math.abs(h.similarity - expected[i]!.similarity)).toBeLessThan(1e-5));
    const odd = await searchMemories(q, { personalityId: pid, channelId: 'odd', embedding: query, limit: 3 });
    expect(odd.map((h) => h.id)).toEqual(expected.filter((e) => e.odd).slice(0, 3).map((e) => e.id));

    // On 60 rows the planner would rather scan: force the index, and probe
    // all 50 lists (built on an empty table, its centroids are arbitrary).
    await q.query('SET enable_seqscan = off');
    await q.query('SET ivfflat.probes = 50');
    try {
      const sql = `SELECT id FROM memories ORDER BY embedding <=> $1::vector LIMIT 5`;
      const plan = (await q.query<{ 'QUERY PLAN': string }>(`EXPLAIN ${sql}`, [literal])).rows.map((r) => r['QUERY PLAN']).join('\n');
      expect(plan).toContain('Index Scan using idx_memories_embedding');
      // This personality's rows are the only ones with embeddings here.
      expect((await q.query<{ id: string }>(sql, [literal])).rows.map((r) => r.id)).toEqual(expected.slice(0, 5).map((e) => e.id));
    } finally {
      await q.query('RESET enable_seqscan');
      await q.query('SET ivfflat.probes = 1');
    }
  });

  it('COPY ... TO STDOUT returns nothing in process; COPY ... TO /dev/blob returns the data', async () => {
    const db = reopened!.db;
    const stdout = await db.query(`COPY (SELECT 1 AS one) TO STDOUT (FORMAT binary)`);
    expect(stdout.rows).toEqual([]);
    expect(stdout.blob).toBeUndefined();
    const blob = await db.query(`COPY (SELECT 1 AS one) TO '/dev/blob' (FORMAT binary)`);
    expect(blob.blob?.size).toBeGreaterThan(19);
  });
});

describe('applyEmbeddedMigrations', () => {
  it('a failing migration is rolled back whole and not recorded; the ones before it stay applied', async () => {
    const db = reopened!.db;
    const extra = mkdtempSync(join(tmpdir(), 'memory-sync-migrations-'));
    try {
      for (const n of names) {
        mkdirSync(join(extra, n));
        writeFileSync(join(extra, n, 'migration.sql'), readFileSync(join(MIGRATIONS_DIR, n, 'migration.sql')));
      }
      mkdirSync(join(extra, '20990101000000_good'));
      writeFileSync(join(extra, '20990101000000_good', 'migration.sql'), 'CREATE TABLE good_one (x int);');
      mkdirSync(join(extra, '20990102000000_bad'));
      writeFileSync(join(extra, '20990102000000_bad', 'migration.sql'), 'CREATE TABLE bad_one (x int);\nSELECT 1/0;');
      const err = await applyEmbeddedMigrations(db, extra, logger).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PermanentError);
      expect((err as PermanentError).sqlState).toBe('22012');
      expect((err as Error).message).toContain('20990102000000_bad');
      const recorded = (await db.query<{ migration_name: string }>('SELECT migration_name FROM _prisma_migrations ORDER BY 1')).rows;
      expect(recorded.map((r) => r.migration_name)).toEqual([...names, '20990101000000_good']);
      const tables = (await db.query<{ t: string | null; b: string | null }>(`SELECT to_regclass('good_one')::text AS t, to_regclass('bad_one')::text AS b`)).rows[0]!;
      expect(tables).toEqual({ t: 'good_one', b: null });
    } finally {
      rmSync(extra, { recursive: true, force: true });
    }
  });
});

