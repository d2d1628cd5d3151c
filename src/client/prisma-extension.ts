import { Prisma } from '@prisma/client/extension';
import type { MemoryClient, PersonalityWithConfig } from './memory-sync.js';

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

/** The id when `args` is exactly `{ where: { id } }`, optionally with `include: { llmConfig: true }`; else undefined. */
function servableId(args: unknown): { id: string; withConfig: boolean } | undefined {
  if (typeof args !== 'object' || args === null) return undefined;
  const { where, include, ...rest } = args as { where?: unknown; include?: unknown };
  if (Object.keys(rest).length > 0) return undefined; // select, omit, relationLoadStrategy…: Prisma answers
  if (typeof where !== 'object' || where === null) return undefined;
  const keys = Object.keys(where);
  const id = (where as { id?: unknown }).id;
  if (keys.length !== 1 || typeof id !== 'string') return undefined;
  if (include === undefined) return { id, withConfig: false };
  if (typeof include === 'object' && include !== null && Object.keys(include).length === 1 && (include as { llmConfig?: unknown }).llmConfig === true) {
    return { id, withConfig: true };
  }
  return undefined;
}

/** Prisma hands out objects the caller may change: a copy, not the cache's frozen value. */
function copy(p: PersonalityWithConfig, withConfig: boolean): object {
  const { llmConfig, ...personality } = p;
  return withConfig ? { ...personality, llmConfig: llmConfig && { ...llmConfig } } : personality;
}

/**
 * Cache-aside inside Prisma. With `prisma.$extends(memorySyncExtension(memory))`,
 * `personality.findUnique({ where: { id } })` (optionally with
 * `include: { llmConfig: true }`) is answered from memory-sync's cache, which
 * the database's own triggers keep in step: no TTL, no manual invalidation.
 * Every other query passes through untouched. A write to personalities, LLM
 * configs or memories through this client waits for memory-sync's barrier
 * before it resolves, so the writer reads its own write.
 *
 * `memory` is a started createMemorySync() or createSidecarClient().
 * Writes inside an interactive `$transaction` are visible once it commits.
 */
export function memorySyncExtension(memory: Pick<MemoryClient, 'getPersonality' | 'sync'>) {
  return Prisma.defineExtension({
    name: 'memory-sync',
    query: {
      personality: {
        async $allOperations({ operation, args, query }) {
          if (operation === 'findUnique' || operation === 'findUniqueOrThrow') {
            const hit = servableId(args);
            if (hit) {
              const p = await memory.getPersonality(hit.id);
              if (p) return copy(p, hit.withConfig);
              // findUniqueOrThrow: Prisma's own not-found error, from Prisma.
              if (operation === 'findUnique') return null;
            }
            return query(args);
          }
          if (!WRITES.has(operation)) return query(args);
          const result = await query(args);
          await memory.sync();
          return result;
        },
      },
      llmConfig: {
        async $allOperations({ operation, args, query }) {
          const result = await query(args);
          if (WRITES.has(operation)) await memory.sync();
          return result;
        },
      },
      memory: {
        async $allOperations({ operation, args, query }) {
          const result = await query(args);
          if (WRITES.has(operation)) await memory.sync();
          return result;
        },
      },
    },
  });
}
