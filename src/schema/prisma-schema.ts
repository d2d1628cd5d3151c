import { createRequire } from 'node:module';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { ConfigError } from '../contract/errors.js';

/*
 * The bot's Prisma schema, read with Prisma's own parser: the DMMF from
 * @prisma/prisma-schema-wasm (the module `prisma generate` uses), so every
 * `@map`, `@@map`, `@id`, `@@id`, `@unique` and relation means here what it
 * means to Prisma. Only the parts the binding uses are typed.
 */

export interface DmmfField {
  name: string;
  /** The column name (`@map`); absent when it is the field name. */
  dbName?: string | null;
  kind: 'scalar' | 'object' | 'enum' | 'unsupported';
  /** Scalar type (String, Int, BigInt, Float, Decimal, Boolean, DateTime, Json, Bytes), enum name or model name. */
  type: string;
  isList: boolean;
  isRequired: boolean;
  isUnique: boolean;
  isId: boolean;
  hasDefaultValue: boolean;
  isUpdatedAt?: boolean;
  /** `["VarChar", ["255"]]`, `["Uuid", []]`, `["Timestamp", ["3"]]`; null when Prisma's default. */
  nativeType?: [string, string[]] | null;
  relationName?: string | null;
  relationFromFields?: string[];
  relationToFields?: string[];
}

export interface DmmfModel {
  name: string;
  /** The table (`@@map`); null when it is the model name. */
  dbName: string | null;
  /** multiSchema: the PostgreSQL schema; null for the datasource's default. */
  schema?: string | null;
  fields: DmmfField[];
  /** `@@id([a, b])`; null when the id is one field's `@id`. */
  primaryKey: { name: string | null; fields: string[] } | null;
  /** Each `@@unique([...])`. */
  uniqueFields: string[][];
}

export interface Datamodel {
  models: DmmfModel[];
  enums: { name: string; values: { name: string; dbName: string | null }[] }[];
}

export interface PrismaSchema {
  /** The file or folder it was read from (absolute). */
  path: string;
  datamodel: Datamodel;
}

/** Every `.prisma` file of a folder (a multi-file schema), or the one file. */
function schemaFiles(path: string): [string, string][] {
  let stat;
  try {
    stat = statSync(path);
  } catch {
    throw new ConfigError('schema', `${path} does not exist (name the bot's schema.prisma, relative to the declaration)`);
  }
  if (!stat.isDirectory()) return [[path, readFileSync(path, 'utf8')]];
  const out: [string, string][] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) {
        if (name !== 'migrations' && name !== 'node_modules') walk(p);
      } else if (name.endsWith('.prisma')) out.push([p, readFileSync(p, 'utf8')]);
    }
  };
  walk(path);
  if (out.length === 0) throw new ConfigError('schema', `${path} holds no .prisma file`);
  return out;
}

type SchemaWasm = { get_dmmf(params: string): string };
let wasm: SchemaWasm | undefined;

/** Prisma's schema parser, loaded on first use (3 MB of WebAssembly). */
function schemaWasm(): SchemaWasm {
  wasm ??= createRequire(import.meta.url)('@prisma/prisma-schema-wasm') as SchemaWasm;
  return wasm;
}

/** Prisma's validation message without its terminal colours. */
function prismaMessage(err: unknown): string {
  const raw = err instanceof Error ? err.message : String(err);
  let text = raw;
  try {
    text = (JSON.parse(raw) as { message?: string }).message ?? raw;
  } catch {
    // not Prisma's JSON: keep it as it is
  }
  // eslint-disable-next-line no-control-regex
  return text.replace(/\u001b\[[0-9;]*m/g, '');
}

/** Reads and validates a Prisma schema; a schema Prisma rejects is a ConfigError with Prisma's message. */
export function readPrismaSchema(path: string): PrismaSchema {
  const files = schemaFiles(path);
  let json: string;
  try {
    json = schemaWasm().get_dmmf(JSON.stringify({ prismaSchema: files.map(([p, c]) => [relative(process.cwd(), p) || p, c]) }));
  } catch (err) {
    throw new ConfigError('schema', `Prisma rejects ${path}:\n${prismaMessage(err)}`);
  }
  const dmmf = JSON.parse(json) as { datamodel: Datamodel };
  return { path, datamodel: dmmf.datamodel };
}

export interface UnsupportedVector {
  field: string;
  column: string;
  /** From `Unsupported("vector(384)")`; null for an untyped `vector`. */
  dimension: number | null;
}

/**
 * The `Unsupported("vector…")` fields of each model, which Prisma's parser
 * validates but leaves out of the DMMF. Only `memory-sync init` needs them
 * (to suggest collections without a database); the binding reads vector
 * columns from the catalog. The model blocks are found by the DMMF's names,
 * so this reads field lines, never the schema's structure.
 */
export function unsupportedVectors(path: string, models: readonly DmmfModel[]): Map<string, UnsupportedVector[]> {
  const text = schemaFiles(path).map(([, c]) => c).join('\n');
  const out = new Map<string, UnsupportedVector[]>();
  for (const m of models) {
    const start = new RegExp(`^\\s*model\\s+${m.name}\\s*\\{`, 'm').exec(text);
    if (!start) continue;
    const body = text.slice(start.index + start[0].length, text.indexOf('\n}', start.index));
    const found: UnsupportedVector[] = [];
    for (const line of body.split('\n')) {
      const f = /^\s*([A-Za-z][A-Za-z0-9_]*)\s+Unsupported\(\s*"vector(?:\((\d+)\))?"\s*\)\??(.*)$/.exec(line);
      if (!f) continue;
      const map = /@map\(\s*"([^"]+)"\s*\)/.exec(f[3] ?? '');
      found.push({ field: f[1]!, column: map?.[1] ?? f[1]!, dimension: f[2] ? Number(f[2]) : null });
    }
    if (found.length) out.set(m.name, found);
  }
  return out;
}
