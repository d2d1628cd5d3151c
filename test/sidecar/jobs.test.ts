import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import pg from 'pg';
import pino from 'pino';
import { dedicatedConnection, JOB_LOCK_NAMESPACE, JOB_LOCKS, Scheduler, withJobLock, type Connect } from '../../src/sidecar/jobs.js';
import { deleteExpired, enforceCap, type BatchOptions } from '../../src/store/retention.js';
import { binding } from '../../src/store/builtin.js';
import { connect, createMigratedDatabase, insertPersonality, seededVectors, vectorLiteral, type TestDb } from '../helpers/db.js';

// The built-in declaration's jobs, as the sidecar runs them.
type Db = Parameters<typeof deleteExpired>[0];
const deleteExpiredHistory = (db: Db, o: BatchOptions & { ttlDays: number }) => deleteExpired(db, binding, binding.jobs.historyTtl!, { ...o, days: o.ttlDays });
const enforceMemoryCap = (db: Db, o: BatchOptions & { cap: number }) => enforceCap(db, binding, binding.jobs.memoryCap!, { ...o, keep: o.cap });

let db: TestDb;
let writer: pg.Client;
let pool: pg.Pool;
let jobConnection: Connect;
let p1: string;
let p2: string;

beforeAll(async () => {
  db = await createMigratedDatabase();
  writer = await connect(db.url);
  pool = new pg.Pool({ connectionString: db.url, max: 3 });
  jobConnection = dedicatedConnection(db.url);
  p1 = await insertPersonality(writer, 'jobs-1');
  p2 = await insertPersonality(writer, 'jobs-2');
});
afterAll(async () => {
  await pool?.end();
  await writer?.end();
  await db?.drop();
});
beforeEach(async () => {
  await writer.query('TRUNCATE conversation_history, memories');
});

/** `count` history rows for p1, `ageDays` old, one second apart. */
async function seedHistory(count: number, ageDays: number): Promise<void> {
  await writer.query(
    `INSERT INTO conversation_history ("channelId", "personalityId", "userId", role, content, "createdAt")
     SELECT 'general', $1, 'u', 'user', 'm' || i, now() - make_interval(days => $2) - make_interval(secs => i)
     FROM generate_series(1, $3) AS i`,
    [p1, ageDays, count],
  );
}

/** `count` memories, newest is n=1 (ages 1..count minutes). */
async function seedMemories(personalityId: string, channelId: string, count: number): Promise<void> {
  const v = vectorLiteral(seededVectors(count, 1)[0]!);
  await writer.query(
    `INSERT INTO memories ("personalityId", "channelId", content, embedding, "createdAt")
     SELECT $1, $2, 'n' || i, $3::vector, now() - make_interval(mins => i) FROM generate_series(1, $4) AS i`,
    [personalityId, channelId, v, count],
  );
}

async function contents(personalityId: string, channelId: string): Promise<string[]> {
  const r = await writer.query<{ content: string }>(
    `SELECT content FROM memories WHERE "personalityId" = $1 AND "channelId" = $2 ORDER BY "createdAt" DESC`,
    [personalityId, channelId],
  );
  return r.rows.map((x) => x.content);
}

describe('conversation-history TTL', () => {
  it('deletes only rows older than the TTL, in batches', async () => {
    await seedHistory(23, 31); // expired
    await seedHistory(5, 29); // kept
    const r = await deleteExpiredHistory(pool, { ttlDays: 30, batchSize: 10 });
    expect(r).toEqual({ deleted: 23, batches: 3 });
    const left = await writer.query(`SELECT count(*)::int AS n, min("createdAt") > now() - interval '30 days' AS young FROM conversation_history`);
    expect(left.rows[0]).toEqual({ n: 5, young: true });
    expect(await deleteExpiredHistory(pool, { ttlDays: 30, batchSize: 10 })).toEqual({ deleted: 0, batches: 1 });
  });

  it('stops between batches when aborted', async () => {
    await seedHistory(30, 40);
    const abort = new AbortController();
    let statements = 0;
    const counting = {
      query: (config: string | pg.QueryConfig, values?: unknown[]) => {
        if (++statements === 2) abort.abort(); // while the first batch runs
        return typeof config === 'string' ? pool.query(config, values) : pool.query(config);
      },
    } as unknown as pg.Pool;
    const r = await deleteExpiredHistory(counting, { ttlDays: 30, batchSize: 10, signal: abort.signal });
    expect(r).toEqual({ deleted: 10, batches: 1 });
  });
});

describe('memory cap per (personality, channel)', () => {
  it('keeps the newest `cap` of each pair and deletes the oldest, in batches', async () => {
    await seedMemories(p1, 'general', 27);
    await seedMemories(p1, 'random', 4);
    await seedMemories(p2, 'general', 12);
    const r = await enforceMemoryCap(pool, { cap: 10, batchSize: 5 });
    expect(r).toEqual({ deleted: 17 + 2, groups: 2, batches: 4 + 1 });
    expect(await contents(p1, 'general')).toEqual(Array.from({ length: 10 }, (_, i) => `n${i + 1}`));
    expect(await contents(p1, 'random')).toHaveLength(4);
    expect(await contents(p2, 'general')).toEqual(Array.from({ length: 10 }, (_, i) => `n${i + 1}`));
    expect(await enforceMemoryCap(pool, { cap: 10, batchSize: 5 })).toEqual({ deleted: 0, groups: 0, batches: 0 });
  });
});

describe('advisory locks', () => {
  it('runs a job on a connection of its own holding the lock, and closes it after', async () => {
    const r = await withJobLock(jobConnection, JOB_LOCKS.history, async (c) => {
      const held = await writer.query(
        `SELECT count(*)::int AS n FROM pg_locks WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND locktype = 'advisory' AND classid = $1 AND objid = $2 AND granted`,
        [JOB_LOCK_NAMESPACE, JOB_LOCKS.history],
      );
      const me = await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      return { held: held.rows[0].n, pid: me.rows[0]!.pid };
    });
    expect(r.ran && r.value.held).toBe(1);
    const after = await writer.query(`SELECT count(*)::int AS n FROM pg_locks WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND locktype = 'advisory' AND classid = $1`, [JOB_LOCK_NAMESPACE]);
    expect(after.rows[0].n).toBe(0);
    const open = await writer.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1`, [r.ran ? r.value.pid : -1]);
    expect(open.rows[0].n).toBe(0); // its session (and any lock it held) is gone
  });

  it('skips at once when another instance holds the lock, deleting nothing', async () => {
    await seedHistory(5, 40);
    const other = await connect(db.url);
    try {
      await other.query('SELECT pg_advisory_lock($1, $2)', [JOB_LOCK_NAMESPACE, JOB_LOCKS.history]);
      let ran = false;
      const r = await withJobLock(jobConnection, JOB_LOCKS.history, async (c) => {
        ran = true;
        return deleteExpiredHistory(c, { ttlDays: 30, batchSize: 10 });
      });
      expect(r).toEqual({ ran: false });
      expect(ran).toBe(false);
      expect((await writer.query('SELECT count(*)::int AS n FROM conversation_history')).rows[0].n).toBe(5);
    } finally {
      await other.end();
    }
    const r = await withJobLock(jobConnection, JOB_LOCKS.history, (c) => deleteExpiredHistory(c, { ttlDays: 30, batchSize: 10 }));
    expect(r).toEqual({ ran: true, value: { deleted: 5, batches: 1 } });
  });

  it('an abort cancels the statement in flight, and the lock is released', async () => {
    const abort = new AbortController();
    const started = withJobLock(
      jobConnection,
      JOB_LOCKS.indexGuard,
      async (c) => {
        const pid = (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
        const sleeping = c.query('SELECT pg_sleep(30)');
        // No event says the statement is running; a cancel that arrives before it would be lost.
        for (let i = 0; i < 200; i++) {
          const r = await writer.query(`SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active'`, [pid]);
          if (r.rowCount) break;
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        abort.abort();
        return sleeping;
      },
      abort.signal,
    );
    await expect(started).rejects.toMatchObject({ code: '57014' }); // query_canceled
    const after = await writer.query(`SELECT count(*)::int AS n FROM pg_locks WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND locktype = 'advisory' AND classid = $1`, [JOB_LOCK_NAMESPACE]);
    expect(after.rows[0].n).toBe(0);
  });
});

describe('Scheduler', () => {
  it('runs a job at once, again after its interval, never overlapping, and stop() waits for the run in flight', async () => {
    const scheduler = new Scheduler(pino({ level: 'silent' }));
    let runs = 0;
    let active = 0;
    let maxActive = 0;
    let release!: () => void;
    const third = new Promise<AbortSignal>((resolve) => {
      scheduler.add({
        name: 'test',
        intervalMs: 1,
        run: async (signal) => {
          runs++;
          maxActive = Math.max(maxActive, ++active);
          if (runs === 3) {
            resolve(signal);
            await new Promise<void>((r) => (release = r));
          }
          active--;
        },
      });
    });
    const signal = await third;
    const stopping = scheduler.stop();
    expect(signal.aborted).toBe(true);
    release();
    await stopping;
    expect({ runs, maxActive, active }).toEqual({ runs: 3, maxActive: 1, active: 0 });
  });
});
