import type { Binding, FieldBinding, ModelBinding } from '../schema/binding.js';

/*
 * Identifiers in generated SQL: every one is quoted here, and names only
 * reach this point after the binding matched them against the Prisma schema
 * and the catalog. One function, so no statement can forget it.
 */

/** A quoted identifier: `"a""b"`. Rejects what PostgreSQL could not take as a name. */
export function ident(name: string): string {
  if (name.length === 0 || name.length > 63 || name.includes('\0')) throw new Error(`not an identifier: ${JSON.stringify(name)}`);
  return `"${name.replace(/"/g, '""')}"`;
}

/** A string literal for DDL bodies (comments, trigger function text): standard-conforming, quotes doubled. */
export function literal(text: string): string {
  if (text.includes('\0')) throw new Error('literal contains NUL');
  return `'${text.replace(/'/g, "''")}'`;
}

/** The model's table, schema-qualified when the model names one (@@schema). */
export function table(m: ModelBinding): string {
  return m.schema ? `${ident(m.schema)}.${ident(m.table)}` : ident(m.table);
}

/** `alias."column"`. */
export function col(alias: string, f: FieldBinding | string): string {
  return `${alias}.${ident(typeof f === 'string' ? f : f.column)}`;
}

export function model(b: Binding, name: string): ModelBinding {
  const m = b.models.get(name);
  if (!m) throw new Error(`model ${name} is not in the binding`);
  return m;
}

export function field(m: ModelBinding, name: string): FieldBinding {
  const f = m.fields.get(name);
  if (!f) throw new Error(`field ${m.name}.${name} is not in the binding`);
  return f;
}

/**
 * A column's text form, as the triggers and the loaders read it. Timestamps
 * are read as epoch milliseconds (exact numeric) so the session's TimeZone
 * cannot change them, and a `timestamp without time zone` means UTC, as in
 * Prisma; everything else prints as PostgreSQL prints it.
 */
export function textOf(expr: string, f: FieldBinding): string {
  if (f.list) return `array_to_json(${expr}::text[])::text`;
  if (f.type === 'DateTime') return `(extract(epoch FROM ${expr}) * 1000)::text`;
  return `${expr}::text`;
}
