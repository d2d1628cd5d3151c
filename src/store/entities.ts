import type { Queryable } from '../backend/queryable.js';
import type { Binding, EntityBinding, IncludeNode, Lookup } from '../schema/binding.js';
import { decodeField } from './decode.js';
import { col, ident, model, table, textOf } from './sql.js';

/*
 * Entity loads: one statement per lookup, built once from the binding, that
 * returns the whole include tree as nested JSON arrays of column texts. One
 * round trip and one snapshot for the tree, and the same values on
 * PostgreSQL and PGlite (decode.ts turns the texts into Prisma's types).
 * To-many relations come ordered by the child's id.
 */

function nodeExpr(b: Binding, node: IncludeNode, alias: string, depth: number): string {
  const m = model(b, node.model);
  const scalars = node.fields.map((f) => textOf(col(alias, f), f));
  const parts = [`ARRAY[${scalars.join(', ')}]::text[]`];
  for (const [i, child] of node.children.entries()) {
    const r = child.relation!;
    const c = model(b, child.model);
    const a = `r${depth + 1}_${i}`;
    const join = r.childFields
      .map((cf, k) => `${col(a, c.fields.get(cf)!)} = ${col(alias, m.fields.get(r.parentFields[k]!)!)}`)
      .join(' AND ');
    const inner = nodeExpr(b, child, a, depth + 1);
    if (r.list) {
      const order = c.id.map((f) => col(a, c.fields.get(f)!)).join(', ');
      parts.push(`COALESCE((SELECT json_agg(${inner} ORDER BY ${order}) FROM ${table(c)} ${a} WHERE ${join}), '[]'::json)`);
    } else {
      parts.push(`(SELECT ${inner} FROM ${table(c)} ${a} WHERE ${join} LIMIT 1)`);
    }
  }
  return `json_build_array(${parts.join(', ')})`;
}

type Raw = [Array<string | null>, ...unknown[]];

function decodeNode(node: IncludeNode, raw: Raw): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const [scalars, ...children] = raw;
  node.fields.forEach((f, i) => (out[f.name] = decodeField(f, scalars[i] ?? null)));
  node.children.forEach((child, i) => {
    const v = children[i];
    if (child.relation!.list) out[child.relation!.field] = (v as Raw[]).map((x) => decodeNode(child, x));
    else out[child.relation!.field] = v === null || v === undefined ? null : decodeNode(child, v as Raw);
  });
  return out;
}

/** The statements of one entity, one per lookup. */
export class EntityLoader {
  private readonly statements: string[];

  constructor(
    private readonly binding: Binding,
    readonly entity: EntityBinding,
  ) {
    const root = model(binding, entity.model);
    this.statements = entity.lookups.map((l: Lookup) => {
      const where = l.fields.map((f, i) => `r0.${ident(root.fields.get(f)!.column)} = $${i + 1}`).join(' AND ');
      return `SELECT ${nodeExpr(binding, entity.root, 'r0', 0)} AS v FROM ${table(root)} r0 WHERE ${where}`;
    });
  }

  /** The SQL of lookup `index` (for tests and EXPLAIN). */
  sql(index: number): string {
    return this.statements[index]!;
  }

  /** The entity found by lookup `index` with these values (texts or numbers), or null. */
  async load(db: Queryable, index: number, values: readonly unknown[]): Promise<Record<string, unknown> | null> {
    const r = await db.query<{ v: Raw }>(this.statements[index]!, values.map((v) => (typeof v === 'bigint' ? v.toString() : v)));
    const row = r.rows[0];
    return row ? decodeNode(this.entity.root, row.v) : null;
  }
}
