import { PermanentError } from '../contract/errors.js';
import type { Queryable } from '../backend/queryable.js';

export type TablePrivilege = 'SELECT' | 'INSERT' | 'UPDATE' | 'DELETE';

/** A table and what the runtime does to it. */
export interface TableNeed {
  table: string;
  privileges: readonly TablePrivilege[];
}

/**
 * What the engine's queries need (src/store/): lookups and upserts of
 * personalities with their LLM config (INSERT … ON CONFLICT DO UPDATE, and
 * the config replaced by DELETE + INSERT), memory store, search, hot-set COPY
 * and delete. LISTEN and pg_notify need no grant.
 */
export const ENGINE_NEEDS: readonly TableNeed[] = [
  { table: 'personalities', privileges: ['SELECT', 'INSERT', 'UPDATE', 'DELETE'] },
  { table: 'llm_configs', privileges: ['SELECT', 'INSERT', 'UPDATE', 'DELETE'] },
  { table: 'memories', privileges: ['SELECT', 'INSERT', 'DELETE'] },
];

const quoteIdent = (s: string): string => `"${s.replace(/"/g, '""')}"`;

/**
 * Throws PermanentError (SQLSTATE 42501) naming every privilege the connected
 * role lacks on `needs`, and the GRANT that fixes it, so a start-up under a
 * too-small role fails at once instead of at the first lookup. A schema the
 * role may not use (no USAGE) is named too: its tables would otherwise look
 * missing. Tables that do not exist are skipped (the schema check names them).
 * One round trip.
 */
export async function assertPrivileges(db: Queryable, needs: readonly TableNeed[], what = 'memory-sync'): Promise<void> {
  if (needs.length === 0) return;
  const pairs = needs.flatMap((n) => n.privileges.map((p) => [n.table, p] as const));
  const r = await db.query<{ role: string; schemas: string[]; missing: string[] }>(
    `SELECT current_user::text AS role,
       ARRAY(SELECT DISTINCT n.nspname::text FROM unnest($1::text[]) AS t(name)
             JOIN pg_class c ON c.relname = t.name AND c.relkind IN ('r', 'p')
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE to_regclass(quote_ident(t.name)) IS NULL AND NOT has_schema_privilege(n.oid, 'USAGE')
             ORDER BY 1) AS schemas,
       ARRAY(SELECT x.name || ' ' || x.priv FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS x(name, priv, i)
             WHERE to_regclass(quote_ident(x.name)) IS NOT NULL
               AND NOT has_table_privilege(to_regclass(quote_ident(x.name))::oid, x.priv)
             ORDER BY x.i) AS missing`,
    [needs.map((n) => n.table), pairs.map(([t]) => t), pairs.map(([, p]) => p)],
  );
  const { role, schemas, missing } = r.rows[0]!;
  if (schemas.length === 0 && missing.length === 0) return;
  const lacks: string[] = schemas.map((s) => `USAGE on schema ${s}`);
  const grants: string[] = schemas.map((s) => `GRANT USAGE ON SCHEMA ${quoteIdent(s)} TO ${quoteIdent(role)};`);
  const byTable = new Map<string, string[]>();
  for (const m of missing) {
    const [table, privilege] = m.split(' ') as [string, string];
    byTable.set(table, [...(byTable.get(table) ?? []), privilege]);
  }
  for (const [table, privileges] of byTable) {
    lacks.push(`${privileges.join(', ')} on table ${table}`);
    grants.push(`GRANT ${privileges.join(', ')} ON ${quoteIdent(table)} TO ${quoteIdent(role)};`);
  }
  throw new PermanentError(
    `the database user "${role}" lacks ${lacks.join('; ')}, which ${what} needs: run \`${grants.join(' ')}\` as the tables' owner (docs/security.md, "the runtime role"), or connect as a user that has them`,
    '42501',
  );
}
