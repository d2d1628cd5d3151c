import type pg from 'pg';
import type { Logger } from 'pino';
import type { Binding } from '../schema/binding.js';
import type { Resolved } from '../schema/catalog.js';
import { timedQuery } from '../store/timed-query.js';
import { createIndexSql, dropIndexSql, inspectIndex } from '../store/vector-index.js';

type Db = Pick<pg.ClientBase, 'query'>;

/** An index build on a large table takes minutes; the pool's query timeout would abandon it. */
const BUILD_TIMEOUT_MS = 24 * 3_600_000;

export type GuardOutcome = 'ok' | 'recreated' | 'skipped';

/**
 * Makes sure every collection has a valid cosine index: without it every
 * pgvector search is a sequential scan (`prisma migrate dev` drops such an
 * index as drift). An invalid index (a failed CONCURRENTLY build) is dropped
 * first. Run it on a connection outside any transaction: CONCURRENTLY
 * requires it.
 */
export async function guardVectorIndexes(db: Db, binding: Binding, resolved: Resolved, logger: Logger): Promise<GuardOutcome> {
  let outcome: GuardOutcome = 'ok';
  for (const c of binding.collections.values()) {
    if (!resolved.collections.get(c.name)?.indexed) continue; // none declared, or past pgvector's 2,000 dimensions
    const { state, name } = await inspectIndex(db, binding, c);
    if (state === 'valid') continue;
    if (state === 'no-table') {
      logger.warn({ collection: c.name, index: name }, 'the collection table does not exist (database not migrated?); index guard skipped');
      outcome = 'skipped';
      continue;
    }
    if (state === 'building') {
      logger.warn({ collection: c.name, index: name }, 'an index build on the collection table is in progress; index guard will look again later');
      outcome = 'skipped';
      continue;
    }
    const started = performance.now();
    if (state === 'invalid') {
      logger.warn({ collection: c.name, index: name }, 'vector index is invalid; dropping it concurrently before recreating it');
      await db.query(timedQuery(dropIndexSql(binding, c, name), [], BUILD_TIMEOUT_MS));
    } else {
      logger.warn({ collection: c.name, index: c.index.name }, 'vector index missing; recreating it concurrently (searches are sequential scans meanwhile)');
    }
    await db.query(timedQuery(createIndexSql(binding, c, resolved.collections.get(c.name)!, true), [], BUILD_TIMEOUT_MS));
    logger.warn({ collection: c.name, index: c.index.name, was: state, ms: Math.round(performance.now() - started) }, 'vector index recreated');
    outcome = 'recreated';
  }
  return outcome;
}
