import type pg from 'pg';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { to as copyTo } from 'pg-copy-streams';
import { toDatabase, type Database, type Queryable } from '../backend/queryable.js';
import { NORM_SQRT_MAX, NORM_SQRT_MIN } from '../embedding.js';
import type { Binding, CollectionBinding, FieldBinding, WhereCondition } from '../schema/binding.js';
import type { ResolvedCollection } from '../schema/catalog.js';
import { decodeField } from './decode.js';
import { col, ident, literal, model, table, textOf } from './sql.js';

/*
 * A collection's SQL, built once from the binding: the pgvector search (the
 * miss path), the hot-set loads (COPY), the re-reads of changed rows, and
 * writes. Every statement applies the declaration's fixed `where`, leaves
 * out NULL embeddings, and (on the search) vectors whose similarity is
 * undefined (src/embedding.ts).
 */

/** A search filter on one declared filter field (validated by src/validation/collection.ts). */
export type FilterCondition =
  | { eq: string | number | boolean | null }
  | { in: readonly (string | number)[] }
  | { notIn: readonly (string | number)[] }
  | { lt?: string | number; lte?: string | number; gt?: string | number; gte?: string | number };

export interface CollectionQuery {
  /** Partition values in partitionBy order (texts or numbers). */
  partition: readonly unknown[];
  where: readonly { field: string; condition: FilterCondition }[];
  embedding: Float32Array;
  limit: number;
  minSimilarity?: number | undefined;
}

export interface CollectionHit {
  id: string;
  similarity: number;
  /** Select fields, decoded, in select order. */
  values: unknown[];
}

/** One row as a hot set needs it. */
export interface CollectionRow {
  id: string;
  /** Partition values' texts, in partitionBy order. */
  partition: (string | null)[];
  /** Filter values' texts (decoded by the caller), in filters order. */
  filters: (string | null)[];
  /** Select fields, decoded. */
  values: unknown[];
  /** Raw float32 values; length is the stored dimension (may differ from the collection's: the caller reports it). */
  embedding: Float32Array;
}

/** Rows the index order hands over beyond the limit, so rows tied at the k-th distance are ordered by id too. */
const TIE_MARGIN = 16;
const COPY_SIGNATURE = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');
const ROWS_PER_YIELD = 256;
/**
 * Rows per COPY on PGlite: a PGlite query runs to completion on the event
 * loop and its result is materialized; 1,000 rows of 1536 dimensions is ~6 MB, ~50 ms.
 */
export const PGLITE_COPY_PAGE_ROWS = 1_000;

/** pgvector's text form; float32 values print exactly as pgvector parses them back. */
export function vectorLiteral(v: Float32Array): string {
  let s = '[';
  for (let i = 0; i < v.length; i++) s += (i ? ',' : '') + v[i]!;
  return `${s}]`;
}

function conditionSql(expr: string, c: WhereCondition): string {
  const lit = (v: string | number | boolean) => (typeof v === 'string' ? literal(v) : String(v));
  switch (c.op) {
    case 'eq':
      return `${expr} = ${lit(c.value)}`;
    case 'ne':
      return `${expr} IS DISTINCT FROM ${lit(c.value)}`;
    case 'null':
      return `${expr} IS NULL`;
    case 'notNull':
      return `${expr} IS NOT NULL`;
    case 'in':
      return `${expr} IN (${c.values.map(lit).join(', ')})`;
  }
}

interface Built {
  text: string;
  values: unknown[];
}

export class CollectionStore {
  readonly dimension: number;
  private readonly tableSql: string;
  private readonly vector: string;
  private readonly rawVector: string;
  private readonly fixed: string;
  private readonly rowColumns: string;
  private readonly fetchSql: string;
  private readonly countSql: string;
  private readonly idOrder: string;
  private readonly idCast: string;

  constructor(
    binding: Binding,
    readonly collection: CollectionBinding,
    resolved: ResolvedCollection,
  ) {
    const m = model(binding, collection.model);
    this.dimension = resolved.dimension;
    this.tableSql = table(m);
    this.rawVector = col('t', collection.embedding.column);
    // An untyped `vector` column is compared as vector(N), rows of other dimensions left out.
    this.vector = resolved.untyped ? `(${this.rawVector}::vector(${resolved.dimension}))` : this.rawVector;
    const fixed = collection.where.map((w) => conditionSql(col('t', w.field), w.condition));
    fixed.push(`${this.rawVector} IS NOT NULL`);
    this.fixed = fixed.join(' AND ');
    const key = collection.key;
    this.idCast = key.type === 'Int' || key.type === 'BigInt' ? '' : ' COLLATE "C"';
    this.idOrder = `${col('t', key)}${key.type === 'Int' || key.type === 'BigInt' ? '' : '::text COLLATE "C"'}`;
    // Named by position: several expressions would all be called "text".
    this.rowColumns = [
      `${col('t', key)}::text`,
      ...collection.partition.map((f) => textOf(col('t', f), f)),
      ...collection.filters.map((f) => textOf(col('t', f), f)),
      ...collection.select.map((f) => textOf(col('t', f), f)),
      `vector_send(${this.rawVector})`,
    ]
      .map((expr, i) => `${expr} AS c${i}`)
      .join(', ');
    this.fetchSql = `SELECT ${this.rowColumns} FROM ${this.tableSql} t WHERE ${col('t', key)} = ANY($1) AND ${this.fixed}`;
    const part = collection.partition.map((f, i) => `${col('t', f)} = $${i + 1}`).join(' AND ');
    this.countSql = `SELECT count(*)::int AS n FROM (SELECT 1 FROM ${this.tableSql} t WHERE ${part} AND ${this.fixed} LIMIT $${collection.partition.length + 1}) s`;
  }

  /**
   * The pgvector statement for a search (exposed for tests and EXPLAIN).
   * Ordered as the hot path orders: distance, then id (code-point order for
   * text ids). The inner query takes the index's order with a margin, so
   * rows tied at the k-th distance are still ordered by id; `exact` scores
   * every row the predicate passes (no vector index).
   */
  searchStatement(q: CollectionQuery, exact = false): Built {
    const values: unknown[] = [vectorLiteral(q.embedding)];
    const param = (v: unknown) => {
      values.push(v);
      return `$${values.length}`;
    };
    const where: string[] = [];
    this.collection.partition.forEach((f, i) => where.push(`${col('t', f)} = ${param(paramValue(f, q.partition[i]))}`));
    where.push(this.fixed);
    if (this.vector !== this.rawVector) where.push(`vector_dims(${this.rawVector}) = ${this.dimension}`);
    // Similarity is undefined (pgvector's float norm underflows or overflows) outside this range: src/embedding.ts.
    where.push(`vector_norm(${this.rawVector}) BETWEEN ${NORM_SQRT_MIN} AND ${NORM_SQRT_MAX}`);
    for (const w of q.where) {
      const f = this.collection.filters.find((x) => x.name === w.field)!;
      where.push(filterSql(col('t', f), f, w.condition, (v) => param(paramValue(f, v))));
    }
    // As the hot path decides it: similarity (1 - distance) at least the threshold.
    if (q.minSimilarity !== undefined) where.push(`1 - (${this.vector} <=> $1::vector) >= ${param(q.minSimilarity)}`);
    const select = this.collection.select.map((f, i) => `${textOf(col('t', f), f)} AS s${i}`);
    const columns = `${col('t', this.collection.key)}::text AS id, ${this.idOrder} AS ord, ${this.vector} <=> $1::vector AS distance${select.length ? `, ${select.join(', ')}` : ''}`;
    const limit = param(q.limit);
    const text = exact
      ? // `+ 0`: an expression no vector index matches, so no index scan can stop short; a btree still serves the partition.
        `SELECT ${columns} FROM ${this.tableSql} t WHERE ${where.join(' AND ')} ORDER BY (${this.vector} <=> $1::vector) + 0, ord LIMIT ${limit}`
      : `WITH hits AS MATERIALIZED (
       SELECT ${columns}
       FROM ${this.tableSql} t WHERE ${where.join(' AND ')}
       ORDER BY ${this.vector} <=> $1::vector LIMIT ${limit}::int + ${TIE_MARGIN})
     SELECT * FROM hits ORDER BY distance, ord LIMIT ${limit}`;
    return { text, values };
  }

  /** pgvector's answer, ordered by similarity then id; `exact`: without an index (see searchStatement). */
  async search(db: Queryable, q: CollectionQuery, exact = false): Promise<CollectionHit[]> {
    const { text, values } = this.searchStatement(q, exact);
    const r = await db.query<Record<string, string | null> & { id: string; distance: number }>(text, values);
    return r.rows.map((row) => ({
      id: row.id,
      similarity: 1 - Number(row.distance), // pgvector's distance is already clamped to [0, 2]
      values: this.collection.select.map((f, i) => decodeField(f, row[`s${i}`] ?? null)),
    }));
  }

  /** Rows a load would transfer, capped at `limit`. */
  async count(db: Queryable, partition: readonly unknown[], limit: number): Promise<number> {
    const r = await db.query<{ n: number }>(this.countSql, [...this.collection.partition.map((f, i) => paramValue(f, partition[i])), limit]);
    return r.rows[0]!.n;
  }

  /** Current state of these rows (absent: deleted, filtered out by `where`, or no embedding). */
  async fetch(db: Queryable, ids: readonly string[]): Promise<CollectionRow[]> {
    if (ids.length === 0) return [];
    const r = await db.query<Record<string, string | Buffer | null>>(this.fetchSql, [ids]);
    const n = 2 + this.collection.partition.length + this.collection.filters.length + this.collection.select.length;
    return r.rows.map((row) => this.decodeRow(Array.from({ length: n }, (_, i) => row[`c${i}`] ?? null)));
  }

  private decodeRow(cells: readonly (string | Buffer | null)[]): CollectionRow {
    const c = this.collection;
    let i = 0;
    const id = cells[i++] as string;
    const partition = c.partition.map(() => cells[i++] as string | null);
    const filters = c.filters.map(() => cells[i++] as string | null);
    const values = c.select.map((f) => decodeField(f, cells[i++] as string | null));
    const embedding = readVector(cells[i] as Buffer, 0);
    return { id, partition, filters, values, embedding };
  }

  private copySelect(partition: readonly unknown[], limit: number, after?: string): string {
    const where = [
      ...this.collection.partition.map((f, i) => `${col('t', f)} = ${literal(String(paramValue(f, partition[i])))}`),
      this.fixed,
    ];
    if (after !== undefined) where.push(`${this.idOrder} > ${literal(after)}${this.idCast}`);
    return `SELECT ${this.rowColumns} FROM ${this.tableSql} t WHERE ${where.join(' AND ')} ORDER BY ${this.idOrder} LIMIT ${Math.floor(limit)}`;
  }

  /**
   * Streams a partition's rows (at most `limit`) in COPY's binary form: every
   * column as text except the vector, 4 bytes a dimension, no text parsing.
   * On PostgreSQL one COPY TO STDOUT over a pooled connection; on PGlite
   * keyset pages to /dev/blob. `onRow` gets a row whose embedding buffer may
   * be reused; return false to stop.
   */
  async stream(db: pg.Pool | Database, partition: readonly unknown[], limit: number, onRow: (row: CollectionRow) => boolean, signal?: AbortSignal): Promise<number> {
    const d = toDatabase(db);
    return d.backend === 'postgres' ? this.streamOverCopy(d.pool, partition, limit, onRow, signal) : this.streamOverBlob(d, partition, limit, onRow, signal);
  }

  private async streamOverCopy(pool: pg.Pool, partition: readonly unknown[], limit: number, onRow: (row: CollectionRow) => boolean, signal?: AbortSignal): Promise<number> {
    const client = await pool.connect();
    // pg-pool stops listening for errors while a client is checked out: a socket dropped mid-COPY would crash the process.
    let lost: Error | undefined;
    const onError = (err: Error) => (lost = err);
    client.on('error', onError);
    let broken = false;
    let stream: ReturnType<typeof copyTo> | undefined;
    try {
      stream = client.query(copyTo(`COPY (${this.copySelect(partition, limit)}) TO STDOUT (FORMAT binary)`));
      let pending: Buffer | undefined;
      let header = false;
      let rows = 0;
      let yieldedAt = 0;
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        if (signal?.aborted) {
          broken = true;
          stream.destroy();
          return rows;
        }
        const b: Buffer = pending ? Buffer.concat([pending, chunk]) : chunk;
        let at = 0;
        if (!header) {
          const start = copyHeaderEnd(b);
          if (start === null) {
            pending = b;
            continue;
          }
          at = start;
          header = true;
        }
        for (let t = parseTuple(b, at); t && t !== TRAILER; t = parseTuple(b, at)) {
          at = t[1];
          rows++;
          if (!onRow(this.decodeRow(t[0]))) {
            broken = true;
            stream.destroy();
            return rows;
          }
        }
        pending = at < b.length ? b.subarray(at) : undefined;
        if (rows - yieldedAt >= ROWS_PER_YIELD) {
          yieldedAt = rows;
          await yieldToLoop();
        }
      }
      if (lost) throw lost;
      return rows;
    } catch (err) {
      broken = true;
      throw lost ?? err;
    } finally {
      // pg arms the pool's query_timeout for the COPY and clears it only in the query's callback,
      // which pg-copy-streams never calls: without this the timer keeps the process alive.
      (stream as { callback?: () => void } | undefined)?.callback?.();
      client.off('error', onError);
      // A COPY cut short (or failed) leaves the connection mid-protocol: discard it.
      client.release(broken);
    }
  }

  private async streamOverBlob(db: Database & { backend: 'pglite' }, partition: readonly unknown[], limit: number, onRow: (row: CollectionRow) => boolean, signal?: AbortSignal): Promise<number> {
    let rows = 0;
    let after: string | undefined;
    while (rows < limit) {
      if (signal?.aborted) return rows;
      const want = Math.min(PGLITE_COPY_PAGE_ROWS, Math.floor(limit) - rows);
      const b = await db.copyToBlob(this.copySelect(partition, want, after));
      let at = copyHeaderEnd(b);
      if (at === null) throw new Error('COPY TO /dev/blob returned a truncated header');
      let got = 0;
      for (;;) {
        const t = parseTuple(b, at);
        if (t === TRAILER) break;
        if (t === null) throw new Error('COPY TO /dev/blob returned a truncated tuple');
        at = t[1];
        rows++;
        got++;
        const row = this.decodeRow(t[0]);
        after = row.id;
        if (!onRow(row)) return rows;
        if (signal?.aborted) return rows;
      }
      if (got < want) break;
      await yieldToLoop();
    }
    return rows;
  }

  /** Idempotent by id: a retry after a lost reply cannot insert twice. `data` is keyed by Prisma field name. */
  insertStatement(binding: Binding, data: Record<string, unknown>, embedding: Float32Array): Built {
    const m = model(binding, this.collection.model);
    const cols: string[] = [];
    const vals: string[] = [];
    const values: unknown[] = [];
    for (const [name, v] of Object.entries(data)) {
      if (v === undefined) continue;
      const f = m.fields.get(name)!;
      values.push(paramValue(f, v));
      cols.push(ident(f.column));
      vals.push(f.type === 'Json' ? `$${values.length}::jsonb` : `$${values.length}`);
    }
    values.push(vectorLiteral(embedding));
    cols.push(ident(this.collection.embedding.column));
    vals.push(`$${values.length}::vector`);
    return {
      text: `INSERT INTO ${this.tableSql} (${cols.join(', ')}) VALUES (${vals.join(', ')}) ON CONFLICT (${ident(this.collection.key.column)}) DO NOTHING`,
      values,
    };
  }

  /** Deletes by id; returns the row's partition texts, or null when there was none. */
  async delete(db: Queryable, id: string): Promise<(string | null)[] | null> {
    const parts = this.collection.partition.map((f, i) => `${textOf(ident(f.column), f)} AS p${i}`).join(', ');
    const r = await db.query<Record<string, string | null>>(`DELETE FROM ${this.tableSql} WHERE ${ident(this.collection.key.column)} = $1 RETURNING ${parts}`, [id]);
    const row = r.rows[0];
    return row ? this.collection.partition.map((_, i) => row[`p${i}`] ?? null) : null;
  }
}

/** A value as a query parameter for the field's column. */
export function paramValue(f: FieldBinding, v: unknown): unknown {
  if (v === null || v === undefined) return null;
  if (f.type === 'Json') return JSON.stringify(v);
  if (f.type === 'DateTime') return typeof v === 'number' ? new Date(v).toISOString() : v instanceof Date ? v.toISOString() : v;
  if (typeof v === 'bigint') return v.toString();
  return v;
}

/** A search filter's SQL. Text ranges compare in code-point order (COLLATE "C"), as the hot path does. */
function filterSql(expr: string, f: FieldBinding, c: FilterCondition, param: (v: unknown) => string): string {
  const text = f.type === 'String' || f.type === 'Enum';
  const ranged = text ? `${expr}::text COLLATE "C"` : expr;
  if ('eq' in c) return c.eq === null ? `${expr} IS NULL` : `${expr} = ${param(c.eq)}`;
  if ('in' in c) return `${expr} = ANY(${param(c.in)})`;
  if ('notIn' in c) return `NOT (${expr} = ANY(${param(c.notIn)}))`;
  const out: string[] = [];
  const cast = text ? '::text COLLATE "C"' : '';
  if (c.lt !== undefined) out.push(`${ranged} < ${param(c.lt)}${cast}`);
  if (c.lte !== undefined) out.push(`${ranged} <= ${param(c.lte)}${cast}`);
  if (c.gt !== undefined) out.push(`${ranged} > ${param(c.gt)}${cast}`);
  if (c.gte !== undefined) out.push(`${ranged} >= ${param(c.gte)}${cast}`);
  return out.length ? out.join(' AND ') : 'true';
}

/** Offset of the first tuple, or null when the header is not complete yet. */
function copyHeaderEnd(b: Buffer): number | null {
  if (b.length < 19) return null;
  if (!b.subarray(0, 11).equals(COPY_SIGNATURE)) throw new Error('not a COPY BINARY stream');
  return 19 + b.readInt32BE(15);
}

const TRAILER = 'trailer' as const;

/** One COPY BINARY tuple at `at`: its fields (text, or the vector's bytes last) and the next offset; TRAILER; or null when incomplete. */
function parseTuple(b: Buffer, at: number): [(string | Buffer | null)[], number] | typeof TRAILER | null {
  const end = b.length;
  if (at + 2 > end) return null;
  const fields = b.readInt16BE(at);
  if (fields === -1) return TRAILER;
  let p = at + 2;
  const out: (string | Buffer | null)[] = [];
  for (let i = 0; i < fields; i++) {
    if (p + 4 > end) return null;
    const len = b.readInt32BE(p);
    p += 4;
    if (len < 0) {
      out.push(null);
      continue;
    }
    if (p + len > end) return null;
    out.push(i === fields - 1 ? b.subarray(p, p + len) : b.toString('utf8', p, p + len));
    p += len;
  }
  return [out, p];
}

/** pgvector's binary form (int16 dim, int16 unused, float4 big-endian…) as a new Float32Array. */
export function readVector(b: Buffer, at: number): Float32Array {
  const dim = b.readInt16BE(at);
  const out = new Float32Array(dim);
  const bytes = new Uint8Array(out.buffer, 0, dim * 4);
  bytes.set(b.subarray(at + 4, at + 4 + dim * 4));
  Buffer.from(out.buffer, 0, dim * 4).swap32();
  return out;
}
