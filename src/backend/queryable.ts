import type { PGliteInterface, Transaction } from '@electric-sql/pglite';
import { types } from '@electric-sql/pglite';
import type pg from 'pg';

/**
 * The database seam: what the SQL in src/store needs from a backend. A pg.Pool,
 * a checked-out pg client and a PGlite instance all satisfy it. Rows come
 * back as node-postgres returns them, on every backend: timestamptz as Date,
 * jsonb parsed, int4/float8 as number, int8 and numeric as string, bytea as
 * Buffer.
 */
export interface Queryable {
  query<R = any>(text: string, params?: unknown[]): Promise<{ rows: R[] }>;
}

/** A whole backend: queries, transactions, and the handle its fast paths need. */
export type Database = PostgresDatabase | PgliteDatabase;

interface DatabaseBase extends Queryable {
  /** Runs `fn` in one transaction on one session: COMMIT when it resolves, ROLLBACK when it throws. */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
}

export interface PostgresDatabase extends DatabaseBase {
  readonly backend: 'postgres';
  /** For COPY BINARY streaming (src/store/memories.ts). */
  readonly pool: pg.Pool;
}

export interface PgliteDatabase extends DatabaseBase {
  readonly backend: 'pglite';
  /** `COPY (query) TO '/dev/blob' (FORMAT binary)`: PGlite's COPY TO STDOUT returns nothing. */
  copyToBlob(query: string): Promise<Buffer>;
  /** For COPY to /dev/blob and in-process LISTEN (src/sources/pglite.ts). */
  readonly pglite: PGliteInterface;
}

function pgQueryable(c: pg.Pool | pg.PoolClient): Queryable {
  return { query: (text, params) => c.query(text, params as unknown[]) as Promise<{ rows: any[] }> };
}

export function postgresDatabase(pool: pg.Pool): PostgresDatabase {
  return {
    backend: 'postgres',
    pool,
    ...pgQueryable(pool),
    async transaction(fn) {
      const client = await pool.connect();
      // pg-pool stops listening for errors while a client is checked out; a
      // dropped socket would otherwise be an unhandled 'error' (a crash).
      let lost: Error | undefined;
      const onError = (err: Error) => (lost = err);
      client.on('error', onError);
      let broken = false;
      try {
        await client.query('BEGIN');
        const result = await fn(pgQueryable(client));
        await client.query('COMMIT');
        return result;
      } catch (err) {
        // A failed ROLLBACK leaves the session in an unknown state: discard it.
        await client.query('ROLLBACK').catch(() => (broken = true));
        throw lost ?? err;
      } finally {
        client.off('error', onError);
        client.release(broken || lost !== undefined);
      }
    },
  };
}

/**
 * PGlite parses bytea into a Uint8Array, char by char (0.7 ms per 6 KB
 * vector), and int8 into a number; node-postgres gives a Buffer and a string.
 * These parsers make both backends return the same rows, bytea natively.
 */
const PG_COMPATIBLE = {
  parsers: {
    [types.BYTEA]: (x: string) => Buffer.from(x.slice(2), 'hex'),
    [types.INT8]: (x: string) => x,
  },
};

function pgliteQueryable(q: PGliteInterface | Transaction): Queryable {
  return { query: (text, params) => q.query(text, params, PG_COMPATIBLE) };
}

export function pgliteDatabase(pglite: PGliteInterface): PgliteDatabase {
  return {
    backend: 'pglite',
    pglite,
    ...pgliteQueryable(pglite),
    transaction: (fn) => pglite.transaction((tx) => fn(pgliteQueryable(tx))),
    async copyToBlob(query) {
      const res = await pglite.query(`COPY (${query}) TO '/dev/blob' (FORMAT binary)`);
      if (!res.blob) throw new Error('COPY TO /dev/blob returned no data');
      return Buffer.from(await res.blob.arrayBuffer());
    },
  };
}

/** A Database for either a pg.Pool or an existing Database (for callers that still hold a pool). */
export function toDatabase(db: pg.Pool | Database): Database {
  return 'backend' in db ? db : postgresDatabase(db);
}
