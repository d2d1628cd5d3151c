import type { Queryable } from '../backend/queryable.js';
import type { Binding, CollectionBinding } from '../schema/binding.js';
import type { ResolvedCollection } from '../schema/catalog.js';
import { ident, literal, model, table } from './sql.js';

/*
 * A collection's pgvector index: what adopt builds and the index guard keeps.
 * Any valid cosine index (hnsw or ivfflat) on the column counts, whatever its
 * name: a bot that built its own keeps it.
 */

export type VectorIndexState = 'valid' | 'invalid' | 'missing' | 'building' | 'no-table';

/** CREATE INDEX for the declared index; untyped columns get an expression index on vector(N) for rows of that dimension. */
export function createIndexSql(binding: Binding, c: CollectionBinding, resolved: ResolvedCollection, concurrently: boolean): string {
  const m = model(binding, c.model);
  const column = ident(c.embedding.column);
  const key = resolved.untyped ? `((${column}::vector(${resolved.dimension})) vector_cosine_ops)` : `(${column} vector_cosine_ops)`;
  const i = c.index;
  const withs =
    i.method === 'ivfflat'
      ? ` WITH (lists = ${i.lists ?? 100})`
      : i.m !== undefined || i.efConstruction !== undefined
        ? ` WITH (${[i.m !== undefined ? `m = ${i.m}` : '', i.efConstruction !== undefined ? `ef_construction = ${i.efConstruction}` : ''].filter(Boolean).join(', ')})`
        : '';
  const where = resolved.untyped ? ` WHERE vector_dims(${column}) = ${resolved.dimension}` : '';
  return `CREATE INDEX ${concurrently ? 'CONCURRENTLY ' : ''}IF NOT EXISTS ${ident(i.name)} ON ${table(m)} USING ${i.method} ${key}${withs}${where}`;
}

/** The state of the collection's cosine index: any valid one on the column, else the declared one's. */
export async function inspectIndex(db: Pick<Queryable, 'query'>, binding: Binding, c: CollectionBinding): Promise<{ state: VectorIndexState; name: string }> {
  const m = model(binding, c.model);
  const rel = m.schema ? `${ident(m.schema)}.${ident(m.table)}` : ident(m.table);
  // The definitions are read in the target list, after the filter on the table: reading them for
  // every index of the database would wait on locks of unrelated tables.
  const r = await db.query<{ table: string | null; name: string | null; valid: boolean | null; def: string | null; building: boolean }>(
    `WITH t AS (SELECT to_regclass($1) AS oid)
     SELECT (SELECT oid FROM t)::text AS table, x.relname AS name, i.indisvalid AS valid, pg_get_indexdef(i.indexrelid) AS def,
            EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.datname = current_database() AND p.relid = (SELECT oid FROM t)) AS building
       FROM t LEFT JOIN pg_index i ON i.indrelid = t.oid LEFT JOIN pg_class x ON x.oid = i.indexrelid`,
    [rel],
  );
  // The column as pg_get_indexdef prints it: bare, or quoted when it must be.
  const names = [c.embedding.column, ident(c.embedding.column)].map((n) => n.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  const column = new RegExp(`[( ](${names.join('|')})[ :)]`);
  const cosine = r.rows.filter((x) => x.def !== null && /vector_cosine_ops/.test(x.def) && column.test(x.def));
  const head = r.rows[0];
  const found = cosine.find((x) => x.valid) ?? cosine.find((x) => x.name === c.index.name) ?? cosine[0];
  const name = found?.name ?? c.index.name;
  if (!head || head.table === null) return { state: 'no-table', name };
  if (found?.valid) return { state: 'valid', name };
  if (head.building) return { state: 'building', name };
  return { state: found ? 'invalid' : 'missing', name };
}

export function dropIndexSql(binding: Binding, c: CollectionBinding, name: string): string {
  const m = model(binding, c.model);
  return `DROP INDEX CONCURRENTLY IF EXISTS ${m.schema ? `${ident(m.schema)}.` : ''}${ident(name)}`;
}
