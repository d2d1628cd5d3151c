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
  /** Called after every batch with the rows it deleted. */
  onBatch?: (deleted: number) => void;
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
    options.onBatch?.(r.rowCount ?? 0);
    if ((r.rowCount ?? 0) < options.batchSize) break;
  }
  return { deleted, batches };
}

/**
 * Keeps the newest `cap` memories of each (personality, channel) and deletes
 * the rest, `batchSize` rows per statement. The newest row to drop is found
 * once per group; batches then delete rows at or before it, so a batch never
 * sorts the group again, and rows written meanwhile (newer) are never taken.
 * SKIP LOCKED: rows another transaction holds wait for the next run.
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
    const edge = await db.query<{ createdAt: string; id: string }>(
      timedQuery(
        `SELECT "createdAt"::text AS "createdAt", id FROM memories WHERE "personalityId" = $1 AND "channelId" = $2
         ORDER BY "createdAt" DESC, id DESC OFFSET $3 LIMIT 1`,
        [g.personalityId, g.channelId, options.cap],
        timeout,
      ),
    );
    const newestToDrop = edge.rows[0];
    if (!newestToDrop) continue; // trimmed meanwhile
    while (!options.signal?.aborted) {
      const r = await db.query(
        timedQuery(
          `DELETE FROM memories WHERE id IN (
             SELECT id FROM memories WHERE "personalityId" = $1 AND "channelId" = $2
               AND ("createdAt", id) <= ($3::timestamptz, $4::uuid)
             LIMIT $5 FOR UPDATE SKIP LOCKED)`,
          [g.personalityId, g.channelId, newestToDrop.createdAt, newestToDrop.id, options.batchSize],
          timeout,
        ),
      );
      batches++;
      deleted += r.rowCount ?? 0;
      options.onBatch?.(r.rowCount ?? 0);
      if ((r.rowCount ?? 0) < options.batchSize) break;
    }
  }
  return { deleted, batches, groups: over.rows.length };
}
