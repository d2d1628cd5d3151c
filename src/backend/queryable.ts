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

/**
 * What memory-sync uses of a PGlite session (PGlite's own `query` and
 * `PGlite.create()` instances satisfy it). Declared here rather than imported
 * from @electric-sql/pglite so that the public declarations do not pull in
 * PGlite's types, which need @types/emscripten that a user would have to guess.
 */
export interface PgliteQueryable {
  query<R = any>(text: string, params?: any[], options?: PgliteQueryOptions): Promise<{ rows: R[]; blob?: Blob | undefined }>;
}

/** PGlite's per-query options that memory-sync passes: text parsers by type OID. */
export interface PgliteQueryOptions {
  parsers?: { [typeOid: number]: (value: string, typeOid: number) => unknown };
}

/** A PGlite transaction, as memory-sync uses it. */
export interface PgliteTransaction extends PgliteQueryable {
  exec(text: string): Promise<unknown>;
  rollback(): Promise<void>;
}

/** A whole PGlite instance, as memory-sync uses it: queries, transactions, LISTEN. */
export interface PgliteHandle extends PgliteQueryable {
  readonly closed: boolean;
  exec(text: string): Promise<unknown>;
  transaction<T>(fn: (tx: PgliteTransaction) => Promise<T>): Promise<T>;
  listen(channel: string, callback: (payload: string) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

export interface PgliteDatabase extends DatabaseBase {
  readonly backend: 'pglite';
  /** `COPY (query) TO '/dev/blob' (FORMAT binary)`: PGlite's COPY TO STDOUT returns nothing. */
  copyToBlob(query: string): Promise<Buffer>;
  /** For COPY to /dev/blob and in-process LISTEN (src/sources/pglite.ts). */
  readonly pglite: PgliteHandle;
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

/** PostgreSQL's fixed type OIDs (pg_type.dat), the ones PGlite's `types` names. */
const PG_TYPE = { INT8: 20, BYTEA: 17 } as const;

/**
 * PGlite parses bytea into a Uint8Array, char by char (0.7 ms per 6 KB
 * vector), and int8 into a number; node-postgres gives a Buffer and a string.
 * These parsers make both backends return the same rows, bytea natively.
 */
const PG_COMPATIBLE: PgliteQueryOptions = {
  parsers: {
    [PG_TYPE.BYTEA]: (x: string) => Buffer.from(x.slice(2), 'hex'),
    [PG_TYPE.INT8]: (x: string) => x,
  },
};

function pgliteQueryable(q: PgliteQueryable): Queryable {
  return { query: (text, params) => q.query(text, params, PG_COMPATIBLE) };
}

export function pgliteDatabase(pglite: PgliteHandle): PgliteDatabase {
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
