import { EventEmitter, once } from 'node:events';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { CollectionShape, FieldShape } from '../../contract/shape.js';
import type { CollectionRow } from '../../store/collections.js';
import { partitionKey } from '../keys.js';
import type { PgvectorArithmetic } from './int8/pgvector-distance.js';
import { PartitionSet, type FilterValue, type HotHit, type HotQuery, type HotRow } from './partition-set.js';

export type { HotHit, HotQuery };

/**
 * What hot sets read from the database. The client supplies it (with its
 * retries), so the cache knows no driver: pg, PGlite, or none at all.
 */
export interface PartitionStore {
  /** Rows a load would transfer, capped at `limit`. */
  count(partition: readonly string[], limit: number): Promise<number>;
  /** Every row of a partition; `onRow` returns false to stop. */
  stream(partition: readonly string[], limit: number, onRow: (row: CollectionRow) => boolean, signal: AbortSignal): Promise<void>;
  /** Current state of these rows; absent ids were deleted or left the collection. */
  fetch(ids: string[]): Promise<CollectionRow[]>;
}

export interface HotSetsOptions {
  shape: CollectionShape;
  store: PartitionStore;
  logger: Logger;
  /** Total bytes of this collection's hot sets. */
  maxBytes: number;
  /** A partition with more rows than this is never hot: pgvector serves it. */
  maxVectorsPerSet: number;
  /** How long a too-large verdict stands before the count is checked again. */
  tooLargeTtlMs: number;
  /** Key canonicalization of the partition fields (citext, char(n)). */
  canon?: readonly ('lower' | 'trimEnd' | undefined)[];
  /** How a collection's id sorts ties: numeric for Int/BigInt ids. */
  idOrder: 'text' | 'numeric';
  /**
   * How the server's pgvector sums `<=>` (probed at start): the sets score
   * the rows that decide an answer in the same arithmetic, so their answers
   * equal pgvector's to the bit. null: unknown, and a set answers only when
   * no rounding could change the answer (else pgvector does).
   */
  arithmetic: PgvectorArithmetic | null;
  /** Test hook: runs after a load has read the database, before it publishes. */
  beforePublish?: (partition: string) => Promise<void> | void;
}

interface Load {
  abort: AbortController;
  /** Ids changed while the load ran; refreshed once it publishes. */
  changed: Set<string>;
}

interface Entry {
  set: PartitionSet;
  /** The partition's values, as texts, for the store. */
  partition: string[];
}

export interface HotSetStats {
  sets: number;
  bytes: number;
  vectors: number;
  loads: number;
  loadedVectors: number;
  evictions: number;
  pendingPatches: number;
  /** Rows skipped because their vector has another dimension than the collection's. */
  wrongDimension: number;
}

const IDS_PER_PATCH = 500;
const FAILED_LOAD_BACKOFF_MS = 5_000;

/** A filter value's text as the set compares it: numbers for Int/Float/DateTime (epoch ms)/Boolean (1/0), strings otherwise. */
export function filterValue(f: FieldShape, text: string | null): FilterValue {
  if (text === null) return null;
  switch (f.type) {
    case 'Int':
    case 'Float':
    case 'DateTime':
      return Number(text);
    case 'Boolean':
      return text === 'true' || text === 't' ? 1 : 0;
    default:
      return f.canon === 'lower' ? text.toLowerCase() : f.canon === 'trimEnd' ? text.replace(/ +$/, '') : text;
  }
}

/**
 * One collection's hot sets, one per partition, bounded by total bytes. Kept
 * in sync, not just evicted: row events are re-read by id, coarse events drop
 * sets. A partition with re-reads outstanding is "dirty" and not served.
 */
export class HotSets extends EventEmitter<{
  loaded: [partition: string, vectors: number, ms: number];
  progress: [];
  wrongDimension: [id: string, dimension: number];
}> {
  private readonly sets: LRUCache<string, Entry>;
  private readonly loads = new Map<string, Load>();
  /** Partitions pgvector serves for now: too large, or their load just failed. */
  private readonly notHot: LRUCache<string, true>;
  /** id -> partitions whose sets must re-read it. */
  private pending = new Map<string, Set<string>>();
  private readonly dirty = new Map<string, number>();
  private draining = false;
  private enabled = false;
  private evictions = 0;
  private loadedVectors = 0;
  private wrongDimension = 0;

  constructor(private readonly options: HotSetsOptions) {
    super();
    this.sets = new LRUCache<string, Entry>({
      maxSize: options.maxBytes,
      sizeCalculation: (e) => Math.max(1, e.set.bytes),
      dispose: (_e, _key, reason) => {
        if (reason === 'evict') this.evictions++;
      },
    });
    this.notHot = new LRUCache<string, true>({ max: 100_000, ttl: options.tooLargeTtlMs });
  }

  get shape(): CollectionShape {
    return this.options.shape;
  }

  /** The cache name of a partition's values (texts); null when one is NULL. */
  key(partition: readonly string[]): string | null {
    return partitionKey(partition, this.options.canon ?? []);
  }

  private spec() {
    const s = this.options.shape;
    return {
      dimension: s.dimension,
      filters: s.filters.map((f) => ({ name: f.name, kind: f.type === 'String' || f.type === 'Enum' ? ('text' as const) : ('number' as const) })),
      idOrder: this.options.idOrder,
    };
  }

  /** A store row as the set takes it, or null (and a report) when its vector has another dimension. */
  private hotRow(row: CollectionRow): HotRow | null {
    if (row.embedding.length !== this.options.shape.dimension) {
      this.wrongDimension++;
      this.emit('wrongDimension', row.id, row.embedding.length);
      return null;
    }
    const filters = this.options.shape.filters.map((f, i) => filterValue(f, row.filters[i] ?? null));
    return { id: row.id, embedding: row.embedding, filters, values: row.values };
  }

  /**
   * Exact top-k from the partition's set when it is current, else null (ask
   * pgvector). A miss starts a background load: the caller never waits for it.
   */
  async searchPartition(partition: readonly string[], q: HotQuery): Promise<HotHit[] | null> {
    const key = this.key(partition);
    if (key === null) return null;
    const entry = this.current(key, partition);
    if (!entry) return null;
    return entry.set.search(q, () => this.isCurrent(key, entry));
  }

  /** True when a search would be served from memory now (no load is started). */
  isServable(partition: readonly string[]): boolean {
    const key = this.key(partition);
    if (key === null) return false;
    const e = this.sets.peek(key);
    return e !== undefined && this.isCurrent(key, e);
  }

  /** True when the partition's cached set holds this id. */
  holds(partition: readonly string[], id: string): boolean {
    const key = this.key(partition);
    return key !== null && (this.sets.peek(key)?.set.has(id) ?? false);
  }

  /** Starts a load unless the set is cached, loading, or known not to be hot. */
  warm(partition: readonly string[]): void {
    const key = this.key(partition);
    if (key !== null) this.current(key, partition);
  }

  private current(key: string, partition: readonly string[]): Entry | undefined {
    if (!this.enabled) return undefined;
    const e = this.sets.get(key);
    if (e) return this.dirty.has(key) ? undefined : e;
    if (!this.loads.has(key) && !this.notHot.has(key)) this.startLoad(key, [...partition]);
    return undefined;
  }

  private isCurrent(key: string, e: Entry): boolean {
    return this.enabled && this.sets.peek(key) === e && !this.dirty.has(key);
  }

  /** Partitions whose cached set holds this id. */
  holding(id: string): string[] {
    const out: string[] = [];
    for (const [key, e] of this.sets.entries()) if (e.set.has(id)) out.push(key);
    return out;
  }

  /** Resolves once this partition has no load or re-read outstanding (tests, warm-up). */
  async settled(partition: readonly string[]): Promise<void> {
    const key = this.key(partition);
    if (key === null) return;
    while (this.loads.has(key) || this.dirty.has(key)) await once(this, 'progress');
  }

  /** Serve from sets (source up) or not at all (down); disabling keeps the sets for the core to judge. */
  setEnabled(enabled: boolean): void {
    this.enabled = enabled;
  }

  /**
   * Rows changed: `rows` are new images with the partition each is in now
   * (null: unknown), `gone` ids left. Every set that holds one of them, or
   * is its partition's, re-reads it; loads in flight re-read them after they
   * publish. A gone row leaves its sets at once.
   */
  changed(rows: readonly { id: string; partition: string | null }[], gone: readonly string[]): boolean {
    let touched = false;
    const all = [...rows.map((r) => r.id), ...gone];
    for (const load of this.loads.values()) {
      for (const id of all) load.changed.add(id);
      touched = true;
    }
    for (const id of gone) {
      for (const key of this.holding(id)) {
        const e = this.sets.peek(key)!;
        if (e.set.remove(id)) this.sets.set(key, e, { noUpdateTTL: true });
        this.enqueue(id, key);
        touched = true;
      }
    }
    for (const r of rows) {
      const keys = new Set(this.holding(r.id));
      if (r.partition !== null && this.sets.has(r.partition)) keys.add(r.partition);
      for (const key of keys) {
        this.enqueue(r.id, key);
        touched = true;
      }
    }
    return touched;
  }

  /** Drops the sets (and running loads) of these partitions. */
  drop(keys: readonly string[]): boolean {
    let touched = false;
    for (const key of keys) {
      const load = this.loads.get(key);
      if (load) {
        load.abort.abort();
        this.loads.delete(key);
        touched = true;
      }
      touched = this.sets.delete(key) || touched;
      this.notHot.delete(key);
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
    // In-flight re-reads still decrement their own counts; queued ones go.
    for (const [, keys] of this.pending) for (const key of keys) this.undirty(key);
    this.pending.clear();
  }

  stats(): HotSetStats {
    let vectors = 0;
    for (const e of this.sets.values()) vectors += e.set.count;
    return {
      sets: this.sets.size,
      bytes: this.sets.calculatedSize,
      vectors,
      loads: this.loads.size,
      loadedVectors: this.loadedVectors,
      evictions: this.evictions,
      pendingPatches: this.pending.size,
      wrongDimension: this.wrongDimension,
    };
  }

  private enqueue(id: string, key: string): void {
    let keys = this.pending.get(id);
    if (!keys) this.pending.set(id, (keys = new Set()));
    if (keys.has(key)) return;
    keys.add(key);
    this.dirty.set(key, (this.dirty.get(key) ?? 0) + 1);
    if (!this.draining) {
      this.draining = true;
      void this.drain();
    }
  }

  private undirty(key: string): void {
    const n = (this.dirty.get(key) ?? 0) - 1;
    if (n > 0) this.dirty.set(key, n);
    else this.dirty.delete(key);
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
      for (const [id, keys] of this.pending) {
        batch.set(id, keys);
        this.pending.delete(id);
        if (batch.size === IDS_PER_PATCH) break;
      }
      // Only the sets that exist now: a set loaded later read newer data.
      const targets = new Map<string, Entry | undefined>();
      for (const keys of batch.values()) for (const key of keys) targets.set(key, this.sets.peek(key));
      try {
        const rows = await this.options.store.fetch([...batch.keys()]);
        const byId = new Map(rows.map((r) => [r.id, r]));
        const touched = new Map<string, Entry>();
        for (const [id, keys] of batch) {
          const row = byId.get(id);
          for (const key of keys) {
            const e = targets.get(key);
            if (!e || this.sets.peek(key) !== e) continue;
            const hot = row && this.key(row.partition as string[]) === key ? this.hotRow(row) : null;
            if (hot) e.set.upsert(hot);
            else e.set.remove(id);
            touched.set(key, e);
          }
        }
        for (const [key, e] of touched) {
          if (e.set.count > this.options.maxVectorsPerSet) {
            this.sets.delete(key);
            this.notHot.set(key, true);
          } else {
            this.sets.set(key, e, { noUpdateTTL: true }); // re-measure bytes
            if (e.set.needsBuild) void e.set.build(() => this.sets.peek(key) === e);
          }
        }
      } catch (err) {
        // Cannot confirm the rows: drop the sets rather than serve them.
        this.options.logger.warn({ err, collection: this.options.shape.name }, 'hot-set refresh failed; dropping sets');
        for (const key of targets.keys()) this.sets.delete(key);
      } finally {
        for (const keys of batch.values()) for (const key of keys) this.undirty(key);
      }
      this.emit('progress');
    }
  }

  private startLoad(key: string, partition: string[]): void {
    const load: Load = { abort: new AbortController(), changed: new Set() };
    this.loads.set(key, load);
    this.load(key, partition, load)
      .catch((err) => {
        // Cancelled by drop() or clear(): a routine invalidation, not a failure.
        if (load.abort.signal.aborted) return;
        // Back off: pgvector serves this partition until the verdict expires.
        this.notHot.set(key, true, { ttl: FAILED_LOAD_BACKOFF_MS });
        this.options.logger.warn({ collection: this.options.shape.name, partition: key, err }, 'hot-set load failed');
      })
      .finally(() => {
        if (this.loads.get(key) === load) this.loads.delete(key);
        this.emit('progress');
      });
  }

  private async load(key: string, partition: string[], load: Load): Promise<void> {
    const started = performance.now();
    const max = this.options.maxVectorsPerSet;
    let tooLarge = false;
    // Counting first sizes the set once, instead of doubling it.
    const n = await this.options.store.count(partition, max + 1);
    let set = new PartitionSet(this.spec(), 1, { loading: true, arithmetic: this.options.arithmetic });
    if (n > max) tooLarge = true;
    else {
      set = new PartitionSet(this.spec(), n, { loading: true, arithmetic: this.options.arithmetic });
      await this.options.store.stream(
        partition,
        max + 1,
        (row) => {
          if (set.count === max) {
            tooLarge = true; // grew past the limit since the count
            return false;
          }
          const hot = this.hotRow(row);
          if (hot) set.upsert(hot);
          return !load.abort.signal.aborted;
        },
        load.abort.signal,
      );
    }
    if (load.abort.signal.aborted) return;
    if (tooLarge) {
      this.notHot.set(key, true);
      return;
    }
    if (!(await set.build(() => !load.abort.signal.aborted))) return;
    await this.options.beforePublish?.(key);
    if (load.abort.signal.aborted || !this.enabled) return;
    this.loads.delete(key);
    const entry: Entry = { set, partition };
    this.sets.set(key, entry);
    if (!this.sets.has(key)) {
      // Larger than the whole byte budget: lru-cache refused it. Don't reload on every search.
      this.notHot.set(key, true);
      return;
    }
    this.loadedVectors += set.count;
    for (const id of load.changed) this.enqueue(id, key);
    this.emit('loaded', key, set.count, performance.now() - started);
  }
}
