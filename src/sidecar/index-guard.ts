import type pg from 'pg';
import type { Logger } from 'pino';
import { timedQuery } from '../store/timed-query.js';

type Db = Pick<pg.ClientBase, 'query'>;

export const VECTOR_INDEX = 'idx_memories_embedding';
/** Same definition as sql/020_vector_index.sql. */
export const VECTOR_INDEX_DDL =
  'CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_memories_embedding ON memories USING ivfflat (embedding vector_cosine_ops) WITH (lists = 50)';

/** An index build on a large table takes minutes; the pool's query timeout would abandon it. */
const BUILD_TIMEOUT_MS = 24 * 3_600_000;

export type VectorIndexState = 'valid' | 'invalid' | 'missing' | 'building' | 'no-table';
export type GuardOutcome = 'ok' | 'recreated' | 'skipped';

/**
 * `building`: some index on memories is being built right now (perhaps this
 * one, by a migration or by hand): an in-progress CONCURRENTLY build is
 * indistinguishable from a failed one by indisvalid alone.
 */
export async function inspectVectorIndex(db: Db): Promise<VectorIndexState> {
  const r = await db.query<{ table: string | null; valid: boolean | null; building: boolean }>(
    `SELECT to_regclass('memories')::text AS table,
            (SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)) AS valid,
            EXISTS (SELECT 1 FROM pg_stat_progress_create_index
                    WHERE datname = current_database() AND relid = to_regclass('memories')) AS building`,
    [VECTOR_INDEX],
  );
  const row = r.rows[0]!;
  if (row.table === null) return 'no-table';
  if (row.valid === true) return 'valid';
  if (row.building) return 'building';
  return row.valid === false ? 'invalid' : 'missing';
}

/**
 * Makes sure idx_memories_embedding exists and is valid: without it every
 * memory search is a sequential scan (`prisma migrate dev` drops it as
 * drift). An invalid index (a failed CONCURRENTLY build) is dropped first.
 * Run it on a connection outside any transaction: CONCURRENTLY requires it.
 */
export async function guardVectorIndex(db: Db, logger: Logger): Promise<GuardOutcome> {
  const state = await inspectVectorIndex(db);
  if (state === 'valid') return 'ok';
  if (state === 'no-table') {
    logger.warn({ index: VECTOR_INDEX }, 'table memories does not exist (database not migrated?); index guard skipped');
    return 'skipped';
  }
  if (state === 'building') {
    logger.warn({ index: VECTOR_INDEX }, 'an index build on memories is in progress; index guard will look again later');
    return 'skipped';
  }
  const started = performance.now();
  if (state === 'invalid') {
    logger.warn({ index: VECTOR_INDEX }, 'vector index is invalid; dropping it concurrently before recreating it');
    await db.query(timedQuery(`DROP INDEX CONCURRENTLY IF EXISTS ${VECTOR_INDEX}`, [], BUILD_TIMEOUT_MS));
  } else {
    logger.warn({ index: VECTOR_INDEX }, 'vector index missing; recreating it concurrently (searches are sequential scans meanwhile)');
  }
  await db.query(timedQuery(VECTOR_INDEX_DDL, [], BUILD_TIMEOUT_MS));
  logger.warn({ index: VECTOR_INDEX, was: state, ms: Math.round(performance.now() - started) }, 'vector index recreated');
  return 'recreated';
}
