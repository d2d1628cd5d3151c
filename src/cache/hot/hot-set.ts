import type { MemoryRow, SimilarMemory } from '../../store/memories.js';
import { EMBEDDING_DIMENSION, normalizeInto } from '../../embedding.js';
import { QuantizedRows } from './quantized.js';

/** Metadata is shared by every search result: frozen so no caller can change the cached copy. */
function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

const ROW_OVERHEAD_BYTES = 160; // id, channel, Date, Map entry, view

/** Longest stretch of search or build work between event-loop yields (measured: ≤ 2 ms blocks). */
const SLICE_BUDGET_MS = 1;

export interface HotQuery {
  /** Unit-length query vector. */
  query: Float32Array;
  channelId?: string | undefined;
  limit: number;
  minSimilarity?: number | undefined;
}

/**
 * All memories of one personality in a single contiguous, pre-normalized
 * Float32Array (row-major, the truth), a row-aligned int8 copy scanned in one
 * native call per query (src/cache/hot/quantized.ts, which proves the top-k
 * exact before returning it), and the columns a search returns. Rows are
 * removed by moving the last row into the hole, in both blocks. Only the
 * hot-set cache holds these; nothing outside reads the rows.
 */
export class HotSet {
  private readonly dim = EMBEDDING_DIMENSION;
  private _count = 0;
  /** Bumped on every change; a search that yields checks it did not move. */
  private _version = 0;
  private vectors: Float32Array;
  /** Per-row views into `vectors`, made once: kernels take whole arrays. */
  private views: Float32Array[] = [];
  private ids: string[] = [];
  private channelIds: string[] = [];
  private contents: string[] = [];
  /** Epoch ms; searches hand out fresh Date objects. */
  private createdAts: number[] = [];
  private metadatas: unknown[] = [];
  private readonly index = new Map<string, number>();
  private textBytes = 0;
  private readonly quantized: QuantizedRows;
  /**
   * False while a load fills the set: rows go to the f32 block only and the
   * first build() quantizes them all at once (quantizing each row twice made
   * loads half as fast). Such a set is never searched before it is built.
   */
  private quantizedLive: boolean;

  constructor(
    readonly personalityId: string,
    capacity = 16,
    options: { loading?: boolean } = {},
  ) {
    this.vectors = new Float32Array(Math.max(1, capacity) * this.dim);
    this.quantized = new QuantizedRows(this.dim, Math.max(1, capacity));
    this.quantizedLive = !options.loading;
  }

  get count(): number {
    return this._count;
  }

  get version(): number {
    return this._version;
  }

  private get capacity(): number {
    return this.vectors.length / this.dim;
  }

  /** Bytes held, for the cache's byte bound. */
  get bytes(): number {
    return this.vectors.byteLength + this.quantized.bytes + this.textBytes + this._count * ROW_OVERHEAD_BYTES;
  }

  has(id: string): boolean {
    return this.index.has(id);
  }

  upsert(row: MemoryRow): void {
    let r = this.index.get(row.id);
    if (r === undefined) {
      if (this._count === this.capacity) this.grow(this.capacity * 2);
      r = this._count++;
      this.index.set(row.id, r);
      this.views[r] = this.vectors.subarray(r * this.dim, (r + 1) * this.dim);
    } else {
      this.textBytes -= this.contents[r]!.length * 2 + this.channelIds[r]!.length * 2;
    }
    normalizeInto(row.embedding, this.vectors, r * this.dim);
    if (this.quantizedLive) this.quantized.writeRow(r, this.views[r]!);
    this.ids[r] = row.id;
    this.channelIds[r] = row.channelId;
    this.contents[r] = row.content;
    this.createdAts[r] = row.createdAt.getTime();
    this.metadatas[r] = deepFreeze(row.metadata);
    this.textBytes += row.content.length * 2 + row.channelId.length * 2;
    this._version++;
  }

  remove(id: string): boolean {
    const r = this.index.get(id);
    if (r === undefined) return false;
    const last = this._count - 1;
    this.textBytes -= this.contents[r]!.length * 2 + this.channelIds[r]!.length * 2;
    this.index.delete(id);
    if (this.quantizedLive) this.quantized.removeRow(r);
    if (r !== last) {
      this.vectors.copyWithin(r * this.dim, last * this.dim, (last + 1) * this.dim);
      this.ids[r] = this.ids[last]!;
      this.channelIds[r] = this.channelIds[last]!;
      this.contents[r] = this.contents[last]!;
      this.createdAts[r] = this.createdAts[last]!;
      this.metadatas[r] = this.metadatas[last];
      this.index.set(this.ids[r]!, r);
    }
    this.ids.length = this.channelIds.length = this.contents.length = last;
    this.createdAts.length = this.metadatas.length = this.views.length = last;
    this._count = last;
    this._version++;
    return true;
  }

  /** True when clamped upserts have loosened the int8 bounds enough that a rebuild pays (searches stay exact meanwhile). */
  get needsBuild(): boolean {
    return this.quantized.needsRebuild;
  }

  /**
   * Recomputes the int8 copy's scales from the rows (after a load, or when
   * `needsBuild`), yielding to the event loop; false when a write landed
   * meanwhile (the copy is unchanged, and still exact).
   */
  async build(stillCurrent: () => boolean = () => true): Promise<boolean> {
    const version = this._version;
    const built = await this.quantized.rebuildSliced(this.vectors, this._count, {
      budgetMs: SLICE_BUDGET_MS,
      // A loading set's rows are not in the int8 copy yet, so its version cannot see writes: ours does.
      stillCurrent: () => this._version === version && stillCurrent(),
    });
    if (built && this._version === version) this.quantizedLive = true;
    return built && this.quantizedLive;
  }

  /**
   * Exact top-k, ordered as the SQL path orders (similarity desc, then id).
   * Long searches yield to the event loop; returns null if the set changed
   * meanwhile or `stillCurrent` turns false, so the caller can ask pgvector
   * instead of returning a torn result.
   */
  async search(q: HotQuery, stillCurrent: () => boolean = () => true): Promise<SimilarMemory[] | null> {
    if (!this.quantizedLive) return null; // still loading: never served
    const version = this._version;
    const found = await this.quantized.searchSliced(
      q.query,
      this.vectors,
      this.ids,
      {
        k: q.limit,
        minSimilarity: q.minSimilarity,
        filter: q.channelId === undefined ? undefined : { column: this.channelIds, wanted: q.channelId },
      },
      { budgetMs: SLICE_BUDGET_MS, stillCurrent: () => this._version === version && stillCurrent() },
    );
    if (!found || this._version !== version) return null;
    return found.hits.map((h) => this.result(h.row, h.similarity));
  }

  private result(r: number, score: number): SimilarMemory {
    return {
      id: this.ids[r]!,
      content: this.contents[r]!,
      channelId: this.channelIds[r]!,
      similarity: score, // clamped to [-1, 1] by the search, as pgvector does
      createdAt: new Date(this.createdAts[r]!), // a copy: the caller may mutate it
      metadata: this.metadatas[r], // deep-frozen by upsert
    };
  }

  private grow(capacity: number): void {
    const next = new Float32Array(capacity * this.dim);
    next.set(this.vectors.subarray(0, this._count * this.dim));
    this.vectors = next;
    for (let r = 0; r < this._count; r++) this.views[r] = next.subarray(r * this.dim, (r + 1) * this.dim);
    if (this.quantizedLive) this.quantized.grow(capacity);
  }
}
