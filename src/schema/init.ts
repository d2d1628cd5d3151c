import { existsSync, writeFileSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';
import pg from 'pg';
import { ConfigError } from '../contract/errors.js';
import type { CollectionDeclaration, Declaration, EntityDeclaration } from './declaration.js';
import { readPrismaSchema, unsupportedVectors, type DmmfModel } from './prisma-schema.js';

/*
 * `memory-sync init`: a starting declaration from the project's Prisma
 * schema, for the user to edit. Every model whose table has a pgvector
 * column becomes a collection; every other model with an id a candidate
 * entity. Prisma's DMMF leaves Unsupported("vector") fields out: they are
 * read from the schema's field lines, and their dimension from the
 * database's catalog when DATABASE_URL is set (an untyped column has none).
 */

interface VectorColumn {
  table: string;
  column: string;
  dimension: number | null;
}

async function vectorColumns(databaseUrl: string): Promise<VectorColumn[]> {
  const c = new pg.Client({ connectionString: databaseUrl, application_name: 'memory-sync init' });
  c.on('error', () => {});
  await c.connect();
  try {
    const r = await c.query<{ table: string; column: string; typmod: number }>(
      `SELECT c.relname AS table, a.attname AS column, a.atttypmod AS typmod
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_type t ON t.oid = a.atttypid
        WHERE t.typname = 'vector' AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p')
          AND c.relnamespace = current_schema()::regnamespace
        ORDER BY 1, 2`,
    );
    const out: VectorColumn[] = [];
    for (const x of r.rows) {
      let dimension = x.typmod > 0 ? x.typmod : null;
      // An untyped column: the dimension its rows have, if it has any.
      if (dimension === null) {
        const q = `SELECT vector_dims(${quote(x.column)}) AS d FROM ${quote(x.table)} WHERE ${quote(x.column)} IS NOT NULL LIMIT 1`;
        dimension = (await c.query<{ d: number }>(q)).rows[0]?.d ?? null;
      }
      out.push({ table: x.table, column: x.column, dimension });
    }
    return out;
  } finally {
    await c.end().catch(() => {});
  }
}

const quote = (name: string) => `"${name.replace(/"/g, '""')}"`;

const scalarFields = (m: DmmfModel) => m.fields.filter((f) => f.kind === 'scalar' || f.kind === 'enum');
const foreignKeys = (m: DmmfModel) => [...new Set(m.fields.flatMap((f) => (f.kind === 'object' ? (f.relationFromFields ?? []) : [])))];
const lowerFirst = (s: string) => s.charAt(0).toLowerCase() + s.slice(1);

function collectionFor(m: DmmfModel, v: VectorColumn): CollectionDeclaration {
  const fks = foreignKeys(m);
  const fields = scalarFields(m);
  const id = fields.find((f) => f.isId)?.name;
  // The first foreign key partitions (a persona, a personality); the rest and the timestamps filter.
  const partitionBy = fks.slice(0, 1);
  const filters = [...fks.slice(1), ...fields.filter((f) => f.type === 'DateTime' && !f.isUpdatedAt).map((f) => f.name), ...(id ? [id] : [])];
  const select = fields.filter((f) => !f.isId && !fks.includes(f.name) && (f.type === 'String' || f.type === 'DateTime') && !f.isList).map((f) => f.name).slice(0, 4);
  return {
    model: m.name,
    embedding: v.column,
    ...(v.dimension ? { dimension: v.dimension } : {}),
    partitionBy: partitionBy.length ? partitionBy : [fields.find((f) => !f.isId)?.name ?? 'id'],
    filters: [...new Set(filters)].filter((f) => !partitionBy.includes(f)),
    select,
  };
}

function entityFor(m: DmmfModel): EntityDeclaration {
  const lookups = scalarFields(m).filter((f) => f.isUnique && !f.isId && (f.type === 'String' || f.type === 'Int' || f.type === 'BigInt')).map((f) => f.name);
  return { model: m.name, ...(lookups.length ? { lookups } : {}), include: {} };
}

/** The starting declaration for a schema; `vectors` from the catalog (empty without a database), else from the schema's Unsupported fields. */
export function initialDeclaration(schemaPath: string, outDir: string, vectors: VectorColumn[]): { declaration: Declaration; notes: string[] } {
  const { datamodel } = readPrismaSchema(schemaPath);
  const unsupported = unsupportedVectors(schemaPath, datamodel.models);
  const entities: Record<string, EntityDeclaration> = {};
  const collections: Record<string, CollectionDeclaration> = {};
  const notes: string[] = [];
  for (const m of datamodel.models) {
    const table = m.dbName ?? m.name;
    const u = unsupported.get(m.name)?.[0];
    const v = vectors.find((x) => x.table === table && (!u || x.column === u.column)) ?? (u ? { table, column: u.column, dimension: u.dimension } : undefined);
    if (v) {
      const name = lowerFirst(m.name);
      collections[name] = collectionFor(m, v);
      if (!v.dimension) notes.push(`collections.${name}.dimension: ${table}.${v.column} is an untyped vector; set the dimension your embeddings have`);
    }
    else if (m.primaryKey || m.fields.some((f) => f.isId)) entities[lowerFirst(m.name)] = entityFor(m);
  }
  return { declaration: { schema: relative(outDir, resolve(schemaPath)) || schemaPath, channel: 'memory_sync', entities, collections }, notes };
}

/** Writes the starting declaration as JSON and returns its text. */
export async function writeInit(options: { schemaPath: string; out: string; force: boolean; databaseUrl: string | undefined }): Promise<string> {
  if (existsSync(options.out) && !options.force) throw new ConfigError('--out', `${options.out} exists; pass --force to overwrite it`);
  const vectors = options.databaseUrl ? await vectorColumns(options.databaseUrl) : [];
  const { declaration, notes } = initialDeclaration(options.schemaPath, dirname(resolve(options.out)), vectors);
  const text = `${JSON.stringify(declaration, null, 2)}\n`;
  writeFileSync(options.out, text);
  for (const n of notes) process.stderr.write(`note: ${n}\n`);
  return text;
}
