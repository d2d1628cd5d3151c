import type pg from 'pg';
import { timedQuery } from './timed-query.js';

type Db = Pick<pg.ClientBase, 'query'>;

export interface RetentionResult {
  deleted: number;
  /** DELETE statements run; each one is its own short transaction. */
  batches: number;
}

export interface BatchOptions {
  batchSize: number;
  signal?: AbortSignal;
  /** Client-side limit per statement (the pool's default may be too short on a big table). */
  statementTimeoutMs?: number;
}

const STATEMENT_TIMEOUT_MS = 10 * 60_000;

/**
 * Deletes conversation history older than `ttlDays`, `batchSize` rows per
 * statement, so no statement holds many row locks for long. SKIP LOCKED:
 * rows another transaction holds are taken on the next run.
 */
export async function deleteExpiredHistory(db: Db, options: BatchOptions & { ttlDays: number }): Promise<RetentionResult> {
  const timeout = options.statementTimeoutMs ?? STATEMENT_TIMEOUT_MS;
  // One cutoff for the whole run, from the database clock; text keeps its microseconds.
  const c = await db.query<{ cutoff: string }>("SELECT (now() - make_interval(days => $1))::text AS cutoff", [options.ttlDays]);
  const cutoff = c.rows[0]!.cutoff;
  let deleted = 0;
  let batches = 0;
  while (!options.signal?.aborted) {
    const r = await db.query(
      timedQuery(
        `DELETE FROM conversation_history WHERE id IN (
           SELECT id FROM conversation_history WHERE "createdAt" < $1::timestamptz LIMIT $2 FOR UPDATE SKIP LOCKED)`,
        [cutoff, options.batchSize],
        timeout,
      ),
    );
    batches++;
    deleted += r.rowCount ?? 0;
    if ((r.rowCount ?? 0) < options.batchSize) break;
  }
  return { deleted, batches };
}

/**
 * Keeps the newest `cap` memories of each (personality, channel) and deletes
 * the rest, oldest first, `batchSize` rows per statement. Each statement
 * recomputes "beyond the newest cap", so concurrent writes never make it
 * delete more than the excess.
 */
export async function enforceMemoryCap(db: Db, options: BatchOptions & { cap: number }): Promise<RetentionResult & { groups: number }> {
  const timeout = options.statementTimeoutMs ?? STATEMENT_TIMEOUT_MS;
  const over = await db.query<{ personalityId: string; channelId: string }>(
    timedQuery(
      `SELECT "personalityId", "channelId" FROM memories GROUP BY 1, 2 HAVING count(*) > $1 ORDER BY 1, 2`,
      [options.cap],
      timeout,
    ),
  );
  let deleted = 0;
  let batches = 0;
  for (const g of over.rows) {
    while (!options.signal?.aborted) {
      const r = await db.query(
        timedQuery(
          `DELETE FROM memories WHERE id IN (
             SELECT id FROM memories WHERE "personalityId" = $1 AND "channelId" = $2
             ORDER BY "createdAt" DESC, id DESC OFFSET $3 LIMIT $4)`,
          [g.personalityId, g.channelId, options.cap, options.batchSize],
          timeout,
        ),
      );
      batches++;
      deleted += r.rowCount ?? 0;
      if ((r.rowCount ?? 0) < options.batchSize) break;
    }
  }
  return { deleted, batches, groups: over.rows.length };
}
