import type { Queryable } from '../backend/queryable.js';
import { NotMigratedError } from '../contract/errors.js';
import type { Binding } from '../schema/binding.js';
import { ident, literal, table } from '../store/sql.js';
import { FINGERPRINT_PREFIX, generateTriggers, TRIGGER_NAMES, triggerScript, type GeneratedTrigger } from './triggers.js';

/*
 * Installing, checking, proving and removing the generated triggers. The
 * function comment records a fingerprint of the generated SQL, so start-up
 * can tell "installed for this declaration" from "installed for another one";
 * the body itself is compared too, so a hand edit that kept the comment is caught.
 */

const NAMES = Object.values(TRIGGER_NAMES);

const INSTALLED_SQL = `
  SELECT c.oid::regclass::text AS "table", t.tgname AS name, t.tgenabled::text AS enabled, p.proname AS function,
         obj_description(p.oid, 'pg_proc') AS comment, p.prosrc AS body
    FROM pg_trigger t
    JOIN pg_class c ON c.oid = t.tgrelid
    JOIN pg_proc p ON p.oid = t.tgfoid
   WHERE NOT t.tgisinternal AND t.tgname = ANY($1::text[]) AND c.oid = ANY($2::regclass[])`;

const ALL_OURS_SQL = `
  SELECT c.oid::regclass::text AS "table", t.tgname AS name, p.oid::regprocedure::text AS function
    FROM pg_trigger t
    JOIN pg_class c ON c.oid = t.tgrelid
    JOIN pg_proc p ON p.oid = t.tgfoid
   WHERE NOT t.tgisinternal AND t.tgname = ANY($1::text[]) AND p.proname LIKE 'memory\\_sync\\_%'`;

/** Tables whose generated triggers are missing, disabled, or another declaration's; empty when all is installed. */
export async function captureProblems(db: Queryable, binding: Binding): Promise<string[]> {
  const triggers = generateTriggers(binding);
  if (!triggers.length) return [];
  const r = await db.query<{ table: string; name: string; enabled: string; function: string; comment: string | null; body: string }>(INSTALLED_SQL, [
    NAMES,
    triggers.map((t) => t.table),
  ]);
  const problems: string[] = [];
  for (const t of triggers) {
    const found = r.rows.filter((x) => sameTable(x.table, t));
    const missing = NAMES.filter((n) => !found.some((x) => x.name === n));
    if (missing.length) {
      problems.push(`${t.table}: trigger${missing.length > 1 ? 's' : ''} ${missing.join(', ')} missing`);
      continue;
    }
    const disabled = found.filter((x) => x.enabled !== 'A').map((x) => x.name);
    if (disabled.length) problems.push(`${t.table}: ${disabled.join(', ')} not enabled ALWAYS`);
    const other = found.filter((x) => x.function !== t.functionName || x.comment !== FINGERPRINT_PREFIX + t.fingerprint);
    if (other.length) problems.push(`${t.table}: the installed triggers are another declaration's (or an older memory-sync's)`);
    else if (found.some((x) => x.body !== t.body)) problems.push(`${t.table}: the trigger function ${t.functionName} was edited by hand (its body is not the generated one)`);
  }
  return problems;
}

function sameTable(regclass: string, t: GeneratedTrigger): boolean {
  // regclass prints unqualified (and unquoted when it can) for tables on the search path.
  const bare = t.table.replace(/^"(.*)"$/, '$1').replace(/""/g, '"');
  return regclass === t.table || regclass === bare || regclass.replace(/^"(.*)"$/, '$1') === bare || t.table.endsWith(`.${regclass}`) || t.table.endsWith(`."${regclass}"`);
}

/** Throws NotMigratedError naming what is missing: start-up refuses to serve caches nobody invalidates. */
export async function assertCaptureInstalled(db: Queryable, binding: Binding): Promise<void> {
  if (binding.captureSource !== 'triggers') return;
  const problems = await captureProblems(db, binding);
  if (problems.length) {
    throw new NotMigratedError(
      `change capture is not installed for this declaration (${binding.source}):\n${problems.map((p) => `  - ${p}`).join('\n')}\nrun \`memory-sync adopt\` (or \`memory-sync migrate\` for memory-sync's own schema)`,
      '42883',
    );
  }
}

/** memory-sync triggers on tables this declaration does not watch (left by an earlier declaration): DROP statements. */
export async function staleTriggers(db: Queryable, binding: Binding): Promise<string[]> {
  const watched = generateTriggers(binding);
  const r = await db.query<{ table: string; name: string; function: string }>(ALL_OURS_SQL, [NAMES]);
  const out: string[] = [];
  const functions = new Set<string>();
  for (const x of r.rows) {
    if (watched.some((t) => sameTable(x.table, t) && binding.captureSource === 'triggers')) continue;
    out.push(`DROP TRIGGER IF EXISTS ${ident(x.name)} ON ${x.table};`);
    functions.add(x.function);
  }
  for (const f of functions) out.push(`DROP FUNCTION IF EXISTS ${f};`);
  return out;
}

export interface ProofResult {
  table: string;
  /** Statements run on the table inside the rolled-back transaction. */
  statements: string[];
}

/**
 * Proves the installed triggers on every watched table inside one
 * transaction that is rolled back: an INSERT, an UPDATE and a DELETE each
 * (with no rows, which fires statement triggers and plans every query in
 * them), then, where the table has a row, a real UPDATE of it and a DELETE
 * and re-INSERT of it (which run the bot's own row triggers too). A failure
 * names the table and the statement; nothing is kept either way.
 */
export async function proveCapture(
  db: { query: Queryable['query'] },
  binding: Binding,
  install?: string,
  /** More of the install to prove with it (the publication and replica identities of the replication source). */
  prepare?: (db: { query: Queryable['query'] }) => Promise<unknown>,
): Promise<ProofResult[]> {
  const results: ProofResult[] = [];
  await db.query('BEGIN');
  try {
    if (install) await db.query(install);
    if (prepare) await prepare(db);
    for (const t of generateTriggers(binding)) {
      const m = binding.models.get(t.model)!;
      const id = m.id.map((f) => ident(m.fields.get(f)!.column));
      const statements = [
        `INSERT INTO ${t.table} SELECT * FROM ${t.table} WHERE false`,
        `UPDATE ${t.table} SET ${id[0]} = ${id[0]} WHERE false`,
        `DELETE FROM ${t.table} WHERE false`,
      ];
      const one = `(SELECT ctid FROM ${t.table} LIMIT 1)`;
      const withRow = [
        `UPDATE ${t.table} SET ${id[0]} = ${id[0]} WHERE ctid = ${one}`,
        `WITH gone AS (DELETE FROM ${t.table} WHERE ctid = ${one} RETURNING *) INSERT INTO ${t.table} SELECT * FROM gone`,
      ];
      const ran: string[] = [];
      for (const s of statements) {
        await run(db, t.table, s);
        ran.push(s);
      }
      const has = await db.query(`SELECT 1 FROM ${t.table} LIMIT 1`);
      if (has.rows.length) {
        for (const s of withRow) {
          // The bot's own constraints may refuse a delete (ON DELETE RESTRICT): only our functions' errors count here.
          await db.query('SAVEPOINT memory_sync_prove');
          try {
            await run(db, t.table, s);
            ran.push(s);
            await db.query('RELEASE SAVEPOINT memory_sync_prove');
          } catch (err) {
            await db.query('ROLLBACK TO SAVEPOINT memory_sync_prove');
            if ((err as ProveError).ours) throw err;
          }
        }
      }
      results.push({ table: t.table, statements: ran });
    }
  } finally {
    await db.query('ROLLBACK');
  }
  return results;
}

class ProveError extends Error {
  ours = false;
}

async function run(db: { query: Queryable['query'] }, tableName: string, statement: string): Promise<void> {
  try {
    await db.query(statement);
  } catch (err) {
    const e = new ProveError(`the triggers fail on ${tableName}: \`${statement}\` raised: ${(err as Error).message}`, { cause: err });
    // An error raised inside one of our functions is ours; the bot's constraints and triggers are not.
    e.ours = /memory_sync_/.test((err as { where?: string }).where ?? '');
    throw e;
  }
}

/** The install: generated triggers plus the removal of stale ones, as one script. */
export async function captureScript(db: Queryable, binding: Binding): Promise<string> {
  const stale = await staleTriggers(db, binding);
  const parts = [binding.captureSource === 'triggers' ? triggerScript(binding) : ''];
  if (stale.length) parts.push(`-- memory-sync triggers on tables this declaration does not watch\n${stale.join('\n')}\n`);
  return parts.filter(Boolean).join('\n');
}

/** DROP statements for everything the triggers install put in (uninstall). */
export async function uninstallScript(db: Queryable, binding: Binding): Promise<string> {
  const r = await db.query<{ table: string; name: string; function: string }>(ALL_OURS_SQL, [NAMES]);
  const out = r.rows.map((x) => `DROP TRIGGER IF EXISTS ${ident(x.name)} ON ${x.table};`);
  // The catalog spells a function unquoted (regprocedure), the generator quoted: one DROP each.
  const fns = new Map(r.rows.map((x) => [x.function.replace(/"/g, ''), x.function]));
  for (const t of generateTriggers(binding)) {
    const f = `${t.functionSchema ? `${ident(t.functionSchema)}.` : ''}${ident(t.functionName)}()`;
    if (!fns.has(f.replace(/"/g, ''))) fns.set(f.replace(/"/g, ''), f);
  }
  for (const f of fns.values()) out.push(`DROP FUNCTION IF EXISTS ${f};`);
  // The trigger function of memory-sync 0.1 (v1 payloads on cache_invalidation).
  out.push('DROP FUNCTION IF EXISTS memory_sync_notify() CASCADE;');
  return out.join('\n');
}

export { literal, table };
