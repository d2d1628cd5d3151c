import { NotMigratedError } from '../contract/errors.js';
import type { Queryable } from '../backend/queryable.js';

/** What the engine reads and the triggers that keep it in step: without them every lookup would fail or go stale. */
const REQUIRED = {
  tables: ['personalities', 'llm_configs', 'memories'],
  functions: ['memory_sync_notify'],
} as const;

const FIX = 'run `memory-sync migrate` (or `memory-sync adopt` for an existing schema), or set MEMORY_SYNC_MIGRATE=true';

/**
 * Throws NotMigratedError naming what is missing when the database lacks
 * memory-sync's tables or notify function. One round trip.
 */
export async function assertMigrated(db: Queryable): Promise<void> {
  const r = await db.query<{ tables: string[]; functions: string[] }>(
    `SELECT
       ARRAY(SELECT t FROM unnest($1::text[]) t WHERE to_regclass(quote_ident(t)) IS NULL) AS tables,
       ARRAY(SELECT f FROM unnest($2::text[]) f WHERE to_regproc(f) IS NULL) AS functions`,
    [REQUIRED.tables, REQUIRED.functions],
  );
  const row = r.rows[0]!;
  const missing = [...row.tables.map((t) => `table ${t}`), ...row.functions.map((f) => `function ${f}()`)];
  if (missing.length) throw new NotMigratedError(`database not migrated (missing ${missing.join(', ')}): ${FIX}`, '42P01');
}
