import { EventEmitter, once } from 'node:events';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { MemoryRow, SimilarMemory } from '../../store/memories.js';
import { HotSet, type HotQuery } from './hot-set.js';

/**
 * What hot sets read from the database. The client supplies it (with its
 * retries), so the cache knows no driver: pg, PGlite, or none at all.
 */
export interface HotSetStore {
  /** Rows a load would transfer, capped at `limit`. */
  count(personalityId: string, limit: number): Promise<number>;
  /** Every memory of a personality; `onRow` returns false to stop. Rows' buffers may be reused. */
  stream(personalityId: string, limit: number, onRow: (row: MemoryRow) => boolean, signal: AbortSignal): Promise<void>;
  /** Current state of these rows; absent ids were deleted. */
  fetch(ids: string[]): Promise<MemoryRow[]>;
}

export interface HotSetCacheOptions {
  store: HotSetStore;
  logger: Logger;
  /** Total bytes of all hot sets together. */
  maxBytes: number;
  /** A personality with more memories than this is never hot: pgvector serves it. */
  maxVectorsPerSet: number;
  /** How long a too-large verdict stands before the count is checked again. */
  tooLargeTtlMs: number;
  /** Test hook: runs after a load has read the database, before it publishes. */
  beforePublish?: (personalityId: string) => Promise<void> | void;
}

interface Load {
  abort: AbortController;
  /** Memory ids changed while the load ran; refreshed once it publishes. */
  changed: Set<string>;
}

export interface HotSetStats {
  sets: number;
  bytes: number;
  vectors: number;
  loads: number;
  loadedVectors: number;
  evictions: number;
  pendingPatches: number;
}

const IDS_PER_PATCH = 500;
const FAILED_LOAD_BACKOFF_MS = 5_000;

/**
 * Hot memory sets, one per personality, bounded by total bytes. Kept in
 * sync, not just evicted: row events are refreshed by id, coarse events drop
 * sets. A personality with refreshes outstanding is "dirty" and not served.
 */
export class HotSetCache extends EventEmitter<{
  loaded: [personalityId: string, vectors: number, ms: number];
  progress: [];
}> {
  private readonly sets: LRUCache<string, HotSet>;
  private readonly loads = new Map<string, Load>();
  /** Personalities pgvector serves for now: too large, or their load just failed. */
  private readonly notHot: LRUCache<string, true>;
  /** memory id -> personalities whose sets must refresh it. */
  private pending = new Map<string, Set<string>>();
  private readonly dirty = new Map<string, number>();
  private draining = false;
  private enabled = false;
  private evictions = 0;
  private loadedVectors = 0;

  constructor(private readonly options: HotSetCacheOptions) {
    super();
    this.sets = new LRUCache<string, HotSet>({
      maxSize: options.maxBytes,
      sizeCalculation: (set) => Math.max(1, set.bytes),
      dispose: (_set, _key, reason) => {
        if (reason === 'evict') this.evictions++;
      },
    });
    this.notHot = new LRUCache<string, true>({ max: 100_000, ttl: options.tooLargeTtlMs });
  }

  /**
   * Exact top-k from the personality's set when it is current, else null
   * (ask pgvector). A miss starts a background load: the caller never waits
   * for it.
   */
  async search(personalityId: string, q: HotQuery): Promise<SimilarMemory[] | null> {
    const set = this.current(personalityId);
    if (!set) return null;
    return set.search(q, () => this.isCurrent(set));
  }

  /** True when a search would be served from memory now (no load is started). */
  isServable(personalityId: string): boolean {
    const set = this.sets.peek(personalityId);
    return set !== undefined && this.isCurrent(set);
  }

  /** True when the personality's cached set holds this memory. */
  holds(personalityId: string, memoryId: string): boolean {
    return this.sets.peek(personalityId)?.has(memoryId) ?? false;
  }

  /** Starts a load unless the set is cached, loading, or known not to be hot. */
  warm(personalityId: string): void {
    this.current(personalityId);
  }

  private current(personalityId: string): HotSet | undefined {
    if (!this.enabled) return undefined;
    const set = this.sets.get(personalityId);
    if (set) return this.dirty.has(personalityId) ? undefined : set;
    if (!this.loads.has(personalityId) && !this.notHot.has(personalityId)) this.startLoad(personalityId);
    return undefined;
  }

  /** True while `set` is still the served set of its personality: cached, enabled, not dirty. */
  private isCurrent(set: HotSet): boolean {
    const pid = set.personalityId;
    return this.enabled && this.sets.peek(pid) === set && !this.dirty.has(pid);
  }

  /** Personalities whose cached set holds this memory. */
  holding(id: string): string[] {
    const out: string[] = [];
    for (const [pid, set] of this.sets.entries()) if (set.has(id)) out.push(pid);
    return out;
  }

  /** Resolves once this personality has no load or refresh outstanding (tests, warm-up). */
  async settled(personalityId: string): Promise<void> {
    while (this.loads.has(personalityId) || this.dirty.has(personalityId)) {
      await once(this, 'progress');
    }
  }

  /**
   * Serve from sets (source up) or not at all (source down: changes may be
   * going missing). Disabling keeps the sets: the core flushes them when
   * the source cannot prove it lost nothing, and keeps them when it can.
   */
  setEnabled(enabled: boolean): void {
    this.enabled = enabled;
  }

  /** Memory rows changed: refresh them wherever cached or loading. */
  refreshRows(ids: readonly string[], personalityIds: readonly string[]): boolean {
    let touched = false;
    for (const pid of personalityIds) {
      const load = this.loads.get(pid);
      if (load) {
        for (const id of ids) load.changed.add(id);
        touched = true;
      }
      if (this.sets.has(pid)) {
        for (const id of ids) this.enqueue(id, pid);
        touched = true;
      }
    }
    return touched;
  }

  /**
   * Memory rows deleted: gone from the sets at once, and refreshed as well,
   * so a refresh already in flight cannot bring an old copy back.
   */
  removeRows(ids: readonly string[], personalityIds: readonly string[]): boolean {
    for (const pid of personalityIds) {
      const set = this.sets.peek(pid);
      if (set) {
        let changed = false;
        for (const id of ids) changed = set.remove(id) || changed;
        if (changed) this.sets.set(pid, set, { noUpdateTTL: true });
      }
    }
    return this.refreshRows(ids, personalityIds);
  }

  /** Drops sets (and running loads) of these personalities. */
  drop(personalityIds: readonly string[]): boolean {
    let touched = false;
    for (const pid of personalityIds) {
      const load = this.loads.get(pid);
      if (load) {
        load.abort.abort();
        this.loads.delete(pid);
        touched = true;
      }
      touched = this.sets.delete(pid) || touched;
      this.notHot.delete(pid);
    }
    if (touched) this.emit('progress');
    return touched;
  }

  clear(): void {
    for (const load of this.loads.values()) load.abort.abort();
    this.loads.clear();
    this.sets.clear();
    this.emit('progress');
    this.notHot.clear();
    // In-flight refreshes still decrement their own counts; queued ones go.
    for (const [, pids] of this.pending) for (const pid of pids) this.undirty(pid);
    this.pending.clear();
  }

  stats(): HotSetStats {
    let vectors = 0;
    for (const set of this.sets.values()) vectors += set.count;
    return {
      sets: this.sets.size,
      bytes: this.sets.calculatedSize,
      vectors,
      loads: this.loads.size,
      loadedVectors: this.loadedVectors,
      evictions: this.evictions,
      pendingPatches: this.pending.size,
    };
  }

  private enqueue(id: string, pid: string): void {
    let pids = this.pending.get(id);
    if (!pids) this.pending.set(id, (pids = new Set()));
    if (pids.has(pid)) return;
    pids.add(pid);
    this.dirty.set(pid, (this.dirty.get(pid) ?? 0) + 1);
    if (!this.draining) {
      this.draining = true;
      void this.drain();
    }
  }

  private undirty(pid: string): void {
    const n = (this.dirty.get(pid) ?? 0) - 1;
    if (n > 0) this.dirty.set(pid, n);
    else this.dirty.delete(pid);
  }

  private async drain(): Promise<void> {
    try {
      await this.drainBatches();
    } finally {
      // Synchronously after the last emptiness check: no enqueue can slip between.
      this.draining = false;
      this.emit('progress');
    }
  }

  private async drainBatches(): Promise<void> {
    while (this.pending.size > 0) {
      const batch = new Map<string, Set<string>>();
      for (const [id, pids] of this.pending) {
        batch.set(id, pids);
        this.pending.delete(id);
        if (batch.size === IDS_PER_PATCH) break;
      }
      // Only the sets that exist now: a set loaded later read newer data.
      const targets = new Map<string, HotSet | undefined>();
      for (const pids of batch.values()) for (const pid of pids) targets.set(pid, this.sets.peek(pid));
      try {
        const rows = await this.options.store.fetch([...batch.keys()]);
        const byId = new Map(rows.map((r) => [r.id, r]));
        const touched = new Set<HotSet>();
        for (const [id, pids] of batch) {
          const row = byId.get(id);
          for (const pid of pids) {
            const set = targets.get(pid);
            if (!set || this.sets.peek(pid) !== set) continue;
            if (row && row.personalityId === pid) set.upsert(row);
            else set.remove(id);
            touched.add(set);
          }
        }
        for (const set of touched) {
          if (set.count > this.options.maxVectorsPerSet) {
            this.sets.delete(set.personalityId);
            this.notHot.set(set.personalityId, true);
          } else {
            this.sets.set(set.personalityId, set, { noUpdateTTL: true }); // re-measure bytes
            // Clamped upserts widened the int8 bounds: rebuild in the background (searches stay exact).
            if (set.needsBuild) void set.build(() => this.sets.peek(set.personalityId) === set);
          }
        }
      } catch (err) {
        // Cannot confirm the rows: drop the sets rather than serve them.
        this.options.logger.warn({ err }, 'hot-set refresh failed; dropping sets');
        for (const pid of targets.keys()) this.sets.delete(pid);
      } finally {
        for (const pids of batch.values()) for (const pid of pids) this.undirty(pid);
      }
      this.emit('progress');
    }
  }

  private startLoad(pid: string): void {
    const load: Load = { abort: new AbortController(), changed: new Set() };
    this.loads.set(pid, load);
    this.load(pid, load)
      .catch((err) => {
        // Cancelled by drop() or clear(): a routine invalidation, not a failure.
        if (load.abort.signal.aborted) return;
        // Back off: pgvector serves this personality until the verdict expires.
        this.notHot.set(pid, true, { ttl: FAILED_LOAD_BACKOFF_MS });
        this.options.logger.warn({ personalityId: pid, err }, 'hot-set load failed');
      })
      .finally(() => {
        if (this.loads.get(pid) === load) this.loads.delete(pid);
        this.emit('progress');
      });
  }

  private async load(pid: string, load: Load): Promise<void> {
    const started = performance.now();
    const max = this.options.maxVectorsPerSet;
    let set = new HotSet(pid);
    let tooLarge = false;
    // Counting first sizes the vector block once, instead of doubling it.
    const n = await this.options.store.count(pid, max + 1);
    if (n > max) tooLarge = true;
    else {
      set = new HotSet(pid, n, { loading: true });
      await this.options.store.stream(
        pid,
        max + 1,
        (row) => {
          if (set.count === max) {
            tooLarge = true; // grew past the limit since the count
            return false;
          }
          set.upsert(row);
          return !load.abort.signal.aborted;
        },
        load.abort.signal,
      );
    }
    if (load.abort.signal.aborted) return;
    if (tooLarge) {
      this.notHot.set(pid, true);
      return;
    }
    // The int8 copy, quantized once from the loaded rows; a set that could not be built is not published.
    if (!(await set.build(() => !load.abort.signal.aborted))) return;
    await this.options.beforePublish?.(pid);
    if (load.abort.signal.aborted || !this.enabled) return;
    this.loads.delete(pid);
    this.sets.set(pid, set);
    if (!this.sets.has(pid)) {
      // Larger than the whole byte budget: lru-cache refused it. Don't reload on every search.
      this.notHot.set(pid, true);
      return;
    }
    this.loadedVectors += set.count;
    for (const id of load.changed) this.enqueue(id, pid);
    this.emit('loaded', pid, set.count, performance.now() - started);
  }
}
