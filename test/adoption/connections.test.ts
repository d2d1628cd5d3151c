import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMemorySync } from '../../src/client/memory-sync.js';
import { DEFAULTS } from '../../src/client/options.js';
import { connect, createMigratedDatabase, type TestDb } from '../helpers/db.js';
import { killLeftovers, spawnSidecar } from '../sidecar/helpers.js';

// The connection budget of docs/adopting.md section 6, measured in
// pg_stat_activity: what one createMemorySync holds with its own pool and with
// a borrowed one, and what one sidecar holds, idle and under a burst of cache
// misses wide enough to open every pool connection.

const BURST = 40;
let db: TestDb;
/** Only ever outside a transaction: inside one, pg_stat_activity is a snapshot. */
let admin: pg.Client;
let ids: string[];

beforeAll(async () => {
  db = await createMigratedDatabase('ms_budget');
  admin = await connect(db.url);
  const r = await admin.query<{ id: string }>(
    `INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt")
     SELECT 'p' || i, 'P', 'You are p', now() FROM generate_series(1, $1::int) AS i RETURNING id`,
    [BURST * 3],
  );
  ids = r.rows.map((row) => row.id);
});
afterAll(async () => {
  await killLeftovers();
  await admin?.end();
  await db?.drop();
});

const LOCKER = 'test-locker';

/** Client backends on the test database by application_name, the test's own left out. */
async function held(): Promise<Record<string, number>> {
  const r = await admin.query<{ app: string; n: number }>(
    `SELECT application_name AS app, count(*)::int AS n FROM pg_stat_activity
      WHERE datname = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid() AND application_name <> $2 GROUP BY 1`,
    [db.name, LOCKER],
  );
  return Object.fromEntries(r.rows.map((row) => [row.app, row.n]));
}

/** After a client hangs up its backend exits a moment later; no event says when, so poll. */
async function settled(pred: (h: Record<string, number>) => boolean): Promise<Record<string, number>> {
  let h = await held();
  for (let i = 0; i < 200 && !pred(h); i++) {
    await new Promise((resolve) => setTimeout(resolve, 10));
    h = await held();
  }
  return h;
}

let next = 0;
/** BURST distinct personalities no cache has seen: each read is a miss, all at once. */
const burstIds = () => ids.slice(next, (next += BURST));

describe('connections held (pg_stat_activity)', () => {
  it(`createMemorySync() with its own pool: ${DEFAULTS.poolSize} pool + 1 LISTEN at most`, async () => {
    const memory = createMemorySync({ databaseUrl: db.url, logger: pino({ level: 'silent' }), summaryIntervalMs: 0 });
    await memory.start();
    const idle = await held();
    await Promise.all(burstIds().map((id) => memory.getPersonality(id)));
    const busy = await held();
    await memory.close();
    const closed = await settled((h) => Object.keys(h).length === 0);
    expect({ idle, busy, closed }).toEqual({
      idle: { 'memory-sync': 1, 'memory-sync-listener': 1 }, // the start-up schema check's connection stays idle in the pool
      busy: { 'memory-sync': DEFAULTS.poolSize, 'memory-sync-listener': 1 },
      closed: {},
    });
  });

  it('createMemorySync({ pool }): the LISTEN connection only; the burst stays within the borrowed pool', async () => {
    const pool = new pg.Pool({ connectionString: db.url, max: 5, application_name: 'bot' });
    await pool.query('SELECT 1');
    const before = await held();
    const memory = createMemorySync({ pool, logger: pino({ level: 'silent' }), summaryIntervalMs: 0 });
    await memory.start();
    const idle = await held();
    await Promise.all(burstIds().map((id) => memory.getPersonality(id)));
    const busy = await held();
    await memory.close();
    const closed = await settled((h) => !h['memory-sync-listener']);
    await pool.end();
    expect({ before, idle, busy, closed }).toEqual({
      before: { bot: 1 },
      idle: { bot: 1, 'memory-sync-listener': 1 },
      busy: { bot: 5, 'memory-sync-listener': 1 },
      closed: { bot: 5 },
    });
  });

  it(`the sidecar: ${DEFAULTS.poolSize} pool + 1 LISTEN, and one connection per job only while it runs`, async () => {
    // The history TTL job, which runs at start-up, waits on this lock: the job's connection is seen while it runs.
    // (Another connection than `admin`: inside a transaction pg_stat_activity is a snapshot.)
    const locker = new pg.Client({ connectionString: db.url, application_name: LOCKER });
    await locker.connect();
    await locker.query('BEGIN');
    await locker.query('LOCK TABLE conversation_history IN ACCESS EXCLUSIVE MODE');
    const sc = await spawnSidecar({ DATABASE_URL: db.url });
    try {
      // The index guard runs beside it at start-up (two job connections for a moment); once it is done, one is left.
      await sc.waitForLog((l) => l.msg === 'job done' && l.job === 'index-guard');
      const inJob = await settled((h) => h['memory-sync-jobs'] === 1);
      await locker.query('COMMIT');
      for (const job of ['history-ttl', 'memory-cap']) await sc.waitForLog((l) => l.msg === 'job done' && l.job === job);
      const idle = await settled((h) => !h['memory-sync-jobs']);
      // The burst's lookups wait on this lock, so HTTP timing cannot keep the pool from filling.
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE personalities IN ACCESS EXCLUSIVE MODE');
      const responses = Promise.all(burstIds().map((id) => fetch(`${sc.url}/v1/personalities/${id}`)));
      await settled((h) => (h['memory-sync'] ?? 0) >= DEFAULTS.poolSize);
      await locker.query('COMMIT');
      expect((await responses).map((r) => r.status)).toEqual(Array(BURST).fill(200));
      const busy = await held();
      expect({ inJob, idle, busy }).toEqual({
        inJob: { 'memory-sync': 1, 'memory-sync-listener': 1, 'memory-sync-jobs': 1 },
        idle: { 'memory-sync': 1, 'memory-sync-listener': 1 },
        busy: { 'memory-sync': DEFAULTS.poolSize, 'memory-sync-listener': 1 },
      });
    } finally {
      await locker.end(); // releases a lock a failed test left held
      expect(await sc.stop()).toBe(0);
    }
  });
});
