import type pg from 'pg';
import type { Binding, HistoryTtlBinding, MemoryCapBinding } from '../schema/binding.js';
import { col, ident, model, table } from './sql.js';
import { timedQuery } from './timed-query.js';

type Db = Pick<pg.ClientBase, 'query'>;

/*
 * The retention jobs' SQL, for the tables the declaration names for them
 * (`jobs.historyTtl`, `jobs.memoryCap`) and nothing else; rows the declared
 * `protect` field marks true are never deleted.
 */

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

const unprotected = (alias: string, protect: HistoryTtlBinding['protect']) => (protect ? ` AND ${col(alias, protect)} IS NOT TRUE` : '');

/**
 * Deletes rows older than `days`, `batchSize` per statement, so no statement
 * holds many row locks for long. SKIP LOCKED: rows another transaction holds
 * are taken on the next run.
 */
export async function deleteExpired(db: Db, binding: Binding, job: HistoryTtlBinding, options: BatchOptions & { days: number }): Promise<RetentionResult> {
  const m = model(binding, job.model);
  const t = table(m);
  const id = m.id.map((f) => col('t', m.fields.get(f)!));
  const key = m.id.map((f) => ident(m.fields.get(f)!.column));
  const timeout = options.statementTimeoutMs ?? STATEMENT_TIMEOUT_MS;
  // One cutoff for the whole run, from the database clock; text keeps its microseconds.
  const c = await db.query<{ cutoff: string }>('SELECT (now() - make_interval(days => $1))::text AS cutoff', [options.days]);
  const cutoff = c.rows[0]!.cutoff;
  let deleted = 0;
  let batches = 0;
  while (!options.signal?.aborted) {
    const r = await db.query(
      timedQuery(
        `DELETE FROM ${t} WHERE (${key.join(', ')}) IN (
           SELECT ${id.join(', ')} FROM ${t} t WHERE ${col('t', job.field)} < $1::timestamptz${unprotected('t', job.protect)} LIMIT $2 FOR UPDATE SKIP LOCKED)`,
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
 * Keeps the newest `keep` unprotected rows of each group and deletes the
 * rest, `batchSize` per statement. The newest row to drop is found once per
 * group; batches then delete rows at or before it, so a batch never sorts
 * the group again, and rows written meanwhile (newer) are never taken.
 */
export async function enforceCap(db: Db, binding: Binding, job: MemoryCapBinding, options: BatchOptions & { keep: number }): Promise<RetentionResult & { groups: number }> {
  const collection = binding.collections.get(job.collection)!;
  const m = model(binding, collection.model);
  const t = table(m);
  const key = collection.key;
  const timeout = options.statementTimeoutMs ?? STATEMENT_TIMEOUT_MS;
  const per = job.per.map((f) => col('t', f));
  const groupMatch = job.per.map((f, i) => `${col('t', f)} IS NOT DISTINCT FROM $${i + 1}`).join(' AND ');
  const n = job.per.length;
  const over = await db.query<Record<string, string | null>>(
    timedQuery(
      `SELECT ${per.map((p, i) => `${p}::text AS g${i}`).join(', ')} FROM ${t} t WHERE true${unprotected('t', job.protect)}
       GROUP BY ${per.join(', ')} HAVING count(*) > $1 ORDER BY ${per.join(', ')}`,
      [options.keep],
      timeout,
    ),
  );
  let deleted = 0;
  let batches = 0;
  for (const g of over.rows) {
    const group = job.per.map((_, i) => g[`g${i}`] ?? null);
    const edge = await db.query<{ at: string; id: string }>(
      timedQuery(
        `SELECT ${col('t', job.orderBy)}::text AS at, ${col('t', key)}::text AS id FROM ${t} t WHERE ${groupMatch}${unprotected('t', job.protect)}
         ORDER BY ${col('t', job.orderBy)} DESC, ${col('t', key)} DESC OFFSET $${n + 1} LIMIT 1`,
        [...group, options.keep],
        timeout,
      ),
    );
    const newestToDrop = edge.rows[0];
    if (!newestToDrop) continue; // trimmed meanwhile
    while (!options.signal?.aborted) {
      const r = await db.query(
        timedQuery(
          `DELETE FROM ${t} WHERE ${ident(key.column)} IN (
             SELECT ${col('t', key)} FROM ${t} t WHERE ${groupMatch}${unprotected('t', job.protect)}
               AND (${col('t', job.orderBy)}, ${col('t', key)}) <= ($${n + 1}, $${n + 2})
             LIMIT $${n + 3} FOR UPDATE SKIP LOCKED)`,
          [...group, newestToDrop.at, newestToDrop.id, options.batchSize],
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
