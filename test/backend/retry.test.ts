import { execFile, spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import { Writable } from 'node:stream';
import { promisify } from 'node:util';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool } from '../../src/backend/pool.js';
import { createPrisma, type PrismaClient } from '../../src/backend/prisma.js';
import { isTransient, sqlStateOf, toPermanent, withRetry, type RetryOptions } from '../../src/backend/retry.js';
import { DatabaseUnavailableError, NotMigratedError, PermanentError, QueryError } from '../../src/contract/errors.js';
import { createLogger } from '../../src/sidecar/logger.js';
import { ADMIN_URL, ROOT, connect, createDatabase, createMigratedDatabase, urlFor, type TestDb } from '../helpers/db.js';

const run = promisify(execFile);
const silent = pino({ level: 'silent' });
const NIL = '00000000-0000-0000-0000-000000000000';

/** The outcome of one withRetry call: what it threw, how often fn ran, how many retries it reported. */
interface Outcome {
  err: unknown;
  attempts: number;
  retried: number;
}

async function outcome(fn: () => Promise<unknown>, options: Partial<RetryOptions> = {}): Promise<Outcome> {
  const o: Outcome = { err: undefined, attempts: 0, retried: 0 };
  await withRetry(
    () => {
      o.attempts++;
      return fn();
    },
    { retries: 2, minTimeoutMs: 5, maxTimeoutMs: 10, onRetry: () => o.retried++, ...options },
  ).catch((e: unknown) => (o.err = e));
  return o;
}

/** What fn rejects with (it must reject). */
async function failure(fn: () => Promise<unknown>): Promise<unknown> {
  return fn().then(
    () => {
      throw new Error('expected a failure');
    },
    (e: unknown) => e,
  );
}

/** A pg pool and Prisma over it, as the engine builds them, closed by end(). */
function clients(url: string) {
  const pool = createPool({ databaseUrl: url, max: 2, ivfflatProbes: 1, queryTimeoutMs: 5000, logger: silent });
  const prisma = createPrisma(pool);
  return {
    pool,
    prisma,
    lookup: () => prisma.personality.findUnique({ where: { id: NIL } }),
    end: async () => {
      await prisma.$disconnect().catch(() => {});
      await pool.end().catch(() => {});
    },
  };
}

/**
 * A PostgreSQL cluster of this file's own, with password (SCRAM) auth over
 * TCP, which the shared trust-auth server cannot give, and which this file
 * may shut down.
 */
class OwnCluster {
  readonly password = randomBytes(8).toString('hex');
  private constructor(
    readonly major: string,
    readonly name: string,
    readonly port: number,
  ) {}

  static async create(): Promise<OwnCluster> {
    const admin = await connect(ADMIN_URL);
    const { rows } = await admin.query<{ v: string }>("SELECT current_setting('server_version_num') AS v");
    await admin.end();
    const major = String(Math.floor(Number(rows[0]!.v) / 10000));
    await OwnCluster.dropLeftovers(major);
    const port = await freePort();
    const cluster = new OwnCluster(major, `ms_retry_${process.pid}_${randomBytes(3).toString('hex')}`, port);
    try {
      await run('pg_createcluster', [major, cluster.name, '--port', String(port), '--', '--auth-host=scram-sha-256', '--auth-local=trust']);
      await cluster.start();
      const local = await cluster.socketClient();
      await local.query(`ALTER ROLE postgres PASSWORD '${cluster.password}'`);
      await local.end();
      return cluster;
    } catch (err) {
      await cluster.drop();
      throw err;
    }
  }

  /** Clusters an earlier run of this file left behind when its process was killed. */
  static async dropLeftovers(major: string): Promise<void> {
    const { stdout } = await run('pg_lsclusters', ['-h']);
    for (const line of stdout.split('\n')) {
      const name = line.split(/\s+/)[1] ?? '';
      const pid = /^ms_retry_(\d+)_[0-9a-f]+$/.exec(name)?.[1];
      if (pid === undefined || alive(Number(pid))) continue;
      await run('pg_dropcluster', ['--stop', major, name]).catch(() => {});
    }
  }

  url(database = 'postgres', password: string | null = this.password): string {
    const auth = password === null ? 'postgres' : `postgres:${password}`;
    return `postgresql://${auth}@127.0.0.1:${this.port}/${database}`;
  }

  /** Over the unix socket, where the cluster trusts local users. */
  async socketClient(): Promise<pg.Client> {
    const c = new pg.Client({ host: '/var/run/postgresql', port: this.port, user: 'postgres', database: 'postgres' });
    c.on('error', () => {});
    await c.connect();
    return c;
  }

  start = () => run('pg_ctlcluster', ['--skip-systemctl-redirect', this.major, this.name, 'start']);
  /** Returns at once; the server refuses new sessions (57P03) until the open ones end, then stops. */
  stopSmart = () => run('pg_ctlcluster', ['--skip-systemctl-redirect', this.major, this.name, 'stop', '-m', 'smart', '--', '--no-wait']);
  /** Waits until the server is down. */
  waitStopped = () => run('pg_ctlcluster', ['--skip-systemctl-redirect', this.major, this.name, 'stop', '-m', 'fast']).catch(() => {});
  drop = () => run('pg_dropcluster', ['--stop', this.major, this.name]).catch(() => {});
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as { code?: string }).code === 'EPERM';
  }
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  server.close();
  await once(server, 'close');
  return port;
}

let db: TestDb;
let admin: pg.Client;
let own: OwnCluster;
const roles: string[] = [];

/** A role on the shared server, dropped after the file. */
async function role(options: string): Promise<string> {
  const name = `ms_retry_${randomBytes(4).toString('hex')}`;
  await admin.query(`CREATE ROLE ${name} ${options}`);
  roles.push(name);
  return name;
}

const roleUrl = (user: string, database: string) => {
  const u = new URL(urlFor(database));
  u.username = user;
  return u.toString();
};

beforeAll(async () => {
  await Promise.all([createMigratedDatabase().then((d) => (db = d)), OwnCluster.create().then((c) => (own = c))]);
  admin = await connect(db.url);
});
afterAll(async () => {
  await admin?.end();
  await Promise.all([db?.drop(), own?.drop()]);
  // After the database: the grants in it would keep a role from being dropped.
  const server = await connect(ADMIN_URL);
  for (const r of roles) await server.query(`DROP ROLE IF EXISTS ${r}`);
  await server.end();
});

describe('permanent connection errors fail at once, typed, saying what to do', () => {
  // Each case through pg directly and through Prisma's driver adapter, which hides the SQLSTATE.
  const cases: Array<{
    name: string;
    url: () => Promise<string>;
    sqlState: string | undefined;
    message: RegExp;
    notMigrated?: boolean;
  }> = [
    {
      name: '3D000 database does not exist',
      url: async () => urlFor(`ms_no_such_${randomBytes(4).toString('hex')}`),
      sqlState: '3D000',
      message: /database "ms_no_such_\w+" does not exist: create it or fix DATABASE_URL/,
    },
    {
      name: '28P01 wrong password',
      url: async () => own.url('postgres', 'wrong'),
      sqlState: '28P01',
      message: /password authentication failed for user "postgres": fix the password in DATABASE_URL/,
    },
    {
      name: '28P01 password required but none given',
      url: async () => own.url('postgres', null),
      sqlState: '28P01',
      message: /asks for a password and DATABASE_URL has none/,
    },
    {
      name: '28000 role may not log in',
      url: async () => roleUrl(await role('NOLOGIN'), db.name),
      sqlState: '28000',
      message: /role "ms_retry_\w+" is not permitted to log in: fix the user in DATABASE_URL/,
    },
    {
      name: '42501 no privileges on the tables',
      url: async () => roleUrl(await role('LOGIN'), db.name),
      sqlState: '42501',
      message: /permission denied for table personalities: grant the DATABASE_URL user/,
    },
    {
      name: 'ENOTFOUND unknown host',
      url: async () => 'postgresql://postgres@no-such-host.invalid:5432/postgres',
      sqlState: undefined,
      message: /database host "no-such-host.invalid" not found: fix the host in DATABASE_URL/,
    },
  ];

  it.each(cases)('$name', async ({ url, sqlState, message }) => {
    const c = clients(await url());
    try {
      const viaPg = await outcome(() => c.pool.query('SELECT * FROM personalities'));
      const viaPrisma = await outcome(c.lookup);
      for (const o of [viaPg, viaPrisma]) {
        expect(o.err).toBeInstanceOf(PermanentError);
        expect(o.err).not.toBeInstanceOf(NotMigratedError);
        expect((o.err as PermanentError).code).toBe('permanent');
        expect((o.err as PermanentError).sqlState).toBe(sqlState);
        expect((o.err as Error).message).toMatch(message);
        expect(o.attempts).toBe(1);
        expect(o.retried).toBe(0);
      }
      // The raw errors classify the same way.
      const raw = await failure(c.lookup);
      expect(isTransient(raw)).toBe(false);
      expect(toPermanent(raw)?.message).toMatch(message);
    } finally {
      await c.end();
    }
  });

  it('42P01 (a declared table gone): NotMigratedError, telling how to migrate, never retried', async () => {
    const empty = await createDatabase();
    const c = clients(empty.url);
    try {
      for (const o of [await outcome(() => c.pool.query('SELECT id FROM memories')), await outcome(c.lookup)]) {
        expect(o.err).toBeInstanceOf(NotMigratedError);
        expect((o.err as NotMigratedError).code).toBe('not_migrated');
        expect((o.err as NotMigratedError).sqlState).toBe('42P01');
        expect((o.err as Error).message).toMatch(/relation "(public\.)?(memories|personalities)" does not exist/);
        expect((o.err as Error).message).toMatch(/run `memory-sync migrate` .*MEMORY_SYNC_MIGRATE=true.* or `memory-sync adopt`/);
        expect(o.attempts).toBe(1);
      }
    } finally {
      await c.end();
      await empty.drop();
    }
  });

});

describe('transient errors hidden by Prisma are retried, then 503', () => {
  it('53300 too many connections (Prisma P2037): retried, DatabaseUnavailableError when retries run out, success once it clears', async () => {
    const user = await role('LOGIN CONNECTION LIMIT 0');
    await admin.query(`GRANT SELECT ON personalities TO ${user}`);
    const c = clients(roleUrl(user, db.name));
    try {
      const raw = await failure(c.lookup);
      expect((raw as { code?: string }).code).toBe('P2037');
      expect(sqlStateOf(raw)).toBe('53300');
      expect(isTransient(raw)).toBe(true);
      expect(toPermanent(raw)).toBeUndefined();

      const o = await outcome(c.lookup, { retries: 2 });
      expect(o.err).toBeInstanceOf(DatabaseUnavailableError);
      expect((o.err as DatabaseUnavailableError).code).toBe('unavailable');
      expect((o.err as Error).message).toMatch(/database unavailable after 3 attempts: too many connections for role/);
      expect(o.attempts).toBe(3);
      expect(o.retried).toBe(2);

      const recovered = await outcome(c.lookup, {
        retries: 5,
        onRetry: () => void admin.query(`ALTER ROLE ${user} CONNECTION LIMIT -1`),
      });
      expect(recovered.err).toBeUndefined();
      expect(recovered.attempts).toBeGreaterThan(1);
    } finally {
      await c.end();
    }
  });

  it('57P03 while the server shuts down (Prisma P2039): retried through the restart', async () => {
    const dbName = `ms_retry_${randomBytes(4).toString('hex')}`;
    const setup = await connect(own.url());
    await setup.query(`CREATE DATABASE ${dbName}`);
    await setup.end();
    const holder = await connect(own.url(dbName)); // keeps the smart shutdown from completing
    await holder.query(
      `CREATE TABLE personalities (id uuid PRIMARY KEY, name text, "displayName" text, "systemPrompt" text, "isActive" boolean, "createdAt" timestamptz, "updatedAt" timestamptz)`,
    );
    const c = clients(own.url(dbName));
    try {
      await own.stopSmart();
      // The postmaster takes the signal asynchronously: wait for the first refusal.
      let raw: unknown;
      for (const deadline = Date.now() + 10_000; Date.now() < deadline; ) {
        raw = await c.pool.query('SELECT 1').then(
          () => undefined,
          (e: unknown) => e,
        );
        if (raw) break;
      }
      expect(sqlStateOf(raw)).toBe('57P03');

      const wrapped = await failure(() => c.prisma.personality.findUnique({ where: { id: NIL } }));
      expect((wrapped as { code?: string }).code).toBe('P2039');
      expect(sqlStateOf(wrapped)).toBe('57P03');
      expect(isTransient(wrapped)).toBe(true);
      expect(toPermanent(wrapped)).toBeUndefined();

      const exhausted = await outcome(c.lookup, { retries: 2 });
      expect(exhausted.err).toBeInstanceOf(DatabaseUnavailableError);
      expect((exhausted.err as Error).message).toMatch(/after 3 attempts: the database system is shutting down/);
      expect(exhausted.attempts).toBe(3);
      expect(exhausted.retried).toBe(2);

      // The same call, given enough retries, rides out the stop (57P03, then
      // refused connections) and the start.
      let restarting: Promise<unknown> | undefined;
      const restart = async () => {
        await holder.end();
        await own.waitStopped();
        await own.start();
      };
      const survived = await outcome(c.lookup, {
        retries: 200,
        minTimeoutMs: 20,
        maxTimeoutMs: 100,
        onRetry: () => void (restarting ??= restart()),
      });
      await restarting;
      expect(survived.err).toBeUndefined();
      expect(survived.attempts).toBeGreaterThan(2);
    } finally {
      await c.end();
    }
  });
});

describe('only real retries are reported', () => {
  it('a foreign-key violation fails at once as QueryError with its SQLSTATE, and onRetry is never called', async () => {
    const c = clients(db.url);
    try {
      const insert = () =>
        c.pool.query(
          `INSERT INTO memories (id, "personalityId", "channelId", content, embedding) VALUES ($1, $2, 'c', 'x', array_fill(0.1, ARRAY[1536])::vector)`,
          [randomUUID(), NIL],
        );
      const viaPrisma = () =>
        c.prisma.llmConfig.create({ data: { personalityId: NIL, model: 'm' } });
      for (const o of [await outcome(insert), await outcome(viaPrisma)]) {
        expect(o.err).toBeInstanceOf(QueryError);
        expect((o.err as QueryError).code).toBe('query');
        expect((o.err as QueryError).sqlState).toBe('23503');
        expect((o.err as Error).message).toMatch(/violates foreign key constraint/);
        expect((o.err as Error).message).not.toMatch(/Invalid `/); // the server's message, not Prisma's call frame
        expect(o.attempts).toBe(1);
        expect(o.retried).toBe(0);
      }
    } finally {
      await c.end();
    }
  });

  it('a refused connection is reported once per retry, then DatabaseUnavailableError', async () => {
    const c = clients(`postgresql://postgres@127.0.0.1:${await freePort()}/postgres`);
    try {
      for (const o of [await outcome(() => c.pool.query('SELECT 1'), { retries: 3 }), await outcome(c.lookup, { retries: 3 })]) {
        expect(o.err).toBeInstanceOf(DatabaseUnavailableError);
        expect(o.attempts).toBe(4);
        expect(o.retried).toBe(3);
      }
    } finally {
      await c.end();
    }
  });
});

describe('error logging', () => {
  function capture() {
    const lines: Array<Record<string, any>> = [];
    const stream = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(JSON.parse(chunk.toString()));
        done();
      },
    });
    return { lines, logger: createLogger({ logLevel: 'info', logPretty: false }, stream) };
  }

  it('logs an Error under `err` with type, message, code and stack; Prisma errors with their SQLSTATE', async () => {
    const { lines, logger } = capture();
    const pgErr = await failure(() => admin.query(`INSERT INTO llm_configs ("personalityId", model, "updatedAt") VALUES ($1, 'm', now())`, [NIL]));
    const c = clients(db.url);
    let prismaErr: unknown;
    try {
      prismaErr = await failure(() => c.prisma.llmConfig.create({ data: { personalityId: NIL, model: 'm' } }));
    } finally {
      await c.end();
    }
    logger.warn({ err: pgErr }, 'pg');
    logger.warn({ err: prismaErr }, 'prisma');
    logger.warn({ err: new DatabaseUnavailableError('database unavailable', { cause: pgErr }) }, 'wrapped');
    logger.warn({ err: { message: 'just a message' } }, 'plain');

    const [viaPg, viaPrisma, wrapped, plain] = lines;
    expect(viaPg!.err).toMatchObject({ type: 'DatabaseError', code: '23503', message: expect.stringMatching(/foreign key/) });
    expect(viaPg!.err.stack).toMatch(/^error: insert or update on table "llm_configs"/);
    expect(viaPrisma!.err).toMatchObject({ type: 'PrismaClientKnownRequestError', code: 'P2003', sqlState: '23503' });
    expect(viaPrisma!.err.stack).toMatch(/PrismaClientKnownRequestError/);
    expect(wrapped!.err).toMatchObject({ type: 'DatabaseUnavailableError', code: 'unavailable', message: 'database unavailable' });
    expect(wrapped!.err.cause).toMatchObject({ type: 'DatabaseError', code: '23503' });
    expect(plain!.err).toEqual({ message: 'just a message' });
  });

  it('pino-pretty is loaded only for LOG_PRETTY, and its absence is a clear configuration error', async () => {
    // A child process where require('pino-pretty') fails as if it were not installed.
    const hide = `import M from 'node:module'; const r = M._resolveFilename;
      M._resolveFilename = function (request, ...rest) {
        if (request === 'pino-pretty') throw Object.assign(new Error("Cannot find module 'pino-pretty'"), { code: 'MODULE_NOT_FOUND' });
        return r.call(this, request, ...rest);
      };`;
    const script = `
      const { createLogger } = await import(${JSON.stringify(`${ROOT}src/sidecar/logger.ts`)});
      createLogger({ logLevel: 'info', logPretty: false }).info('json works');
      try { createLogger({ logLevel: 'info', logPretty: true }); console.log('pretty loaded'); }
      catch (err) { console.log(JSON.stringify({ name: err.name, code: err.code, variable: err.variable, message: err.message })); }`;
    const child = spawn(process.execPath, ['--import', 'tsx', '--import', `data:text/javascript,${encodeURIComponent(hide)}`, '--input-type=module', '-e', script], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let errOut = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (errOut += d));
    const [code] = await once(child, 'exit');
    expect(errOut).toBe('');
    expect(code).toBe(0);
    const [json, result] = out.trim().split('\n');
    expect(JSON.parse(json!).msg).toBe('json works');
    expect(JSON.parse(result!)).toEqual({
      name: 'ConfigError',
      code: 'config',
      variable: 'LOG_PRETTY',
      message: 'LOG_PRETTY: needs the optional package pino-pretty: `npm install pino-pretty`, or unset LOG_PRETTY',
    });
  });

  it('pretty output works when pino-pretty is installed', () => {
    expect(() => createLogger({ logLevel: 'silent', logPretty: true })).not.toThrow();
  });
});
