import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import pino, { type Logger } from 'pino';
import { openEmbedded, type EmbeddedDatabase } from '../backend/embedded.js';
import { createPool } from '../backend/pool.js';
import { createPrisma, type PrismaClient } from '../backend/prisma.js';
import { postgresDatabase, type Database, type Queryable } from '../backend/queryable.js';
import { dnsFailure, dnsPermanentError, isTransient, toPermanent, withRetry, type RetryOptions } from '../backend/retry.js';
import { CacheCore, type CacheCoreEvents, type ChangeAction, type ChangeInfo, type CollectionOptions, type CoreHooks, type EntityOptions } from '../cache/core.js';
import type { PartitionStore } from '../cache/hot/hot-sets.js';
import type { PgvectorArithmetic } from '../cache/hot/int8/pgvector-distance.js';
import { probeArithmetic } from '../cache/hot/int8/probe.js';
import type { FilterCondition } from '../cache/hot/partition-set.js';
import { nativeKernelsFit } from '../cache/hot/int8/kernel-fit.js';
import { replicationTables } from '../capture/publication.js';
import { assertCaptureInstalled } from '../capture/install.js';
import { assertPrivileges, runtimeNeeds } from '../capture/privileges.js';
import { barrierChannel } from '../contract/change-event.js';
import type {
  CollectionClient,
  CollectionHit,
  CollectionNames,
  CollectionSearch,
  EntityClient,
  EntityLoaderFn,
  EntityNames,
  EntityValue,
  EntityWhere,
  MemoryClient,
  PersonalityInput,
  PersonalityWithConfig,
  SearchInput,
  SimilarMemory,
  StoreInput,
} from '../contract/client.js';
import { ConfigError, DatabaseUnavailableError, NotFoundError, PermanentError, QueryError } from '../contract/errors.js';
import type { CollectionShape, EntityShape, SchemaShape } from '../contract/shape.js';
import { normalizeInto } from '../embedding.js';
import { LogLimiter } from '../log-limit.js';
import { collectionShape, entityShape, watchShape, type Binding } from '../schema/binding.js';
import { BUILTIN, BUILTIN_DECLARATION } from '../schema/builtin.js';
import { readCatalog, resolveAgainst, type Resolved } from '../schema/catalog.js';
import type { Declaration } from '../schema/declaration.js';
import { bindDeclaration, loadDeclaration, type LoadedDeclaration } from '../schema/load.js';
import { backoffDelay, sleepUnlessAborted } from '../sources/backoff.js';
import { BusSource, type BusSourceStats } from '../sources/bus-source.js';
import { parseBusUrl, type BusConfig } from '../sources/bus/bus.js';
import { createBus } from '../sources/bus/create.js';
import { PgListenSource } from '../sources/pg-listen.js';
import { PgliteSource } from '../sources/pglite.js';
import { createReplicationSource } from '../sources/replication/create.js';
import { bindingMapper } from '../sources/replication/mapper.js';
import { DEFAULT_MESSAGE_PREFIX, EMIT_BARRIER_SQL, ReplicationSource, type ReplicationStats } from '../sources/replication/source.js';
import type { ChangeSource, SourceState } from '../sources/source.js';
import { CollectionStore, type CollectionQuery } from '../store/collections.js';
import { EntityLoader } from '../store/entities.js';
import { PersonalityStore } from '../store/personalities.js';
import { lookupFrom, parseSearch, searchSchema } from '../validation/collection.js';
import { validateId, validateSearch, validateStore } from '../validation/memory.js';
import { validatePersonalityInput } from '../validation/personality.js';
import { resolveOptions, type MemorySyncOptions, type ResolvedOptions } from './options.js';

export type { PersonalityWithConfig, SimilarMemory, SearchInput, StoreInput, PersonalityInput, MemoryClient };

/** What a change did to the caches. */
export type InvalidationAction = ChangeAction;
export type InvalidationInfo = ChangeInfo;

export interface MemorySyncStats {
  hits: number;
  misses: number;
  evictions: number;
  invalidations: Record<string, number>;
  invalidNotifications: number;
  /** Other programs' payloads on memory-sync's channel (ignored). */
  foreignNotifications: number;
  reconnects: number;
  flushes: number;
  hotSetBytes: number;
  hotSets: number;
  hotVectors: number;
  hotSearches: number;
  pgvectorSearches: number;
  /** pgvector answers shorter than the limit (an index that stopped early, or fewer rows qualify), asked again without the index. */
  pgvectorShortAnswers: number;
  abortedFills: number;
  /** Rows left out of hot sets because their vector has another dimension. */
  wrongDimension: number;
  /** The change source's state (named `listener` since 0.1). */
  listener: SourceState;
  /** The change source's name: "listen", "pglite", "nats", "redis". */
  source: string;
  /** The hot-search scan: "usearch-int8" (one native call per query), or "js". */
  kernel: string;
  /** Per declared entity and collection. */
  entities: Record<string, { size: number; hits: number; misses: number; invalidated: number }>;
  /**
   * `arithmetic`: the float32 summation the server's pgvector uses for `<=>`
   * at the collection's dimension ("avx2-fma", "avx512-fma", "neon-fma", "sequential"),
   * or "unknown": then hot searches answer only where rounding cannot
   * decide, and pgvector answers the rest.
   */
  collections: Record<string, { sets: number; vectors: number; bytes: number; wrongDimension: number; arithmetic: string }>;
}

export type MemorySyncEvents = CacheCoreEvents;

const CORE_EVENTS = ['invalidation', 'invalid', 'flush', 'down', 'reconnect', 'up', 'loaded', 'wrongDimension'] as const;

/** Everything built from the declaration once the database is known. */
interface Schema {
  binding: Binding;
  resolved: Resolved;
  entities: Map<string, { shape: EntityShape; loader: EntityLoader }>;
  collections: Map<string, { shape: CollectionShape; store: CollectionStore; schema: ReturnType<typeof searchSchema> }>;
  personalities: PersonalityStore | undefined;
  /** How the server's pgvector sums `<=>`, per dimension (probed once at start). */
  arithmetic: Map<number, PgvectorArithmetic | null>;
}

/**
 * The in-process client: a declaration bound to the database, a pool, one
 * change source and the cache core. It validates input, asks the core first
 * and the database on a miss, and reports its own writes to the core. What a
 * change does is the core's business (src/cache/core.ts).
 */
export class MemorySync<D extends Declaration = Declaration> extends EventEmitter<MemorySyncEvents> implements MemoryClient {
  readonly options: ResolvedOptions;
  readonly logger: Logger;
  /** "postgres" with a DATABASE_URL or a pool; "embedded" (PGlite in process) without. */
  readonly backend: 'postgres' | 'embedded';
  private _core: CacheCore | undefined;
  private bound: Schema | undefined;
  private readonly _pool: pg.Pool | undefined;
  private _prisma: PrismaClient | undefined;
  private _database: Database | undefined;
  private embedded: EmbeddedDatabase | undefined;
  private _source: ChangeSource | undefined;
  private readonly dataDir: string | undefined;
  private readonly busConfig: BusConfig | undefined;
  private readonly listenUrl: string | undefined;
  private readonly ownsPool: boolean;
  private readonly retry: RetryOptions;
  private pgvectorSearches = 0;
  /** pgvector answers shorter than the limit, asked again without the index. */
  private pgvectorShortAnswers = 0;
  private readonly loaders = new Map<string, EntityLoaderFn>();
  private summaryTimer: NodeJS.Timeout | undefined;
  /** Aborted by stopRetrying()/close(): calls in flight stop waiting for the database. */
  private readonly lifetime = new AbortController();
  private readonly warnings: LogLimiter;
  private readonly declarationInput: D | string | undefined;
  private closed = false;
  private starting: Promise<void> | undefined;

  /** @param hooks test seams only; not part of the public API. */
  constructor(
    options: MemorySyncOptions<D> = {},
    private readonly hooks?: CoreHooks,
  ) {
    super();
    this.options = resolveOptions(options as MemorySyncOptions);
    this.logger = options.logger ?? pino({ level: 'silent' });
    this.warnings = new LogLimiter(this.logger);
    this.declarationInput = options.config ?? (process.env.MEMORY_SYNC_CONFIG || undefined);
    const o = this.options;
    this.retry = {
      ...o.retry,
      signal: this.lifetime.signal,
      onRetry: (err, attempt) => this.warnings.warn('retry', { attempt, err }, 'database call failed; retrying'),
    };
    this.ownsPool = !options.pool;
    if (options.pool || o.databaseUrl) {
      this.backend = 'postgres';
      this._pool =
        options.pool ??
        createPool({ databaseUrl: o.databaseUrl!, max: o.poolSize, ivfflatProbes: o.ivfflatProbes, queryTimeoutMs: o.queryTimeoutMs, logger: this.logger });
      this._database = postgresDatabase(this._pool);
      this.listenUrl = o.listener.databaseUrl ?? o.databaseUrl ?? poolUrl(this._pool);
      if (o.bus.url) this.busConfig = parseBusUrl(o.bus.url, 'options.bus.url'); // fails here, not at start()
      else if (!this.listenUrl) throw new ConfigError('options.listener.databaseUrl', 'is required when the pool has no connectionString');
    } else {
      if (o.source === 'replication') throw new ConfigError('options.source', '"replication" needs a PostgreSQL server (databaseUrl or pool); the embedded database keeps its in-process source');
      if (o.bus.url) throw new ConfigError('options.bus.url', 'needs a PostgreSQL server (databaseUrl or pool): the bus carries its changes, the embedded database has none to share');
      this.backend = 'embedded';
      this.dataDir = o.embedded.inMemory ? undefined : o.embedded.dataDir;
    }
  }

  /** The cache core (after start()). */
  get core(): CacheCore {
    if (!this._core) throw new DatabaseUnavailableError('memory-sync is not started yet: call start() first');
    return this._core;
  }

  /** The declaration bound to the schema (after start()). */
  get binding(): Binding {
    return this.ready().binding;
  }

  /** The binding checked against the database (after start()): jobs and the index guard use it. */
  get resolved(): Resolved {
    return this.ready().resolved;
  }

  /** What a remote client's local cache needs of the declaration (GET /v1/schema). */
  schemaShape(): SchemaShape {
    const s = this.ready();
    return {
      channel: s.binding.channel,
      entities: [...s.entities.values()].map((e) => e.shape),
      collections: [...s.collections.values()].map((c) => c.shape),
      watched: watchShape(s.binding, s.resolved.facts),
    };
  }

  /** The change source: LISTEN on PostgreSQL, in-process listen on the embedded database (after start()). */
  get source(): ChangeSource {
    if (!this._source) throw new DatabaseUnavailableError('memory-sync is not started yet: call start() first');
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

  /** A PrismaClient of memory-sync's own schema on the same pool (PostgreSQL backend only), made on first use. */
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

  private ready(): Schema {
    if (!this.bound) throw new DatabaseUnavailableError('memory-sync is not started yet: call start() first');
    return this.bound;
  }

  /**
   * Loads and binds the declaration, connects, checks the tables and the
   * change capture; resolves once the change source is up. Rejects with a
   * ConfigError for a declaration mistake and a PermanentError (wrong
   * database, bad password, tables or triggers missing) instead of retrying.
   */
  start(): Promise<void> {
    // A failed start (the tables are not migrated yet, say) may be tried again.
    this.starting ??= this.startUp().catch((err: unknown) => {
      this.starting = undefined;
      throw err;
    });
    return this.starting;
  }

  private async startUp(): Promise<void> {
    const loaded: LoadedDeclaration =
      typeof this.declarationInput === 'object'
        ? { declaration: this.declarationInput, source: 'options.config', baseDir: process.cwd() }
        : await loadDeclaration(this.declarationInput);
    const binding = bindDeclaration(loaded);
    const builtin = loaded.source === 'built-in';
    if (this.backend === 'embedded' && !this.embedded) {
      if (!builtin) throw new ConfigError('DATABASE_URL', `a declaration of your own schema (${loaded.source}) needs your PostgreSQL: set DATABASE_URL`);
      this.embedded = await openEmbedded({ dataDir: this.dataDir, logger: this.logger, ivfflatProbes: this.options.ivfflatProbes });
      this._database = this.embedded.queryable;
    }
    const mode = this.embedded ? 'listen' : this.captureMode(binding);
    const resolved = await this.checkSchema(binding, mode);
    this.bound = this.buildSchema(binding, resolved, builtin);
    for (const d of new Set([...resolved.collections.values()].map((c) => c.dimension))) this.bound.arithmetic.set(d, await this.probeArithmetic(d));
    this._core = this.buildCore(this.bound);
    this._source = await this.buildSource(binding, resolved, mode);
    this._core.connect(this._source);
    await this._source.start();
    if (this.options.summaryIntervalMs > 0) {
      this.summaryTimer = setInterval(() => this.logger.info({ stats: this.stats() }, 'memory-sync summary'), this.options.summaryIntervalMs);
      this.summaryTimer.unref();
    }
  }

  /**
   * Waits out an unreachable database (with the reconnect backoff), and a
   * host name that does not resolve for `startup.dnsRetryMs`; tables that do
   * not match the declaration, missing triggers, a wrong database or a bad
   * password reject at once.
   */
  private async checkSchema(binding: Binding, mode: 'listen' | 'replication'): Promise<Resolved> {
    const signal = this.lifetime.signal;
    const started = performance.now();
    for (let attempt = 1; ; attempt++) {
      try {
        // Privileges first: a schema the role may not use makes its tables look missing.
        await assertPrivileges(this.db(), runtimeNeeds(binding));
        const resolved = resolveAgainst(binding, await readCatalog(this.db(), binding));
        // Triggers matter only to LISTEN (and LISTEN relays); a slot publishes the tables itself.
        if (mode === 'listen') await assertCaptureInstalled(this.db(), binding);
        for (const u of resolved.unconstrained) this.logger.warn({ relation: u }, 'a followed relation has no foreign key: changes are still seen, but rows may point nowhere');
        return resolved;
      } catch (err) {
        const dns = dnsFailure(err);
        if (dns && !signal.aborted) {
          const waited = performance.now() - started;
          if (waited >= this.options.startup.dnsRetryMs) throw dnsPermanentError(dns, attempt > 1 ? waited : 0, err);
          this.warnings.warn('start', { attempt, host: dns.host, code: dns.code }, 'database host does not resolve yet; retrying');
          await sleepUnlessAborted(Math.min(backoffDelay(attempt), this.options.startup.dnsRetryMs - waited), signal);
          continue;
        }
        const permanent = err instanceof PermanentError ? err : toPermanent(err);
        if (permanent) throw permanent;
        if (signal.aborted || !isTransient(err)) throw err;
        this.warnings.warn('start', { attempt, err }, 'database not reachable yet; retrying');
        await sleepUnlessAborted(backoffDelay(attempt), signal);
      }
    }
  }

  private buildSchema(binding: Binding, resolved: Resolved, builtin: boolean): Schema {
    const entities = new Map<string, { shape: EntityShape; loader: EntityLoader }>();
    for (const e of binding.entities.values()) entities.set(e.name, { shape: entityShape(binding, e, resolved.facts), loader: new EntityLoader(binding, e) });
    const collections = new Map<string, { shape: CollectionShape; store: CollectionStore; schema: ReturnType<typeof searchSchema> }>();
    for (const c of binding.collections.values()) {
      const r = resolved.collections.get(c.name)!;
      const shape = collectionShape(c, r.dimension, resolved.facts);
      collections.set(c.name, { shape, store: new CollectionStore(binding, c, r), schema: searchSchema(shape) });
    }
    const personalities = builtin ? new PersonalityStore(binding, entities.get(BUILTIN.personality)!.loader) : undefined;
    return { binding, resolved, entities, collections, personalities, arithmetic: new Map() };
  }

  /** The server's summation for `<=>` (cache/hot/int8/probe.ts); unknown is fine: the hot sets then answer only when rounding cannot matter. */
  private async probeArithmetic(dimension: number): Promise<PgvectorArithmetic | null> {
    const found = await withRetry(() => probeArithmetic(this.db(), dimension), this.retry);
    if (found) this.logger.debug({ dimension, arithmetic: found.name }, "pgvector's <=> arithmetic");
    else {
      this.logger.warn(
        { dimension, arithmetic: 'unknown' },
        "pgvector's <=> sums in an order memory-sync does not know (not a gcc build for x86-64 or aarch64): hot searches stay exact but ask pgvector whenever rounding could decide, so fewer are served from memory",
      );
    }
    return found;
  }

  private buildCore(s: Schema): CacheCore {
    const o = this.options;
    const entities: EntityOptions<object>[] = [...s.entities.values()].map(({ shape, loader }) => ({
      shape,
      ...o.entities,
      canon: (f) => shape.root.fields.find((x) => x.name === f)?.canon,
      load: (index, values) => this.loadEntity(shape, loader, index, values),
    }));
    const collections: CollectionOptions[] = [...s.collections.values()].map(({ shape, store }) => {
      const partitionStore: PartitionStore = {
        count: (p, limit) => withRetry(() => store.count(this.db(), p, limit), this.retry),
        stream: (p, limit, onRow, signal) => withRetry(async () => void (await store.stream(this.db(), p, limit, onRow, signal)), { ...this.retry, signal }),
        fetch: (ids) => withRetry(() => store.fetch(this.db(), ids), this.retry),
      };
      const key = s.binding.collections.get(shape.name)!.key;
      return {
        shape,
        store: partitionStore,
        ...o.hotSets,
        canon: shape.partitionBy.map((f) => f.canon),
        idOrder: key.type === 'Int' || key.type === 'BigInt' ? 'numeric' : 'text',
        arithmetic: s.arithmetic.get(shape.dimension) ?? null,
      };
    });
    const core = new CacheCore({ logger: this.logger, entities, collections, watched: watchShape(s.binding, s.resolved.facts), hooks: this.hooks });
    for (const name of CORE_EVENTS) core.on(name, (...args: unknown[]) => (this.emit as (n: string, ...a: unknown[]) => boolean)(name, ...args));
    core.on('invalid', (reason, sample, ours) =>
      ours
        ? this.warnings.warn('invalid', { reason, sample }, 'unreadable memory-sync payload; caches flushed')
        : this.warnings.warn('foreign', { reason, sample }, "another program's payload on memory-sync's channel ignored", 60_000),
    );
    core.on('wrongDimension', (collection, id, dimension) =>
      this.warnings.warn('dimension', { collection, id, dimension, expected: s.collections.get(collection)?.shape.dimension }, 'a stored vector has another dimension than its collection: left out of searches'),
    );
    core.on('down', (reason) => this.logger.warn({ reason, source: this._source?.name }, 'change source down; serving from the database'));
    core.on('reconnect', (lost) => this.logger.warn({ lost, source: this._source?.name }, lost ? 'change source back; caches flushed' : 'change source resumed; nothing lost'));
    return core;
  }

  /** How changes reach this process: the option (or MEMORY_SYNC_SOURCE), else what the declaration captures with. */
  private captureMode(binding: Binding): 'listen' | 'replication' {
    const chosen = this.options.source;
    if (chosen === 'listen' && binding.captureSource === 'replication') {
      // No trigger sends anything: LISTEN would hear nothing and serve stale entries.
      throw new ConfigError('options.source', `"listen" hears nothing: ${binding.source} captures by replication (source: "replication"), so no trigger notifies; drop MEMORY_SYNC_SOURCE=listen or declare source "triggers" and run memory-sync adopt`);
    }
    return chosen ?? (binding.captureSource === 'replication' ? 'replication' : 'listen');
  }

  private async buildSource(binding: Binding, resolved: Resolved, mode: 'listen' | 'replication'): Promise<ChangeSource> {
    const o = this.options;
    if (this.embedded) return new PgliteSource({ db: this.embedded.db, logger: this.logger, channel: binding.channel });
    if (this.busConfig) {
      const pool = this.pool;
      const channel = barrierChannel(binding.channel);
      return new BusSource({
        bus: await createBus(this.busConfig, { backoff: { minMs: o.listener.retryMinMs, maxMs: o.listener.retryMaxMs } }),
        logger: this.logger,
        // The barrier goes in through PostgreSQL, so it reaches the bus after every earlier commit:
        // as a logical message when the relays read a slot, else on the barrier channel.
        notify: (token) =>
          mode === 'replication' ? pool.query(EMIT_BARRIER_SQL, [DEFAULT_MESSAGE_PREFIX, token]) : pool.query('SELECT pg_notify($1, $2)', [channel, token]),
      });
    }
    if (mode === 'replication') {
      const schema = resolved.catalog.currentSchema;
      return createReplicationSource({
        databaseUrl: this.listenUrl!,
        logger: this.logger,
        replication: o.replication,
        listener: o.listener,
        tables: replicationTables(binding, schema),
        mapper: bindingMapper(binding, schema),
      });
    }
    return new PgListenSource({
      databaseUrl: this.listenUrl!,
      channel: binding.channel,
      logger: this.logger,
      paranoidIntervalMs: o.listener.paranoidIntervalMs,
      queryTimeoutMs: o.listener.queryTimeoutMs,
      backoff: { minMs: o.listener.retryMinMs, maxMs: o.listener.retryMaxMs },
    });
  }

  /** A miss: the loader the extension installed (the bot's Prisma), else memory-sync's own statement. */
  private loadEntity(shape: EntityShape, loader: EntityLoader, index: number, values: readonly unknown[]): Promise<object | null> {
    const custom = this.loaders.get(shape.name);
    const lookup = shape.lookups[index]!;
    if (custom) return withRetry(() => custom({ name: lookup.name, fields: lookup.fields, values }), this.retry);
    return withRetry(() => loader.load(this.db(), index, values), this.retry);
  }

  cacheEntityWith(name: string, load: EntityLoaderFn): boolean {
    if (!this.ready().entities.has(name)) return false;
    this.loaders.set(name, load);
    this.core.clearEntity(name); // what is cached has the old shape
    return true;
  }

  /** @deprecated since 0.2: cacheEntityWith('personality', …). */
  cachePersonalitiesWith(load: (id: string) => Promise<object | null>): boolean {
    return this.cacheEntityWith(BUILTIN.personality, ({ values }) => load(String(values[0])));
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
    await this.starting?.catch(() => {});
    this._core?.close();
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

  // ---------------------------------------------------------------- entities

  /** A declared entity: get(id) or get({ slug }), served from the invalidated cache. */
  entity<N extends EntityNames<D>>(name: N): EntityClient<EntityValue<D, N>> {
    const e = this.ready().entities.get(name);
    if (!e) throw new ConfigError('entity', `no entity ${JSON.stringify(name)} is declared (${[...this.ready().entities.keys()].join(', ') || 'none'})`);
    const shape = e.shape;
    return {
      get: (where: EntityWhere) => {
        try {
          const { index, values } = lookupFrom(shape, where);
          const hit = this.core.peekEntity(name, index, values);
          if (hit !== undefined) return Promise.resolve(hit as EntityValue<D, N> | null);
          return this.core.getEntity(name, index, values) as Promise<EntityValue<D, N> | null>;
        } catch (err) {
          return Promise.reject(err as Error);
        }
      },
    };
  }

  /**
   * Synchronous hit path for hot loops: the cached value (or null for a
   * cached "none"), or undefined when only entity().get() can answer. Never
   * a value while the change source is down.
   */
  peekEntity(name: EntityNames<D>, where: EntityWhere): object | null | undefined {
    const e = this.ready().entities.get(name);
    if (!e) return undefined;
    const { index, values } = lookupFrom(e.shape, where);
    return this.core.peekEntity(name, index, values);
  }

  // ------------------------------------------------------------- collections

  /** A declared collection: exact search, from memory when the partition is hot. */
  collection<N extends CollectionNames<D>>(name: N): CollectionClient {
    const c = this.ready().collections.get(name);
    if (!c) throw new ConfigError('collection', `no collection ${JSON.stringify(name)} is declared (${[...this.ready().collections.keys()].join(', ') || 'none'})`);
    return { search: (input: CollectionSearch) => this.searchCollection(name, input) };
  }

  private async searchCollection(name: string, input: unknown): Promise<CollectionHit[]> {
    const c = this.ready().collections.get(name)!;
    const q = parseSearch(c.shape, c.schema, input);
    const hits = await this.searchParsed(name, q);
    return hits.map((h) => {
      const out: Record<string, unknown> = { id: h.id, similarity: h.similarity };
      c.shape.select.forEach((f, i) => (out[f.name] = h.values[i]));
      return out as CollectionHit;
    });
  }

  private async searchParsed(name: string, q: ReturnType<typeof parseSearch>): Promise<{ id: string; similarity: number; values: readonly unknown[] }[]> {
    const c = this.ready().collections.get(name)!;
    const unit = new Float32Array(c.shape.dimension);
    normalizeInto(q.embedding, unit);
    const hot = await this.core.search(name, q.partition, {
      query: unit,
      where: q.where.map((w) => ({ column: w.index, condition: hotCondition(c.shape.filters[w.index]!, w.condition) })),
      limit: q.limit,
      minSimilarity: q.minSimilarity,
    });
    if (hot.status === 'hit') return hot.results;
    this.pgvectorSearches++;
    const query: CollectionQuery = {
      partition: q.partition,
      where: q.where.map((w) => ({ field: w.field, condition: w.condition as CollectionQuery['where'][number]['condition'] })),
      // The same float32 query the hot set scores: both paths then round alike.
      embedding: unit,
      limit: q.limit,
      minSimilarity: q.minSimilarity,
    };
    return withRetry(() => this.pgvectorSearch(c.store, query), this.retry);
  }

  /**
   * pgvector with the same predicate. A borrowed pool (or one behind
   * PgBouncer) lacks our session settings, so they are set for the query.
   * An answer shorter than `limit` is asked again without the index: an
   * index may stop early under a selective filter, and the answer is never
   * short because of it.
   */
  private async pgvectorSearch(store: CollectionStore, q: CollectionQuery) {
    const run = (db: Queryable) => store.search(db, q);
    const local = async (tx: Queryable, settings: string[]) => {
      for (const s of settings) await tx.query(`SET LOCAL ${s}`); // one statement each: PGlite prepares every query
      return run(tx);
    };
    const hits =
      this.ownsPool || this.backend === 'embedded'
        ? await run(this.db())
        : await this.db().transaction((tx) => local(tx, ['ivfflat.iterative_scan = relaxed_order', 'hnsw.iterative_scan = relaxed_order', `ivfflat.probes = ${this.options.ivfflatProbes}`]));
    if (hits.length >= q.limit) return hits;
    this.pgvectorShortAnswers++;
    return store.search(this.db(), q, true);
  }

  /** Inserts a row into a collection (`data` in Prisma field names); idempotent by id. Returns the id. */
  async insertInto(name: CollectionNames<D> | (string & {}), data: Record<string, unknown>, embedding: Float32Array): Promise<string> {
    const s = this.ready();
    const c = s.collections.get(name);
    if (!c) throw new ConfigError('collection', `no collection ${JSON.stringify(name)} is declared`);
    const key = c.store.collection.key;
    const id = (data[key.name] as string | undefined) ?? randomUUID();
    const row = { ...data, [key.name]: id };
    const { text, values } = c.store.insertStatement(s.binding, row, embedding);
    await withRetry(() => this.db().query(text, values), this.retry);
    const texts: Record<string, string | null> = {};
    for (const f of c.shape.partitionBy) texts[f.name] = row[f.name] === undefined || row[f.name] === null ? null : String(row[f.name]);
    texts[key.name] = id;
    this.core.markWritten(c.shape.model, [texts]);
    return id;
  }

  /** Deletes a collection row by id; false when there was none. */
  async deleteFrom(name: CollectionNames<D> | (string & {}), id: string): Promise<boolean> {
    const s = this.ready();
    const c = s.collections.get(name);
    if (!c) throw new ConfigError('collection', `no collection ${JSON.stringify(name)} is declared`);
    try {
      return (await withRetry(() => c.store.delete(this.db(), id), this.retry)) !== null;
    } finally {
      // Whatever the outcome (a first attempt may commit and lose its reply): the cached copy goes now.
      this.core.markWritten(c.shape.model, [], [[id]]);
    }
  }

  // ------------------------------------------------------------- built-in API

  /** Whether memory-sync's own API (personalities, memories) is served: on its own schema only. */
  get servesBuiltinApi(): boolean {
    return this.bound?.personalities !== undefined;
  }

  private builtin(): Schema & { personalities: PersonalityStore } {
    const s = this.ready();
    if (!s.personalities) {
      throw new ConfigError('config', 'this method belongs to memory-sync\'s own schema; on your declaration use entity(name).get() and collection(name).search()');
    }
    return s as Schema & { personalities: PersonalityStore };
  }

  getPersonality(id: string): Promise<PersonalityWithConfig | null> {
    try {
      const hit = this._core?.peekEntity(BUILTIN.personality, 0, [id]);
      if (hit !== undefined) return Promise.resolve(hit as PersonalityWithConfig | null);
      const key = validateId(id);
      this.builtin();
      return this.core.getEntity(BUILTIN.personality, 0, [key]) as Promise<PersonalityWithConfig | null>;
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
    return this.core.peekEntity(BUILTIN.personality, 0, [id]) as PersonalityWithConfig | null | undefined;
  }

  async upsertPersonality(rawId: string, input: PersonalityInput): Promise<{ personality: PersonalityWithConfig; created: boolean }> {
    const id = validateId(rawId);
    const body = validatePersonalityInput(input);
    const s = this.builtin();
    try {
      return (await withRetry(() => s.personalities.upsert(this.db(), id, body), this.retry)) as { personality: PersonalityWithConfig; created: boolean };
    } finally {
      // Whatever the outcome, the next read goes to the database: the write may have committed.
      this.core.markWritten(BUILTIN.personalityModel, [{ id }]);
    }
  }

  async deletePersonality(rawId: string): Promise<boolean> {
    const id = validateId(rawId);
    const s = this.builtin();
    try {
      return await withRetry(() => s.personalities.delete(this.db(), id), this.retry);
    } finally {
      this.core.markWritten(BUILTIN.personalityModel, [], [[id]]);
      // Its memories go with it (ON DELETE CASCADE): the partition's set goes now, not when their events arrive.
      this.core.dropPartition(BUILTIN.memories, [id]);
    }
  }

  async findSimilarMemories(input: SearchInput): Promise<SimilarMemory[]> {
    const q = validateSearch(input);
    this.builtin();
    const hits = await this.searchParsed(BUILTIN.memories, {
      partition: [q.personalityId],
      where: q.channelId === undefined ? [] : [{ field: 'channelId', index: 0, condition: { eq: q.channelId } }],
      embedding: q.embedding,
      limit: q.limit,
      minSimilarity: q.minSimilarity,
    });
    return hits.map((h) => {
      const [content, channelId, createdAt, metadata] = h.values as [string, string, Date, unknown];
      return { id: h.id, content, channelId, similarity: h.similarity, createdAt: createdAt instanceof Date ? new Date(createdAt) : createdAt, metadata };
    });
  }

  async storeMemory(input: StoreInput): Promise<string> {
    const m = validateStore(input);
    this.builtin();
    try {
      return await this.insertInto(BUILTIN.memories, { personalityId: m.personalityId, channelId: m.channelId, content: m.content, metadata: m.metadata ?? null }, m.embedding);
    } catch (err) {
      if (err instanceof QueryError && err.sqlState === '23503') throw new NotFoundError(`personality ${m.personalityId} does not exist`);
      throw err;
    }
  }

  async deleteMemory(rawId: string): Promise<boolean> {
    const id = validateId(rawId);
    this.builtin();
    return this.deleteFrom(BUILTIN.memories, id);
  }

  stats(): MemorySyncStats {
    const s = this._core?.stats();
    const sum = (pick: (e: { hits: number; misses: number; evictions: number; abortedFills: number; size: number; invalidated: number }) => number) =>
      Object.values(s?.entities ?? {}).reduce((n, e) => n + pick(e), 0);
    const csum = (pick: (c: { bytes: number; sets: number; vectors: number; evictions: number; wrongDimension: number }) => number) =>
      Object.values(s?.collections ?? {}).reduce((n, c) => n + pick(c), 0);
    const dim = this.bound ? ([...this.bound.collections.values()][0]?.shape.dimension ?? 1536) : 1536;
    return {
      hits: sum((e) => e.hits),
      misses: sum((e) => e.misses),
      evictions: sum((e) => e.evictions) + csum((c) => c.evictions),
      invalidations: s?.invalidations ?? {},
      invalidNotifications: s?.invalidNotifications ?? 0,
      foreignNotifications: s?.foreignNotifications ?? 0,
      reconnects: s?.reconnects ?? 0,
      flushes: s?.flushes ?? 0,
      hotSetBytes: csum((c) => c.bytes),
      hotSets: csum((c) => c.sets),
      hotVectors: csum((c) => c.vectors),
      hotSearches: s?.hotSearches ?? 0,
      pgvectorSearches: this.pgvectorSearches,
      pgvectorShortAnswers: this.pgvectorShortAnswers,
      abortedFills: sum((e) => e.abortedFills),
      wrongDimension: csum((c) => c.wrongDimension),
      listener: this.sourceState,
      source: this._source?.name ?? (this.backend === 'embedded' ? 'pglite' : (this.busConfig?.kind ?? 'listen')),
      kernel: nativeKernelsFit(dim).i8 ? 'usearch-int8' : 'js',
      entities: Object.fromEntries(Object.entries(s?.entities ?? {}).map(([n, e]) => [n, { size: e.size, hits: e.hits, misses: e.misses, invalidated: e.invalidated }])),
      collections: Object.fromEntries(
        Object.entries(s?.collections ?? {}).map(([n, c]) => {
          const dimension = this.bound?.collections.get(n)?.shape.dimension;
          const arithmetic = dimension === undefined ? undefined : this.bound?.arithmetic.get(dimension);
          return [n, { sets: c.sets, vectors: c.vectors, bytes: c.bytes, wrongDimension: c.wrongDimension, arithmetic: arithmetic?.name ?? 'unknown' }];
        }),
      ),
    };
  }
}


/** A validated condition as the hot set compares it (Boolean as 1/0; DateTime already epoch ms). */
function hotCondition(f: CollectionShape['filters'][number], c: unknown): FilterCondition {
  if (f.type !== 'Boolean') return c as FilterCondition;
  const b = (v: unknown) => (v === true ? 1 : v === false ? 0 : (v as number));
  const x = c as { eq?: unknown; in?: unknown[]; notIn?: unknown[] };
  if ('eq' in x) return { eq: x.eq === null ? null : b(x.eq) };
  if (x.in) return { in: x.in.map(b) };
  return { notIn: (x.notIn ?? []).map(b) };
}

/** The URL a borrowed pool connects with, for the LISTEN connection. */
function poolUrl(pool: pg.Pool): string | undefined {
  const o = (pool as unknown as { options?: { connectionString?: string } }).options;
  return o?.connectionString;
}

/** Creates a client; call start() before use. */
export function createMemorySync<const D extends Declaration = typeof BUILTIN_DECLARATION>(options: MemorySyncOptions<D> = {}): MemorySync<D> {
  return new MemorySync<D>(options);
}
