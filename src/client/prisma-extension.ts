import { Prisma } from '@prisma/client/extension';
import type { EntityClient, EntityLoaderFn } from '../contract/client.js';
import type { EntityShape, SchemaShape, TreeShape } from '../contract/shape.js';

/** Prisma operations that change rows. */
const WRITES = new Set(['create', 'createMany', 'createManyAndReturn', 'update', 'updateMany', 'updateManyAndReturn', 'upsert', 'delete', 'deleteMany']);

/** What the extension needs of a client: the in-process one (started), or the remote one with `localCache`. */
interface Memory {
  entity(name: string): EntityClient;
  sync(timeoutMs?: number): Promise<void>;
  cacheEntityWith(name: string, load: EntityLoaderFn): boolean;
  /** In process: the declaration's shapes. */
  schemaShape?(): SchemaShape;
  /** Remote: fetched from the sidecar. */
  schema?(): Promise<SchemaShape>;
}

/** Structural equality of two include/omit arguments. */
function same(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  const ka = Object.keys(a).filter((k) => (a as Record<string, unknown>)[k] !== undefined);
  const kb = Object.keys(b).filter((k) => (b as Record<string, unknown>)[k] !== undefined);
  return ka.length === kb.length && ka.every((k) => same((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

/** The where of a declared lookup (`{ id }`, `{ slug }`, `{ ownerId_name: { … } }`), or undefined (Prisma answers). */
function lookupWhere(shape: EntityShape, where: unknown): Record<string, unknown> | undefined {
  if (typeof where !== 'object' || where === null) return undefined;
  const keys = Object.keys(where);
  if (keys.length !== 1) return undefined;
  const value = (where as Record<string, unknown>)[keys[0]!];
  const lookup = shape.lookups.find((l) => l.name === keys[0]);
  if (!lookup) return undefined;
  if (lookup.fields.length === 1) return typeof value === 'string' || typeof value === 'number' || typeof value === 'bigint' ? { [keys[0]!]: value } : undefined;
  if (typeof value !== 'object' || value === null || Object.keys(value).length !== lookup.fields.length) return undefined;
  return value as Record<string, unknown>;
}

/** A scalar the caller may change, copied (Decimal is immutable and kept). */
function copyScalar(v: unknown): unknown {
  if (v instanceof Date) return new Date(v);
  if (v instanceof Uint8Array) return new Uint8Array(v);
  if (Array.isArray(v) || (v !== null && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype)) return structuredClone(v);
  return v;
}

/**
 * Prisma hands out objects the caller may change: a copy, trimmed to what the
 * call asked for. Every field of the value is kept (loaded by your Prisma, it
 * has your schema's columns, even ones the declaration does not name).
 */
function copy(node: TreeShape, value: Record<string, unknown>, withRelations: boolean): Record<string, unknown> {
  const relations = new Map(node.children.map((c) => [c.field, c]));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    const c = relations.get(k);
    if (!c) out[k] = copyScalar(v);
    else if (withRelations) {
      out[k] = c.list ? ((v as Record<string, unknown>[]) ?? []).map((x) => copy(c.node, x, true)) : v ? copy(c.node, v as Record<string, unknown>, true) : null;
    }
  }
  return out;
}

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

const delegateKey = (model: string) => model.charAt(0).toLowerCase() + model.slice(1);

/** The lookup when the call is exactly `{ where }` with the declared include/omit, or with neither; else undefined. */
function servable(shape: EntityShape, args: unknown): { where: Record<string, unknown>; withRelations: boolean } | undefined {
  if (typeof args !== 'object' || args === null) return undefined;
  const { where, include, omit, ...rest } = args as { where?: unknown; include?: unknown; omit?: unknown };
  if (Object.values(rest).some((v) => v !== undefined)) return undefined; // select, relationLoadStrategy…
  if (omit !== undefined && !same(omit, shape.omit)) return undefined;
  if (include !== undefined && !same(include, shape.include)) return undefined;
  // Without the declared omit, the call wants the omitted fields too: the cache has none of them.
  if (omit === undefined && shape.omit && Object.keys(shape.omit).length) return undefined;
  const w = lookupWhere(shape, where);
  return w && { where: w, withRelations: include !== undefined };
}

/**
 * Cache-aside inside Prisma. With `prisma.$extends(memorySyncExtension(memory))`,
 * `findUnique` and `findUniqueOrThrow` on each declared entity's model, by
 * its id or a declared lookup, with the declared `include` (or none), are
 * answered from memory-sync's cache, which the database's own change
 * capture keeps in step: no TTL, no manual invalidation. A miss is loaded
 * by your Prisma client, so cached values have your schema's exact types.
 * Every other query passes through untouched.
 *
 * Read-your-writes: a write through the extended client, and every
 * `$transaction` (batch or interactive), resolves only after memory-sync
 * has applied it.
 *
 * `memory` is a started createMemorySync(), or a createSidecarClient() with
 * `localCache` (without one, lookups pass through and only writes wait).
 */
export function memorySyncExtension(memory: Memory) {
  return Prisma.defineExtension((client) => {
    // The base client: loads with it never come back through this extension.
    const base = client as unknown as Record<string, { findUnique(args: unknown): Promise<object | null> } | undefined> & {
      $transaction(...args: unknown[]): Promise<unknown>;
    };
    let byModel: Promise<Map<string, { shape: EntityShape; caching: boolean }>> | undefined;
    const declared = () =>
      (byModel ??= (memory.schemaShape ? Promise.resolve(memory.schemaShape()) : memory.schema!()).then((s) => {
        const map = new Map<string, { shape: EntityShape; caching: boolean }>();
        for (const shape of s.entities) {
          const delegate = base[delegateKey(shape.root.model)];
          const args = { ...(shape.include ? { include: shape.include } : {}), ...(shape.omit ? { omit: shape.omit } : {}) };
          const caching =
            !!delegate &&
            memory.cacheEntityWith(shape.name, ({ name, fields, values }) =>
              delegate.findUnique({ where: fields.length === 1 ? { [fields[0]!]: values[0] } : { [name]: Object.fromEntries(fields.map((f, i) => [f, values[i]])) }, ...args }),
            );
          map.set(delegateKey(shape.root.model), { shape, caching });
        }
        return map;
      }));
    if (memory.schemaShape) void declared(); // in process: register the loaders now
    const afterWrite = async <T>(result: T): Promise<T> => {
      await memory.sync();
      return result;
    };
    return client.$extends({
      name: 'memory-sync',
      client: { $transaction: transaction(base, afterWrite) },
      query: {
        $allModels: {
          async $allOperations({ model, operation, args, query }) {
            if (operation === 'findUnique' || operation === 'findUniqueOrThrow') {
              const e = (await declared()).get(delegateKey(model));
              const hit = e?.caching ? servable(e.shape, args) : undefined;
              if (e && hit) {
                let value: Record<string, unknown> | null | undefined;
                try {
                  value = (await memory.entity(e.shape.name).get(hit.where)) as Record<string, unknown> | null;
                } catch {
                  value = undefined; // a malformed id: Prisma reports it its own way
                }
                if (value) return copy(e.shape.root, value, hit.withRelations);
                // findUniqueOrThrow: Prisma's own not-found error, from Prisma.
                if (value === null && operation === 'findUnique') return null;
              }
              return query(args);
            }
            const result = await query(args);
            return WRITES.has(operation) ? afterWrite(result) : result;
          },
        },
      },
    });
  });
}
