import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { readdirSync } from 'node:fs';
import { connect, createDatabase, createMigratedDatabase, insertPersonality, seededVectors, vectorLiteral, MIGRATIONS_DIR, ROOT, type TestDb } from '../helpers/db.js';
import { BIN, killLeftovers, sidecarEnv, spawnSidecar, SidecarProcess } from '../sidecar/helpers.js';
import { spawn } from 'node:child_process';

const dbs: TestDb[] = [];
afterAll(async () => {
  await killLeftovers();
  await Promise.all(dbs.map((d) => d.drop()));
});

/** Connections other than `self` to the database; polled because a backend exits just after its client hangs up. */
async function connectionsLeft(self: pg.Client, database: string): Promise<number> {
  let n = -1;
  for (let i = 0; i < 100; i++) {
    const r = await self.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [database]);
    n = r.rows[0].n;
    if (n === 0) break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return n;
}

describe('memory-sync start: configuration', () => {
  it('exits 2 with a message naming the bad variable, before touching the database', () => {
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{ DATABASE_URL: 'mysql://x' }, /^memory-sync: invalid configuration: DATABASE_URL: must start with postgres/],
      [{ DATABASE_URL: 'postgresql://nobody@127.0.0.1:1/x', MEMORY_SYNC_PORT: 'abc' }, /^memory-sync: invalid configuration: MEMORY_SYNC_PORT: must be a whole number/],
      [{ DATABASE_URL: 'postgresql://nobody@127.0.0.1:1/x', MEMORY_SYNC_POOL_SIZE: '50' }, /^memory-sync: invalid configuration: MEMORY_SYNC_POOL_SIZE: .*20/],
      [{ DATABASE_URL: 'postgresql://nobody@127.0.0.1:1/x', MEMORY_SYNC_MIGRATE: 'sure' }, /^memory-sync: invalid configuration: MEMORY_SYNC_MIGRATE: /],
      [{ DATABASE_URL: 'postgres://127.0.0.1:99999/x' }, /^memory-sync: invalid configuration: DATABASE_URL: is not a valid URL/],
      [{ DATABASE_URL: 'postgresql://nobody@127.0.0.1:1/x', MEMORY_SYNC_HOST: '999.1.1.1' }, /^memory-sync: invalid configuration: MEMORY_SYNC_HOST: /],
      [{ DATABASE_URL: 'postgresql://nobody@127.0.0.1:1/x', MEMORY_SYNC_LISTEN_URL: 'postgres://h:0x/x' }, /^memory-sync: invalid configuration: MEMORY_SYNC_LISTEN_URL: /],
    ];
    for (const [env, message] of cases) {
      const r = spawnSync(process.execPath, [BIN, 'start'], { cwd: ROOT, env: { PATH: process.env.PATH, ...env }, encoding: 'utf8' });
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(message);
    }
  });
});

describe('memory-sync start: permanent errors fail fast, an unmigrated database says what to run', () => {
  it('exits non-zero within seconds, naming the cause, when the database does not exist', async () => {
    const url = new URL(process.env.TEST_DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres');
    url.pathname = '/ms_no_such_database';
    const started = Date.now();
    const child = spawn(process.execPath, [BIN, 'start'], { cwd: ROOT, env: sidecarEnv({ DATABASE_URL: url.toString(), MEMORY_SYNC_PORT: '0' }), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code).not.toBe(0);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(out).toMatch(/ms_no_such_database.{0,4} does not exist: create it or fix DATABASE_URL/);
  });

  it('keeps /readyz at 503 with the command to run, then becomes ready once migrated', async () => {
    const db = await createDatabase();
    dbs.push(db);
    const sc = await spawnSidecar({ DATABASE_URL: db.url }, { ready: false });
    try {
      await sc.waitForLog((l) => /^database not migrated/.test(String(l.msg)));
      const r = await sc.request('GET', '/readyz');
      expect(r.status).toBe(503);
      expect(r.json.problem).toMatch(/run `memory-sync migrate`/);
      const migrated = spawnSync(process.execPath, [BIN, 'migrate'], { cwd: ROOT, env: sidecarEnv({ DATABASE_URL: db.url }), encoding: 'utf8' });
      expect(migrated.status).toBe(0);
      await sc.waitForMsg('ready');
      expect((await sc.request('GET', '/readyz')).status).toBe(200);
    } finally {
      await sc.stop();
    }
  });
});

describe('memory-sync start: lifecycle', () => {
  let db: TestDb;
  let writer: pg.Client;
  beforeAll(async () => {
    db = await createMigratedDatabase();
    dbs.push(db);
    writer = await connect(db.url);
  });
  afterAll(async () => {
    await writer?.end();
  });

  it('runs the index guard and retention at start-up; SIGTERM drains the request in flight, exits 0 and leaves no connection', async () => {
    const pid = await insertPersonality(writer, 'lifecycle');
    await writer.query('DROP INDEX idx_memories_embedding');
    await writer.query(
      `INSERT INTO conversation_history ("channelId", "personalityId", "userId", role, content, "createdAt")
       SELECT 'c', $1::uuid, 'u', 'user', 'h' || i, now() - make_interval(days => 30 + i) FROM generate_series(1, 5) AS i
       UNION ALL SELECT 'c', $1::uuid, 'u', 'user', 'fresh', now()`,
      [pid],
    );
    const v = seededVectors(11, 1)[0]!;
    await writer.query(
      `INSERT INTO memories ("personalityId", "channelId", content, embedding, "createdAt")
       SELECT $1, 'c', 'm' || i, $2::vector, now() - make_interval(mins => i) FROM generate_series(1, 5) AS i`,
      [pid, vectorLiteral(v)],
    );

    const sc = await spawnSidecar({ DATABASE_URL: db.url, MEMORY_SYNC_MEMORY_CAP: '3', MEMORY_SYNC_RETENTION_BATCH: '2' });
    const job = (name: string) => sc.waitForLog((l) => l.msg === 'job done' && l.job === name);
    expect(await job('index-guard')).toMatchObject({ outcome: 'recreated' });
    expect(await job('history-ttl')).toMatchObject({ deleted: 5, batches: 3 });
    expect(await job('memory-cap')).toMatchObject({ deleted: 2, groups: 1 });
    expect((await writer.query(`SELECT indisvalid FROM pg_index WHERE indexrelid = 'idx_memories_embedding'::regclass`)).rows).toEqual([
      { indisvalid: true },
    ]);
    expect((await writer.query('SELECT content FROM conversation_history')).rows).toEqual([{ content: 'fresh' }]);
    expect((await writer.query('SELECT content FROM memories ORDER BY content')).rows.map((r) => r.content)).toEqual(['m1', 'm2', 'm3']);

    // A search blocked on a lock the test holds is in flight when SIGTERM arrives.
    await writer.query('BEGIN; LOCK memories IN ACCESS EXCLUSIVE MODE');
    const inFlight = sc.request('POST', '/v1/memories/search', { personalityId: pid, embedding: Array.from(v), limit: 3 });
    for (let i = 0; i < 200; i++) {
      const waiting = await writer.query(`SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'`, [db.name]);
      if (waiting.rowCount) break;
      await new Promise((resolve) => setTimeout(resolve, 10)); // no event says the query reached the lock
    }
    const from = sc.mark();
    sc.proc.kill('SIGTERM');
    await sc.waitForMsg('shutting down', from);
    await writer.query('COMMIT');
    const answered = await inFlight;
    expect(answered.status).toBe(200);
    expect(answered.json.results).toHaveLength(3);
    expect(await sc.exited).toBe(0);
    expect(sc.logs.at(-1)?.msg).toBe('stopped');
    expect(await connectionsLeft(writer, db.name)).toBe(0);
  });
});

describe('memory-sync start: MEMORY_SYNC_MIGRATE', () => {
  it('two instances start on an empty database: migrations are applied once; SIGINT exits 0; a taken port exits 1', async () => {
    const empty = await createDatabase();
    dbs.push(empty);
    const env = { DATABASE_URL: empty.url, MEMORY_SYNC_MIGRATE: 'true' };
    const [a, b] = await Promise.all([spawnSidecar(env), spawnSidecar(env)]);
    const outcome = async (s: SidecarProcess) => (await s.waitForLog((l) => /^(migrations applied|no pending migrations)$/.test(l.msg))).msg;
    expect([await outcome(a!), await outcome(b!)].sort()).toEqual(['migrations applied', 'no pending migrations']);
    const c = await connect(empty.url);
    try {
      const rows = await c.query('SELECT migration_name, finished_at IS NOT NULL AS done FROM _prisma_migrations ORDER BY 1');
      const names = readdirSync(MIGRATIONS_DIR, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort();
      expect(rows.rows).toEqual(names.map((migration_name) => ({ migration_name, done: true })));

      const port = new URL(a!.url).port;
      const taken = new SidecarProcess(
        spawn(process.execPath, [BIN, 'start'], { cwd: ROOT, env: sidecarEnv({ DATABASE_URL: empty.url, MEMORY_SYNC_PORT: port }) }),
      );
      expect(await taken.exited).toBe(1);
      expect(taken.stderr).toMatch(/EADDRINUSE/);

      expect(await Promise.all([a!.stop('SIGINT'), b!.stop('SIGINT')])).toEqual([0, 0]);
      expect(await connectionsLeft(c, empty.name)).toBe(0);
    } finally {
      await c.end();
    }
  });
});

describe('memory-sync start: MEMORY_SYNC_MIGRATE beside a declaration of your schema', () => {
  it('a memory-sync.config.* in the working directory is enough: it applies none of memory-sync\'s migrations, says so, and waits for adopt', async () => {
    const empty = await createDatabase();
    dbs.push(empty);
    const sc = new SidecarProcess(
      spawn(process.execPath, [BIN, 'start'], { cwd: `${ROOT}/test/fixtures/docs`, env: sidecarEnv({ DATABASE_URL: empty.url, MEMORY_SYNC_MIGRATE: 'true' }) }),
    );
    expect((await sc.waitForLog((l) => /MEMORY_SYNC_MIGRATE applies memory-sync's own migrations/.test(l.msg))).level).toBe(40);
    // Unmigrated is waited out (503 on /readyz), saying what to run.
    const waiting = await sc.waitForLog((l) => (l as { code?: string }).code === 'not_migrated');
    expect(waiting.msg).toMatch(/docs_384.*memory-sync adopt/s);
    const c = await connect(empty.url);
    try {
      expect((await c.query(`SELECT to_regclass('_prisma_migrations') AS t`)).rows[0].t).toBeNull();
    } finally {
      await c.end();
    }
    expect(await sc.stop('SIGINT')).toBe(0);
  });
});
