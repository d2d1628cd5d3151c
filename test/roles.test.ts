import { randomBytes } from 'node:crypto';
import { spawn, spawnSync } from 'node:child_process';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_URL, connect, ROOT, seededVectors, urlFor } from './helpers/db.js';
import { Admin, NATS_PORT, uniqueStream } from './sources/bus/helpers.js';
import { BIN, killLeftovers, sidecarEnv, SidecarProcess, spawnSidecar, subscribe } from './sidecar/helpers.js';

/*
 * The two roles of docs/security.md on a server of our own making: an
 * install role that owns the database and runs `migrate`, and a runtime role
 * with only USAGE on the schema, CONNECT, and SELECT, INSERT, UPDATE, DELETE
 * on memory-sync's four tables, under which `start` and `relay` run.
 */

const suffix = `${process.pid}_${randomBytes(3).toString('hex')}`;
const INSTALL = `ms_install_${suffix}`;
const RUNTIME = `ms_runtime_${suffix}`;
const DATABASE = `ms_roles_${suffix}`;
const TABLES = ['personalities', 'llm_configs', 'memories', 'conversation_history'];

const as = (role: string) => {
  const u = new URL(urlFor(DATABASE));
  u.username = role;
  return u.toString();
};

let superuser: pg.Client; // on the test database, for set-up and writes from "another writer"
const stream = uniqueStream('msroles');

async function onServer(sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: ADMIN_URL });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

beforeAll(async () => {
  await onServer(`CREATE ROLE ${INSTALL} LOGIN; CREATE ROLE ${RUNTIME} LOGIN`);
  await onServer(`CREATE DATABASE ${DATABASE} OWNER ${INSTALL}`);
  // CONNECT only for who is given it, as a hardened server would have it.
  await onServer(`REVOKE CONNECT, TEMPORARY ON DATABASE ${DATABASE} FROM PUBLIC; GRANT CONNECT ON DATABASE ${DATABASE} TO ${RUNTIME}`);
  superuser = await connect(urlFor(DATABASE));
  // pgvector is not a trusted extension: a superuser (or the platform) installs it once.
  await superuser.query('CREATE EXTENSION vector');
});
afterAll(async () => {
  await killLeftovers();
  await superuser?.end();
  await Admin.for('nats', stream).deleteStream().catch(() => {});
  await onServer(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${DATABASE}' AND pid <> pg_backend_pid()`);
  await onServer(`DROP DATABASE IF EXISTS ${DATABASE}`);
  await onServer(`DROP ROLE IF EXISTS ${RUNTIME}; DROP ROLE IF EXISTS ${INSTALL}`);
});

/** Runs the CLI to completion. */
function cli(args: string[], env: Record<string, string>): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: ROOT, env: sidecarEnv(env), encoding: 'utf8' });
  return { status: r.status, out: r.stdout + r.stderr };
}

/** `memory-sync start` expected to fail: its exit code, output and how long it took. */
async function failedStart(env: Record<string, string>): Promise<{ code: number | null; out: string; ms: number }> {
  const started = Date.now();
  const proc = spawn(process.execPath, [BIN, 'start'], { cwd: ROOT, env: sidecarEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const sc = new SidecarProcess(proc);
  const code = await sc.exited;
  return { code, out, ms: Date.now() - started };
}

describe('the install role', () => {
  it('owns the database and applies the migrations; then grants the runtime role what it needs', async () => {
    const r = cli(['migrate'], { DATABASE_URL: as(INSTALL) });
    expect(r.out).toMatch(/applied: /);
    expect(r.status).toBe(0);
    const owners = await superuser.query<{ relname: string; owner: string }>(
      `SELECT relname, pg_get_userbyid(relowner) AS owner FROM pg_class WHERE relname = ANY($1) ORDER BY 1`,
      [TABLES],
    );
    expect(owners.rows.map((o) => o.owner)).toEqual(TABLES.map(() => INSTALL));
    // What docs/security.md tells the install role to run.
    const install = await connect(as(INSTALL));
    try {
      await install.query(`GRANT USAGE ON SCHEMA public TO ${RUNTIME}`);
      await install.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ${TABLES.join(', ')} TO ${RUNTIME}`);
    } finally {
      await install.end();
    }
  });
});

describe('the runtime role', () => {
  it('runs `memory-sync start`: lookups, writes, search, the event stream and the start-up jobs, with no privilege error', async () => {
    const sc = await spawnSidecar({ DATABASE_URL: as(RUNTIME) });
    try {
      const id = '6f9619ff-8b86-4011-b42d-00c04fc96411';
      const events = await subscribe(sc.url);
      expect((await sc.request('PUT', `/v1/personalities/${id}`, { name: 'runtime', displayName: 'R', systemPrompt: 'p', llmConfig: { model: 'm' } })).status).toBe(201);
      await events.next((e) => e.event === 'invalidation' && e.data.model === 'Personality');
      expect((await sc.request('PUT', `/v1/personalities/${id}`, { name: 'runtime', displayName: 'R2', systemPrompt: 'p', llmConfig: { model: 'n' } })).status).toBe(200);
      expect((await sc.request('GET', `/v1/personalities/${id}`)).json).toMatchObject({ displayName: 'R2', llmConfig: { model: 'n' } });
      const embedding = Array.from(seededVectors(12, 1)[0]!);
      const stored = await sc.request('POST', '/v1/memories', { personalityId: id, channelId: 'c', content: 'x', embedding });
      expect(stored.status).toBe(201);
      expect((await sc.request('POST', '/v1/memories/search', { personalityId: id, embedding, limit: 1 })).json.results[0].id).toBe(stored.json.id);
      expect((await sc.request('POST', '/v1/sync', {})).status).toBe(204);
      expect((await sc.request('DELETE', `/v1/memories/${stored.json.id}`)).status).toBe(204);
      // A write by another writer reaches this sidecar's stream: the triggers fire under any role.
      await superuser.query(`UPDATE personalities SET "displayName" = 'elsewhere' WHERE id = $1`, [id]);
      await events.next((e) => e.event === 'invalidation' && e.data.op === 'UPDATE' && e.data.model === 'Personality');
      expect((await sc.request('DELETE', `/v1/personalities/${id}`)).status).toBe(204);
      events.close();
      for (const job of ['index-guard', 'history-ttl', 'memory-cap']) await sc.waitForLog((l) => l.msg === 'job done' && l.job === job);
      expect(sc.logs.filter((l) => l.level >= 50)).toEqual([]);
    } finally {
      expect(await sc.stop()).toBe(0);
    }
  });

  it('runs `memory-sync relay`, and a fleet-mode sidecar under the same role gets its changes', async () => {
    const busUrl = `nats://127.0.0.1:${NATS_PORT}/${stream}`;
    const relay = new SidecarProcess(
      spawn(process.execPath, [BIN, 'relay'], { cwd: ROOT, env: sidecarEnv({ DATABASE_URL: as(RUNTIME), MEMORY_SYNC_BUS_URL: busUrl }), stdio: ['ignore', 'pipe', 'pipe'] }),
    );
    try {
      await relay.waitForMsg('relay running');
      const host = await spawnSidecar({ DATABASE_URL: as(RUNTIME), MEMORY_SYNC_BUS_URL: busUrl });
      try {
        const events = await subscribe(host.url);
        const { rows } = await superuser.query<{ id: string }>(
          `INSERT INTO personalities (name, "displayName", "systemPrompt", "updatedAt") VALUES ('fleet', 'F', 'p', now()) RETURNING id`,
        );
        const event = await events.next((e) => e.event === 'invalidation' && e.data.model === 'Personality');
        expect(event.data.rows).toEqual([[rows[0]!.id]]);
        expect((await host.request('POST', '/v1/sync', {})).status).toBe(204); // the barrier goes through the relay
        events.close();
      } finally {
        expect(await host.stop()).toBe(0);
      }
      expect(relay.logs.filter((l) => l.level >= 50)).toEqual([]);
    } finally {
      expect(await relay.stop()).toBe(0);
    }
  });

  it('without SELECT on one table, `start` exits 1 within seconds naming the privilege, the table and the GRANT', async () => {
    await superuser.query(`REVOKE SELECT ON llm_configs FROM ${RUNTIME}`);
    try {
      const r = await failedStart({ DATABASE_URL: as(RUNTIME) });
      expect(r.code).toBe(1);
      expect(r.ms).toBeLessThan(10_000);
      expect(r.out).toContain(`the database user \\"${RUNTIME}\\" lacks SELECT on table llm_configs`);
      expect(r.out).toContain(`GRANT SELECT ON \\"llm_configs\\" TO \\"${RUNTIME}\\"`);
      expect(r.out).not.toMatch(/retrying/);
    } finally {
      await superuser.query(`GRANT SELECT ON llm_configs TO ${RUNTIME}`);
    }
  });

  it('without DELETE on conversation_history, `start` names the retention job; with the job off it starts', async () => {
    await superuser.query(`REVOKE DELETE ON conversation_history FROM ${RUNTIME}`);
    try {
      const r = await failedStart({ DATABASE_URL: as(RUNTIME) });
      expect(r.code).toBe(1);
      expect(r.out).toContain('lacks DELETE on table conversation_history, which the declared retention jobs (MEMORY_SYNC_HISTORY_TTL_DAYS');
      const sc = await spawnSidecar({ DATABASE_URL: as(RUNTIME), MEMORY_SYNC_HISTORY_TTL_DAYS: '0' });
      expect(await sc.stop()).toBe(0);
    } finally {
      await superuser.query(`GRANT DELETE ON conversation_history TO ${RUNTIME}`);
    }
  });

  it('without USAGE on the schema, `start` says so instead of calling the database unmigrated', async () => {
    await superuser.query(`REVOKE USAGE ON SCHEMA public FROM PUBLIC; REVOKE USAGE ON SCHEMA public FROM ${RUNTIME}`);
    try {
      const r = await failedStart({ DATABASE_URL: as(RUNTIME) });
      expect(r.code).toBe(1);
      expect(r.out).toContain('lacks USAGE on schema public');
      expect(r.out).not.toMatch(/not migrated/);
    } finally {
      await superuser.query(`GRANT USAGE ON SCHEMA public TO PUBLIC; GRANT USAGE ON SCHEMA public TO ${RUNTIME}`);
    }
  });

  it('without CONNECT, `start` and `relay` exit 1 within seconds naming CONNECT and the database', async () => {
    await onServer(`REVOKE CONNECT ON DATABASE ${DATABASE} FROM ${RUNTIME}`);
    try {
      const r = await failedStart({ DATABASE_URL: as(RUNTIME) });
      expect(r.code).toBe(1);
      expect(r.ms).toBeLessThan(10_000);
      expect(r.out).toMatch(new RegExp(`permission denied for database \\\\?"?${DATABASE}.*CONNECT`));
      const started = Date.now();
      const relay = cli(['relay'], { DATABASE_URL: as(RUNTIME), MEMORY_SYNC_BUS_URL: `nats://127.0.0.1:${NATS_PORT}/${stream}` });
      expect(relay.status).toBe(1);
      expect(Date.now() - started).toBeLessThan(10_000);
      expect(relay.out).toMatch(new RegExp(`permission denied for database \\\\?"?${DATABASE}.*CONNECT`));
    } finally {
      await onServer(`GRANT CONNECT ON DATABASE ${DATABASE} TO ${RUNTIME}`);
    }
  });
});
