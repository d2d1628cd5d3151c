import type pg from 'pg';
import type { Logger } from 'pino';
import { z } from 'zod';
import { CAPTURE_NAME } from '../capture/replication.js';
import type { Declaration } from '../schema/declaration.js';
import { parseOptions } from '../validation/parse.js';
import { postgresUrl, timerMs } from '../contract/primitives.js';

/** Every default in one place; each is explained on its option below. */
export const DEFAULTS = {
  poolSize: 10,
  listener: { paranoidIntervalMs: 5_000, queryTimeoutMs: 3_000, retryMinMs: 100, retryMaxMs: 5_000 },
  entities: { max: 1_000, ttlMs: 300_000, negativeTtlMs: 5_000, maxEvictions: 10_000 },
  hotSets: { maxBytes: 256 * 1024 * 1024, maxVectorsPerSet: 20_000, tooLargeTtlMs: 60_000 },
  ivfflatProbes: 1,
  queryTimeoutMs: 30_000,
  retry: { retries: 5, minTimeoutMs: 50, maxTimeoutMs: 2_000 },
  summaryIntervalMs: 60_000,
  startup: { dnsRetryMs: 60_000 },
  embedded: { dataDir: './.memory-sync', inMemory: false },
  replication: { slot: 'memory_sync', publication: 'memory_sync', maxRetainedWalBytes: 1024 ** 3, statusIntervalMs: 1_000 },
} as const;

/** Options of createMemorySync(). Every field is optional. */
export interface MemorySyncOptions<D extends Declaration = Declaration> {
  /**
   * What to cache, on your own schema: a declaration (`defineConfig({...})`),
   * or the path of a memory-sync.config.{ts,mjs,js,json}. Paths inside an
   * object resolve against the working directory.
   * @defaultValue process.env.MEMORY_SYNC_CONFIG, else memory-sync.config.* in the working directory, else the built-in declaration of memory-sync's own schema
   */
  config?: D | string | undefined;
  /**
   * The database. Ignored when `pool` is given (the pool's own settings win).
   * With neither, memory-sync runs on an embedded PostgreSQL (see `embedded`).
   * @defaultValue process.env.DATABASE_URL
   */
  databaseUrl?: string | undefined;
  /**
   * Your own pg.Pool (the one your PrismaClient's adapter uses, say). Only
   * the LISTEN connection is opened besides it, and close() leaves it open.
   * Its connections must be direct or session-pooled when `listener.databaseUrl`
   * is unset, since LISTEN needs one session.
   */
  pool?: pg.Pool | undefined;
  /**
   * Connections in the pool memory-sync creates (not used with `pool`). Most
   * lookups are cache hits; misses, writes and pgvector searches use these.
   * @defaultValue 10
   */
  poolSize?: number;
  listener?: {
    /** LISTEN through another URL, e.g. a direct connection when the pool goes through PgBouncer. */
    databaseUrl?: string | undefined;
    /**
     * How often the idle LISTEN connection is probed: bounds how long a half-open socket goes unnoticed.
     * @defaultValue 5000
     */
    paranoidIntervalMs?: number;
    /**
     * A connect, LISTEN, probe or barrier slower than this counts as a dead connection.
     * @defaultValue 3000
     */
    queryTimeoutMs?: number;
    /**
     * First reconnect delay (src/sources/backoff.ts doubles it per attempt).
     * @defaultValue 100
     */
    retryMinMs?: number;
    /**
     * Largest reconnect delay; attempts never stop after a first success.
     * @defaultValue 5000
     */
    retryMaxMs?: number;
  };
  /** Each declared entity's cache. */
  entities?: {
    /**
     * Values cached per entity (a lookup by id and one by slug are two).
     * @defaultValue 1000 — a bot rarely has more personalities; each entry is a few KB.
     */
    max?: number;
    /**
     * Backstop only: change events evict first.
     * @defaultValue 300000
     */
    ttlMs?: number;
    /**
     * How long "none" is remembered (an INSERT that creates it evicts it first).
     * @defaultValue 5000
     */
    negativeTtlMs?: number;
    /**
     * Past this many values evicted by one change (a config shared by many
     * personalities), the entity's whole cache is dropped instead, with a log line.
     * @defaultValue 10000
     */
    maxEvictions?: number;
  };
  /** @deprecated since 0.2: `entities` (the same settings, for every entity). */
  personalities?: { max?: number; ttlMs?: number; negativeTtlMs?: number };
  hotSets?: {
    /**
     * Total bytes of all hot sets together.
     * @defaultValue 268435456 (256 MiB) — about 40,000 1536-d memories.
     */
    maxBytes?: number;
    /**
     * A personality with more memories than this is never hot: pgvector serves it.
     * @defaultValue 20000
     */
    maxVectorsPerSet?: number;
    /**
     * How long a too-large verdict stands before the count is checked again.
     * @defaultValue 60000
     */
    tooLargeTtlMs?: number;
  };
  /**
   * ivfflat lists probed first on a miss; iterative scans add more until LIMIT is met.
   * @defaultValue 1
   */
  ivfflatProbes?: number;
  /**
   * Client-side limit for one pool query: a half-open socket fails instead of hanging.
   * @defaultValue 30000
   */
  queryTimeoutMs?: number;
  retry?: {
    /**
     * Retries of one database call after a transient error (connection lost, server restarting).
     * @defaultValue 5
     */
    retries?: number;
    /** @defaultValue 50 */
    minTimeoutMs?: number;
    /** @defaultValue 2000 */
    maxTimeoutMs?: number;
  };
  startup?: {
    /**
     * How long start() keeps retrying a database host name that does not
     * resolve (ENOTFOUND, EAI_AGAIN) before it fails with a PermanentError;
     * 0 fails at once. A container's private DNS name (Railway's
     * `*.railway.internal`, say) may not resolve for the first seconds after
     * a deploy, while a typo never will: the window covers the first and
     * bounds the second.
     * @defaultValue 60000
     */
    dnsRetryMs?: number;
  };
  /**
   * Period of the "memory-sync summary" info log line; 0 turns it off.
   * @defaultValue 60000
   */
  summaryIntervalMs?: number;
  /** The embedded PostgreSQL (PGlite + pgvector, in process), used when there is no database URL and no pool. */
  embedded?: {
    /**
     * Directory of the embedded database (created and migrated on first start).
     * @defaultValue process.env.MEMORY_SYNC_DATA_DIR, else "./.memory-sync"
     */
    dataDir?: string;
    /**
     * Keep it in memory only, gone at close(): for tests and demos.
     * @defaultValue false
     */
    inMemory?: boolean;
  };
  /**
   * Fleet mode: take change events from a bus that `memory-sync relay` fills
   * instead of holding a LISTEN connection (docs/fleet.md). A subscriber that
   * blinks resumes where it stopped, without a flush.
   */
  bus?: {
    /**
     * `nats://host:4222[/stream]` or `redis://host:6379[/db][?stream=name]`.
     * @defaultValue process.env.MEMORY_SYNC_BUS_URL; unset: LISTEN
     */
    url?: string | undefined;
  };
  /**
   * How changes are captured on PostgreSQL: `listen`, the triggers' NOTIFY;
   * `replication`, a logical replication slot (docs/replication.md): writers
   * pay no NOTIFY, and a restart resumes from the slot without a flush.
   * Needs wal_level = logical. With `bus`, it tells how sync() barriers
   * enter the stream (the relays' mode).
   * @defaultValue process.env.MEMORY_SYNC_SOURCE, else the declaration's `source` ("replication" →
   * replication), else "listen" — works on every PostgreSQL.
   */
  source?: 'listen' | 'replication';
  /** The replication source (`source: 'replication'`). */
  replication?: {
    /**
     * Logical replication slot. One reader per slot: give each in-process
     * host its own; the relays of one bus share one (one reads, the others wait).
     * @defaultValue "memory_sync"
     */
    slot?: string;
    /** @defaultValue "memory_sync" */
    publication?: string;
    /**
     * WAL the slot may keep on the server. Past it memory-sync drops its own
     * slot, logs an error and flushes, rather than fill the server's disk.
     * Set max_slot_wal_keep_size on the server as well (docs/replication.md).
     * @defaultValue 1073741824 (1 GiB)
     */
    maxRetainedWalBytes?: number;
    /**
     * How often the applied position is confirmed and the slot's lag read.
     * @defaultValue 1000
     */
    statusIntervalMs?: number;
  };
  /** pino logger; defaults to a silent one. */
  logger?: Logger | undefined;
}

const positive = z.number().int().positive();
const D = DEFAULTS;

/** The one validation of the options; the sidecar maps its environment onto it. */
export const optionsSchema = z.object({
  databaseUrl: postgresUrl.optional(),
  poolSize: positive.max(20).default(D.poolSize),
  listener: z
    .object({
      databaseUrl: postgresUrl.optional(),
      paranoidIntervalMs: timerMs().default(D.listener.paranoidIntervalMs),
      queryTimeoutMs: timerMs().default(D.listener.queryTimeoutMs),
      retryMinMs: timerMs().default(D.listener.retryMinMs),
      retryMaxMs: timerMs().default(D.listener.retryMaxMs),
    })
    .prefault({}),
  entities: z
    .object({
      max: positive.default(D.entities.max),
      ttlMs: timerMs().default(D.entities.ttlMs),
      negativeTtlMs: timerMs().default(D.entities.negativeTtlMs),
      maxEvictions: positive.default(D.entities.maxEvictions),
    })
    .prefault({}),
  hotSets: z
    .object({
      maxBytes: positive.default(D.hotSets.maxBytes),
      maxVectorsPerSet: positive.default(D.hotSets.maxVectorsPerSet),
      tooLargeTtlMs: timerMs().default(D.hotSets.tooLargeTtlMs),
    })
    .prefault({}),
  ivfflatProbes: positive.max(50).default(D.ivfflatProbes),
  queryTimeoutMs: timerMs().default(D.queryTimeoutMs),
  retry: z
    .object({
      retries: z.number().int().min(0).max(20).default(D.retry.retries),
      minTimeoutMs: timerMs().default(D.retry.minTimeoutMs),
      maxTimeoutMs: timerMs().default(D.retry.maxTimeoutMs),
    })
    .prefault({}),
  summaryIntervalMs: timerMs(0).default(D.summaryIntervalMs),
  startup: z.object({ dnsRetryMs: timerMs(0).default(D.startup.dnsRetryMs) }).prefault({}),
  bus: z.object({ url: z.string().min(1).optional() }).prefault({}),
  source: z.enum(['listen', 'replication']).optional(),
  replication: z
    .object({
      slot: z.string().regex(CAPTURE_NAME, 'must be 1 to 63 lower-case letters, digits or _').default(D.replication.slot),
      publication: z.string().regex(CAPTURE_NAME, 'must be 1 to 63 lower-case letters, digits or _').default(D.replication.publication),
      maxRetainedWalBytes: positive.min(1024 * 1024).default(D.replication.maxRetainedWalBytes),
      statusIntervalMs: timerMs(10).default(D.replication.statusIntervalMs),
    })
    .prefault({}),
  embedded: z
    .object({
      dataDir: z.string().min(1).default(D.embedded.dataDir),
      inMemory: z.boolean().default(D.embedded.inMemory),
    })
    .prefault({}),
});

export type ResolvedOptions = z.output<typeof optionsSchema>;

/** Validates options (DATABASE_URL filled in from the environment); the error names the offending option. */
export function resolveOptions(options: MemorySyncOptions, env: Record<string, string | undefined> = process.env): ResolvedOptions {
  const { logger: _l, pool: _p, config: _c, personalities, ...rest } = options as MemorySyncOptions & { hooks?: unknown };
  delete (rest as { hooks?: unknown }).hooks;
  if (personalities) rest.entities = { ...personalities, ...rest.entities };
  const embedded = { ...rest.embedded, dataDir: rest.embedded?.dataDir ?? (env.MEMORY_SYNC_DATA_DIR || undefined) };
  const bus = { url: rest.bus?.url ?? (env.MEMORY_SYNC_BUS_URL || undefined) };
  const source = rest.source ?? (env.MEMORY_SYNC_SOURCE || undefined);
  const input = { ...rest, embedded, bus, source, databaseUrl: rest.databaseUrl ?? (env.DATABASE_URL || undefined) };
  return parseOptions(optionsSchema, input, 'options');
}
