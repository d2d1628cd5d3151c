import { LRUCache } from 'lru-cache';

const MISSING = Symbol('missing');
type Slot<T> = T | typeof MISSING;

export interface PersonalityCacheOptions<T> {
  max: number;
  /** Backstop only: notifications evict first. */
  ttlMs: number;
  /** How long "no such personality" is remembered. */
  negativeTtlMs: number;
  load: (id: string, signal: AbortSignal) => Promise<T | null>;
}

export interface PersonalityCacheStats {
  size: number;
  hits: number;
  misses: number;
  evictions: number;
  /** Loads thrown away because an invalidation arrived while they ran. */
  abortedFills: number;
}

/**
 * Cache-aside over lru-cache's fetch(): concurrent misses share one load, and
 * delete()/clear() abort a load in flight, so a fill that raced an
 * invalidation is never stored.
 */
export class PersonalityCache<T extends object> {
  private readonly lru: LRUCache<string, Slot<T>>;
  private hits = 0;
  private misses = 0;
  private evictions = 0;
  private abortedFills = 0;

  constructor(private readonly options: PersonalityCacheOptions<T>) {
    this.lru = new LRUCache<string, Slot<T>>({
      max: options.max,
      ttl: options.ttlMs,
      fetchMethod: async (id, _stale, { signal, options: setOptions }) => {
        const value = await options.load(id, signal);
        if (value === null) {
          setOptions.ttl = options.negativeTtlMs;
          return MISSING;
        }
        return value;
      },
      dispose: (_v, _k, reason) => {
        if (reason === 'evict') this.evictions++;
      },
    });
  }

  /** Never stores a value whose load overlapped an invalidation of its key. */
  async get(id: string): Promise<T | null> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const status: LRUCache.Status<string, Slot<T>, unknown> = {};
      try {
        const value = await this.lru.fetch(id, { status });
        if (status.fetch === 'hit') this.hits++;
        else this.misses++;
        return value === MISSING || value === undefined ? null : value;
      } catch (err) {
        if (!isAbort(err)) throw err;
        this.abortedFills++;
      }
    }
    // Invalidated three times during loads: answer from the database, uncached.
    this.misses++;
    return this.options.load(id, new AbortController().signal);
  }

  /** Synchronous hit path: a cached value, or undefined when a load is needed. */
  peek(id: string): T | null | undefined {
    const v = this.lru.get(id);
    if (v === undefined) return undefined;
    this.hits++;
    return v === MISSING ? null : v;
  }

  delete(ids: readonly string[]): number {
    let n = 0;
    for (const id of ids) if (this.lru.delete(id)) n++;
    return n;
  }

  clear(): void {
    this.lru.clear();
  }

  stats(): PersonalityCacheStats {
    return {
      size: this.lru.size,
      hits: this.hits,
      misses: this.misses,
      evictions: this.evictions,
      abortedFills: this.abortedFills,
    };
  }
}

function isAbort(err: unknown): boolean {
  return (
    err instanceof Error &&
    (err.name === 'AbortError' || err.message === 'deleted' || err.message === 'evicted' || err.message === 'set')
  );
}
