import { z } from 'zod';
import { ConfigError } from '../contract/errors.js';

/*
 * What memory-sync caches, in the bot's own terms: Prisma model and field
 * names, never tables or columns. The binding (binding.ts) maps them onto the
 * schema with Prisma's own parser; this file is only the shape and its checks.
 */

/** `true`, or a nested include with its own `include` and `omit`. */
export type IncludeValue = true | { include?: IncludeTree; omit?: Record<string, true> };
export type IncludeTree = { [relation: string]: IncludeValue };

export interface EntityDeclaration {
  /** The Prisma model at the root, e.g. "Personality". */
  model: string;
  /**
   * Unique fields (or sets of fields) a lookup may use besides the `@id`,
   * e.g. `["slug"]` or `[["ownerId", "name"]]` for an `@@unique([ownerId, name])`.
   * @defaultValue [] — lookups by id only.
   */
  lookups?: (string | string[])[];
  /** Relations to load with the root, as Prisma's `include` (to-one and to-many, nested). */
  include?: IncludeTree;
  /** Scalar fields of the root left out, as Prisma's `omit` (large blobs, say). */
  omit?: Record<string, true>;
}

/** A fixed condition on one field: a value (null: IS NULL), `{ not: value }` or `{ in: [...] }`. */
export type FixedCondition = string | number | boolean | null | { not: string | number | boolean | null } | { in: (string | number | boolean)[] };

export interface CollectionDeclaration {
  /** The Prisma model holding the vectors, e.g. "Memory". */
  model: string;
  /**
   * The vector field. Prisma's DMMF leaves `Unsupported("vector")` fields out,
   * so it is found in the table by column name: the field name, or
   * `embeddingColumn` when the field has an `@map`.
   */
  embedding: string;
  /** The vector column's name when it differs from `embedding` (an `@map` on an Unsupported field). */
  embeddingColumn?: string;
  /**
   * Vector dimension, 2 to 16000.
   * @defaultValue the column's type, `vector(N)`; required when the column is an untyped `vector`.
   */
  dimension?: number;
  /** Fields every search names exactly (a persona, a personality); one hot set per value. */
  partitionBy: string[];
  /**
   * Fields a search may filter on (equality, in, notIn, ranges).
   * @defaultValue []
   */
  filters?: string[];
  /** A condition every search and load applies, e.g. `{ "visibility": "normal" }` or `{ "deletedAt": null }`. */
  where?: Record<string, FixedCondition>;
  /**
   * Fields returned with each result besides `id` and `similarity`.
   * @defaultValue []
   */
  select?: string[];
  /**
   * The pgvector index the miss path uses. `memory-sync adopt` builds it
   * (CONCURRENTLY) unless the column already has a cosine index, and the
   * sidecar's index guard rebuilds it when a migration dropped it.
   * `false`: none; a miss scans the partition exactly (pgvector indexes at
   * most 2,000 dimensions, so that is the default above them).
   * @defaultValue { method: "hnsw" }, named `<table>_<column>_cosine`; none above 2,000 dimensions
   */
  index?: false | { name?: string; method?: 'hnsw' | 'ivfflat'; lists?: number; m?: number; efConstruction?: number };
}

export interface HistoryTtlJob {
  /** The model whose old rows are deleted. */
  model: string;
  /** Its DateTime field compared with the cut-off. */
  field: string;
  /** Rows older than this many days are deleted; 0 turns the job off. */
  days: number;
  /** A Boolean field: rows where it is true are never deleted. */
  protect?: string;
}

export interface MemoryCapJob {
  /** The collection to cap. */
  collection: string;
  /** Fields that form a group, e.g. `["personalityId", "channelId"]`. */
  per: string[];
  /** Rows kept per group, newest first; 0 turns the job off. */
  keep: number;
  /** The DateTime field that orders rows, newest first. */
  orderBy: string;
  /** A Boolean field: rows where it is true are never deleted and do not count. */
  protect?: string;
}

export interface Declaration {
  /** The bot's Prisma schema (a file, or a folder of .prisma files), relative to the declaration file. */
  schema: string;
  /**
   * The NOTIFY channel of the generated triggers.
   * @defaultValue "memory_sync" — memory-sync's own, so a bot's triggers on another channel never collide.
   */
  channel?: string;
  /**
   * How changes leave the database: generated triggers (NOTIFY), or logical replication.
   * @defaultValue "triggers"
   */
  source?: 'triggers' | 'replication';
  /** Entities: a root model with its related rows, looked up by id or a unique field. */
  entities?: Record<string, EntityDeclaration>;
  /** Vector collections searched in process. */
  collections?: Record<string, CollectionDeclaration>;
  /** Maintenance jobs; none run unless declared here. */
  jobs?: { historyTtl?: HistoryTtlJob; memoryCap?: MemoryCapJob };
}

// ------------------------------------------------------------------ checks

/** A Prisma identifier: what a model or field name can be (so no quote, semicolon or look-alike reaches SQL). */
export const PRISMA_NAME = /^[A-Za-z][A-Za-z0-9_]{0,127}$/;
/** Entity and collection names become URL segments and metric labels. */
export const DECLARED_NAME = /^[a-z][A-Za-z0-9_]{0,62}$/;
/** A PostgreSQL channel name we LISTEN on unquoted. */
export const CHANNEL_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

const prismaName = z.string().regex(PRISMA_NAME, 'must be a Prisma name (a letter, then letters, digits or _)');
const omit = z.record(prismaName, z.literal(true, 'must be true'));

const includeValue: z.ZodType<IncludeValue> = z.lazy(() =>
  z.union([
    z.literal(true),
    z.strictObject({ include: includeTree.optional(), omit: omit.optional() }, 'must be true or { include, omit }'),
  ], 'must be true or { include, omit }'),
);
const includeTree: z.ZodType<IncludeTree> = z.record(prismaName, includeValue);

const scalar = z.union([z.string(), z.number(), z.boolean()]);
const fixedCondition = z.union(
  [scalar, z.null(), z.strictObject({ not: z.union([scalar, z.null()]) }), z.strictObject({ in: z.array(scalar).min(1) })],
  'must be a value, null, { not: value } or { in: [values] }',
);

const entity = z.strictObject({
  model: prismaName,
  lookups: z.array(z.union([prismaName, z.array(prismaName).min(1)])).optional(),
  include: includeTree.optional(),
  omit: omit.optional(),
});

const collection = z.strictObject({
  model: prismaName,
  embedding: prismaName,
  embeddingColumn: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,62}$/, 'must be a plain column name').optional(),
  dimension: z.number().int().min(2, 'must be from 2 to 16000').max(16_000, 'must be from 2 to 16000').optional(),
  partitionBy: z.array(prismaName).min(1, 'must name at least one field'),
  filters: z.array(prismaName).optional(),
  where: z.record(prismaName, fixedCondition).optional(),
  select: z.array(prismaName).optional(),
  index: z
    .union([
      z.literal(false),
      z.strictObject({
        name: z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/, 'must be a lower-case identifier of at most 63 characters').optional(),
        method: z.enum(['hnsw', 'ivfflat']).optional(),
        lists: z.number().int().min(1).max(32_768).optional(),
        m: z.number().int().min(2).max(100).optional(),
        efConstruction: z.number().int().min(4).max(1_000).optional(),
      }),
    ])
    .optional(),
});

const days = z.number().int().min(0).max(36_500);
const keep = z.number().int().min(0);

export const declarationSchema = z.strictObject({
  schema: z.string().min(1, 'must name the Prisma schema file or folder'),
  channel: z.string().regex(CHANNEL_NAME, 'must be a lower-case identifier of at most 63 characters').optional(),
  source: z.enum(['triggers', 'replication']).optional(),
  entities: z.record(z.string().regex(DECLARED_NAME, 'an entity name must start with a lower-case letter (letters, digits, _)'), entity).optional(),
  collections: z.record(z.string().regex(DECLARED_NAME, 'a collection name must start with a lower-case letter (letters, digits, _)'), collection).optional(),
  jobs: z
    .strictObject({
      historyTtl: z.strictObject({ model: prismaName, field: prismaName, days, protect: prismaName.optional() }).optional(),
      memoryCap: z
        .strictObject({ collection: z.string().regex(DECLARED_NAME), per: z.array(prismaName).min(1), keep, orderBy: prismaName, protect: prismaName.optional() })
        .optional(),
    })
    .optional(),
});

/** "entities.personality.include.aliases" from a zod path. */
export function keyPath(path: readonly PropertyKey[]): string {
  return path.map(String).join('.') || 'declaration';
}

/** Checks the shape; the error names the key path. Meaning (models, fields) is checked by the binding. */
export function parseDeclaration(input: unknown, source = 'declaration'): Declaration {
  const result = declarationSchema.safeParse(input);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const path = issue.code === 'unrecognized_keys' ? [...issue.path, issue.keys[0]!] : issue.path;
    const message =
      issue.code === 'unrecognized_keys'
        ? 'is not a key of the declaration here'
        : issue.code === 'invalid_key'
          ? (issue.issues[0]?.message ?? issue.message)
          : issue.message;
    throw new ConfigError(`${source}: ${keyPath(path)}`, message);
  }
  return result.data as Declaration;
}

/**
 * Identity for TypeScript declarations: `export default defineConfig({ ... })`
 * checks the shape as you type and keeps the literal types, so
 * `createMemorySync({ config })` knows the entity and collection names.
 * `defineConfig.for<PrismaClient>()({ ... })` also ties it to your Prisma
 * client's types: `memory.entity('character').get(...)` then returns
 * Prisma's own payload type for the declared include.
 */
export function defineConfig<const D extends Declaration>(declaration: D): D {
  return declaration;
}

/** `defineConfig.for<PrismaClient>()`: the same identity, carrying the client type (a phantom: nothing is added at run time). */
defineConfig.for = function forClient<P>() {
  return <const D extends Declaration>(declaration: D): D & { readonly __client?: P } => declaration;
};
