import type { Result } from '@prisma/client/runtime/client';

/*
 * What both clients offer (createMemorySync in process, createSidecarClient
 * over HTTP): the declared entities and collections, and the API of
 * memory-sync's own schema. Switching between them is one line.
 */

/** A memory search hit of the built-in schema. */
export interface SimilarMemory {
  id: string;
  content: string;
  channelId: string;
  similarity: number;
  createdAt: Date;
  metadata: unknown;
}

/** An LLM config of the built-in schema, as Prisma returns `LlmConfig`. */
export interface LlmConfigRecord {
  id: string;
  personalityId: string;
  model: string;
  temperature: number;
  maxTokens: number;
  createdAt: Date;
  updatedAt: Date;
}

/** A personality with its LLM config, as Prisma's findUnique({ include: { llmConfig: true } }) returns it. */
export interface PersonalityWithConfig {
  id: string;
  name: string;
  displayName: string;
  systemPrompt: string;
  isActive: boolean;
  createdAt: Date;
  updatedAt: Date;
  llmConfig: LlmConfigRecord | null;
}

/** What findSimilarMemories() and POST /v1/memories/search take. */
export interface SearchInput {
  personalityId: string;
  channelId?: string;
  embedding: number[] | Float32Array;
  limit?: number;
  minSimilarity?: number;
}

/** What storeMemory() and POST /v1/memories take. */
export interface StoreInput {
  personalityId: string;
  channelId: string;
  content: string;
  embedding: number[] | Float32Array;
  metadata?: Record<string, unknown> | null;
}

/** The body of PUT /v1/personalities/:id. */
export interface PersonalityInput {
  name: string;
  displayName: string;
  systemPrompt: string;
  isActive?: boolean;
  llmConfig?: { model: string; temperature?: number; maxTokens?: number } | null;
}

/** A collection search: the partition, filters on declared fields, the query vector. */
export interface CollectionSearch {
  /** One value for every partitionBy field. */
  partition: Record<string, string | number>;
  /** On declared filter fields: a value (null: IS NULL), `{ in: [...] }`, `{ notIn: [...] }`, or `{ lt, lte, gt, gte }`. */
  where?: Record<string, unknown>;
  embedding: number[] | Float32Array;
  /** 1 to 100. @defaultValue 5 */
  limit?: number;
  /** -1 to 1. */
  minSimilarity?: number;
}

/** A collection hit: the id, the similarity, then the declared `select` fields. */
export type CollectionHit<S = Record<string, unknown>> = { id: string; similarity: number } & S;

/** A lookup: the id's value, or `{ field: value }` of the id or a declared unique lookup (Prisma's compound keys too). */
export type EntityWhere = string | number | bigint | Record<string, unknown>;

export interface EntityClient<V = Record<string, unknown>> {
  /** The value as Prisma's findUnique with the declared include returns it, or null. Never stale after a commit's change reached memory-sync. */
  get(where: EntityWhere): Promise<V | null>;
}

export interface CollectionClient<S = Record<string, unknown>> {
  /** Exact top-k: from memory when the partition is hot, else pgvector with the same predicate. */
  search(input: CollectionSearch): Promise<CollectionHit<S>[]>;
}

/** The built-in schema's API, shared by both clients. */
export interface MemoryClient {
  getPersonality(id: string): Promise<PersonalityWithConfig | null>;
  findSimilarMemories(input: SearchInput): Promise<SimilarMemory[]>;
  storeMemory(input: StoreInput): Promise<string>;
  deleteMemory(id: string): Promise<boolean>;
  /** Creates or replaces a personality (and its LLM config); the caller reads its own write. */
  upsertPersonality(id: string, input: PersonalityInput): Promise<{ personality: PersonalityWithConfig; created: boolean }>;
  /** Deletes a personality with its config and memories; false when there was none. */
  deletePersonality(id: string): Promise<boolean>;
  /** A declared entity. */
  entity(name: string): EntityClient;
  /** A declared collection. */
  collection(name: string): CollectionClient;
  /** Resolves once every change committed before the call has been applied (read-your-writes across processes). */
  sync(timeoutMs?: number): Promise<void>;
  /**
   * Loads an entity's values on a miss with `load` instead of memory-sync's
   * own query (memorySyncExtension passes the bot's Prisma, so cached values
   * carry its exact types). The same invalidation applies. Returns false
   * when this client keeps no cache of that entity.
   */
  cacheEntityWith(name: string, load: EntityLoaderFn): boolean;
  close(): Promise<void>;
}

/** Loads one entity value: the lookup's Prisma where key ("id", "slug", "ownerId_name") and its fields' values. */
export type EntityLoaderFn = (lookup: { name: string; fields: readonly string[]; values: readonly unknown[] }) => Promise<object | null>;

// ------------------------------------------------------------------ typing from a declaration

/** The declared entity names of a declaration type. */
export type EntityNames<D> = D extends { entities: infer E } ? Extract<keyof E, string> : string;
export type CollectionNames<D> = D extends { collections: infer C } ? Extract<keyof C, string> : string;

type Delegate<P, M extends string> = P extends { [K in Uncapitalize<M>]: infer X } ? X : never;

/** An entity's value type: Prisma's own payload type when the declaration knows your PrismaClient (defineConfig.for<PrismaClient>()). */
export type EntityValue<D, N extends string> = D extends { entities: { [K in N]: infer E } }
  ? D extends { readonly __client?: infer P }
    ? unknown extends P
      ? Record<string, unknown>
      : E extends { model: infer M extends string }
        ? Result<Delegate<P, M>, { include: E extends { include: infer I } ? I : undefined; omit: E extends { omit: infer O } ? O : undefined }, 'findUniqueOrThrow'>
        : Record<string, unknown>
    : Record<string, unknown>
  : Record<string, unknown>;
