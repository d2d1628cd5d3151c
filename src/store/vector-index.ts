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
  const rel = literal(m.schema ? `${ident(m.schema)}.${ident(m.table)}` : ident(m.table));
  const r = await db.query<{ table: string | null; found: string | null; valid: boolean | null; building: boolean }>(
    `WITH t AS (SELECT to_regclass(${rel}) AS oid),
          cosine AS (
            SELECT x.relname AS name, i.indisvalid AS valid
              FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid JOIN t ON i.indrelid = t.oid
             WHERE pg_get_indexdef(i.indexrelid) ~ 'vector_cosine_ops'
               AND pg_get_indexdef(i.indexrelid) ~ ('[( ]' || quote_ident($1) || '[ :)]'))
     SELECT (SELECT oid FROM t)::text AS table,
            COALESCE((SELECT name FROM cosine WHERE valid LIMIT 1), (SELECT name FROM cosine WHERE name = $2), (SELECT name FROM cosine LIMIT 1)) AS found,
            COALESCE((SELECT bool_or(valid) FROM cosine), (SELECT valid FROM cosine WHERE name = $2)) AS valid,
            EXISTS (SELECT 1 FROM pg_stat_progress_create_index p, t WHERE p.datname = current_database() AND p.relid = t.oid) AS building`,
    [c.embedding.column, c.index.name],
  );
  const row = r.rows[0]!;
  const name = row.found ?? c.index.name;
  if (row.table === null) return { state: 'no-table', name };
  if (row.valid === true) return { state: 'valid', name };
  if (row.building) return { state: 'building', name };
  return { state: row.valid === false ? 'invalid' : 'missing', name };
}

export function dropIndexSql(binding: Binding, c: CollectionBinding, name: string): string {
  const m = model(binding, c.model);
  return `DROP INDEX CONCURRENTLY IF EXISTS ${m.schema ? `${ident(m.schema)}.` : ''}${ident(name)}`;
}
