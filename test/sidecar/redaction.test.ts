import { spawn } from 'node:child_process';
import { Writable } from 'node:stream';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { QueryError } from '../../src/contract/errors.js';
import { withRetry } from '../../src/backend/retry.js';
import { createLogger, redactUrl, serializeErr } from '../../src/sidecar/logger.js';
import { connect, createMigratedDatabase, ROOT, seededVectors, type TestDb } from '../helpers/db.js';
import { BIN, killLeftovers, sidecarEnv, SidecarProcess } from './helpers.js';

const TOKEN = 'tok-PLANTED-full-9f8e7d6c5b4a';
const READ_TOKEN = 'tok-PLANTED-read-1a2b3c4d5e6f';
const WRONG_TOKEN = 'tok-PLANTED-wrong-0f0e0d0c0b0a';
const DB_PASSWORD = 'pw-PLANTED-database-77';
const LISTEN_PASSWORD = 'pw-PLANTED-listen-88';
const CONTENT = 'CONTENT-PLANTED-the-user-said-something-private';
const PROMPT = 'PROMPT-PLANTED-you-are-a-secret-persona';
const META = 'META-PLANTED-value';
const PLANTED = [TOKEN, READ_TOKEN, WRONG_TOKEN, DB_PASSWORD, LISTEN_PASSWORD, CONTENT, PROMPT, META];

const withPassword = (url: string, password: string) => {
  const u = new URL(url);
  u.password = password;
  return u.toString();
};

/** Every planted string found in `text`. */
const leaks = (text: string) => PLANTED.filter((s) => text.includes(s));

let db: TestDb;
let admin: pg.Client;
beforeAll(async () => {
  db = await createMigratedDatabase();
  admin = await connect(db.url);
});
afterAll(async () => {
  await killLeftovers();
  await admin?.end();
  await db?.drop();
});

/** A real `memory-sync start` whose whole output (stdout and stderr, from the first byte) is kept raw. */
async function start(env: Record<string, string>): Promise<{ sc: SidecarProcess; output: () => string }> {
  const proc = spawn(process.execPath, [BIN, 'start'], { cwd: ROOT, env: sidecarEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  let raw = '';
  proc.stdout.on('data', (d: Buffer) => (raw += d.toString('utf8')));
  proc.stderr.on('data', (d: Buffer) => (raw += d.toString('utf8')));
  const sc = new SidecarProcess(proc);
  return { sc, output: () => raw };
}

describe('logs hold no secrets or content', () => {
  it('a whole sidecar run — successes, validation errors, a conflict, failed queries, refused tokens, shutdown — leaks nothing planted', async () => {
    // Failed queries whose server errors quote the row (DETAIL: "Failing row contains (…)").
    await admin.query(`ALTER TABLE memories ADD CONSTRAINT planted_check CHECK (content NOT LIKE 'REJECT%')`);
    await admin.query(`ALTER TABLE personalities ADD CONSTRAINT planted_prompt CHECK ("systemPrompt" NOT LIKE 'REJECT%')`);
    const { sc, output } = await start({
      DATABASE_URL: withPassword(db.url, DB_PASSWORD), // trust auth locally: any password connects
      MEMORY_SYNC_LISTEN_URL: withPassword(db.url, LISTEN_PASSWORD),
      MEMORY_SYNC_TOKEN: TOKEN,
      MEMORY_SYNC_READ_TOKEN: READ_TOKEN,
      LOG_LEVEL: 'trace',
    });
    sc.url = (await sc.waitForMsg('listening')).url as string;
    await sc.waitForMsg('ready');

    const call = async (method: string, path: string, body?: unknown, token = TOKEN) => {
      const res = await fetch(sc.url + path, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      });
      return { status: res.status, json: (await res.text().then((t) => (t ? JSON.parse(t) : null))) as any };
    };
    const pid = '6f9619ff-8b86-4011-b42d-00c04fc96401';
    const embedding = Array.from(seededVectors(9, 1)[0]!);

    // Successes.
    expect((await call('PUT', `/v1/personalities/${pid}`, { name: 'planted', displayName: 'P', systemPrompt: PROMPT })).status).toBe(201);
    expect((await call('GET', `/v1/personalities/${pid}`, undefined, READ_TOKEN)).json.systemPrompt).toBe(PROMPT);
    const stored = await call('POST', '/v1/memories', { personalityId: pid, channelId: 'c', content: CONTENT, embedding, metadata: { k: META } });
    expect(stored.status).toBe(201);
    const found = await call('POST', '/v1/memories/search', { personalityId: pid, embedding, limit: 1 }, READ_TOKEN);
    expect(found.json.results[0].content).toBe(CONTENT);
    expect((await call('POST', '/v1/sync', {}, READ_TOKEN)).status).toBe(204);
    // Validation errors carrying content.
    expect((await call('POST', '/v1/memories', { personalityId: pid, channelId: 'c', content: CONTENT, embedding: [1, 2] })).status).toBe(400);
    expect((await call('PUT', `/v1/personalities/${pid}`, { displayName: 'P', systemPrompt: PROMPT, name: 7 })).status).toBe(400);
    expect((await call('POST', '/v1/memories', `{"content": "${CONTENT}"`)).status).toBe(400);
    // A conflict.
    const other = '6f9619ff-8b86-4011-b42d-00c04fc96402';
    expect((await call('PUT', `/v1/personalities/${other}`, { name: 'planted', displayName: 'Q', systemPrompt: PROMPT })).status).toBe(409);
    // Failed queries: logged as errors with their causes.
    const from = sc.mark();
    const failed = await call('POST', '/v1/memories', { personalityId: pid, channelId: 'c', content: `REJECT ${CONTENT}`, embedding, metadata: { k: META } });
    expect(failed.status).toBe(500);
    expect(failed.json.code).toBe('query');
    expect((await call('PUT', `/v1/personalities/${pid}`, { name: 'planted', displayName: 'P', systemPrompt: `REJECT ${PROMPT}` })).status).toBe(500);
    const logged = await sc.waitForLog((l) => l.msg === 'request failed', from);
    expect(logged.err).toMatchObject({ type: 'QueryError', sqlState: '23514', cause: { table: 'memories', constraint: 'planted_check' } });
    // Refused tokens.
    expect((await call('GET', `/v1/personalities/${pid}`, undefined, WRONG_TOKEN)).status).toBe(401);
    expect((await call('DELETE', `/v1/personalities/${pid}`, undefined, READ_TOKEN)).status).toBe(403);
    expect((await call('DELETE', `/v1/memories/${stored.json.id}`)).status).toBe(204);

    expect(await sc.stop()).toBe(0);
    const text = output();
    // The run did log: the config line (password masked), the failures, the shutdown.
    const config = sc.logs.find((l) => l.msg === 'config');
    expect(config).toMatchObject({ host: '127.0.0.1', access: { fullToken: true, readToken: true, metricsOpen: false, insecure: false } });
    expect(config?.database).toBe(redactUrl(withPassword(db.url, DB_PASSWORD)));
    expect(String(config?.database)).toContain(':***@');
    expect(sc.logs.filter((l) => l.msg === 'request failed')).toHaveLength(2);
    expect(sc.logs.at(-1)?.msg).toBe('stopped');
    expect(leaks(text)).toEqual([]);
  });

  it('a start-up that fails on the database leaks no password either', async () => {
    const url = new URL(withPassword(db.url, DB_PASSWORD));
    url.pathname = '/ms_no_such_database_redaction';
    const { sc, output } = await start({ DATABASE_URL: url.toString(), MEMORY_SYNC_TOKEN: TOKEN, LOG_LEVEL: 'trace' });
    expect(await sc.exited).not.toBe(0);
    expect(output()).toMatch(/does not exist: create it or fix DATABASE_URL/);
    expect(leaks(output())).toEqual([]);
  });
});

describe('the logger', () => {
  function capture(env: Record<string, string>) {
    let out = '';
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        out += chunk.toString();
        done();
      },
    });
    const config = loadConfig({ LOG_LEVEL: 'trace', ...env });
    return { logger: createLogger(config, sink as never), text: () => out };
  }

  it('censors configured secrets from any text: bus, database and LISTEN URLs, tokens, in messages and fields', () => {
    const bus = `nats://user:${DB_PASSWORD.replace('database', 'bus')}@127.0.0.1:4222/s`;
    const { logger, text } = capture({
      DATABASE_URL: `postgresql://u:${encodeURIComponent('p@ss-PLANTED/ü')}@127.0.0.1:5432/db?application_name=x`,
      MEMORY_SYNC_LISTEN_URL: `postgresql://u@127.0.0.1:5432/db?password=${LISTEN_PASSWORD}`,
      MEMORY_SYNC_BUS_URL: bus,
      MEMORY_SYNC_TOKEN: TOKEN,
    });
    logger.warn({ url: bus, note: `token is ${TOKEN}` }, `connecting to ${bus}`);
    logger.error({ err: new Error(`could not reach postgresql://u:p%40ss-PLANTED%2F%C3%BC@h/db nor ?password=${LISTEN_PASSWORD}`) }, 'failed');
    logger.info({ databaseUrl: 'anything', authorization: `Bearer ${TOKEN}`, req: { headers: { authorization: 'x' } } }, 'fields');
    const out = text();
    expect(out).toContain('connecting to nats://user:[REDACTED]@127.0.0.1:4222/s');
    for (const s of [TOKEN, LISTEN_PASSWORD, 'PLANTED-bus', 'p@ss-PLANTED', 'p%40ss-PLANTED']) expect(out).not.toContain(s);
    expect(JSON.parse(out.trim().split('\n').at(-1)!)).toMatchObject({ databaseUrl: '[REDACTED]', authorization: '[REDACTED]', req: { headers: { authorization: '[REDACTED]' } } });
  });

  it('blanks content fields wherever they are logged', () => {
    const { logger, text } = capture({});
    logger.info({ content: CONTENT, memory: { content: CONTENT, embedding: [1, 2], metadata: { k: META } }, personality: { systemPrompt: PROMPT } }, 'oops');
    expect(leaks(text())).toEqual([]);
    expect(text()).toContain('"memory":{"content":"[REDACTED]","embedding":"[REDACTED]","metadata":"[REDACTED]"}');
  });

  it("keeps what failed from a real pg error, not the row, the parameters or a quoted input value", async () => {
    const c = await connect(db.url);
    try {
      await c.query(`CREATE TEMP TABLE t (id int, content text CHECK (content NOT LIKE 'REJECT%'))`);
      const check = await withRetry(() => c.query('INSERT INTO t VALUES ($1, $2)', [1, `REJECT ${CONTENT}`])).catch((e: unknown) => e);
      expect(check).toBeInstanceOf(QueryError);
      expect(JSON.stringify((check as QueryError).cause)).toContain(CONTENT); // pg's DETAIL has the row
      const serialized = JSON.stringify(serializeErr(check));
      expect(leaks(serialized)).toEqual([]);
      expect(serializeErr(check)).toMatchObject({ type: 'QueryError', sqlState: '23514', cause: { code: '23514', table: 't', constraint: 't_content_check', routine: 'ExecConstraints' } });

      const cast = await c.query('SELECT $1::uuid', [CONTENT]).catch((e: unknown) => e);
      expect((cast as Error).message).toContain(CONTENT); // invalid input syntax for type uuid: "<input>"
      const s = serializeErr(cast) as { message: string; stack: string };
      expect(s.message).toBe('invalid input syntax for type uuid: [REDACTED]');
      expect(leaks(JSON.stringify(s))).toEqual([]);
    } finally {
      await c.end();
    }
  });
});
