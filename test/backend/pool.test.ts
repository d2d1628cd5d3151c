import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import type pg from 'pg';
import { createPool } from '../../src/backend/pool.js';
import { isTransient, withRetry } from '../../src/backend/retry.js';
import { DatabaseUnavailableError, QueryError } from '../../src/contract/errors.js';
import { connect, createMigratedDatabase, insertPersonality, type TestDb } from '../helpers/db.js';
import { startClient } from '../helpers/client.js';

let db: TestDb;
let admin: pg.Client;
beforeAll(async () => {
  db = await createMigratedDatabase();
  admin = await connect(db.url);
});
afterAll(async () => {
  await admin?.end();
  await db?.drop();
});

const fast = { retries: 3, minTimeoutMs: 10, maxTimeoutMs: 20 };

describe('connections', () => {
  it('an idle pooled connection terminated by the server does not crash the process', async () => {
    const pool = createPool({ databaseUrl: db.url, max: 2, ivfflatProbes: 1, queryTimeoutMs: 5000, logger: pino({ level: 'silent' }) });
    try {
      await pool.query('SELECT 1');
      const lost = once(pool, 'error');
      await admin.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'memory-sync' AND datname = current_database()`,
      );
      const [err] = await lost;
      expect((err as Error).message).toMatch(/terminat/i);
      expect((await pool.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    } finally {
      await pool.end();
    }
  });

  it('lookups retry through a terminated connection', async () => {
    const c = await startClient(db.url, { retry: fast });
    try {
      const id = await insertPersonality(admin, 'retry');
      await c.getPersonality(id); // warms the pool
      await admin.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'memory-sync' AND datname = current_database()`,
      );
      await admin.query(`UPDATE personalities SET "displayName" = 'after kill' WHERE id = $1`, [id]);
      await c.sync();
      expect((await c.getPersonality(id))?.displayName).toBe('after kill');
    } finally {
      await c.close();
    }
  });

  it('refused connections are retried, then surface as DatabaseUnavailableError', async () => {
    const pool = createPool({ databaseUrl: 'postgresql://postgres@127.0.0.1:1/none', max: 1, ivfflatProbes: 1, queryTimeoutMs: 1000, logger: pino({ level: 'silent' }) });
    let attempts = 0;
    try {
      const err = await withRetry(() => {
        attempts++;
        return pool.query('SELECT 1');
      }, fast).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(DatabaseUnavailableError);
      expect(attempts).toBe(4);
    } finally {
      await pool.end();
    }
  });

  it('other errors surface at once, typed, with their SQLSTATE', async () => {
    let attempts = 0;
    const err = await withRetry(() => {
      attempts++;
      return admin.query('SELECT 1 / 0');
    }, fast).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QueryError);
    expect(err).toMatchObject({ code: 'query', sqlState: '22012' });
    expect(attempts).toBe(1);
  });

  it('classifies transient errors', () => {
    expect(isTransient(Object.assign(new Error('x'), { code: 'ECONNREFUSED' }))).toBe(true);
    expect(isTransient(Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' }))).toBe(true);
    expect(isTransient(new Error('Connection terminated unexpectedly'))).toBe(true);
    expect(isTransient(new Error('wrapped', { cause: Object.assign(new Error('y'), { code: '08006' }) }))).toBe(true);
    expect(isTransient(Object.assign(new Error('dup'), { code: '23505' }))).toBe(false);
  });
});
