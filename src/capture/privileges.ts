import type { Queryable } from '../backend/queryable.js';
import { PermanentError } from '../contract/errors.js';
import type { Binding } from '../schema/binding.js';
import { BUILTIN } from '../schema/builtin.js';

export type TablePrivilege = 'SELECT' | 'INSERT' | 'UPDATE' | 'DELETE';

/** A table (the name as its binding has it, and schema when the model names one) and what the runtime does to it. */
export interface TableNeed {
  table: string;
  schema?: string | null;
  privileges: readonly TablePrivilege[];
}

/**
 * What the engine's queries need on a declaration (src/store/): SELECT on
 * every table it reads (the include trees, the collections). memory-sync's
 * own schema also writes through its API: personalities with their LLM config
 * (INSERT … ON CONFLICT DO UPDATE, DELETE), and memories (store, delete). The
 * retention jobs' needs are checked when they run. LISTEN and pg_notify need
 * no grant.
 */
export function runtimeNeeds(binding: Binding): TableNeed[] {
  const builtin = binding.source === 'built-in';
  const writes: Record<string, TablePrivilege[]> = builtin
    ? { [BUILTIN.personalityModel]: ['INSERT', 'UPDATE', 'DELETE'], [BUILTIN.llmConfigModel]: ['INSERT', 'UPDATE', 'DELETE'], [BUILTIN.memoryModel]: ['INSERT', 'DELETE'] }
    : {};
  const out: TableNeed[] = [];
  for (const w of binding.watched.values()) {
    const m = binding.models.get(w.model)!;
    out.push({ table: m.table, schema: m.schema, privileges: ['SELECT', ...(writes[m.name] ?? [])] });
  }
  return out;
}

/** The job's needs: a batched DELETE … FOR UPDATE SKIP LOCKED needs SELECT, UPDATE and DELETE. */
export function jobNeeds(binding: Binding, overrides: { historyTtlDays?: number | undefined; memoryCap?: number | undefined } = {}): TableNeed[] {
  const out: TableNeed[] = [];
  const h = binding.jobs.historyTtl;
  if (h && (overrides.historyTtlDays ?? h.days) > 0) {
    const m = binding.models.get(h.model)!;
    out.push({ table: m.table, schema: m.schema, privileges: ['SELECT', 'UPDATE', 'DELETE'] });
  }
  const c = binding.jobs.memoryCap;
  if (c && (overrides.memoryCap ?? c.keep) > 0) {
    const m = binding.models.get(binding.collections.get(c.collection)!.model)!;
    out.push({ table: m.table, schema: m.schema, privileges: ['SELECT', 'UPDATE', 'DELETE'] });
  }
  return out;
}

const quoteIdent = (s: string): string => `"${s.replace(/"/g, '""')}"`;
/** The table as to_regclass() takes it. */
const rel = (n: TableNeed): string => (n.schema ? `${quoteIdent(n.schema)}.${quoteIdent(n.table)}` : quoteIdent(n.table));

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
  const pairs = needs.flatMap((n) => n.privileges.map((p) => [rel(n), p] as const));
  const r = await db.query<{ role: string; schemas: string[]; missing: string[] }>(
    `SELECT current_user::text AS role,
       ARRAY(SELECT DISTINCT n.nspname::text FROM unnest($1::text[], $4::text[]) AS t(name, rel)
             JOIN pg_class c ON c.relname = t.name AND c.relkind IN ('r', 'p')
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE to_regclass(t.rel) IS NULL AND NOT has_schema_privilege(n.oid, 'USAGE')
             ORDER BY 1) AS schemas,
       ARRAY(SELECT x.name || ' ' || x.priv FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS x(name, priv, i)
             WHERE to_regclass(x.name) IS NOT NULL
               AND NOT has_table_privilege(to_regclass(x.name)::oid, x.priv)
             ORDER BY x.i) AS missing`,
    [needs.map((n) => n.table), pairs.map(([t]) => t), pairs.map(([, p]) => p), needs.map(rel)],
  );
  const { role, schemas, missing } = r.rows[0]!;
  if (schemas.length === 0 && missing.length === 0) return;
  const lacks: string[] = schemas.map((s) => `USAGE on schema ${s}`);
  const grants: string[] = schemas.map((s) => `GRANT USAGE ON SCHEMA ${quoteIdent(s)} TO ${quoteIdent(role)};`);
  const byTable = new Map<string, string[]>();
  for (const m of missing) {
    const at = m.lastIndexOf(' ');
    const table = m.slice(0, at);
    byTable.set(table, [...(byTable.get(table) ?? []), m.slice(at + 1)]);
  }
  for (const [table, privileges] of byTable) {
    lacks.push(`${privileges.join(', ')} on table ${table.replace(/"([^"]*)"/g, '$1')}`);
    grants.push(`GRANT ${privileges.join(', ')} ON ${table} TO ${quoteIdent(role)};`);
  }
  throw new PermanentError(
    `the database user "${role}" lacks ${lacks.join('; ')}, which ${what} needs: run \`${grants.join(' ')}\` as the tables' owner (docs/security.md, "the runtime role"), or connect as a user that has them`,
    '42501',
  );
}
