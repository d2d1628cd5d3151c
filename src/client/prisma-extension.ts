import { Prisma } from '@prisma/client/extension';
import type { MemoryClient } from './memory-sync.js';

/** Prisma operations that change rows. */
const WRITES = new Set([
  'create',
  'createMany',
  'createManyAndReturn',
  'update',
  'updateMany',
  'updateManyAndReturn',
  'upsert',
  'delete',
  'deleteMany',
]);

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The id when `args` is exactly `{ where: { id } }` with a UUID, optionally with
 * `include: { llmConfig: true }`; else undefined (Prisma answers, and reports
 * a malformed id its own way).
 */
function servable(args: unknown): { id: string; withConfig: boolean } | undefined {
  if (typeof args !== 'object' || args === null) return undefined;
  const { where, include, ...rest } = args as { where?: unknown; include?: unknown };
  if (Object.keys(rest).length > 0) return undefined; // select, omit, relationLoadStrategy…
  if (typeof where !== 'object' || where === null || Object.keys(where).length !== 1) return undefined;
  const id = (where as { id?: unknown }).id;
  if (typeof id !== 'string' || !UUID.test(id)) return undefined;
  if (include === undefined) return { id: id.toLowerCase(), withConfig: false };
  const only = typeof include === 'object' && include !== null && Object.keys(include).length === 1;
  if (only && (include as { llmConfig?: unknown }).llmConfig === true) return { id: id.toLowerCase(), withConfig: true };
  return undefined;
}

/** Prisma hands out objects the caller may change: a copy, not the cache's frozen value. */
function copy(p: object, withConfig: boolean): object {
  const { llmConfig, ...personality } = p as { llmConfig?: object | null };
  if (!withConfig) return personality;
  return { ...personality, llmConfig: llmConfig ? { ...llmConfig } : null };
}

type Memory = Pick<MemoryClient, 'getPersonality' | 'sync' | 'cachePersonalitiesWith'>;

/** What Prisma hands an interactive transaction: the client without its connection-level methods. */
type TransactionClient<C> = Omit<C, '$connect' | '$disconnect' | '$on' | '$transaction' | '$extends' | '$use'>;

/** Prisma's two $transaction forms, typed from the client they are called on, resolving after the cache saw the commit. */
function transaction(base: { $transaction(...args: unknown[]): Promise<unknown> }, afterWrite: <T>(result: T) => Promise<T>) {
  function $transaction<C, R>(this: C, fn: (tx: TransactionClient<C>) => Promise<R>, options?: object): Promise<R>;
  function $transaction<C, P extends readonly unknown[]>(this: C, queries: [...P], options?: object): Promise<{ -readonly [K in keyof P]: Awaited<P[K]> }>;
  async function $transaction(this: unknown, ...args: unknown[]): Promise<unknown> {
    return afterWrite(await base.$transaction(...args));
  }
  return $transaction;
}

/**
 * Cache-aside inside Prisma. With `prisma.$extends(memorySyncExtension(memory))`,
 * `personality.findUnique({ where: { id } })` (optionally with
 * `include: { llmConfig: true }`) is answered from memory-sync's cache, which
 * the database's own triggers keep in step: no TTL, no manual invalidation.
 * A miss is loaded by your Prisma client, so cached values have your schema's
 * columns and types. Every other query passes through untouched.
 *
 * Read-your-writes: a write to personalities, LLM configs or memories through
 * the extended client, and every `$transaction` (batch or interactive),
 * resolves only after memory-sync has applied it.
 *
 * `memory` is a started createMemorySync(), or a createSidecarClient() with
 * `localCache` (without one, lookups pass through and only writes wait).
 */
export function memorySyncExtension(memory: Memory) {
  return Prisma.defineExtension((client) => {
    // The base client: loads with it never come back through this extension.
    const base = client as unknown as {
      personality: { findUnique(args: unknown): Promise<object | null> };
      $transaction(...args: unknown[]): Promise<unknown>;
    };
    const caching = memory.cachePersonalitiesWith((id) => base.personality.findUnique({ where: { id }, include: { llmConfig: true } }));
    const afterWrite = async <T>(result: T): Promise<T> => {
      await memory.sync();
      return result;
    };
    return client.$extends({
      name: 'memory-sync',
      client: { $transaction: transaction(base, afterWrite) },
      query: {
        personality: {
          async $allOperations({ operation, args, query }) {
            if (caching && (operation === 'findUnique' || operation === 'findUniqueOrThrow')) {
              const hit = servable(args);
              if (hit) {
                const p = await memory.getPersonality(hit.id);
                if (p) return copy(p, hit.withConfig);
                // findUniqueOrThrow: Prisma's own not-found error, from Prisma.
                if (operation === 'findUnique') return null;
              }
              return query(args);
            }
            const result = await query(args);
            return WRITES.has(operation) ? afterWrite(result) : result;
          },
        },
        llmConfig: {
          async $allOperations({ operation, args, query }) {
            const result = await query(args);
            return WRITES.has(operation) ? afterWrite(result) : result;
          },
        },
        memory: {
          async $allOperations({ operation, args, query }) {
            const result = await query(args);
            return WRITES.has(operation) ? afterWrite(result) : result;
          },
        },
      },
    });
  });
}
