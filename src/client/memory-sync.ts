import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import pino, { type Logger } from 'pino';
import { HotSetCache } from '../cache/hot-sets.js';
import { PersonalityCache } from '../cache/personalities.js';
import { deleteMemoryById, insertMemory, searchMemories, type SimilarMemory } from '../db/memories.js';
import { createPool } from '../db/pool.js';
import { createPrisma, type LlmConfig, type Personality, type PrismaClient } from '../db/prisma.js';
import { withRetry, type RetryOptions } from '../db/retry.js';
import { assertUuid, normalizeInto, EMBEDDING_DIMENSION } from '../embedding.js';
import { NotFoundError, QueryError } from '../errors.js';
import { Listener, type ListenerState } from '../listener/listener.js';
import type { InvalidationEvent } from '../listener/payload.js';
import { LogLimiter } from '../log-limit.js';
import { kernel } from '../search/kernel.js';
import { searchHotSet } from '../search/hot-search.js';
import { resolveOptions, type MemorySyncOptions, type ResolvedOptions } from './options.js';
import { validateSearch, validateStore, type SearchInput, type StoreInput } from './validation.js';

export type PersonalityWithConfig = Personality & { llmConfig: LlmConfig | null };
export type { SimilarMemory, SearchInput, StoreInput };

/** What a notification did to the caches. */
export type InvalidationAction = 'evicted' | 'patched' | 'flushed' | 'ignored';

export interface InvalidationInfo {
  event: InvalidationEvent;
  action: InvalidationAction;
  /** Receive time minus the payload's send timestamp. */
  lagMs: number;
}

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
  listener: ListenerState;
  kernel: string;
}

export interface MemorySyncEvents {
  invalidation: [info: InvalidationInfo];
  invalid: [reason: string, sample: string];
  reconnect: [];
  flush: [reason: string];
  down: [reason: string];
  /** LISTEN confirmed (first time and after every reconnect): caches are in use. */
  up: [];
}

/** The lookup and write surface shared by the in-process and the sidecar client. */
export interface MemoryClient {
  getPersonality(id: string): Promise<PersonalityWithConfig | null>;
  findSimilarMemories(input: SearchInput): Promise<SimilarMemory[]>;
  storeMemory(input: StoreInput): Promise<string>;
  deleteMemory(id: string): Promise<boolean>;
  close(): Promise<void>;
}

export class MemorySync extends EventEmitter<MemorySyncEvents> implements MemoryClient {
  readonly options: ResolvedOptions;
  readonly logger: Logger;
  readonly pool: pg.Pool;
  readonly prisma: PrismaClient;
  readonly listener: Listener;
  readonly personalities: PersonalityCache<PersonalityWithConfig>;
  readonly hotSets: HotSetCache;
  private readonly retry: RetryOptions;
  private readonly counters = {
    invalid: 0,
    reconnects: 0,
    flushes: 0,
    hotSearches: 0,
    pgvectorSearches: 0,
    invalidations: {} as Record<string, number>,
  };
  private summaryTimer: NodeJS.Timeout | undefined;
  /** Aborted by stopRetrying()/close(): calls in flight stop waiting for the database. */
  private readonly lifetime = new AbortController();
  private readonly warnings: LogLimiter;
  private closed = false;

  constructor(options: MemorySyncOptions = {}) {
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
    this.pool = createPool({
      databaseUrl: o.databaseUrl,
      max: o.poolSize,
      ivfflatProbes: o.ivfflatProbes,
      queryTimeoutMs: o.queryTimeoutMs,
      logger: this.logger,
    });
    this.prisma = createPrisma(this.pool);
    this.listener = new Listener({ ...o.listener, databaseUrl: o.listener.databaseUrl ?? o.databaseUrl, logger: this.logger });

    const afterRead = options.hooks?.afterPersonalityRead;
    this.personalities = new PersonalityCache<PersonalityWithConfig>({
      ...o.personalities,
      load: async (id) => {
        const value = await this.loadPersonality(id);
        await afterRead?.(id);
        // Shared by every caller: frozen, so one caller cannot change another's copy.
        if (value?.llmConfig) Object.freeze(value.llmConfig);
        if (value) Object.freeze(value);
        return value;
      },
    });
    this.hotSets = new HotSetCache({
      db: this.pool,
      logger: this.logger,
      ...o.hotSets,
      retry: this.retry,
      beforePublish: options.hooks?.beforeHotSetPublish,
    });

    this.listener.on('event', (event, receivedAt) => this.apply(event, receivedAt));
    this.listener.on('invalid', (reason, sample, bytes, structured) => {
      this.counters.invalid++;
      this.warnings.warn('invalid', { reason, bytes, sample }, 'invalid notification ignored');
      this.emit('invalid', reason, sample);
      // A JSON object we cannot read may be a real change in a newer contract
      // (or a renamed table): we cannot tell what it invalidates, so drop everything.
      if (structured) this.flush('unreadable notification');
    });
    this.listener.on('down', (reason) => {
      // Notifications sent from now on are lost to us: stop serving cached data.
      this.hotSets.setEnabled(false);
      this.personalities.clear();
      this.logger.warn({ reason }, 'listener down; serving from the database');
      this.emit('down', reason);
    });
    this.listener.on('up', (reconnected) => {
      if (reconnected) {
        this.counters.reconnects++;
        this.flush('reconnect');
        this.logger.warn('listener reconnected; caches flushed');
        this.emit('reconnect');
      }
      this.hotSets.setEnabled(true);
      this.emit('up');
    });
  }

  /** Connects; resolves once LISTEN is confirmed. */
  async start(): Promise<void> {
    await this.listener.start();
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

  /** Releases every connection. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.lifetime.abort();
    clearInterval(this.summaryTimer);
    this.hotSets.setEnabled(false);
    this.personalities.clear();
    await this.listener.close();
    await this.prisma.$disconnect().catch(() => {});
    await this.pool.end().catch(() => {});
  }

  /** Resolves when every notification committed before the call has been applied. */
  sync(timeoutMs?: number): Promise<void> {
    return this.listener.sync(timeoutMs);
  }

  getPersonality(id: string): Promise<PersonalityWithConfig | null> {
    const hit = this.peekPersonality(id);
    return hit === undefined ? this.getPersonalitySlow(id) : Promise.resolve(hit);
  }

  /**
   * Synchronous hit path for hot loops: the cached personality (or null for a
   * cached "does not exist"), or undefined when only getPersonality() can
   * answer. Never returns a value while the listener is down.
   */
  peekPersonality(id: string): PersonalityWithConfig | null | undefined {
    return this.listener.isUp ? this.personalities.peek(id) : undefined;
  }

  private async getPersonalitySlow(rawId: string): Promise<PersonalityWithConfig | null> {
    const id = assertUuid(rawId, 'id');
    // Listener down: a cached value may have missed its invalidation.
    if (!this.listener.isUp) return this.loadPersonality(id);
    return this.personalities.get(id);
  }

  private loadPersonality(id: string): Promise<PersonalityWithConfig | null> {
    return withRetry(() => this.prisma.personality.findUnique({ where: { id }, include: { llmConfig: true } }), this.retry);
  }

  async findSimilarMemories(input: SearchInput): Promise<SimilarMemory[]> {
    const q = validateSearch(input);
    const set = this.hotSets.get(q.personalityId);
    if (set) {
      const unit = new Float32Array(EMBEDDING_DIMENSION);
      normalizeInto(q.embedding, unit);
      const hits = await searchHotSet(
        set,
        { query: unit, channelId: q.channelId, limit: q.limit, minSimilarity: q.minSimilarity },
        () => this.hotSets.isCurrent(set),
      );
      if (hits) {
        this.counters.hotSearches++;
        return hits;
      }
    }
    this.counters.pgvectorSearches++;
    return withRetry(() => searchMemories(this.pool, q), this.retry);
  }

  async storeMemory(input: StoreInput): Promise<string> {
    const m = validateStore(input);
    const id = randomUUID();
    try {
      await withRetry(() => insertMemory(this.pool, { id, ...m }), this.retry);
    } catch (err) {
      if (err instanceof QueryError && err.code === '23503') {
        throw new NotFoundError(`personality ${m.personalityId} does not exist`);
      }
      throw err;
    }
    // Read-your-writes: the set is refreshed before it is served again.
    this.hotSets.refreshRows([id], [m.personalityId]);
    return id;
  }

  async deleteMemory(rawId: string): Promise<boolean> {
    const id = assertUuid(rawId, 'id');
    // Known before the delete: if a first attempt commits but its reply is
    // lost, the retry finds nothing, yet the cached copy must still go.
    const holding = this.hotSets.holding(id);
    try {
      const personalityId = await withRetry(() => deleteMemoryById(this.pool, id), this.retry);
      if (personalityId !== null && !holding.includes(personalityId)) holding.push(personalityId);
      return personalityId !== null;
    } finally {
      if (holding.length) this.hotSets.removeRows([id], holding);
    }
  }

  stats(): MemorySyncStats {
    const p = this.personalities.stats();
    const h = this.hotSets.stats();
    return {
      hits: p.hits,
      misses: p.misses,
      evictions: p.evictions + h.evictions,
      invalidations: { ...this.counters.invalidations },
      invalidNotifications: this.counters.invalid,
      reconnects: this.counters.reconnects,
      flushes: this.counters.flushes,
      hotSetBytes: h.bytes,
      hotSets: h.sets,
      hotVectors: h.vectors,
      hotSearches: this.counters.hotSearches,
      pgvectorSearches: this.counters.pgvectorSearches,
      abortedFills: p.abortedFills,
      listener: this.listener.state,
      kernel: kernel().name,
    };
  }

  private flush(reason: string): void {
    this.personalities.clear();
    this.hotSets.clear();
    this.counters.flushes++;
    this.emit('flush', reason);
  }

  private flushed(e: InvalidationEvent): void {
    this.counters.flushes++;
    this.logger.warn({ table: e.table, op: e.op, scope: e.scope }, 'cache flushed by a table-wide change');
    this.emit('flush', `${e.table}.${e.op}`);
  }

  private apply(event: InvalidationEvent, receivedAt: number): void {
    const action = this.act(event);
    const key = `${event.table}.${event.op}`;
    this.counters.invalidations[key] = (this.counters.invalidations[key] ?? 0) + 1;
    const lagMs = receivedAt - event.ts;
    this.logger.debug(
      {
        table: event.table,
        op: event.op,
        scope: event.scope,
        ids: event.ids.length,
        personalities: event.personalityIds.length,
        lagMs: Math.round(lagMs * 1000) / 1000,
        action,
      },
      'invalidation',
    );
    this.emit('invalidation', { event, action, lagMs });
  }

  private act(e: InvalidationEvent): InvalidationAction {
    const pids = e.personalityIds;
    if (e.table === 'memories') {
      if (e.scope === 'table') {
        this.hotSets.clear();
        this.flushed(e);
        return 'flushed';
      }
      if (e.scope === 'personalities') return this.hotSets.drop(pids) ? 'evicted' : 'ignored';
      const touched = e.op === 'DELETE' ? this.hotSets.removeRows(e.ids, pids) : this.hotSets.refreshRows(e.ids, pids);
      return touched ? 'patched' : 'ignored';
    }
    if (e.scope === 'table') {
      this.personalities.clear();
      // TRUNCATE personalities cascades to memories.
      if (e.table === 'personalities') this.hotSets.clear();
      this.flushed(e);
      return 'flushed';
    }
    let touched = this.personalities.delete(pids) > 0;
    if (e.table === 'personalities' && e.op === 'DELETE') touched = this.hotSets.drop(pids) || touched;
    return touched ? 'evicted' : 'ignored';
  }
}

/** Creates a client; call start() before use. */
export function createMemorySync(options: MemorySyncOptions = {}): MemorySync {
  return new MemorySync(options);
}

