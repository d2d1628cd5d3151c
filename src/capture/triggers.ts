import { createHash } from 'node:crypto';
import type { Binding, ModelBinding, WatchedModel } from '../schema/binding.js';
import { ident, literal, table } from '../store/sql.js';

/*
 * Triggers generated from the binding: one statement-level function per
 * watched table, on memory-sync's own channel. Each payload (a v2 change
 * event, src/contract/change-event.ts) names the Prisma model and fields and
 * carries keys only: for new row images the id, join, lookup and partition
 * fields; for rows that left, their id. A bulk statement sends a bounded
 * number of notifications: up to MAX_CHUNKS of at most 8,000 bytes, then the
 * partitions it touched (collections), then one "whole model" event.
 */

/** Trigger names on each watched table (the same names memory-sync has always used: a re-install replaces them). */
export const TRIGGER_NAMES = { INSERT: 'memory_sync_insert', UPDATE: 'memory_sync_update', DELETE: 'memory_sync_delete', TRUNCATE: 'memory_sync_truncate' } as const;

/** Notifications one statement may send before it names partitions (or the model) instead. */
export const MAX_CHUNKS = 12;
/** A key tuple longer than this makes the statement fall back to partitions or the model. */
export const MAX_TUPLE_BYTES = 1_000;
/** NOTIFY's payload limit is 8,000 bytes; this leaves room. */
export const MAX_PAYLOAD_BYTES = 7_900;

export const FINGERPRINT_PREFIX = 'memory-sync v2 ';

export interface GeneratedTrigger {
  model: string;
  /** Schema-qualified table, quoted. */
  table: string;
  /** The function's name (unquoted) and schema (null: current). */
  functionName: string;
  functionSchema: string | null;
  /** CREATE FUNCTION, COMMENT, CREATE TRIGGER ×4, ENABLE ALWAYS ×4. */
  sql: string;
  /** sha256 of the function, recorded in its comment; start-up compares it. */
  fingerprint: string;
  /** The function's body as pg_proc.prosrc holds it: start-up compares it too (a hand edit keeps the comment). */
  body: string;
}

/** A name unique per table that fits in 63 bytes. */
export function functionNameFor(m: ModelBinding): string {
  const hash = createHash('sha256').update(`${m.schema ?? ''}.${m.table}`).digest('hex').slice(0, 8);
  const base = m.table.replace(/[^A-Za-z0-9_]/g, '_').slice(0, 36).toLowerCase();
  return `memory_sync_${base}_${hash}`;
}

function columnsOf(m: ModelBinding, fields: readonly string[]): string[] {
  return fields.map((f) => m.fields.get(f)!.column);
}

const tupleOf = (alias: string, columns: readonly string[]) => `json_build_array(${columns.map((c) => `${alias}.${ident(c)}::text`).join(', ')})::text`;

/**
 * The SQL that turns one statement's items (kind 'r' new image, 'g' gone
 * key) into payloads, chunked by bytes. `head` and `fields` are plpgsql
 * variables holding the event's start and its field list as JSON.
 */
function payloads(items: string, scope: 'rows' | 'partitions'): string {
  return `SELECT array_agg(_ms_head || ',"scope":"${scope}","fields":' || _ms_fields || ',"rows":[' || coalesce(ms_r, '') || '],"gone":[' || coalesce(ms_g, '') || '],"chunk":' || (ms_grp + 1) || ',"chunks":' || ms_chunks || '}' ORDER BY ms_grp),
           coalesce(max(ms_wide), 0)
      INTO _ms_out, _ms_widest
      FROM (SELECT ms_grp, ms_r, ms_g, ms_wide, count(*) OVER () AS ms_chunks
              FROM (SELECT (ms_cum - 1) / _ms_budget AS ms_grp,
                           string_agg(ms_j, ',' ORDER BY ms_k, ms_j) FILTER (WHERE ms_k = 'r') AS ms_r,
                           string_agg(ms_j, ',' ORDER BY ms_k, ms_j) FILTER (WHERE ms_k = 'g') AS ms_g,
                           max(octet_length(ms_j)) AS ms_wide
                      FROM (SELECT ms_k, ms_j, sum(octet_length(ms_j) + 1) OVER (ORDER BY ms_k, ms_j) AS ms_cum
                              FROM (SELECT DISTINCT ms_k, ms_j FROM (${items}) ms_x) ms_d) ms_s
                     GROUP BY 1) ms_q) ms_p`;
}

/** The trigger SQL for one watched model. */
export function generateTrigger(binding: Binding, w: WatchedModel): GeneratedTrigger {
  const m = binding.models.get(w.model)!;
  const fn = functionNameFor(m);
  const fnSql = m.schema ? `${ident(m.schema)}.${ident(fn)}` : ident(fn);
  const channel = literal(binding.channel);
  const payloadCols = columnsOf(m, w.payload);
  const idCols = columnsOf(m, m.id);
  const partFields = [...new Set(w.partitions.flat())];
  const partCols = columnsOf(m, partFields);
  const relevant = w.relevantColumns;
  const idMatch = (a: string, b: string) => idCols.map((c) => `${a}.${ident(c)} = ${b}.${ident(c)}`).join(' AND ');
  const rowText = (a: string) => `ROW(${relevant.map((c) => `${a}.${ident(c)}`).join(', ')})::text`;

  const items = {
    INSERT: `SELECT 'r' AS ms_k, ${tupleOf('n', payloadCols)} AS ms_j FROM new_rows n`,
    UPDATE: `SELECT 'r' AS ms_k, ${tupleOf('n', payloadCols)} AS ms_j FROM new_rows n LEFT JOIN old_rows o ON ${idMatch('o', 'n')}
              WHERE o.${ident(idCols[0]!)} IS NULL OR ${rowText('o')} IS DISTINCT FROM ${rowText('n')}
             UNION ALL
             SELECT 'g', ${tupleOf('o', idCols)} FROM old_rows o WHERE NOT EXISTS (SELECT 1 FROM new_rows n WHERE ${idMatch('n', 'o')})`,
    DELETE: `SELECT 'g' AS ms_k, ${tupleOf('o', idCols)} AS ms_j FROM old_rows o`,
  };
  const partItems = partCols.length
    ? {
        INSERT: `SELECT 'r' AS ms_k, ${tupleOf('n', partCols)} AS ms_j FROM new_rows n`,
        UPDATE: `SELECT 'r' AS ms_k, ${tupleOf('n', partCols)} AS ms_j FROM new_rows n UNION SELECT 'r', ${tupleOf('o', partCols)} FROM old_rows o`,
        DELETE: `SELECT 'r' AS ms_k, ${tupleOf('o', partCols)} AS ms_j FROM old_rows o`,
      }
    : undefined;
  const fieldsJson = (fields: readonly string[]) => literal(JSON.stringify(fields));

  const branch = (op: 'INSERT' | 'UPDATE' | 'DELETE') => `
  IF TG_OP = '${op}' THEN
    _ms_fields := ${fieldsJson(w.payload)};
    _ms_budget := ${MAX_PAYLOAD_BYTES} - octet_length(_ms_head) - octet_length(_ms_fields) - 120 - ${MAX_TUPLE_BYTES};
    ${payloads(items[op], 'rows')};
    IF _ms_out IS NULL THEN
      RETURN NULL; -- nothing that any cache reads changed
    END IF;
    IF _ms_widest <= ${MAX_TUPLE_BYTES} AND array_length(_ms_out, 1) <= ${MAX_CHUNKS} THEN
      FOREACH _ms_payload IN ARRAY _ms_out LOOP
        PERFORM pg_notify(${channel}, _ms_payload);
      END LOOP;
      RETURN NULL;
    END IF;${
      partItems
        ? `
    -- Too many rows to name: name the partitions they are in.
    _ms_fields := ${fieldsJson(partFields)};
    _ms_budget := ${MAX_PAYLOAD_BYTES} - octet_length(_ms_head) - octet_length(_ms_fields) - 120 - ${MAX_TUPLE_BYTES};
    ${payloads(partItems[op], 'partitions')};
    IF _ms_out IS NOT NULL AND _ms_widest <= ${MAX_TUPLE_BYTES} AND array_length(_ms_out, 1) <= ${MAX_CHUNKS} THEN
      FOREACH _ms_payload IN ARRAY _ms_out LOOP
        PERFORM pg_notify(${channel}, _ms_payload);
      END LOOP;
      RETURN NULL;
    END IF;`
        : ''
    }
  END IF;`;

  const fnText = `CREATE OR REPLACE FUNCTION ${fnSql}() RETURNS trigger
LANGUAGE plpgsql AS $memory_sync$
-- Generated by memory-sync from the declaration for model ${w.model}: do not edit; run memory-sync adopt again.
DECLARE
  _ms_head text;
  _ms_fields text;
  _ms_budget int;
  _ms_out text[];
  _ms_widest int;
  _ms_payload text;
BEGIN
  _ms_head := '{"ms":2,"model":"${w.model}","op":"' || TG_OP || '","txid":"' || pg_current_xact_id() || '","ts":' || round(extract(epoch FROM clock_timestamp()) * 1000, 3);
  IF TG_OP = 'TRUNCATE' THEN
    PERFORM pg_notify(${channel}, _ms_head || ',"scope":"model","fields":[],"rows":[],"gone":[],"chunk":1,"chunks":1}');
    RETURN NULL;
  END IF;${branch('INSERT')}${branch('UPDATE')}${branch('DELETE')}
  -- Still too much to name: the whole model is suspect.
  PERFORM pg_notify(${channel}, _ms_head || ',"scope":"model","fields":[],"rows":[],"gone":[],"chunk":1,"chunks":1}');
  RETURN NULL;
END
$memory_sync$`;
  const fingerprint = createHash('sha256').update(fnText).digest('hex');
  const body = fnText.slice(fnText.indexOf('$memory_sync$') + '$memory_sync$'.length, fnText.lastIndexOf('$memory_sync$'));
  const t = table(m);
  const trig = (op: keyof typeof TRIGGER_NAMES) => {
    const ref = op === 'INSERT' ? ' REFERENCING NEW TABLE AS new_rows' : op === 'UPDATE' ? ' REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows' : op === 'DELETE' ? ' REFERENCING OLD TABLE AS old_rows' : '';
    return `CREATE OR REPLACE TRIGGER ${TRIGGER_NAMES[op]} AFTER ${op} ON ${t}${ref} FOR EACH STATEMENT EXECUTE FUNCTION ${fnSql}();`;
  };
  const ops = ['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE'] as const;
  const sql = [
    `${fnText};`,
    `COMMENT ON FUNCTION ${fnSql}() IS ${literal(FINGERPRINT_PREFIX + fingerprint)};`,
    ...ops.map(trig),
    // Fire under session_replication_role = replica too (logical-replication apply workers,
    // restore tools): a write that notifies nobody leaves every cache stale.
    ...ops.map((op) => `ALTER TABLE ${t} ENABLE ALWAYS TRIGGER ${TRIGGER_NAMES[op]};`),
  ].join('\n');
  return { model: w.model, table: t, functionName: fn, functionSchema: m.schema, sql, fingerprint, body };
}

/** Every watched model's triggers, in a stable order. */
export function generateTriggers(binding: Binding): GeneratedTrigger[] {
  return [...binding.watched.values()].map((w) => generateTrigger(binding, w));
}

/** The whole install as one script (a migration.sql, or one simple-protocol query: one implicit transaction). */
export function triggerScript(binding: Binding): string {
  const header = `-- memory-sync change capture for ${binding.source}: generated from the declaration; idempotent.\n-- Channel: ${binding.channel}. Regenerate with \`memory-sync adopt\` after changing the declaration.\n`;
  return `${header}\n${generateTriggers(binding).map((t) => `-- ${t.model} (${t.table})\n${t.sql}`).join('\n\n')}\n`;
}

/**
 * Source "replication": what replaces the triggers in a migration. Drops
 * memory-sync's triggers and functions from every watched table (a no-op
 * where there are none); the publication is made by `memory-sync adopt` or
 * at the source's first start (src/capture/replication.ts).
 */
export function removalScript(binding: Binding): string {
  const lines = [
    `-- memory-sync change capture for ${binding.source}: source "replication", so no triggers; idempotent.`,
    '-- The publication (key columns of each watched table) is made by `memory-sync adopt`, or by memory-sync at its first start.',
    '',
  ];
  for (const t of generateTriggers(binding)) {
    for (const name of Object.values(TRIGGER_NAMES)) lines.push(`DROP TRIGGER IF EXISTS ${name} ON ${t.table};`);
    lines.push(`DROP FUNCTION IF EXISTS ${t.functionSchema ? `${ident(t.functionSchema)}.` : ''}${ident(t.functionName)}();`);
  }
  return `${lines.join('\n')}\n`;
}
