import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import pino, { type Logger } from 'pino';
import { CacheCore, type CacheCoreEvents, type ChangeAction, type ChangeInfo, type CoreHooks } from '../cache/core.js';
import type { HotSetStore } from '../cache/hot/hot-sets.js';
import { kernel } from '../cache/hot/kernel.js';
import {
  countPersonalityMemories,
  deleteMemoryById,
  fetchMemoriesByIds,
  insertMemory,
  searchMemories,
  streamPersonalityMemories,
  type SimilarMemory,
} from '../db/memories.js';
import { createPool } from '../db/pool.js';
import { createPrisma, type LlmConfig, type Personality, type PrismaClient } from '../db/prisma.js';
import { withRetry, type RetryOptions } from '../db/retry.js';
import { EMBEDDING_DIMENSION, normalizeInto } from '../embedding.js';
import { ConfigError, NotFoundError, QueryError } from '../errors.js';
import { LogLimiter } from '../log-limit.js';
import { PgListenSource } from '../sources/pg-listen.js';
import type { ChangeSource, SourceState } from '../sources/source.js';
import { validateId, validateSearch, validateStore, type SearchInput, type StoreInput } from '../validation/memory.js';
import { resolveOptions, type MemorySyncOptions, type ResolvedOptions } from './options.js';

export type PersonalityWithConfig = Personality & { llmConfig: LlmConfig | null };
export type { SimilarMemory, SearchInput, StoreInput };

/** What a change did to the caches. */
export type InvalidationAction = ChangeAction;
export type InvalidationInfo = ChangeInfo;

export interface MemorySyncStats {
  hits: number;
  misses: number;
  evictions: number;
  invalidations: Record<string, number>;
  invalidNotifications: number;
  reconnects: number;
  flushes: number;
  hotSetBytes: number;
  hotSets: number;
  hotVectors: number;
  hotSearches: number;
  pgvectorSearches: number;
  abortedFills: number;
  /** The change source's state (named `listener` since 0.1). */
  listener: SourceState;
  /** The change source's name: "listen", "pglite", "nats", "redis". */
  source: string;
  kernel: string;
}

export type MemorySyncEvents = CacheCoreEvents;

/** The lookup and write surface shared by the in-process and the sidecar client. */
export interface MemoryClient {
  getPersonality(id: string): Promise<PersonalityWithConfig | null>;
  findSimilarMemories(input: SearchInput): Promise<SimilarMemory[]>;
  storeMemory(input: StoreInput): Promise<string>;
  deleteMemory(id: string): Promise<boolean>;
  /** Resolves once every change committed before the call has been applied (read-your-writes across processes). */
  sync(timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

const CORE_EVENTS = ['invalidation', 'invalid', 'flush', 'down', 'reconnect', 'up', 'loaded'] as const;

/**
 * The in-process client: a pool, one change source and the cache core.
 * It validates input, asks the core first and the database on a miss, and
 * reports its own writes to the core. What a change does is the core's
 * business (src/cache/core.ts).
 */
export class MemorySync extends EventEmitter<MemorySyncEvents> implements MemoryClient {
  readonly options: ResolvedOptions;
  readonly logger: Logger;
  readonly pool: pg.Pool;
  readonly prisma: PrismaClient;
  readonly source: ChangeSource;
  readonly core: CacheCore<PersonalityWithConfig>;
  private readonly ownsPool: boolean;
  private readonly retry: RetryOptions;
  private pgvectorSearches = 0;
  private summaryTimer: NodeJS.Timeout | undefined;
  /** Aborted by stopRetrying()/close(): calls in flight stop waiting for the database. */
  private readonly lifetime = new AbortController();
  private readonly warnings: LogLimiter;
  private closed = false;

  /** @param hooks test seams only; not part of the public API. */
  constructor(options: MemorySyncOptions = {}, hooks?: CoreHooks) {
    super();
    this.options = resolveOptions(options);
    this.logger = options.logger ?? pino({ level: 'silent' });
    this.warnings = new LogLimiter(this.logger);
    const o = this.options;
    this.retry = {
      ...o.retry,
      signal: this.lifetime.signal,
      onRetry: (err, attempt) =>
        this.warnings.warn('retry', { attempt, err: { message: (err as Error).message } }, 'database call failed; retrying'),
    };
    if (options.pool) {
      this.pool = options.pool;
      this.ownsPool = false;
    } else {
      if (!o.databaseUrl) throw new ConfigError('DATABASE_URL', 'is required (postgresql://user:pass@host:5432/db), or pass `pool`');
      this.pool = createPool({ databaseUrl: o.databaseUrl, max: o.poolSize, ivfflatProbes: o.ivfflatProbes, queryTimeoutMs: o.queryTimeoutMs, logger: this.logger });
      this.ownsPool = true;
    }
    this.prisma = createPrisma(this.pool);
    const listenUrl = o.listener.databaseUrl ?? o.databaseUrl ?? poolUrl(this.pool);
    if (!listenUrl) throw new ConfigError('options.listener.databaseUrl', 'is required when the pool has no connectionString');
    this.source = new PgListenSource({
      databaseUrl: listenUrl,
      logger: this.logger,
      paranoidIntervalMs: o.listener.paranoidIntervalMs,
      queryTimeoutMs: o.listener.queryTimeoutMs,
      backoff: { minMs: o.listener.retryMinMs, maxMs: o.listener.retryMaxMs },
    });

    const store: HotSetStore = {
      count: (pid, limit) => withRetry(() => countPersonalityMemories(this.pool, pid, limit), this.retry),
      stream: (pid, limit, onRow, signal) =>
        withRetry(async () => void (await streamPersonalityMemories(this.pool, pid, limit, onRow, signal)), { ...this.retry, signal }),
      fetch: (ids) => withRetry(() => fetchMemoriesByIds(this.pool, ids), this.retry),
    };
    this.core = new CacheCore<PersonalityWithConfig>({
      logger: this.logger,
      personalities: o.personalities,
      loadPersonality: (id) => this.loadPersonality(id),
      hotSets: { store, ...o.hotSets },
      hooks,
    });
    this.core.connect(this.source);
    for (const name of CORE_EVENTS) this.core.on(name, (...args: unknown[]) => (this.emit as (n: string, ...a: unknown[]) => boolean)(name, ...args));
    this.core.on('invalid', (reason, sample) => this.warnings.warn('invalid', { reason, sample }, 'invalid notification ignored'));
    this.core.on('down', (reason) => this.logger.warn({ reason, source: this.source.name }, 'change source down; serving from the database'));
    this.core.on('reconnect', (lost) => this.logger.warn({ lost, source: this.source.name }, lost ? 'change source back; caches flushed' : 'change source resumed; nothing lost'));
  }

  /**
   * Connects; resolves once the change source is up. Rejects with a
   * PermanentError (wrong database, bad password) instead of retrying forever.
   */
  async start(): Promise<void> {
    await this.source.start();
    if (this.options.summaryIntervalMs > 0) {
      this.summaryTimer = setInterval(() => this.logger.info({ stats: this.stats() }, 'memory-sync summary'), this.options.summaryIntervalMs);
      this.summaryTimer.unref();
    }
  }

  /**
   * Calls waiting out a database outage fail now (DatabaseUnavailableError)
   * instead of retrying: the first step of a graceful shutdown.
   */
  stopRetrying(): void {
    this.lifetime.abort();
  }

  /** Releases every connection it opened; a pool passed in `options.pool` stays open. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.lifetime.abort();
    clearInterval(this.summaryTimer);
    this.core.close();
    await this.source.close();
    if (this.ownsPool) {
      await this.prisma.$disconnect().catch(() => {});
      await this.pool.end().catch(() => {});
    }
  }

  /** Resolves when every change committed before the call has been applied. */
  sync(timeoutMs?: number): Promise<void> {
    return this.source.sync(timeoutMs);
  }

  getPersonality(id: string): Promise<PersonalityWithConfig | null> {
    const hit = this.core.peekPersonality(id);
    if (hit !== undefined) return Promise.resolve(hit);
    try {
      return this.core.getPersonality(validateId(id));
    } catch (err) {
      return Promise.reject(err as Error);
    }
  }

  /**
   * Synchronous hit path for hot loops: the cached personality (or null for a
   * cached "does not exist"), or undefined when only getPersonality() can
   * answer. Never returns a value while the change source is down.
   */
  peekPersonality(id: string): PersonalityWithConfig | null | undefined {
    return this.core.peekPersonality(id);
  }

  private loadPersonality(id: string): Promise<PersonalityWithConfig | null> {
    return withRetry(() => this.prisma.personality.findUnique({ where: { id }, include: { llmConfig: true } }), this.retry);
  }

  async findSimilarMemories(input: SearchInput): Promise<SimilarMemory[]> {
    const q = validateSearch(input);
    const unit = new Float32Array(EMBEDDING_DIMENSION);
    normalizeInto(q.embedding, unit);
    const hot = await this.core.search(q.personalityId, { query: unit, channelId: q.channelId, limit: q.limit, minSimilarity: q.minSimilarity });
    if (hot.status === 'hit') return hot.results;
    this.pgvectorSearches++;
    return withRetry(() => searchMemories(this.pool, q), this.retry);
  }

  async storeMemory(input: StoreInput): Promise<string> {
    const m = validateStore(input);
    const id = randomUUID();
    try {
      await withRetry(() => insertMemory(this.pool, { id, ...m }), this.retry);
    } catch (err) {
      if (err instanceof QueryError && err.sqlState === '23503') {
        throw new NotFoundError(`personality ${m.personalityId} does not exist`);
      }
      throw err;
    }
    this.core.markMemoriesWritten([id], [m.personalityId]);
    return id;
  }

  async deleteMemory(rawId: string): Promise<boolean> {
    const id = validateId(rawId);
    // Known before the delete: if a first attempt commits but its reply is
    // lost, the retry finds nothing, yet the cached copy must still go.
    const holding = this.core.holding(id);
    try {
      const personalityId = await withRetry(() => deleteMemoryById(this.pool, id), this.retry);
      if (personalityId !== null && !holding.includes(personalityId)) holding.push(personalityId);
      return personalityId !== null;
    } finally {
      if (holding.length) this.core.markMemoriesDeleted([id], holding);
    }
  }

  stats(): MemorySyncStats {
    const s = this.core.stats();
    return {
      hits: s.hits,
      misses: s.misses,
      evictions: s.evictions,
      invalidations: s.invalidations,
      invalidNotifications: s.invalidNotifications,
      reconnects: s.reconnects,
      flushes: s.flushes,
      hotSetBytes: s.hotSetBytes,
      hotSets: s.hotSets,
      hotVectors: s.hotVectors,
      hotSearches: s.hotSearches,
      pgvectorSearches: this.pgvectorSearches,
      abortedFills: s.abortedFills,
      listener: this.source.state,
      source: this.source.name,
      kernel: kernel().name,
    };
  }
}

/** The URL a borrowed pool connects with, for the LISTEN connection. */
function poolUrl(pool: pg.Pool): string | undefined {
  const o = (pool as unknown as { options?: { connectionString?: string } }).options;
  return o?.connectionString;
}

/** Creates a client; call start() before use. */
export function createMemorySync(options: MemorySyncOptions = {}): MemorySync {
  return new MemorySync(options);
}
