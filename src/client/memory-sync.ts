import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import pino, { type Logger } from 'pino';
import { CacheCore, type CacheCoreEvents, type ChangeAction, type ChangeInfo, type CoreHooks } from '../cache/core.js';
import type { HotSetStore } from '../cache/hot/hot-sets.js';
import { nativeKernelsFit } from '../cache/hot/quantized.js';
import {
  countPersonalityMemories,
  deleteMemoryById,
  fetchMemoriesByIds,
  insertMemory,
  searchMemories,
  streamPersonalityMemories,
  type SimilarMemory,
} from '../store/memories.js';
import { openEmbedded, type EmbeddedDatabase } from '../backend/embedded.js';
import { deletePersonality, loadPersonality, upsertPersonality, type PersonalityRecord } from '../store/personalities.js';
import { createPool } from '../backend/pool.js';
import { createPrisma, type PrismaClient } from '../backend/prisma.js';
import { postgresDatabase, type Database } from '../backend/queryable.js';
import { isTransient, toPermanent, withRetry, type RetryOptions } from '../backend/retry.js';
import { assertMigrated } from '../capture/schema-check.js';
import { backoffDelay, sleepUnlessAborted } from '../sources/backoff.js';
import { EMBEDDING_DIMENSION, normalizeInto } from '../embedding.js';
import { ConfigError, DatabaseUnavailableError, NotFoundError, PermanentError, QueryError } from '../contract/errors.js';
import { LogLimiter } from '../log-limit.js';
import { BusSource, type BusSourceStats } from '../sources/bus-source.js';
import { createBus } from '../sources/bus/create.js';
import { parseBusUrl, type BusConfig } from '../sources/bus/bus.js';
import { BARRIER_CHANNEL, PgListenSource } from '../sources/pg-listen.js';
import { PgliteSource } from '../sources/pglite.js';
import { createReplicationSource } from '../sources/replication/create.js';
import { DEFAULT_MESSAGE_PREFIX, EMIT_BARRIER_SQL, ReplicationSource, type ReplicationStats } from '../sources/replication/source.js';
import type { ChangeSource, SourceState } from '../sources/source.js';
import { validateId, validateSearch, validateStore, type SearchInput, type StoreInput } from '../validation/memory.js';
import { validatePersonalityInput, type PersonalityInput } from '../validation/personality.js';
import { resolveOptions, type MemorySyncOptions, type ResolvedOptions } from './options.js';

/** A personality with its LLM config, as Prisma's findUnique({ include: { llmConfig: true } }) returns it. */
export type PersonalityWithConfig = PersonalityRecord;
export type { SimilarMemory, SearchInput, StoreInput, PersonalityInput };

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
  /** The hot-search scan: "usearch-int8" (one native call per query), or "js" where usearch's kernels are unavailable. */
  kernel: string;
}

export type MemorySyncEvents = CacheCoreEvents;

/** The lookup and write surface shared by the in-process and the sidecar client. */
/** A loader for cached personalities: (id) => the personality as the caller wants it, or null. */
export type PersonalityLoader = (id: string) => Promise<object | null>;

export interface MemoryClient {
  getPersonality(id: string): Promise<PersonalityWithConfig | null>;
  findSimilarMemories(input: SearchInput): Promise<SimilarMemory[]>;
  storeMemory(input: StoreInput): Promise<string>;
  deleteMemory(id: string): Promise<boolean>;
  /** Creates or replaces a personality (and its LLM config); the caller reads its own write. */
  upsertPersonality(id: string, input: PersonalityInput): Promise<{ personality: PersonalityWithConfig; created: boolean }>;
  /** Deletes a personality with its config and memories; false when there was none. */
  deletePersonality(id: string): Promise<boolean>;
  /** Resolves once every change committed before the call has been applied (read-your-writes across processes). */
  sync(timeoutMs?: number): Promise<void>;
  /**
   * Loads personalities on a miss with `load` instead of memory-sync's own
   * query (memorySyncExtension passes the bot's Prisma, so cached values
   * carry the bot's own columns and types). The same invalidation applies.
   * Returns false when this client keeps no personality cache.
   */
  cachePersonalitiesWith(load: PersonalityLoader): boolean;
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
  /** "postgres" with a DATABASE_URL or a pool; "embedded" (PGlite in process) without. */
  readonly backend: 'postgres' | 'embedded';
  readonly core: CacheCore<PersonalityWithConfig>;
  private readonly _pool: pg.Pool | undefined;
  private _prisma: PrismaClient | undefined;
  private _database: Database | undefined;
  private embedded: EmbeddedDatabase | undefined;
  private _source: ChangeSource | undefined;
  private readonly dataDir: string | undefined;
  private readonly busConfig: BusConfig | undefined;
  private readonly ownsPool: boolean;
  private readonly retry: RetryOptions;
  private pgvectorSearches = 0;
  private personalityLoader: (id: string) => Promise<PersonalityWithConfig | null>;
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
        this.warnings.warn('retry', { attempt, err }, 'database call failed; retrying'),
    };
    this.ownsPool = !options.pool;
    if (options.pool || o.databaseUrl) {
      this.backend = 'postgres';
      this._pool =
        options.pool ??
        createPool({ databaseUrl: o.databaseUrl!, max: o.poolSize, ivfflatProbes: o.ivfflatProbes, queryTimeoutMs: o.queryTimeoutMs, logger: this.logger });
      this._database = postgresDatabase(this._pool);
      const listenUrl = o.listener.databaseUrl ?? o.databaseUrl ?? poolUrl(this._pool);
      if (o.bus.url) this.busConfig = parseBusUrl(o.bus.url, 'options.bus.url'); // fails here, not at start()
      else if (!listenUrl) throw new ConfigError('options.listener.databaseUrl', 'is required when the pool has no connectionString');
      else if (o.source === 'replication') this._source = createReplicationSource({ databaseUrl: listenUrl, logger: this.logger, replication: o.replication, listener: o.listener });
      else this._source = new PgListenSource({
        databaseUrl: listenUrl,
        logger: this.logger,
        paranoidIntervalMs: o.listener.paranoidIntervalMs,
        queryTimeoutMs: o.listener.queryTimeoutMs,
        backoff: { minMs: o.listener.retryMinMs, maxMs: o.listener.retryMaxMs },
      });
    } else {
      if (o.source === 'replication') throw new ConfigError('options.source', '"replication" needs a PostgreSQL server (databaseUrl or pool); the embedded database keeps its in-process source');
      this.backend = 'embedded';
      this.dataDir = o.embedded.inMemory ? undefined : o.embedded.dataDir;
    }

    this.personalityLoader = (id) => withRetry(() => loadPersonality(this.db(), id), this.retry);
    const store: HotSetStore = {
      count: (pid, limit) => withRetry(() => countPersonalityMemories(this.db(), pid, limit), this.retry),
      stream: (pid, limit, onRow, signal) =>
        withRetry(async () => void (await streamPersonalityMemories(this.db(), pid, limit, onRow, signal)), { ...this.retry, signal }),
      fetch: (ids) => withRetry(() => fetchMemoriesByIds(this.db(), ids), this.retry),
    };
    this.core = new CacheCore<PersonalityWithConfig>({
      logger: this.logger,
      personalities: o.personalities,
      loadPersonality: (id) => this.personalityLoader(id),
      hotSets: { store, ...o.hotSets },
      hooks,
    });
    if (this._source) this.core.connect(this._source);
    for (const name of CORE_EVENTS) this.core.on(name, (...args: unknown[]) => (this.emit as (n: string, ...a: unknown[]) => boolean)(name, ...args));
    this.core.on('invalid', (reason, sample) => this.warnings.warn('invalid', { reason, sample }, 'invalid notification ignored'));
    this.core.on('down', (reason) => this.logger.warn({ reason, source: this.source.name }, 'change source down; serving from the database'));
    this.core.on('reconnect', (lost) => this.logger.warn({ lost, source: this.source.name }, lost ? 'change source back; caches flushed' : 'change source resumed; nothing lost'));
  }

  cachePersonalitiesWith(load: PersonalityLoader): boolean {
    this.personalityLoader = load as (id: string) => Promise<PersonalityWithConfig | null>;
    this.core.clearPersonalities(); // what is cached has the old shape
    return true;
  }

  /** The change source: LISTEN on PostgreSQL, in-process listen on the embedded database (after start()). */
  get source(): ChangeSource {
    if (!this._source) throw new DatabaseUnavailableError('the embedded database is not open yet: call start() first');
    return this._source;
  }

  /** A bus source's counters (fleet mode), else undefined. */
  get busStats(): BusSourceStats | undefined {
    return this._source instanceof BusSource ? this._source.stats : undefined;
  }

  /** The replication source's figures (source "replication"), else undefined. */
  get replicationStats(): ReplicationStats | undefined {
    return this._source instanceof ReplicationSource ? this._source.stats : undefined;
  }

  /** The change source's state without throwing: "idle" before start(). */
  get sourceState(): SourceState {
    return this._source?.state ?? 'idle';
  }

  /** The pg pool (PostgreSQL backend only): your own when passed as `options.pool`. */
  get pool(): pg.Pool {
    if (!this._pool) throw new ConfigError('pool', 'the embedded database has no pg pool; set DATABASE_URL to use PostgreSQL');
    return this._pool;
  }

  /** A PrismaClient on the same pool (PostgreSQL backend only), made on first use. */
  get prisma(): PrismaClient {
    this._prisma ??= createPrisma(this.pool);
    return this._prisma;
  }

  /** The database behind the seam (src/backend/queryable.ts): the pool, or the embedded database after start(). */
  get database(): Database {
    return this.db();
  }

  private db(): Database {
    if (!this._database) throw new DatabaseUnavailableError('the embedded database is not open yet: call start() first');
    return this._database;
  }

  /**
   * Connects; resolves once the change source is up. Rejects with a
   * PermanentError (wrong database, bad password) instead of retrying forever.
   */
  async start(): Promise<void> {
    if (this.backend === 'embedded' && !this.embedded) {
      this.embedded = await openEmbedded({ dataDir: this.dataDir, logger: this.logger, ivfflatProbes: this.options.ivfflatProbes });
      this._database = this.embedded.queryable;
      this._source = new PgliteSource({ db: this.embedded.db, logger: this.logger });
      this.core.connect(this._source);
    }
    if (this.busConfig && !this._source) {
      const pool = this.pool;
      this._source = new BusSource({
        bus: await createBus(this.busConfig, { backoff: { minMs: this.options.listener.retryMinMs, maxMs: this.options.listener.retryMaxMs } }),
        logger: this.logger,
        // The barrier goes in through PostgreSQL, so it reaches the bus after every earlier commit.
        notify: (token) =>
          this.options.source === 'replication'
            ? pool.query(EMIT_BARRIER_SQL, [DEFAULT_MESSAGE_PREFIX, token]) // the relays read a slot: a logical message
            : pool.query('SELECT pg_notify($1, $2)', [BARRIER_CHANNEL, token]),
      });
      this.core.connect(this._source);
    }
    await this.checkSchema();
    await this.source.start();
    if (this.options.summaryIntervalMs > 0) {
      this.summaryTimer = setInterval(() => this.logger.info({ stats: this.stats() }, 'memory-sync summary'), this.options.summaryIntervalMs);
      this.summaryTimer.unref();
    }
  }

  /**
   * Waits out an unreachable database (with the reconnect backoff); a
   * missing schema, wrong database or bad password rejects at once.
   */
  private async checkSchema(): Promise<void> {
    const signal = this.lifetime.signal;
    for (let attempt = 1; ; attempt++) {
      try {
        await assertMigrated(this.db());
        return;
      } catch (err) {
        const permanent = err instanceof PermanentError ? err : toPermanent(err);
        if (permanent) throw permanent;
        if (signal.aborted || !isTransient(err)) throw err;
        this.warnings.warn('start', { attempt, err }, 'database not reachable yet; retrying');
        await sleepUnlessAborted(backoffDelay(attempt), signal);
      }
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
    await this._source?.close();
    if (this.ownsPool) {
      await this._prisma?.$disconnect().catch(() => {});
      await this._pool?.end().catch(() => {});
    }
    await this.embedded?.close();
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

  async upsertPersonality(rawId: string, input: PersonalityInput): Promise<{ personality: PersonalityWithConfig; created: boolean }> {
    const id = validateId(rawId);
    const body = validatePersonalityInput(input);
    try {
      return await withRetry(() => upsertPersonality(this.db(), id, body), this.retry);
    } finally {
      // Whatever the outcome, the next read goes to the database: the write may have committed.
      this.core.markPersonalityWritten(id);
    }
  }

  async deletePersonality(rawId: string): Promise<boolean> {
    const id = validateId(rawId);
    try {
      return await withRetry(() => deletePersonality(this.db(), id), this.retry);
    } finally {
      this.core.markPersonalityWritten(id, true);
    }
  }

  async findSimilarMemories(input: SearchInput): Promise<SimilarMemory[]> {
    const q = validateSearch(input);
    const unit = new Float32Array(EMBEDDING_DIMENSION);
    normalizeInto(q.embedding, unit);
    const hot = await this.core.search(q.personalityId, { query: unit, channelId: q.channelId, limit: q.limit, minSimilarity: q.minSimilarity });
    if (hot.status === 'hit') return hot.results;
    this.pgvectorSearches++;
    if (this.ownsPool) return withRetry(() => searchMemories(this.db(), q), this.retry);
    // A borrowed pool (or one behind PgBouncer) lacks our session settings: without iterative
    // scans ivfflat can return fewer rows than the filter lets through. Set them for this query.
    const settings = `SET LOCAL ivfflat.iterative_scan = relaxed_order; SET LOCAL ivfflat.probes = ${this.options.ivfflatProbes}`;
    return withRetry(
      () =>
        this.db().transaction(async (tx) => {
          await tx.query(settings);
          return searchMemories(tx, q);
        }),
      this.retry,
    );
  }

  async storeMemory(input: StoreInput): Promise<string> {
    const m = validateStore(input);
    const id = randomUUID();
    try {
      await withRetry(() => insertMemory(this.db(), { id, ...m }), this.retry);
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
      const personalityId = await withRetry(() => deleteMemoryById(this.db(), id), this.retry);
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
      listener: this.sourceState,
      source: this._source?.name ?? (this.backend === 'embedded' ? 'pglite' : (this.busConfig?.kind ?? 'listen')),
      kernel: nativeKernelsFit(EMBEDDING_DIMENSION).i8 ? 'usearch-int8' : 'js',
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
