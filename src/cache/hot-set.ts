import { EMBEDDING_DIMENSION } from '../embedding.js';
import { kernel } from '../search/kernel.js';
import type { MemoryRow } from '../db/memories.js';

/** Metadata is shared by every search result: frozen so no caller can change the cached copy. */
function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

const ROW_OVERHEAD_BYTES = 160; // id, channel, Date, Map entry, view

/**
 * All memories of one personality in a single contiguous, pre-normalized
 * Float32Array (row-major), plus the columns a search returns. Rows are
 * removed by moving the last row into the hole, so the block stays dense.
 */
export class HotSet {
  readonly dim = EMBEDDING_DIMENSION;
  count = 0;
  /** Bumped on every change; a search that yields checks it did not move. */
  version = 0;
  vectors: Float32Array;
  /** Per-row views into `vectors`, made once: kernels take whole arrays. */
  views: Float32Array[] = [];
  ids: string[] = [];
  channelIds: string[] = [];
  contents: string[] = [];
  /** Epoch ms; searches hand out fresh Date objects. */
  createdAts: number[] = [];
  metadatas: unknown[] = [];
  private readonly index = new Map<string, number>();
  private textBytes = 0;

  constructor(
    readonly personalityId: string,
    capacity = 16,
  ) {
    this.vectors = new Float32Array(Math.max(1, capacity) * this.dim);
  }

  get capacity(): number {
    return this.vectors.length / this.dim;
  }

  /** Bytes held, for the cache's byte bound. */
  get bytes(): number {
    return this.vectors.byteLength + this.textBytes + this.count * ROW_OVERHEAD_BYTES;
  }

  has(id: string): boolean {
    return this.index.has(id);
  }

  upsert(row: MemoryRow): void {
    let r = this.index.get(row.id);
    if (r === undefined) {
      if (this.count === this.capacity) this.grow(this.capacity * 2);
      r = this.count++;
      this.index.set(row.id, r);
      this.views[r] = this.vectors.subarray(r * this.dim, (r + 1) * this.dim);
    } else {
      this.textBytes -= this.contents[r]!.length * 2 + this.channelIds[r]!.length * 2;
    }
    const v = row.embedding;
    const inv = 1 / Math.sqrt(kernel().dot(v, v));
    const base = r * this.dim;
    for (let i = 0; i < this.dim; i++) this.vectors[base + i] = v[i]! * inv;
    this.ids[r] = row.id;
    this.channelIds[r] = row.channelId;
    this.contents[r] = row.content;
    this.createdAts[r] = row.createdAt.getTime();
    this.metadatas[r] = deepFreeze(row.metadata);
    this.textBytes += row.content.length * 2 + row.channelId.length * 2;
    this.version++;
  }

  remove(id: string): boolean {
    const r = this.index.get(id);
    if (r === undefined) return false;
    const last = this.count - 1;
    this.textBytes -= this.contents[r]!.length * 2 + this.channelIds[r]!.length * 2;
    this.index.delete(id);
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
    this.count = last;
    this.version++;
    return true;
  }

  private grow(capacity: number): void {
    const next = new Float32Array(capacity * this.dim);
    next.set(this.vectors.subarray(0, this.count * this.dim));
    this.vectors = next;
    for (let r = 0; r < this.count; r++) this.views[r] = next.subarray(r * this.dim, (r + 1) * this.dim);
  }
}
