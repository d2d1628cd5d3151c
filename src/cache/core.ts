import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { ChangeEvent } from '../contract/change-event.js';
import type { EntityShape, WatchShape } from '../contract/shape.js';
import type { ChangeSource, UpInfo } from '../sources/source.js';
import { EntityCache, type EntityCacheOptions, type EntityCacheStats } from './entities.js';
import { HotSets, type HotHit, type HotQuery, type HotSetStats, type HotSetsOptions } from './hot/hot-sets.js';
import { eventKeys, partitionKey } from './keys.js';

/** What a change event did to the caches. */
export type ChangeAction = 'evicted' | 'patched' | 'flushed' | 'ignored';

export interface ChangeInfo {
  event: ChangeEvent;
  action: ChangeAction;
  /** Receive time minus the event's send timestamp, ms. */
  lagMs: number;
  /** The change source's name ("listen", "pglite", "replication", "nats", "redis", "sidecar"). */
  source: string;
}

/** Outcome of a hot search, as data: results, or why the database must answer. */
export type SearchOutcome =
  | { status: 'hit'; results: HotHit[] }
  | { status: 'miss'; reason: 'not-serving' | 'not-hot' | 'changed' | 'disabled' };

export interface CacheCoreEvents {
  invalidation: [info: ChangeInfo];
  /** memory-sync's own payload that cannot be read (caches flushed), or another program's (ignored). */
  invalid: [reason: string, sample: string, ours: boolean];
  flush: [reason: string];
  down: [reason: string];
  /** The source came back after an outage; `lost` says why the caches were flushed, or null when none were lost. */
  reconnect: [lost: string | null];
  up: [];
  /** A hot set was loaded (collection, partition, vectors, ms). */
  loaded: [collection: string, partition: string, vectors: number, ms: number];
  /** A stored vector has another dimension than its collection's: it is left out. */
  wrongDimension: [collection: string, id: string, dimension: number];
}

/** One declared entity: its cache's options (entities.ts); `load` is also called, uncached, while the source is down. */
export type EntityOptions<V extends object> = EntityCacheOptions<V>;

/** One declared collection: its hot sets' options (hot-sets.ts), less what the core supplies (the logger, test hooks). */
export type CollectionOptions = Omit<HotSetsOptions, 'logger' | 'beforePublish'>;

export interface CacheCoreOptions {
  logger: Logger;
  entities: EntityOptions<object>[];
  /** Every model whose changes arrive, with the field sets that name cached things. */
  watched: WatchShape[];
  /** Hot vector sets; none for a cache of entities only (the remote client's local cache). */
  collections?: CollectionOptions[];
  hooks?: CoreHooks | undefined;
}

/** @internal Test seams: not part of the public options. */
export interface CoreHooks {
  /** Runs after an entity load has read the database, before the cache stores it. */
  afterEntityRead?: (entity: string, values: readonly unknown[]) => Promise<void> | void;
  /** Runs after a hot-set load has read the database, before it is published. */
  beforeHotSetPublish?: (collection: string, partition: string) => Promise<void> | void;
}

export interface CacheCoreStats {
  entities: Record<string, EntityCacheStats>;
  collections: Record<string, HotSetStats>;
  invalidations: Record<string, number>;
  invalidNotifications: number;
  foreignNotifications: number;
  reconnects: number;
  flushes: number;
  hotSearches: number;
}

/**
 * The one place that decides what a change does to the caches: evict,
 * patch, drop, flush. It serves only while its change source is up; down,
 * every lookup goes to the database and nothing is stored. Sources deliver
 * events; the client and the sidecar ask it for entities and searches and
 * report their own writes (read-your-writes).
 */
export class CacheCore extends EventEmitter<CacheCoreEvents> {
  private readonly entities = new Map<string, { cache: EntityCache<object>; load: EntityOptions<object>['load'] }>();
  private readonly collections = new Map<string, HotSets>();
  private readonly watched = new Map<string, WatchShape>();
  /** model -> entities whose tree includes it / collections on it. */
  private readonly entitiesOf = new Map<string, string[]>();
  private readonly collectionsOf = new Map<string, string[]>();
  private _serving = false;
  private readonly counters = { invalid: 0, foreign: 0, reconnects: 0, flushes: 0, hotSearches: 0, invalidations: {} as Record<string, number> };

  constructor(private readonly options: CacheCoreOptions) {
    super();
    this.declare(options.entities, options.watched);
    for (const c of options.collections ?? []) {
      const sets = new HotSets({
        ...c,
        logger: options.logger,
        beforePublish: options.hooks?.beforeHotSetPublish && ((p) => options.hooks!.beforeHotSetPublish!(c.shape.name, p)),
      });
      sets.on('loaded', (p, n, ms) => this.emit('loaded', c.shape.name, p, n, ms));
      sets.on('wrongDimension', (id, dim) => this.emit('wrongDimension', c.shape.name, id, dim));
      this.collections.set(c.shape.name, sets);
      this.collectionsOf.set(c.shape.model, [...(this.collectionsOf.get(c.shape.model) ?? []), c.shape.name]);
    }
  }

  /**
   * Adds entities and the models they watch: the remote client's local
   * cache learns them from the sidecar after it starts following its stream.
   */
  declare(entities: EntityOptions<object>[], watched: WatchShape[]): void {
    const options = this.options;
    for (const w of watched) this.watched.set(w.model, w);
    const models = (node: EntityShape['root'], out: Set<string>) => {
      out.add(node.model);
      for (const c of node.children) models(c.node, out);
      return out;
    };
    for (const e of entities) {
      if (this.entities.has(e.shape.name)) continue;
      const afterRead = options.hooks?.afterEntityRead;
      const cache = new EntityCache<object>({
        ...e,
        load: async (index, values) => {
          const v = await e.load(index, values);
          await afterRead?.(e.shape.name, values);
          return v;
        },
      });
      this.entities.set(e.shape.name, { cache, load: e.load });
      for (const m of models(e.shape.root, new Set())) this.entitiesOf.set(m, [...(this.entitiesOf.get(m) ?? []), e.shape.name]);
    }
  }

  /** True while the source is up: cached values are served. */
  get serving(): boolean {
    return this._serving;
  }

  /** Follows a change source; returns a function that stops following it. */
  connect(source: ChangeSource): () => void {
    const onChange = (event: ChangeEvent, receivedAt: number) => this.apply(event, receivedAt, source.name);
    const onInvalid = (reason: string, sample: string, _bytes: number, ours: boolean) => this.invalid(reason, sample, ours);
    const onUp = (info: UpInfo) => this.up(info);
    const onDown = (reason: string) => this.down(reason, source.resumable);
    const onLost = (reason: string) => this.flush(reason);
    source.on('change', onChange);
    source.on('invalid', onInvalid);
    source.on('up', onUp);
    source.on('down', onDown);
    source.on('lost', onLost);
    if (source.isUp) this.up({ first: true, lost: null });
    return () => {
      source.off('change', onChange);
      source.off('invalid', onInvalid);
      source.off('up', onUp);
      source.off('down', onDown);
      source.off('lost', onLost);
      this.down('detached');
    };
  }

  /** Applies one change event; the rules are here and nowhere else. */
  apply(event: ChangeEvent, receivedAt = event.ts, source = 'direct'): ChangeAction {
    const action = this.rule(event);
    const key = `${event.model}.${event.op}`;
    this.counters.invalidations[key] = (this.counters.invalidations[key] ?? 0) + 1;
    const lagMs = receivedAt - event.ts;
    this.options.logger.debug(
      { source, model: event.model, op: event.op, scope: event.scope, rows: event.rows.length, gone: event.gone.length, lagMs: Math.round(lagMs * 1000) / 1000, action },
      'change',
    );
    this.emit('invalidation', { event, action, lagMs, source });
    return action;
  }

  private rule(e: ChangeEvent): ChangeAction {
    const w = this.watched.get(e.model);
    const problem = w ? mismatch(w, e) : `it names model ${e.model}, which this declaration does not watch`;
    if (problem) {
      // Our own payload that this declaration cannot place: the installed triggers are another declaration's.
      this.flush(`change does not match the declaration (${problem}): run memory-sync adopt to install this declaration's triggers`);
      return 'flushed';
    }
    const entities = this.entitiesOf.get(e.model) ?? [];
    const collections = this.collectionsOf.get(e.model) ?? [];
    let action: ChangeAction = 'ignored';
    const raise = (a: ChangeAction) => {
      const rank = { ignored: 0, patched: 1, evicted: 2, flushed: 3 };
      if (rank[a] > rank[action]) action = a;
    };
    if (e.scope === 'model') {
      for (const name of entities) this.flushEntity(name, `${e.model}.${e.op} changed the whole table`);
      for (const name of collections) this.collections.get(name)!.clear();
      if (entities.length || collections.length) {
        this.counters.flushes++;
        this.options.logger.warn({ model: e.model, op: e.op }, 'caches of a model flushed by a table-wide change');
        this.emit('flush', `${e.model}.${e.op}`);
        raise('flushed');
      }
      return action;
    }
    if (e.scope === 'partitions') {
      // Too many rows to name: a cached tree that includes the model cannot be told apart.
      for (const name of entities) {
        this.flushEntity(name, `${e.model}.${e.op} changed too many rows to name`);
        raise('flushed');
      }
      for (const name of collections) {
        const sets = this.collections.get(name)!;
        const at = sets.shape.partitionBy.map((f) => e.fields.indexOf(f.name));
        if (at.some((i) => i < 0)) {
          sets.clear();
          raise('flushed');
          continue;
        }
        const keys = e.rows.map((t) => sets.key(at.map((i) => t[i] ?? '') as string[])).filter((k): k is string => k !== null);
        if (sets.drop(keys)) raise('evicted');
      }
      return action;
    }
    const k = eventKeys(w!, e);
    for (const name of entities) {
      const r = this.entities.get(name)!.cache.invalidate(k.keys);
      if (r === 'flushed') {
        this.counters.flushes++;
        this.options.logger.warn({ entity: name, model: e.model }, 'entity cache flushed: one change named more cached values than maxEvictions');
        this.emit('flush', `${name}: one change evicted more than maxEvictions`);
        raise('flushed');
      } else if (r > 0) raise('evicted');
    }
    for (const name of collections) {
      const sets = this.collections.get(name)!;
      const setIndex = w!.partitions.findIndex((p) => p.length === sets.shape.partitionBy.length && p.every((f, i) => f === sets.shape.partitionBy[i]!.name));
      const rows = k.partitions.map((p) => ({ id: p.id, partition: setIndex >= 0 ? (p.sets[setIndex] ?? null) : null }));
      const gone = k.ids.slice(rows.length);
      if (sets.changed(rows, gone)) raise('patched');
    }
    return action;
  }

  private flushEntity(name: string, reason: string): void {
    this.entities.get(name)!.cache.clear();
    this.options.logger.warn({ entity: name, reason }, 'entity cache flushed');
  }

  /** Drops everything cached; `reason` goes to the log, the `flush` event and the flush count. */
  flush(reason: string): void {
    for (const { cache } of this.entities.values()) cache.clear();
    for (const sets of this.collections.values()) sets.clear();
    this.counters.flushes++;
    this.options.logger.warn({ reason }, 'caches flushed');
    this.emit('flush', reason);
  }

  private invalid(reason: string, sample: string, ours: boolean): void {
    if (ours) this.counters.invalid++;
    else this.counters.foreign++;
    this.emit('invalid', reason, sample, ours);
    // Our own payload we cannot read may be a real change in a newer format: we cannot tell
    // what it invalidates, so drop everything. Another program's is none of our business.
    if (ours) this.flush(`unreadable memory-sync payload: ${reason}`);
  }

  private down(reason: string, resumable = false): void {
    if (!this._serving) return;
    // Changes sent from now on may not reach us: stop serving. A source that can replay them
    // keeps the contents until `up` says whether anything was lost; for any other, nothing
    // cached can be trusted again.
    this._serving = false;
    for (const sets of this.collections.values()) sets.setEnabled(false);
    if (!resumable) {
      for (const sets of this.collections.values()) sets.clear();
      for (const { cache } of this.entities.values()) cache.clear();
    }
    this.emit('down', reason);
  }

  private up(info: UpInfo): void {
    if (!info.first) {
      this.counters.reconnects++;
      if (info.lost !== null) this.flush(info.lost);
      this.emit('reconnect', info.lost);
    } else if (info.lost !== null) {
      this.flush(info.lost);
    }
    this._serving = true;
    for (const sets of this.collections.values()) sets.setEnabled(true);
    this.emit('up');
  }

  private entity(name: string): { cache: EntityCache<object>; load: EntityOptions<object>['load'] } {
    const e = this.entities.get(name);
    if (!e) throw new Error(`no entity ${name}`);
    return e;
  }

  /** The declared entities' shapes. */
  entityShapes(): EntityShape[] {
    return [...this.entities.values()].map((e) => e.cache.shape);
  }

  /**
   * Synchronous hit path: the cached value (null for a cached "none"), or
   * undefined when only getEntity() can answer. Never a value while the
   * source is down.
   */
  peekEntity(name: string, index: number, values: readonly unknown[]): object | null | undefined {
    return this._serving ? this.entity(name).cache.peek(index, values) : undefined;
  }

  /** Cache-aside lookup; while the source is down, read from the database and store nothing. */
  getEntity(name: string, index: number, values: readonly unknown[]): Promise<object | null> {
    const e = this.entity(name);
    if (!this._serving) return e.load(index, values);
    return e.cache.get(index, values);
  }

  /** Exact search on the partition's hot set, or a miss saying why (a cold set starts loading). */
  async search(collection: string, partition: readonly string[], q: HotQuery): Promise<SearchOutcome> {
    const sets = this.collections.get(collection);
    if (!sets) return { status: 'miss', reason: 'disabled' };
    if (!this._serving) return { status: 'miss', reason: 'not-serving' };
    const results = await sets.searchPartition(partition, q);
    if (!results) return { status: 'miss', reason: sets.isServable(partition) ? 'changed' : 'not-hot' };
    this.counters.hotSearches++;
    return { status: 'hit', results };
  }

  /**
   * Read-your-writes: this process changed rows of `model` (new images with
   * their fields, and ids that left); caches drop or re-read them at once,
   * before the change event arrives.
   */
  markWritten(model: string, rows: readonly Record<string, string | null>[], gone: readonly (string | null)[][] = []): void {
    const w = this.watched.get(model);
    if (!w) return;
    const fields = w.keySets.flat().concat(w.partitions.flat()).filter((f, i, a) => a.indexOf(f) === i);
    const ordered = [...w.id, ...fields.filter((f) => !w.id.includes(f))];
    const event: ChangeEvent = {
      ms: 2,
      model,
      op: 'UPDATE',
      scope: 'rows',
      fields: ordered,
      rows: rows.map((r) => ordered.map((f) => r[f] ?? null)),
      gone: gone.map((g) => [...g]),
      txid: '0',
      ts: 0,
      chunk: 1,
      chunks: 1,
    };
    this.rule(event);
  }

  /** Read-your-writes: a partition this process emptied or rewrote wholesale (its set goes now). */
  dropPartition(collection: string, partition: readonly string[]): void {
    const sets = this.collections.get(collection);
    const key = sets?.key(partition);
    if (sets && key) sets.drop([key]);
  }

  /** Partitions of a collection whose cached set holds this id (known before a delete, so a lost reply cannot strand a copy). */
  holding(collection: string, id: string): string[] {
    return this.collections.get(collection)?.holding(id) ?? [];
  }

  /** Starts loading a partition's hot set (warm-up); searches never wait for it. */
  warm(collection: string, partition: readonly string[]): void {
    if (this._serving) this.collections.get(collection)?.warm(partition);
  }

  isServable(collection: string, partition: readonly string[]): boolean {
    return this._serving && (this.collections.get(collection)?.isServable(partition) ?? false);
  }

  holds(collection: string, partition: readonly string[], id: string): boolean {
    return this.collections.get(collection)?.holds(partition, id) ?? false;
  }

  /** Resolves once the partition has no load or re-read outstanding (tests, warm-up). */
  settled(collection: string, partition: readonly string[]): Promise<void> {
    return this.collections.get(collection)?.settled(partition) ?? Promise.resolve();
  }

  /** Drops every cached value of one entity (its loader changed shape, say). */
  clearEntity(name: string): void {
    this.entity(name).cache.clear();
  }

  stats(): CacheCoreStats {
    return {
      entities: Object.fromEntries([...this.entities].map(([n, e]) => [n, e.cache.stats()])),
      collections: Object.fromEntries([...this.collections].map(([n, s]) => [n, s.stats()])),
      invalidations: { ...this.counters.invalidations },
      invalidNotifications: this.counters.invalid,
      foreignNotifications: this.counters.foreign,
      reconnects: this.counters.reconnects,
      flushes: this.counters.flushes,
      hotSearches: this.counters.hotSearches,
    };
  }

  /** Stops serving and drops everything (close). */
  close(): void {
    this._serving = false;
    for (const sets of this.collections.values()) {
      sets.setEnabled(false);
      sets.clear();
    }
    for (const { cache } of this.entities.values()) cache.clear();
  }
}

/** Why an event of a watched model does not fit this declaration, or null. */
function mismatch(w: WatchShape, e: ChangeEvent): string | null {
  if (e.scope === 'model') return null;
  if (e.scope === 'partitions') {
    return w.partitions.some((p) => p.every((f) => e.fields.includes(f))) ? null : `its partition fields ${e.fields.join(', ')} are not ${w.model}'s`;
  }
  for (const set of [...w.keySets, ...w.partitions]) {
    const missing = set.filter((f) => !e.fields.includes(f));
    if (missing.length) return `${w.model} payload lacks ${missing.join(', ')}`;
  }
  if (e.gone.some((t) => t.length !== w.id.length)) return `a gone key of ${w.model} is not its id (${w.id.join(', ')})`;
  return null;
}

export { partitionKey };
