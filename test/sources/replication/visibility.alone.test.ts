import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { MemorySync } from '../../../src/client/memory-sync.js';
import { parseSnapshot, visibleIn } from '../../../src/sources/replication/source.js';
import type { TestDb } from '../../helpers/db.js';
import { createReplicationDatabase, insertPersonality, REPLICATION_URL, silent, uniqueName } from './helpers.js';

/*
 * The walsender may send a commit once its WAL is flushed, before the
 * committing backend leaves the process array: other sessions still see the
 * old row. Here that window is held open: the writer's session waits for a
 * synchronous standby that does not exist (synchronous_commit = on, every
 * other session "local"), so its transaction is in the WAL, decoded, and
 * invisible, until its wait is cancelled. A cache that acted on the event
 * then would re-read the old row and keep it.
 */

let db: TestDb;
let pool: pg.Pool;
const admin = new pg.Client({ connectionString: REPLICATION_URL });

beforeAll(async () => {
  db = await createReplicationDatabase('ms_repl_vis');
  pool = new pg.Pool({ connectionString: db.url, max: 3 });
  pool.on('connect', (c) => c.on('error', () => {}));
  await admin.connect();
  // Cluster-wide: "local" for every session but the writer. A session that has not reloaded yet would still wait,
  // so this file runs alone, after the main suite (vitest.alone.config.ts).
  await admin.query(`ALTER SYSTEM SET synchronous_commit = 'local'`);
  await admin.query(`ALTER SYSTEM SET synchronous_standby_names = 'ms_no_such_standby'`);
  await admin.query('SELECT pg_reload_conf()');
});

afterAll(async () => {
  await admin.query('ALTER SYSTEM RESET synchronous_standby_names').catch(() => {});
  await admin.query('ALTER SYSTEM RESET synchronous_commit').catch(() => {});
  await admin.query('SELECT pg_reload_conf()').catch(() => {});
  await admin.end();
  await pool?.end();
  await db?.drop();
});

describe('the visibility gate', () => {
  it('holds a decoded commit until other sessions can see it: the cache never re-reads the row too early', { timeout: 60_000 }, async () => {
    const host = new MemorySync({ databaseUrl: db.url, source: 'replication', replication: { slot: uniqueName('vis'), statusIntervalMs: 50 }, logger: silent, summaryIntervalMs: 0 });
    try {
      await host.start();
      const id = await insertPersonality(pool, uniqueName('vis'), 'before');
      await host.sync();
      expect((await host.getPersonality(id))?.displayName).toBe('before');

      const writer = new pg.Client({ connectionString: db.url });
      writer.on('error', () => {});
      await writer.connect();
      const pid = (await writer.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      await writer.query(`SET synchronous_commit = 'on'`);
      // Commits in the WAL, then waits for the standby: decoded, not yet visible.
      const write = writer.query(`UPDATE personalities SET "displayName" = 'after' WHERE id = $1`, [id]).catch((e: Error) => e);
      // The writer waits once its commit is flushed; then the walsender sends it to memory-sync.
      await vi.waitFor(async () => {
        const { rows } = await pool.query<{ waiting: boolean }>(`SELECT wait_event = 'SyncRep' AS waiting FROM pg_stat_activity WHERE pid = $1`, [pid]);
        expect(rows[0]?.waiting).toBe(true);
      }, { timeout: 10_000, interval: 10 });
      // A barrier now follows that commit in the stream: it may resolve only once the commit was applied, and that only once visible.
      let early = false;
      const synced = host.sync(30_000).then(() => (early = true));
      await vi.waitFor(() => expect(early || host.replicationStats!.visibilityWaits > 0).toBe(true), { timeout: 10_000, interval: 10 });
      expect(early).toBe(false);

      // Meanwhile every reader sees the old row, cached or not: nothing to evict yet.
      const seen = (await pool.query<{ d: string }>('SELECT "displayName" AS d FROM personalities WHERE id = $1', [id])).rows[0]!.d;
      expect(seen).toBe('before');
      host.core.clearEntity('personality'); // a fill now reads the old row: the eviction must come after it
      expect((await host.getPersonality(id))?.displayName).toBe('before');

      // The wait is cancelled: the transaction (committed locally all along) becomes visible.
      await pool.query('SELECT pg_cancel_backend($1)', [pid]);
      await write;
      await writer.end();
      await synced;
      await host.sync();
      expect((await host.getPersonality(id))?.displayName).toBe('after');
    } finally {
      await host.close();
    }
  });
});

describe('visibleIn', () => {
  it('reads 32-bit xids against a 64-bit snapshot, across an epoch boundary', () => {
    const s = parseSnapshot('4294967290:4294967300:4294967295,4294967297');
    expect(visibleIn(s, 4294967289)).toBe(true); // below xmin
    expect(visibleIn(s, 4294967294)).toBe(true); // finished, in range
    expect(visibleIn(s, 4294967295)).toBe(false); // in progress
    expect(visibleIn(s, 1)).toBe(false); // 4294967297: in progress, next epoch
    expect(visibleIn(s, 2)).toBe(true); // 4294967298
    expect(visibleIn(s, 4)).toBe(false); // 4294967300 = xmax: not yet
    expect(visibleIn(parseSnapshot('100:100:'), 99)).toBe(true);
    expect(visibleIn(parseSnapshot('100:100:'), 100)).toBe(false);
  });
});
