import type { Queryable } from '../backend/queryable.js';
import { NotMigratedError } from '../contract/errors.js';
import type { ScalarType } from '../contract/shape.js';
import { MAX_INDEXED_DIMENSION, type Binding, type ColumnFacts, type FieldBinding, type IncludeNode, type ModelBinding } from './binding.js';

/*
 * The database's side of the binding: every declared table and column must
 * exist with a type that means what the Prisma schema says, and what only
 * the database knows (a vector's dimension, citext, char(n)) is read here,
 * once, at start.
 */

export interface ColumnInfo {
  name: string;
  /** format_type(): "uuid", "character varying(255)", "timestamp(3) without time zone", "vector(384)". */
  type: string;
  /** The base type's name ("varchar", "citext", "vector", "_text" for text[]), or the element's for arrays. */
  base: string;
  array: boolean;
  /** 'e' for enums. */
  kind: string;
  notNull: boolean;
  hasDefault: boolean;
  /** vector(N): N; untyped vector: null. */
  dimension: number | null;
}

export interface ForeignKey {
  name: string;
  columns: string[];
  refSchema: string;
  refTable: string;
  refColumns: string[];
  /** 'a' no action, 'r' restrict, 'c' cascade, 'n' set null, 'd' set default. */
  onDelete: string;
}

export interface TableInfo {
  schema: string;
  name: string;
  columns: Map<string, ColumnInfo>;
  primaryKey: string[];
  foreignKeys: ForeignKey[];
}

export interface Catalog {
  /** The connection's current schema, for models without @@schema. */
  currentSchema: string;
  /** Keyed "schema.table". */
  tables: Map<string, TableInfo>;
  /** pgvector's version, or null when the extension is not installed. */
  vector: string | null;
  serverVersion: number;
}

const TABLES_SQL = `
  SELECT n.nspname AS schema, c.relname AS table, a.attname AS column, format_type(a.atttypid, a.atttypmod) AS type,
         COALESCE(et.typname, t.typname) AS base, t.typcategory = 'A' AS array, COALESCE(et.typtype, t.typtype)::text AS kind,
         a.attnotnull AS "notNull", a.atthasdef AS "hasDefault", a.atttypmod AS typmod
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    JOIN pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
   WHERE c.relkind IN ('r', 'p') AND (n.nspname = ANY($1::text[]))
   ORDER BY n.nspname, c.relname, a.attnum`;

const KEYS_SQL = `
  SELECT n.nspname AS schema, c.relname AS table, x.contype::text AS kind, x.conname AS name, x.confdeltype::text AS "onDelete",
         ARRAY(SELECT a.attname::text FROM unnest(x.conkey) WITH ORDINALITY k(n, o) JOIN pg_attribute a ON a.attrelid = x.conrelid AND a.attnum = k.n ORDER BY k.o) AS columns,
         rn.nspname AS "refSchema", r.relname AS "refTable",
         ARRAY(SELECT a.attname::text FROM unnest(x.confkey) WITH ORDINALITY k(n, o) JOIN pg_attribute a ON a.attrelid = x.confrelid AND a.attnum = k.n ORDER BY k.o) AS "refColumns"
    FROM pg_constraint x
    JOIN pg_class c ON c.oid = x.conrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_class r ON r.oid = x.confrelid
    LEFT JOIN pg_namespace rn ON rn.oid = r.relnamespace
   WHERE x.contype IN ('p', 'f') AND n.nspname = ANY($1::text[])`;

/** Reads the tables of the binding's schemas (the current one, and any @@schema). */
export async function readCatalog(db: Queryable, binding: Binding): Promise<Catalog> {
  const head = (
    await db.query<{ schema: string; vector: string | null; version: number }>(
      `SELECT current_schema() AS schema, (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS vector,
              current_setting('server_version_num')::int AS version`,
    )
  ).rows[0]!;
  const schemas = [...new Set([head.schema, ...[...binding.models.values()].map((m) => m.schema).filter((s): s is string => s !== null)])];
  const tables = new Map<string, TableInfo>();
  const cols = await db.query<Omit<ColumnInfo, 'name' | 'dimension'> & { schema: string; table: string; column: string; typmod: number }>(TABLES_SQL, [schemas]);
  for (const r of cols.rows) {
    const key = `${r.schema}.${r.table}`;
    let t = tables.get(key);
    if (!t) tables.set(key, (t = { schema: r.schema, name: r.table, columns: new Map(), primaryKey: [], foreignKeys: [] }));
    t.columns.set(r.column, {
      name: r.column,
      type: r.type,
      base: r.base,
      array: r.array,
      kind: r.kind,
      notNull: r.notNull,
      hasDefault: r.hasDefault,
      dimension: r.base === 'vector' && r.typmod > 0 ? r.typmod : null,
    });
  }
  const keys = await db.query<ForeignKey & { schema: string; table: string; kind: string }>(KEYS_SQL, [schemas]);
  for (const r of keys.rows) {
    const t = tables.get(`${r.schema}.${r.table}`);
    if (!t) continue;
    if (r.kind === 'p') t.primaryKey = r.columns;
    else t.foreignKeys.push({ name: r.name, columns: r.columns, refSchema: r.refSchema, refTable: r.refTable, refColumns: r.refColumns, onDelete: r.onDelete });
  }
  return { currentSchema: head.schema, tables, vector: head.vector, serverVersion: head.version };
}

/** Column types each Prisma scalar may live in (`@db.*` native types included). */
const COMPATIBLE: Record<ScalarType, ReadonlySet<string>> = {
  String: new Set(['text', 'varchar', 'bpchar', 'citext', 'uuid', 'name', 'xml', 'inet', 'bit', 'varbit']),
  Int: new Set(['int4', 'int2', 'oid']),
  BigInt: new Set(['int8']),
  Float: new Set(['float8', 'float4']),
  Decimal: new Set(['numeric', 'money']),
  Boolean: new Set(['bool']),
  DateTime: new Set(['timestamp', 'timestamptz', 'date', 'time', 'timetz']),
  Json: new Set(['jsonb', 'json']),
  Bytes: new Set(['bytea']),
  Enum: new Set(),
};

export interface ResolvedCollection {
  /** From the column's type or the declaration. */
  dimension: number;
  /** True when the column is an untyped `vector`: SQL casts it to vector(dimension). */
  untyped: boolean;
  /** Whether it has a pgvector index (adopt builds it, the guard keeps it): none when declared false, or above 2,000 dimensions by default. */
  indexed: boolean;
}

export interface Resolved {
  catalog: Catalog;
  /** "schema.table" of each model. */
  tableOf: (model: ModelBinding) => TableInfo;
  collections: Map<string, ResolvedCollection>;
  /** Per model field: key canonicalization (citext lower-cased, char(n) without trailing blanks) and uuid columns. */
  facts: ColumnFacts;
  /** Relations the declaration follows that have no foreign key in the database (a warning: Prisma's relationMode = "prisma"). */
  unconstrained: string[];
}

/**
 * Checks the binding against the catalog. Every problem is listed, one line
 * each (a NotMigratedError: the tables are not what the schema says, or
 * pgvector is missing); nothing is changed.
 */
export function resolveAgainst(binding: Binding, catalog: Catalog): Resolved {
  const problems: string[] = [];
  const tableOf = (m: ModelBinding): TableInfo => {
    const t = catalog.tables.get(`${m.schema ?? catalog.currentSchema}.${m.table}`);
    if (!t) throw new Error(`table of ${m.name} vanished`);
    return t;
  };
  const factMap = new Map<string, { canon?: 'lower' | 'trimEnd'; uuid?: boolean }>();
  const unconstrained: string[] = [];
  for (const m of binding.models.values()) {
    const t = catalog.tables.get(`${m.schema ?? catalog.currentSchema}.${m.table}`);
    if (!t) {
      problems.push(`table ${m.schema ? `${m.schema}.` : ''}${m.table} (model ${m.name}) does not exist`);
      continue;
    }
    for (const f of m.scalars) {
      const c = t.columns.get(f.column);
      if (!c) {
        problems.push(`column ${m.table}.${f.column} (${m.name}.${f.name}) does not exist`);
        continue;
      }
      const problem = typeProblem(f, c);
      if (problem) problems.push(`column ${m.table}.${f.column} (${m.name}.${f.name}) is ${c.type}: ${problem}`);
      if (c.base === 'citext') factMap.set(`${m.name}.${f.name}`, { canon: 'lower' });
      else if (c.base === 'bpchar') factMap.set(`${m.name}.${f.name}`, { canon: 'trimEnd' });
      else if (c.base === 'uuid') factMap.set(`${m.name}.${f.name}`, { uuid: true });
    }
    if (t.primaryKey.length && m.id.length) {
      const want = m.id.map((f) => m.fields.get(f)!.column);
      if (want.join(',') !== t.primaryKey.join(',') && !(want.length === t.primaryKey.length && want.every((c) => t.primaryKey.includes(c)))) {
        problems.push(`table ${m.table} has primary key (${t.primaryKey.join(', ')}), the schema says (${want.join(', ')})`);
      }
    }
  }
  for (const m of binding.models.values()) {
    for (const r of m.relations.values()) {
      if (!binding.models.has(r.child) || !r.parentFields.length) continue;
      if (![...binding.entities.values()].some((e) => usesRelation(e.root, m.name, r.field))) continue;
      const fkOwner = binding.models.get(r.keyOn === 'child' ? r.child : r.parent)!;
      const t = catalog.tables.get(`${fkOwner.schema ?? catalog.currentSchema}.${fkOwner.table}`);
      if (!t) continue;
      const cols = (r.keyOn === 'child' ? r.childFields : r.parentFields).map((f) => fkOwner.fields.get(f)?.column ?? f);
      if (!t.foreignKeys.some((fk) => fk.columns.length === cols.length && cols.every((c) => fk.columns.includes(c)))) {
        unconstrained.push(`${m.name}.${r.field} (${t.name}.${cols.join(', ')} has no foreign key)`);
      }
    }
  }
  const collections = new Map<string, ResolvedCollection>();
  if (binding.collections.size && catalog.vector === null) problems.push('the pgvector extension is not installed (CREATE EXTENSION vector)');
  for (const c of binding.collections.values()) {
    const m = binding.models.get(c.model)!;
    const t = catalog.tables.get(`${m.schema ?? catalog.currentSchema}.${m.table}`);
    if (!t) continue;
    const col = t.columns.get(c.embedding.column);
    const path = `collections.${c.name}.embedding`;
    if (!col) {
      const vectors = [...t.columns.values()].filter((x) => x.base === 'vector').map((x) => x.name);
      problems.push(
        `${path}: table ${m.table} has no column ${c.embedding.column}${vectors.length ? ` (its vector columns: ${vectors.join(', ')}; set embeddingColumn for an @map)` : ''}`,
      );
      continue;
    }
    if (col.base !== 'vector' || col.array) {
      problems.push(`${path}: column ${m.table}.${col.name} is ${col.type}, not a pgvector vector`);
      continue;
    }
    const declared = c.embedding.declaredDimension;
    if (col.dimension !== null && declared !== undefined && declared !== col.dimension) {
      problems.push(`collections.${c.name}.dimension: is ${declared}, but column ${m.table}.${col.name} is ${col.type}`);
      continue;
    }
    const dimension = col.dimension ?? declared;
    if (dimension === undefined) {
      problems.push(`collections.${c.name}.dimension: column ${m.table}.${col.name} is an untyped vector; declare its dimension`);
      continue;
    }
    if (c.indexed === 'declared' && dimension > MAX_INDEXED_DIMENSION) {
      problems.push(`collections.${c.name}.index: pgvector indexes vectors of at most ${MAX_INDEXED_DIMENSION} dimensions and ${m.table}.${col.name} has ${dimension}: leave index out (or false), and a miss scans the partition exactly`);
      continue;
    }
    collections.set(c.name, { dimension, untyped: col.dimension === null, indexed: c.indexed !== 'none' && dimension <= MAX_INDEXED_DIMENSION });
  }
  if (problems.length) {
    const builtin = binding.source === 'built-in';
    const fix = builtin
      ? 'run `memory-sync migrate` (or `memory-sync adopt` for tables your own migrations made), or set MEMORY_SYNC_MIGRATE=true'
      : "run your project's migrations, then `memory-sync adopt`";
    const missing = [...binding.models.values()].filter((m) => !catalog.tables.has(`${m.schema ?? catalog.currentSchema}.${m.table}`));
    const head =
      missing.length === binding.models.size
        ? `database not migrated (none of the declared tables exist: ${missing.map((m) => m.table).join(', ')}): ${fix}`
        : `the database does not match the declaration (${binding.source}): ${fix}`;
    throw new NotMigratedError(`${head}\n${problems.map((p) => `  - ${p}`).join('\n')}`, '42P01');
  }
  return { catalog, tableOf, collections, facts: (model, field) => factMap.get(`${model}.${field}`) ?? {}, unconstrained };
}

function usesRelation(node: IncludeNode, model: string, field: string): boolean {
  return node.children.some((c) => (node.model === model && c.relation?.field === field) || usesRelation(c, model, field));
}

function typeProblem(f: FieldBinding, c: ColumnInfo): string | null {
  if (f.list !== c.array) return f.list ? `the schema says ${f.type}[]` : `the schema says ${f.type}, not a list`;
  if (f.type === 'Enum') return c.kind === 'e' ? null : 'the schema says an enum';
  if (!COMPATIBLE[f.type].has(c.base)) return `the schema says ${f.type}`;
  return null;
}
