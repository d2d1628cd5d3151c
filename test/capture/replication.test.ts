import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  checkServer,
  createSlot,
  ensurePublication,
  slotStatus,
  uninstallCapture,
  type CaptureTable,
} from '../../src/capture/replication.js';
import { main } from '../../src/cli/index.js';
import { ConfigError, PermanentError } from '../../src/contract/errors.js';
import { ReplicationSource } from '../../src/sources/replication/source.js';
import { ADMIN_URL, type TestDb } from '../helpers/db.js';
import { createReplicationDatabase, silent, uniqueName } from '../sources/replication/helpers.js';

/** Keys only, and llm_configs keyed by its unique personalityId index: a delete then names its personality. */
const TABLES: CaptureTable[] = [
  { name: 'personalities', columns: ['id'] },
  { name: 'llm_configs', columns: ['id', 'personalityId'], replicaIdentity: { index: 'llm_configs_personalityId_key' } },
  { name: 'memories', columns: ['id', 'personalityId'] },
];

/*
 * The capture side of logical replication: publication, replica identity,
 * slot, uninstall — on the private wal_level=logical cluster; the refusal on
 * the shared 5432 cluster (wal_level=replica), read-only there.
 */

let db: TestDb;
let pool: pg.Pool;
beforeAll(async () => {
  db = await createReplicationDatabase('ms_capture');
  pool = new pg.Pool({ connectionString: db.url, max: 2 });
});
afterAll(async () => {
  await pool?.end();
  await db?.drop();
});

async function published(publication: string): Promise<Record<string, string[]>> {
  const { rows } = await pool.query<{ t: string; cols: string[] }>(
    `SELECT tablename AS t, attnames::text[] AS cols FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1`,
    [publication],
  );
  return Object.fromEntries(rows.map((r) => [r.t, r.cols]));
}

describe('publication', () => {
  it('creates it with column lists and the replica identities asked for; a second call only reads', async () => {
    const pub = uniqueName('pub');
    const first = await ensurePublication(pool, pub, TABLES);
    expect(first).toMatchObject({ created: true, altered: false });
    expect(await published(pub)).toEqual({
      llm_configs: ['id', 'personalityId'],
      memories: ['id', 'personalityId'],
      personalities: ['id'],
    });
    const { rows } = await pool.query<{ relname: string; relreplident: string }>(
      `SELECT relname, relreplident::text FROM pg_class WHERE relname IN ('personalities', 'llm_configs', 'memories') ORDER BY 1`,
    );
    expect(rows).toEqual([
      { relname: 'llm_configs', relreplident: 'i' },
      { relname: 'memories', relreplident: 'd' },
      { relname: 'personalities', relreplident: 'd' },
    ]);
    expect(first.tables['public.llm_configs']!.identity).toEqual(['personalityId']);
    expect(await ensurePublication(pool, pub, TABLES)).toMatchObject({ created: false, altered: false });
  });

  it('brings an existing publication to the new table list and columns; identity columns are always published', async () => {
    const pub = uniqueName('pub');
    await ensurePublication(pool, pub, [{ name: 'personalities' }]);
    expect((await published(pub)).personalities!.length).toBeGreaterThan(3); // every column
    // Asked for channelId only: the primary key is added, or PostgreSQL would refuse UPDATE and DELETE on the table.
    const r = await ensurePublication(pool, pub, [{ name: 'memories', columns: ['channelId'] }]);
    expect(r).toMatchObject({ created: false, altered: true });
    expect(await published(pub)).toEqual({ memories: ['id', 'channelId'] });
    // The application's own writes still work on the captured table.
    const { rows } = await pool.query<{ id: string }>(
      `INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt") VALUES ($1, 'd', 'p', now()) RETURNING id`,
      [uniqueName('w')],
    );
    await pool.query(`INSERT INTO memories ("personalityId", "channelId", content, embedding) VALUES ($1, 'c', 'x', array_fill(0.1, ARRAY[1536])::vector)`, [rows[0]!.id]);
    await pool.query(`UPDATE memories SET content = 'y' WHERE "personalityId" = $1`, [rows[0]!.id]);
    await pool.query(`DELETE FROM memories WHERE "personalityId" = $1`, [rows[0]!.id]);
  });

  it('"existing" keeps the identity a table has (FULL, an index) and turns only NOTHING into DEFAULT', async () => {
    await pool.query('CREATE TABLE ident_full (id int PRIMARY KEY, a text, b text)');
    await pool.query('ALTER TABLE ident_full REPLICA IDENTITY FULL');
    await pool.query('CREATE TABLE ident_nothing (id int PRIMARY KEY, a text)');
    await pool.query('ALTER TABLE ident_nothing REPLICA IDENTITY NOTHING');
    await pool.query('CREATE TABLE ident_index (id int PRIMARY KEY, k text NOT NULL UNIQUE, a text)');
    await pool.query('ALTER TABLE ident_index REPLICA IDENTITY USING INDEX ident_index_k_key');
    const pub = uniqueName('pub');
    const r = await ensurePublication(pool, pub, [
      { name: 'ident_full', columns: ['id'], replicaIdentity: 'existing' },
      { name: 'ident_nothing', columns: ['id'], replicaIdentity: 'existing' },
      { name: 'ident_index', columns: ['id'], replicaIdentity: 'existing' },
    ]);
    const { rows } = await pool.query<{ relname: string; relreplident: string }>(
      `SELECT relname, relreplident::text FROM pg_class WHERE relname LIKE 'ident\\_%' AND relkind = 'r' ORDER BY 1`,
    );
    expect(rows).toEqual([
      { relname: 'ident_full', relreplident: 'f' },
      { relname: 'ident_index', relreplident: 'i' },
      { relname: 'ident_nothing', relreplident: 'd' },
    ]);
    // FULL needs every column published; an index identity adds its columns to the list.
    expect(await published(pub)).toEqual({ ident_full: ['id', 'a', 'b'], ident_index: ['id', 'k'], ident_nothing: ['id'] });
    expect(r.tables['public.ident_index']!.identity).toEqual(['k']);
    await pool.query(`INSERT INTO ident_nothing VALUES (1, 'x')`);
    await pool.query(`UPDATE ident_nothing SET a = 'y'`); // would fail published with NOTHING
    await pool.query(`DELETE FROM ident_nothing`);
  });

  it('refuses what would break the application or the capture, and creates nothing', async () => {
    await pool.query('CREATE TABLE IF NOT EXISTS no_key (a int, b text)');
    const pub = uniqueName('pub');
    await expect(ensurePublication(pool, pub, [{ name: 'no_key' }])).rejects.toThrow(PermanentError);
    await expect(ensurePublication(pool, pub, [{ name: 'no_key' }])).rejects.toThrow(/no primary key/);
    await expect(ensurePublication(pool, pub, [{ name: 'memories', columns: ['nope'] }])).rejects.toThrow(ConfigError);
    await expect(ensurePublication(pool, pub, [{ name: 'missing_table' }])).rejects.toThrow(/does not exist/);
    await expect(ensurePublication(pool, 'Bad-Name', TABLES)).rejects.toThrow(ConfigError);
    expect(await published(pub)).toEqual({});
    // Updates on the table without a key still work: it was never published.
    await pool.query('INSERT INTO no_key VALUES (1, $1)', ['x']);
    await pool.query('UPDATE no_key SET b = $1', ['y']);
  });
});

describe('slot and uninstall', () => {
  it('uninstall drops the slot and the publication; refuses while a reader holds the slot; a second run finds nothing', async () => {
    const slot = uniqueName('s');
    const publication = uniqueName('pub');
    await ensurePublication(pool, publication, TABLES);
    expect(await createSlot(pool, slot)).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    expect(await createSlot(pool, slot)).toBeNull(); // exists already: not an error
    expect(await slotStatus(pool, slot)).toMatchObject({ activePid: null, walStatus: 'reserved' });

    const source = new ReplicationSource({ databaseUrl: db.url, logger: silent, slot, publication, mapper: () => [], backoff: { minMs: 20, maxMs: 200 } });
    await source.start();
    await expect(uninstallCapture(pool, { slot, publication }, { waitMs: 200 })).rejects.toThrow(/being read by process \d+/);
    await source.close();

    expect(await uninstallCapture(pool, { slot, publication })).toEqual({ slot: true, publication: true });
    expect(await slotStatus(pool, slot)).toBeNull();
    const { rows } = await pool.query('SELECT 1 FROM pg_publication WHERE pubname = $1', [publication]);
    expect(rows).toHaveLength(0);
    expect(await uninstallCapture(pool, { slot, publication })).toEqual({ slot: false, publication: false });
  });

  it('`memory-sync uninstall` drops the slot and publication named by the environment', async () => {
    const slot = uniqueName('cli');
    const publication = uniqueName('clipub');
    await ensurePublication(pool, publication, TABLES);
    await createSlot(pool, slot);
    const saved = { ...process.env };
    const lines: string[] = [];
    const log = console.log;
    console.log = (line: string) => lines.push(line);
    try {
      Object.assign(process.env, { DATABASE_URL: db.url, MEMORY_SYNC_REPLICATION_SLOT: slot, MEMORY_SYNC_REPLICATION_PUBLICATION: publication });
      expect(await main(['node', 'memory-sync', 'uninstall'])).toBe(0);
      expect(await main(['node', 'memory-sync', 'uninstall'])).toBe(0);
    } finally {
      console.log = log;
      process.env = saved;
    }
    expect(lines.filter((l) => l.startsWith('slot '))).toEqual([`slot ${slot}: dropped; publication ${publication}: dropped`, `slot ${slot}: none; publication ${publication}: none`]);
    expect(await slotStatus(pool, slot)).toBeNull();
  });

  it('leaves a slot of the same name that is not its own alone', async () => {
    const slot = uniqueName('phys');
    await pool.query('SELECT pg_create_physical_replication_slot($1)', [slot]);
    try {
      await expect(slotStatus(pool, slot)).rejects.toThrow(/not memory-sync's/);
      await expect(uninstallCapture(pool, { slot, publication: uniqueName('pub') })).rejects.toThrow(/not memory-sync's/);
    } finally {
      await pool.query('SELECT pg_drop_replication_slot($1)', [slot]);
    }
  });
});

describe('on a server with wal_level = replica (the shared cluster, read only)', () => {
  it('refuses with a PermanentError naming the setting and how to change it on each managed service', async () => {
    const c = new pg.Client({ connectionString: ADMIN_URL });
    await c.connect();
    try {
      const { rows } = await c.query<{ wal_level: string }>(`SELECT current_setting('wal_level') AS wal_level`);
      expect(rows[0]!.wal_level).toBe('replica');
      const err = await checkServer(c).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PermanentError);
      const message = (err as Error).message;
      expect(message).toMatch(/wal_level is "replica"/);
      for (const where of ['ALTER SYSTEM SET wal_level = logical', 'Railway', 'Neon', 'Supabase', 'RDS', 'rds.logical_replication', 'MEMORY_SYNC_SOURCE=listen']) {
        expect(message).toContain(where);
      }
    } finally {
      await c.end();
    }
  });

  it('ReplicationSource.start() rejects at once, before it creates anything', async () => {
    const source = new ReplicationSource({ databaseUrl: ADMIN_URL, logger: silent, slot: uniqueName('never'), tables: TABLES, mapper: () => [] });
    const retries: unknown[] = [];
    source.on('retry', (_n, e) => retries.push(e));
    await expect(source.start()).rejects.toThrow(/wal_level is "replica"/);
    expect(retries).toEqual([]);
    expect(source.state).toBe('closed');
    await source.close();
  });
});
