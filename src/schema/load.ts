import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ConfigError } from '../contract/errors.js';
import { bind, type Binding } from './binding.js';
import { BUILTIN_DECLARATION } from './builtin.js';
import { parseDeclaration, type Declaration } from './declaration.js';
import { readPrismaSchema } from './prisma-schema.js';

/** The names looked for in the working directory, in this order. */
export const DECLARATION_FILES = ['memory-sync.config.ts', 'memory-sync.config.mjs', 'memory-sync.config.js', 'memory-sync.config.json'] as const;

export interface LoadedDeclaration {
  declaration: Declaration;
  /** The file, or "built-in". */
  source: string;
  /** Paths in the declaration are relative to this. */
  baseDir: string;
}

/** The declaration file named, else the first of DECLARATION_FILES in `cwd`, else null. */
export function findDeclaration(named: string | undefined, cwd = process.cwd()): string | null {
  if (named) {
    const p = isAbsolute(named) ? named : resolve(cwd, named);
    if (!existsSync(p)) throw new ConfigError('MEMORY_SYNC_CONFIG', `${named} does not exist`);
    return p;
  }
  for (const f of DECLARATION_FILES) {
    const p = resolve(cwd, f);
    if (existsSync(p)) return p;
  }
  return null;
}

/** Loads a declaration file: JSON as it is, JavaScript by import, TypeScript through jiti. */
export async function loadDeclarationFile(path: string): Promise<LoadedDeclaration> {
  let raw: unknown;
  try {
    if (path.endsWith('.json')) raw = JSON.parse(readFileSync(path, 'utf8'));
    else if (path.endsWith('.ts') || path.endsWith('.mts') || path.endsWith('.cts')) {
      const { createJiti } = await import('jiti');
      raw = await createJiti(import.meta.url, { moduleCache: false }).import(path, { default: true });
    } else {
      const mod = (await import(pathToFileURL(path).href)) as { default?: unknown };
      raw = mod.default ?? mod;
    }
  } catch (err) {
    throw new ConfigError(path, `cannot be read: ${(err as Error).message}`);
  }
  return { declaration: parseDeclaration(raw, path), source: path, baseDir: dirname(path) };
}

/** The declaration in effect: `named` (--config, MEMORY_SYNC_CONFIG), a file in the working directory, or the built-in one. */
export async function loadDeclaration(named?: string, cwd = process.cwd()): Promise<LoadedDeclaration> {
  const path = findDeclaration(named, cwd);
  if (path) return loadDeclarationFile(path);
  return { declaration: BUILTIN_DECLARATION, source: 'built-in', baseDir: cwd };
}

/** Reads the declaration's Prisma schema with Prisma's parser and binds the declaration to it. */
export function bindDeclaration(loaded: LoadedDeclaration): Binding {
  const declaration = loaded.source === 'built-in' ? loaded.declaration : parseDeclaration(loaded.declaration, loaded.source);
  const schemaPath = isAbsolute(declaration.schema) ? declaration.schema : resolve(loaded.baseDir, declaration.schema);
  let schema;
  try {
    schema = readPrismaSchema(schemaPath);
  } catch (err) {
    if (err instanceof ConfigError) throw new ConfigError(`${loaded.source}: schema`, err.reason);
    throw err;
  }
  return bind(declaration, schema.datamodel, { source: loaded.source, schemaPath });
}
