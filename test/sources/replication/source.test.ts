import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { SidecarMetrics } from '../../../src/sidecar/metrics.js';
import { MemorySync } from '../../../src/client/memory-sync.js';
import { slotStatus } from '../../../src/capture/replication.js';
import type { ChangeEvent } from '../../../src/contract/change-event.js';
import { DatabaseUnavailableError } from '../../../src/contract/errors.js';
import { ReplicationSource, type ReplicationSourceOptions } from '../../../src/sources/replication/source.js';
import type { DecodedTransaction } from '../../../src/sources/replication/types.js';
import type { UpInfo } from '../../../src/sources/source.js';
import type { TestDb } from '../../helpers/db.js';
import { FreezableProxy } from '../../helpers/proxy.js';
import { builtinCapture, createReplicationDatabase, FAST, insertPersonality, next, silent, uniqueName } from './helpers.js';

/*
 * ReplicationSource on the private wal_level=logical cluster, with memory-sync's
 * triggers dropped: every event here came through the slot.
 */

let db: TestDb;
let pool: pg.Pool;
beforeAll(async () => {
  db = await createReplicationDatabase('ms_repl_src');
  pool = new pg.Pool({ connectionString: db.url, max: 4 });
  pool.on('connect', (c) => c.on('error', () => {}));
});
afterAll(async () => {
  await pool?.end();
  await db?.drop();
});

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
});

interface Recorded {
  source: ReplicationSource;
  events: ChangeEvent[];
  txs: DecodedTransaction[];
  ups: UpInfo[];
  downs: string[];
}

function makeSource(options: Partial<ReplicationSourceOptions> = {}, url = db.url): Recorded {
  const txs: DecodedTransaction[] = [];
  const { mapper, tables } = builtinCapture();
  const source = new ReplicationSource({
    databaseUrl: url,
    logger: silent,
    slot: options.slot ?? uniqueName('s'),
    tables,
    mapper: (tx) => {
      txs.push(tx);
      return mapper(tx);
    },
    paranoidIntervalMs: 500,
    queryTimeoutMs: 1_000,
    statusIntervalMs: 50,
    backoff: FAST,
    ...options,
  });
  const r: Recorded = { source, events: [], txs, ups: [], downs: [] };
  source.on('change', (e) => r.events.push(e));
  source.on('up', (i) => r.ups.push(i));
  source.on('down', (reason) => r.downs.push(reason));
  cleanups.push(() => source.close());
  return r;
}

/** A table whose rows go to the WAL uncompressed (STORAGE EXTERNAL), to make WAL on purpose. */
async function fillerTable(): Promise<void> {
  await pool.query('CREATE TABLE IF NOT EXISTS wal_filler (b text)');
  await pool.query('ALTER TABLE wal_filler ALTER COLUMN b SET STORAGE EXTERNAL');
}

const xidOf = async (q: pg.Pool | pg.PoolClient, sql: string, values: unknown[] = []): Promise<string> => {
  const c = q instanceof pg.Pool ? await q.connect() : q;
  try {
    await c.query('BEGIN');
    await c.query(sql, values);
    const { rows } = await c.query<{ xid: string }>('SELECT pg_current_xact_id()::xid::text AS xid');
    await c.query('COMMIT');
    return rows[0]!.xid;
  } finally {
    if (q instanceof pg.Pool) (c as pg.PoolClient).release();
  }
};

describe('ReplicationSource', () => {
  it('delivers committed changes as events, in commit order, with the keys of updated and deleted rows', async () => {
    const r = makeSource();
    await r.source.start();
    expect(r.ups).toEqual([{ first: true, lost: expect.stringMatching(/slot .* created/) }]);

    const pid = await insertPersonality(pool, uniqueName('p'));
    const cid = (await pool.query<{ id: string }>(`INSERT INTO llm_configs (id, "personalityId", model, "updatedAt") VALUES (gen_random_uuid(), $1, 'm', now()) RETURNING id`, [pid])).rows[0]!.id;
    const vec = `[${Array.from({ length: 1536 }, () => 0.1).join(',')}]`;
    const { rows } = await pool.query<{ id: string }>(`INSERT INTO memories ("personalityId", "channelId", content, embedding) VALUES ($1, 'c', 'x', $2) RETURNING id`, [pid, vec]);
    const mid = rows[0]!.id;
    await pool.query(`UPDATE memories SET content = 'y' WHERE id = $1`, [mid]);
    await pool.query(`UPDATE personalities SET "displayName" = 'z' WHERE id = $1`, [pid]);
    await pool.query(`DELETE FROM memories WHERE id = $1`, [mid]);
    await pool.query(`DELETE FROM llm_configs WHERE "personalityId" = $1`, [pid]);
    await pool.query(`DELETE FROM personalities WHERE id = $1`, [pid]);
    await r.source.sync(5_000);

    const changes = r.txs.flatMap((t) => t.changes);
    expect(changes.map((c) => `${c.table}.${c.op}`)).toEqual([
      'personalities.INSERT',
      'llm_configs.INSERT',
      'memories.INSERT',
      'memories.UPDATE',
      'personalities.UPDATE',
      'memories.DELETE',
      'llm_configs.DELETE',
      'personalities.DELETE',
    ]);
    // Column lists from the binding: the key fields only; the vector and the content never leave the server.
    expect(changes[1]!.new).toEqual({ id: cid, personalityId: pid });
    expect(changes[2]!.new).toEqual({ id: mid, personalityId: pid });
    expect(changes[3]!.new).toEqual({ id: mid, personalityId: pid });
    // REPLICA IDENTITY DEFAULT (the tables' own, left as it is): a delete carries the primary key.
    expect(changes[5]!.old).toEqual({ id: mid });
    expect(changes[6]!.old).toEqual({ id: cid });
    expect(changes[7]!.old).toEqual({ id: pid });
    // An update that keeps the key sends no old key; the new row has it.
    expect(changes[4]!.old).toBeUndefined();
    expect(changes[4]!.new).toEqual({ id: pid });

    // The same v2 events the triggers send: model and fields, new images in rows, ids that left in gone.
    expect(r.events.map((e) => `${e.model}.${e.op}`)).toEqual([
      'Personality.INSERT',
      'LlmConfig.INSERT',
      'Memory.INSERT',
      'Memory.UPDATE',
      'Personality.UPDATE',
      'Memory.DELETE',
      'LlmConfig.DELETE',
      'Personality.DELETE',
    ]);
    expect(r.events[2]).toMatchObject({ scope: 'rows', fields: ['id', 'personalityId'], rows: [[mid, pid]], gone: [] });
    expect(r.events[5]).toMatchObject({ scope: 'rows', rows: [], gone: [[mid]] });
    expect(r.events[6]).toMatchObject({ scope: 'rows', rows: [], gone: [[cid]] });
    for (let i = 1; i < r.txs.length; i++) expect(r.txs[i]!.commitLsn > r.txs[i - 1]!.commitLsn || r.txs[i]!.commitLsn.length > r.txs[i - 1]!.commitLsn.length).toBe(true);
    // Events carry the commit time: lag is measured from the commit.
    expect(Math.abs(r.events[0]!.ts - Date.now())).toBeLessThan(10_000);
  });

  it('sync() resolves after every change committed before it was applied; rejects when down', async () => {
    const r = makeSource();
    await expect(r.source.sync()).rejects.toBeInstanceOf(DatabaseUnavailableError); // not started
    await r.source.start();
    for (let i = 0; i < 20; i++) {
      const xid = await xidOf(pool, `INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt") VALUES ($1, 'd', 'p', now())`, [uniqueName('sync')]);
      await r.source.sync(5_000);
      // Read-your-writes: the barrier came back only after this commit's event.
      expect(r.events.at(-1)!.txid).toBe(xid);
    }
    const barriers: string[] = [];
    r.source.on('barrier', (t) => barriers.push(t));
    await r.source.sync(5_000);
    expect(barriers).toHaveLength(1);
  });

  it('resumes from the slot after a restart: what was committed while it was away arrives before up, with no loss reported', async () => {
    const slot = uniqueName('s');
    const first = makeSource({ slot });
    await first.source.start();
    await insertPersonality(pool, uniqueName('before'));
    await first.source.sync();
    await first.source.close();

    const missed: string[] = [];
    for (let i = 0; i < 10; i++) missed.push(await xidOf(pool, `INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt") VALUES ($1, 'd', 'p', now())`, [uniqueName('away')]));
    const second = makeSource({ slot });
    let atUp: string[] = [];
    second.source.on('up', () => (atUp = second.events.map((e) => e.txid)));
    await second.source.start();
    expect(second.ups).toEqual([{ first: true, lost: null }]);
    expect(atUp).toEqual(missed); // all of them, in order, before it said up
  });

  it('a blip (its backend terminated) resumes with lost: null: a cache core keeps its contents, 0 flushes, 0 stale reads', async () => {
    const slot = uniqueName('s');
    const host = new MemorySync({
      databaseUrl: db.url,
      source: 'replication',
      replication: { slot, statusIntervalMs: 50 },
      listener: { retryMinMs: 20, retryMaxMs: 200, paranoidIntervalMs: 500, queryTimeoutMs: 1_000 },
      logger: silent,
      summaryIntervalMs: 0,
    });
    cleanups.push(() => host.close());
    await host.start();
    expect(host.stats().source).toBe('replication');
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(await insertPersonality(pool, uniqueName('blip')));
    await host.sync();
    for (const id of ids) await host.getPersonality(id);
    const flushes = host.stats().flushes;

    let servedWhileDown: unknown = 'not checked';
    const down = next(host, 'down').then(() => (servedWhileDown = host.peekPersonality(ids[0]!)));
    const reconnect = next<[string | null]>(host, 'reconnect');
    await pool.query(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1`, [slot]);
    await down;
    expect(servedWhileDown).toBeUndefined(); // down: nothing cached is served
    for (const [i, id] of ids.entries()) await pool.query(`UPDATE personalities SET "displayName" = $2 WHERE id = $1`, [id, `while-down-${i}`]);
    const [lost] = await reconnect;
    expect(lost).toBeNull();
    expect(host.stats().flushes).toBe(flushes);
    expect(host.replicationStats).toMatchObject({ resumes: 1, losses: 1 }); // the one loss: the slot's creation at first start
    await host.sync();
    for (const [i, id] of ids.entries()) expect((await host.getPersonality(id))?.displayName).toBe(`while-down-${i}`);

    // Slot lag and retained WAL on /metrics.
    await vi.waitFor(() => expect(host.replicationStats!.retainedBytes).not.toBeNull());
    const text = await new SidecarMetrics(host).render();
    expect(text).toMatch(/^memory_sync_replication_slot_lag_bytes \d+$/m);
    expect(text).toMatch(/^memory_sync_replication_slot_lag_seconds [\d.e-]+$/m);
    expect(text).toMatch(/^memory_sync_replication_slot_retained_wal_bytes \d+$/m);
    expect(text).toMatch(/^memory_sync_replication_resumes_total 1$/m);
    expect(text).toMatch(/^memory_sync_source_info\{source="replication"\} 1$/m);
  });

  it('a slot recreated while it was away (dropped, made again, written past) is reported as a loss, and caches flush', async () => {
    const slot = uniqueName('s');
    const proxy = await new FreezableProxy('127.0.0.1', Number(new URL(db.url).port)).start();
    cleanups.push(() => proxy.close());
    const r = makeSource({ slot }, proxy.urlFor(db.url));
    await r.source.start();
    await insertPersonality(pool, uniqueName('x'));
    await r.source.sync();

    proxy.refusing = true;
    const down = next(r.source, 'down');
    proxy.resetAll();
    await down;
    // Someone drops the slot and makes a new one; commits land in between, lost to the old position.
    await pool.query(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, [slot]);
    for (let i = 0; i < 100 && (await slotStatus(pool, slot))?.activePid != null; i++) await new Promise((res) => setTimeout(res, 20));
    await pool.query(`SELECT pg_drop_replication_slot($1)`, [slot]);
    await insertPersonality(pool, uniqueName('gone'));
    await pool.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
    const up = next<[UpInfo]>(r.source, 'up');
    proxy.refusing = false;
    const [info] = await up;
    expect(info.first).toBe(false);
    expect(info.lost).toMatch(/moved past what this process applied/);
  });

  it('retained WAL past maxRetainedWalBytes while it lags: drops its own slot, makes a new one, reports the loss', async () => {
    const slot = uniqueName('s');
    // Manual confirmation that never comes: the slot cannot advance past the first transaction.
    const r = makeSource({ slot, confirm: 'manual', maxRetainedWalBytes: 1024 * 1024 });
    await r.source.start();
    await insertPersonality(pool, uniqueName('held'));
    await r.source.sync();
    await fillerTable();
    const before = (await slotStatus(pool, slot))!.restartLsn!;
    const lost = next<[UpInfo]>(r.source, 'up', (i) => i.lost !== null);
    await pool.query(`INSERT INTO wal_filler SELECT repeat(md5(g::text), 64) FROM generate_series(1, 2000) g`); // ~4 MB of WAL
    const [info] = await lost;
    expect(info.lost).toMatch(/past maxRetainedWalBytes/);
    expect(r.source.stats.boundDrops).toBe(1);
    // A new slot: it starts where the old one had kept more than the bound (WAL is the cluster's, so other work adds to it).
    const { rows } = await pool.query<{ d: string }>(`SELECT pg_wal_lsn_diff(restart_lsn, $2::pg_lsn)::text AS d FROM pg_replication_slots WHERE slot_name = $1`, [slot, before]);
    expect(Number(rows[0]!.d)).toBeGreaterThan(1024 * 1024);
    // And it goes on delivering.
    await insertPersonality(pool, uniqueName('after'));
    await r.source.sync();
    expect(r.events.at(-1)!.model).toBe('Personality');
  });

  it('checks the bound at connect too: a slot that kept too much WAL while nobody read it is dropped and recreated', async () => {
    const slot = uniqueName('s');
    const first = makeSource({ slot });
    await first.source.start();
    await first.source.close();
    await fillerTable();
    await pool.query(`INSERT INTO wal_filler SELECT repeat(md5(g::text), 64) FROM generate_series(1, 2000) g`);
    expect((await slotStatus(pool, slot))!.retainedBytes).toBeGreaterThan(1024 * 1024);
    const filled = (await pool.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0]!.lsn;
    const second = makeSource({ slot, maxRetainedWalBytes: 1024 * 1024 });
    await second.source.start();
    expect(second.ups).toEqual([{ first: true, lost: expect.stringMatching(/past maxRetainedWalBytes/) }]);
    // A new slot, made after the WAL was written.
    const { rows } = await pool.query<{ d: string }>(`SELECT pg_wal_lsn_diff(restart_lsn, $2::pg_lsn)::text AS d FROM pg_replication_slots WHERE slot_name = $1`, [slot, filled]);
    expect(Number(rows[0]!.d)).toBeGreaterThanOrEqual(0);
  });

  it('one reader per slot: a second source waits (standby) and takes over when the first goes away', async () => {
    const slot = uniqueName('s');
    const a = makeSource({ slot });
    await a.source.start();
    const b = makeSource({ slot });
    const retried = next(b.source, 'retry');
    const bStarted = b.source.start();
    const [, err] = await retried;
    expect((err as { code?: string }).code).toBe('55006');
    expect(b.source.stats.standby).toBe(true);
    expect(b.source.state).toBe('connecting');
    const xid = await xidOf(pool, `INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt") VALUES ($1, 'd', 'p', now())`, [uniqueName('a')]);
    await a.source.sync();
    await a.source.close(); // A confirmed its position on the way out
    await bStarted;
    expect(b.source.stats.standby).toBe(false);
    expect(b.ups).toEqual([{ first: true, lost: null }]);
    const xid2 = await xidOf(pool, `INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt") VALUES ($1, 'd', 'p', now())`, [uniqueName('b')]);
    await b.source.sync();
    expect(b.events.map((e) => e.txid)).not.toContain(xid); // A applied and confirmed it
    expect(b.events.at(-1)!.txid).toBe(xid2);
  });

  it('a half-open stream (frozen proxy) is noticed by the probe and resumed without a loss', async () => {
    const slot = uniqueName('s');
    const proxy = await new FreezableProxy('127.0.0.1', Number(new URL(db.url).port)).start();
    cleanups.push(() => proxy.close());
    const r = makeSource({ slot, paranoidIntervalMs: 200, queryTimeoutMs: 400 }, proxy.urlFor(db.url));
    await r.source.start();
    const down = next<[string]>(r.source, 'down');
    proxy.freeze();
    const [reason] = await down;
    expect(reason).toMatch(/probe/);
    // The frozen walsender may still hold the slot: the source ends it as its own and reads on.
    const up = next<[UpInfo]>(r.source, 'up');
    const xid = await xidOf(pool, `INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt") VALUES ($1, 'd', 'p', now())`, [uniqueName('f')]);
    const [info] = await up;
    expect(info).toEqual({ first: false, lost: null });
    await r.source.sync();
    expect(r.events.map((e) => e.txid)).toContain(xid);
  });
});
