import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { SimilarMemory } from '../store/memories.js';
import type { ChangeEvent } from '../contract/change-event.js';
import type { ChangeSource, UpInfo } from '../sources/source.js';
import { HotSetCache, type HotSetStore } from './hot/hot-sets.js';
import type { HotQuery } from './hot/hot-set.js';
import { PersonalityCache } from './personalities.js';

/** What a change event did to the caches. */
export type ChangeAction = 'evicted' | 'patched' | 'flushed' | 'ignored';

export interface ChangeInfo {
  event: ChangeEvent;
  action: ChangeAction;
  /** Receive time minus the event's send timestamp, ms. */
  lagMs: number;
  /** The change source's name ("listen", "pglite", "nats", "redis", "sidecar"). */
  source: string;
}

/** Outcome of a hot search, as data: results, or why the database must answer. */
export type SearchOutcome =
  | { status: 'hit'; results: SimilarMemory[] }
  | { status: 'miss'; reason: 'not-serving' | 'not-hot' | 'changed' | 'disabled' };

export interface CacheCoreEvents {
  invalidation: [info: ChangeInfo];
  invalid: [reason: string, sample: string];
  flush: [reason: string];
  down: [reason: string];
  /** The source came back after an outage (reconnect); `lost` says why the caches were flushed, or null when none were lost. */
  reconnect: [lost: string | null];
  /** The source is up: caches serve. */
  up: [];
  /** A hot set was loaded (personality, vectors, ms). */
  loaded: [personalityId: string, vectors: number, ms: number];
}

export interface CacheCoreOptions<P> {
  logger: Logger;
  personalities: { max: number; ttlMs: number; negativeTtlMs: number };
  /** Reads one personality (null: none). Called on a miss and, uncached, while the source is down. */
  loadPersonality: (id: string, signal: AbortSignal) => Promise<P | null>;
  /** Hot memory sets; absent for a cache of personalities only (the remote client's local cache). */
  hotSets?: { store: HotSetStore; maxBytes: number; maxVectorsPerSet: number; tooLargeTtlMs: number } | undefined;
  /** Test seams, to make races deterministic. */
  hooks?: CoreHooks | undefined;
}

/** @internal Test seams: not part of the public options. */
export interface CoreHooks {
  /** Runs after a personality load has read the database, before the cache stores it. */
  afterPersonalityRead?: (id: string) => Promise<void> | void;
  /** Runs after a hot-set load has read the database, before it is published. */
  beforeHotSetPublish?: (personalityId: string) => Promise<void> | void;
}

export interface CacheCoreStats {
  /** Personalities cached now (values and "does not exist"). */
  personalities: number;
  hits: number;
  misses: number;
  evictions: number;
  invalidations: Record<string, number>;
  invalidNotifications: number;
  reconnects: number;
  flushes: number;
  abortedFills: number;
  hotSetBytes: number;
  hotSets: number;
  hotVectors: number;
  hotSearches: number;
  loadedVectors: number;
  pendingPatches: number;
}

/** Shared by every caller: frozen, with its nested objects, so one caller cannot change another's copy. */
function freeze<P extends object>(value: P): P {
  for (const v of Object.values(value)) if (v && typeof v === 'object' && !(v instanceof Date)) Object.freeze(v);
  return Object.freeze(value);
}

/**
 * The one place that decides what a change does to the caches: evict, patch,
 * drop, flush. It serves only while its change source is up; down, every
 * lookup goes to the database and nothing is stored. Sources deliver events;
 * the client and sidecar ask it for personalities and searches and report
 * their own writes (read-your-writes).
 */
export class CacheCore<P extends object> extends EventEmitter<CacheCoreEvents> {
  private readonly personalities: PersonalityCache<P>;
  private readonly hot: HotSetCache | undefined;
  private _serving = false;
  private readonly counters = { invalid: 0, reconnects: 0, flushes: 0, hotSearches: 0, invalidations: {} as Record<string, number> };

  constructor(private readonly options: CacheCoreOptions<P>) {
    super();
    const afterRead = options.hooks?.afterPersonalityRead;
    this.personalities = new PersonalityCache<P>({
      ...options.personalities,
      load: async (id, signal) => {
        const value = await options.loadPersonality(id, signal);
        await afterRead?.(id);
        return value && freeze(value);
      },
    });
    if (options.hotSets) {
      this.hot = new HotSetCache({ ...options.hotSets, logger: options.logger, beforePublish: options.hooks?.beforeHotSetPublish });
      this.hot.on('loaded', (pid, n, ms) => this.emit('loaded', pid, n, ms));
    }
  }

  /** True while the source is up: cached values are served. */
  get serving(): boolean {
    return this._serving;
  }

  /** Follows a change source; returns a function that stops following it. */
  connect(source: ChangeSource): () => void {
    const onChange = (event: ChangeEvent, receivedAt: number) => this.apply(event, receivedAt, source.name);
    const onInvalid = (reason: string, sample: string, _bytes: number, structured: boolean) => this.invalid(reason, sample, structured);
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
    const key = `${event.table}.${event.op}`;
    this.counters.invalidations[key] = (this.counters.invalidations[key] ?? 0) + 1;
    const lagMs = receivedAt - event.ts;
    this.options.logger.debug(
      { source, table: event.table, op: event.op, scope: event.scope, ids: event.ids.length, personalities: event.personalityIds.length, lagMs: Math.round(lagMs * 1000) / 1000, action },
      'invalidation',
    );
    this.emit('invalidation', { event, action, lagMs, source });
    return action;
  }

  private rule(e: ChangeEvent): ChangeAction {
    const pids = e.personalityIds;
    const hot = this.hot;
    if (e.table === 'memories') {
      if (!hot) return 'ignored';
      if (e.scope === 'table') {
        hot.clear();
        this.flushed(e);
        return 'flushed';
      }
      if (e.scope === 'personalities') return hot.drop(pids) ? 'evicted' : 'ignored';
      // Rows are patched in place: a delete leaves at once, an insert or update is re-read by id.
      const touched = e.op === 'DELETE' ? hot.removeRows(e.ids, pids) : hot.refreshRows(e.ids, pids);
      return touched ? 'patched' : 'ignored';
    }
    if (e.scope === 'table') {
      this.personalities.clear();
      // TRUNCATE personalities cascades to memories.
      if (e.table === 'personalities') hot?.clear();
      this.flushed(e);
      return 'flushed';
    }
    // personalities and llm_configs: both are part of the cached personality.
    let touched = this.personalities.delete(pids) > 0;
    if (e.table === 'personalities' && e.op === 'DELETE' && hot) touched = hot.drop(pids) || touched;
    return touched ? 'evicted' : 'ignored';
  }

  /** Drops everything cached; `reason` goes to the log, the `flush` event and the flush count. */
  flush(reason: string): void {
    this.personalities.clear();
    this.hot?.clear();
    this.counters.flushes++;
    this.options.logger.warn({ reason }, 'caches flushed');
    this.emit('flush', reason);
  }

  private flushed(e: ChangeEvent): void {
    this.counters.flushes++;
    this.options.logger.warn({ table: e.table, op: e.op, scope: e.scope }, 'cache flushed by a table-wide change');
    this.emit('flush', `${e.table}.${e.op}`);
  }

  private invalid(reason: string, sample: string, structured: boolean): void {
    this.counters.invalid++;
    this.emit('invalid', reason, sample);
    // A JSON object we cannot read may be a real change in a newer contract
    // (or a renamed table): we cannot tell what it invalidates, so drop everything.
    if (structured) this.flush('unreadable notification');
  }

  private down(reason: string, resumable = false): void {
    if (!this._serving) return;
    // Changes sent from now on may not reach us: stop serving. A source that
    // can replay them keeps the contents until `up` says whether anything was
    // lost; for any other, nothing cached can be trusted again.
    this._serving = false;
    this.hot?.setEnabled(false);
    if (!resumable) {
      this.hot?.clear();
      this.personalities.clear();
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
    this.hot?.setEnabled(true);
    this.emit('up');
  }

  /**
   * Synchronous hit path: the cached personality (null for a cached "does
   * not exist"), or undefined when only getPersonality() can answer. Never
   * a value while the source is down.
   */
  peekPersonality(id: string): P | null | undefined {
    return this._serving ? this.personalities.peek(id) : undefined;
  }

  /** Cache-aside lookup; while the source is down, read from the database and store nothing. */
  getPersonality(id: string): Promise<P | null> {
    if (!this._serving) return this.options.loadPersonality(id, new AbortController().signal);
    return this.personalities.get(id);
  }

  /** Exact search on the personality's hot set, or a miss saying why (start a load on a cold one). */
  async search(personalityId: string, q: HotQuery): Promise<SearchOutcome> {
    if (!this.hot) return { status: 'miss', reason: 'disabled' };
    if (!this._serving) return { status: 'miss', reason: 'not-serving' };
    const results = await this.hot.search(personalityId, q);
    if (!results) return { status: 'miss', reason: this.hot.isServable(personalityId) ? 'changed' : 'not-hot' };
    this.counters.hotSearches++;
    return { status: 'hit', results };
  }

  /** Read-your-writes: memories this process wrote are re-read before their sets serve again. */
  markMemoriesWritten(memoryIds: readonly string[], personalityIds: readonly string[]): void {
    this.hot?.refreshRows(memoryIds, personalityIds);
  }

  /** Read-your-writes: memories this process deleted leave their sets at once. */
  markMemoriesDeleted(memoryIds: readonly string[], personalityIds: readonly string[]): void {
    this.hot?.removeRows(memoryIds, personalityIds);
  }

  /** Read-your-writes: a personality this process wrote (or deleted) is read again on next use. */
  markPersonalityWritten(id: string, deleted = false): void {
    this.personalities.delete([id]);
    if (deleted) this.hot?.drop([id]);
  }

  /** Drops every cached personality (their loader changed shape, say); hot sets stay. */
  clearPersonalities(): void {
    this.personalities.clear();
  }

  /** Personalities whose cached set holds this memory (known before a delete, so a lost reply cannot strand a copy). */
  holding(memoryId: string): string[] {
    return this.hot?.holding(memoryId) ?? [];
  }

  /** Starts loading a personality's hot set (warm-up); searches never wait for it. */
  warm(personalityId: string): void {
    if (this._serving) this.hot?.warm(personalityId);
  }

  /** True when a search for this personality would be served from memory now. */
  isServable(personalityId: string): boolean {
    return this._serving && (this.hot?.isServable(personalityId) ?? false);
  }

  /** True when the personality's cached set holds this memory. */
  holds(personalityId: string, memoryId: string): boolean {
    return this.hot?.holds(personalityId, memoryId) ?? false;
  }

  /** Resolves once the personality has no load or refresh outstanding (tests, warm-up). */
  settled(personalityId: string): Promise<void> {
    return this.hot?.settled(personalityId) ?? Promise.resolve();
  }

  stats(): CacheCoreStats {
    const p = this.personalities.stats();
    const h = this.hot?.stats();
    return {
      personalities: p.size,
      hits: p.hits,
      misses: p.misses,
      evictions: p.evictions + (h?.evictions ?? 0),
      invalidations: { ...this.counters.invalidations },
      invalidNotifications: this.counters.invalid,
      reconnects: this.counters.reconnects,
      flushes: this.counters.flushes,
      abortedFills: p.abortedFills,
      hotSetBytes: h?.bytes ?? 0,
      hotSets: h?.sets ?? 0,
      hotVectors: h?.vectors ?? 0,
      hotSearches: this.counters.hotSearches,
      loadedVectors: h?.loadedVectors ?? 0,
      pendingPatches: h?.pendingPatches ?? 0,
    };
  }

  /** Stops serving and drops everything (close). */
  close(): void {
    this._serving = false;
    this.hot?.setEnabled(false);
    this.hot?.clear();
    this.personalities.clear();
  }
}
