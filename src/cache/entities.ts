import { LRUCache } from 'lru-cache';
import type { EntityShape } from '../contract/shape.js';
import { keyText, lookupKey, valueKeys } from './keys.js';

const MISSING = Symbol('missing');
type Slot<V> = V | typeof MISSING;

interface Entry<V> {
  value: Slot<V>;
  /** Everything the value depends on (keys.ts); the reverse index points back here. */
  keys: string[];
}

/** A load in flight: the keys changes named while it ran. */
interface Fill {
  changed: Set<string>;
  /** A change too wide to list (a flush, a TRUNCATE) happened meanwhile. */
  all: boolean;
}

export interface EntityCacheOptions<V> {
  shape: EntityShape;
  /** Values kept (lookups of one root by id and by slug are two). */
  max: number;
  /** Backstop only: changes evict first. */
  ttlMs: number;
  /** How long "none" is remembered (an INSERT that creates it evicts it first). */
  negativeTtlMs: number;
  /** Past this many values evicted by one change, the whole entity kind is dropped instead. */
  maxEvictions: number;
  /** Reads the value for lookup `index` with these values; null for none. */
  load: (index: number, values: readonly unknown[]) => Promise<V | null>;
  /** Key canonicalization of the root's lookup fields (citext, char(n)). */
  canon?: (field: string) => 'lower' | 'trimEnd' | undefined;
}

export interface EntityCacheStats {
  size: number;
  hits: number;
  misses: number;
  /** Values dropped by the LRU bound or TTL. */
  evictions: number;
  /** Values dropped because a change named something they depend on. */
  invalidated: number;
  /** Loads not stored because a change to their rows arrived while they ran. */
  abortedFills: number;
  /** Times the whole kind was dropped (a change past maxEvictions, a TRUNCATE, a flush). */
  flushes: number;
}

/** Deep-freezes plain objects and arrays: a cached value is shared by every caller. */
function freeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value) && (Array.isArray(value) || Object.getPrototypeOf(value) === Object.prototype)) {
    for (const v of Object.values(value)) freeze(v);
    Object.freeze(value);
  }
  return value;
}

/**
 * One declared entity's cache. Values are looked up by the id or a declared
 * unique field; each registers the keys of its include tree, and a change
 * evicts exactly the values whose keys it names (see keys.ts). Concurrent
 * misses share one load, and a load that a change to any of its rows
 * overlapped is never stored.
 */
export class EntityCache<V extends object> {
  private readonly lru: LRUCache<string, Entry<V>>;
  /** key -> cache keys of the values that depend on it. */
  private readonly index = new Map<string, Set<string>>();
  private readonly loads = new Map<string, Promise<V | null>>();
  private readonly fills = new Set<Fill>();
  private readonly counts = { hits: 0, misses: 0, evictions: 0, invalidated: 0, abortedFills: 0, flushes: 0 };
  /** Per lookup, each field's canonicalization, fixed at construction (the hit path). */
  private readonly canons: ('lower' | 'trimEnd' | undefined)[][];

  constructor(private readonly options: EntityCacheOptions<V>) {
    this.canons = options.shape.lookups.map((l) => l.fields.map((f) => options.canon?.(f)));
    this.lru = new LRUCache<string, Entry<V>>({
      max: options.max,
      ttl: options.ttlMs,
      dispose: (entry, ck, reason) => {
        this.unregister(ck, entry.keys);
        if (reason === 'evict' || reason === 'expire') this.counts.evictions++;
      },
    });
  }

  get shape(): EntityShape {
    return this.options.shape;
  }

  /** The value's cache key: the lookup's fields and values. */
  /**
   * The LRU's key for a lookup. The id's value alone, as short as a raw
   * cache's key, so a hit costs one hash of it; every other lookup (and an id
   * starting with \u0001) is `\u0001<index>\u0001<values>`, which no plain id
   * key can equal. '' when a value is null.
   */
  private cacheKey(index: number, values: readonly unknown[]): string {
    const canons = this.canons[index]!;
    if (index === 0 && canons.length === 1) {
      const t = keyText(values[0], canons[0]);
      if (t === null) return '';
      if (t.charCodeAt(0) !== 1) return t;
    }
    const texts: string[] = [];
    for (let i = 0; i < canons.length; i++) {
      const t = keyText(values[i], canons[i]);
      if (t === null) return '';
      texts.push(t);
    }
    return `\u0001${index}\u0001${texts.join('\u0000')}`;
  }

  /** What a change names when it creates or changes the looked-up row (keys.ts): a cached "none" depends on it. */
  private lookupDependency(index: number, values: readonly unknown[]): string | null {
    return lookupKey(this.options.shape.root.model, this.options.shape.lookups[index]!.fields, values, this.options.canon);
  }

  /** Synchronous hit path: the value (null for a cached "none"), or undefined when only get() can answer. */
  peek(index: number, values: readonly unknown[]): V | null | undefined {
    const e = this.lru.get(this.cacheKey(index, values));
    if (!e) return undefined;
    this.counts.hits++;
    return e.value === MISSING ? null : e.value;
  }

  /** Cache-aside: a hit, a shared load in flight, or a new load. */
  get(index: number, values: readonly unknown[]): Promise<V | null> {
    const ck = this.cacheKey(index, values);
    const e = this.lru.get(ck);
    if (e) {
      this.counts.hits++;
      return Promise.resolve(e.value === MISSING ? null : e.value);
    }
    this.counts.misses++;
    const running = this.loads.get(ck);
    if (running) return running;
    const load = this.fill(ck, index, values).finally(() => this.loads.delete(ck));
    this.loads.set(ck, load);
    return load;
  }

  private async fill(ck: string, index: number, values: readonly unknown[]): Promise<V | null> {
    let value: V | null = null;
    for (let attempt = 0; attempt < 3; attempt++) {
      const fill: Fill = { changed: new Set(), all: false };
      this.fills.add(fill);
      try {
        value = await this.options.load(index, values);
      } finally {
        this.fills.delete(fill);
      }
      const keys = value ? valueKeys(this.options.shape, value) : new Set<string>();
      const own = this.lookupDependency(index, values);
      if (own !== null) keys.add(own);
      if (!fill.all && ![...keys].some((k) => fill.changed.has(k))) {
        const frozen = value && freeze(value);
        this.lru.set(ck, { value: frozen ?? MISSING, keys: [...keys] }, value ? {} : { ttl: this.options.negativeTtlMs });
        this.register(ck, keys);
        return frozen;
      }
      this.counts.abortedFills++;
    }
    // Changed under three loads in a row: answer with the last read, uncached.
    return value && freeze(value);
  }

  private register(ck: string, keys: Iterable<string>): void {
    for (const k of keys) {
      let set = this.index.get(k);
      if (!set) this.index.set(k, (set = new Set()));
      set.add(ck);
    }
  }

  private unregister(ck: string, keys: readonly string[]): void {
    for (const k of keys) {
      const set = this.index.get(k);
      if (!set) continue;
      set.delete(ck);
      if (set.size === 0) this.index.delete(k);
    }
  }

  /**
   * Drops every value that depends on one of `keys`, and spoils loads in
   * flight that read one. Returns how many values went, or 'flushed' when
   * they were more than maxEvictions and the whole kind went instead.
   */
  invalidate(keys: readonly string[]): number | 'flushed' {
    for (const fill of this.fills) {
      if (fill.all) continue;
      for (const k of keys) fill.changed.add(k);
      if (fill.changed.size > 100_000) fill.all = true;
    }
    const hit = new Set<string>();
    for (const k of keys) for (const ck of this.index.get(k) ?? []) hit.add(ck);
    if (hit.size > this.options.maxEvictions) {
      this.clear();
      return 'flushed';
    }
    for (const ck of hit) this.lru.delete(ck);
    this.counts.invalidated += hit.size;
    return hit.size;
  }

  /** Drops everything, and spoils every load in flight. */
  clear(): void {
    for (const fill of this.fills) fill.all = true;
    this.lru.clear();
    this.index.clear();
    this.counts.flushes++;
  }

  stats(): EntityCacheStats {
    return { size: this.lru.size, ...this.counts };
  }
}
