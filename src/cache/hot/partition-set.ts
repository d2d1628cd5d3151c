import { compareCodePoints, FilterColumns, type ColumnSpec, type FilterCondition, type FilterValue } from './filters.js';
import { PGVECTOR_AVX2_FMA, type PgvectorArithmetic } from './int8/pgvector-distance.js';
import { CHUNK_BYTES, Int8Rows } from './int8/rows.js';
import { runSliced, runToEnd } from './int8/slicing.js';
import { newTopKMemory, topKSteps, type TopKResult } from './int8/top-k.js';

export type { ColumnSpec, FilterCondition, FilterValue } from './filters.js';

export interface PartitionSetSpec {
  /** Dimensions of every vector, 2..16000 (pgvector's limit). */
  dimension: number;
  /** Declared filter columns, in order; the set lays its rows out by the first (see filters.ts). */
  filters: readonly ColumnSpec[];
  /** How ties on similarity are broken by id: text = code-point order (uuid = byte order); numeric = by value. */
  idOrder: 'text' | 'numeric';
}

export interface HotRow {
  /** The key as PostgreSQL prints it (text form; numeric ids as decimal strings). */
  id: string;
  /** Raw float32 as stored, length === dimension; copied, so the buffer may be reused after the call. */
  embedding: Float32Array;
  /** One per spec.filters entry. */
  filters: readonly FilterValue[];
  /** The returned (select) fields, opaque here, handed back in hits. */
  values: readonly unknown[];
}

export interface HotQuery {
  /** Unit length (normalized by the caller), length === dimension: the same float32 values pgvector is given. */
  query: Float32Array;
  /** AND of all. */
  where: readonly { column: number; condition: FilterCondition }[];
  /** 1..100. */
  limit: number;
  /** Keep rows with similarity >= this. @defaultValue undefined — no bound */
  minSimilarity?: number;
}

export interface HotHit {
  id: string;
  /** 1 − pgvector's `<=>`, bit for bit (clamped to [-1, 1] as pgvector does). */
  similarity: number;
  values: readonly unknown[];
}

export interface PartitionSetOptions {
  /**
   * True while a load fills the set: never searched before its first build.
   * @defaultValue false
   */
  loading?: boolean;
  /**
   * The server's float32 arithmetic for `<=>` (see int8/pgvector-distance.ts:
   * check it once with `probeVectors` / `matchesPgvector`). null: unknown —
   * searches then return null whenever the answer rests on a difference
   * pgvector's rounding could reverse.
   * @defaultValue PGVECTOR_AVX2_FMA — the portable x86-64 build (distribution packages, pgvector's Docker image) on any CPU with FMA.
   */
  arithmetic?: PgvectorArithmetic | null;
  /** @internal Bytes per native block (tests use small blocks). @defaultValue CHUNK_BYTES (16 MiB) */
  chunkBytes?: number;
}

/** Longest stretch of search or build work between event-loop yields (measured: ≤ 2 ms blocks). */
const SLICE_BUDGET_MS = 1;
/** Per-row bookkeeping beyond the vectors: id string, Map entry, values array. */
const ROW_OVERHEAD_BYTES = 120;
/** A run of equal first-column values gets blocks of its own when it has at least this many rows (and this share of the set). */
const MIN_RUN_ROWS = 256;
const MIN_RUN_SHARE = 1 / 64;
/** Rows written since the last build (appended, moved, rewritten out of order) beyond this share ask for a build. */
const DRIFT_SHARE = 1 / 8;

/** Numeric ids as decimal strings (any length), compared by value. */
export function compareNumericIds(a: string, b: string): number {
  if (a === b) return 0;
  if (a.includes('.') || b.includes('.') || a.includes('e') || b.includes('e')) return Number(a) - Number(b) || compareCodePoints(a, b);
  const na = a.startsWith('-');
  const nb = b.startsWith('-');
  if (na !== nb) return na ? -1 : 1;
  const da = na ? a.slice(1) : a;
  const db = nb ? b.slice(1) : b;
  const m = da.length - db.length || (da < db ? -1 : da > db ? 1 : 0);
  return na ? -m : m;
}

/**
 * One partition of a declared vector collection, held in process: exact
 * search under filters, answering as pgvector's exact scan answers the same
 * predicate (same ids, same order, the same similarity bits), or null when it
 * cannot be sure (changed meanwhile, not built yet) so the caller asks
 * pgvector.
 *
 * Layers, one name each: the core's `search` (cache/core.ts) asks
 * `HotSets.searchPartition`, which finds the current set; this set's
 * `search` selects the rows a `where` passes (filters.ts); the kernel's
 * `topKSteps` (int8/top-k.ts) proves the top-k from int8 codes and
 * rescoring; the native `scan` (usearch) reads the codes. Rows whose
 * stored vector fails the norm rule (`searchable`) are kept, so writes and
 * deletes find them, and never returned.
 */
export class PartitionSet {
  readonly spec: PartitionSetSpec;
  private readonly rows: Int8Rows;
  private readonly columns: FilterColumns;
  private ids: string[] = [];
  private values: (readonly unknown[])[] = [];
  private readonly index = new Map<string, number>();
  private _version = 0;
  private loading: boolean;
  private readonly memory = newTopKMemory();
  private readonly arithmetic: PgvectorArithmetic | null;
  private readonly compareIds: (a: string, b: string) => number;
  /** Writes since the last build that left the layout less sorted (appends, rewrites, holes filled). */
  private drift = 0;

  constructor(spec: PartitionSetSpec, capacity = 16, options: PartitionSetOptions = {}) {
    if (!Number.isInteger(spec.dimension) || spec.dimension < 2 || spec.dimension > 16_000) {
      throw new RangeError(`dimension must be an integer from 2 to 16000, got ${spec.dimension}`);
    }
    this.spec = { dimension: spec.dimension, filters: spec.filters.map((f) => ({ ...f })), idOrder: spec.idOrder };
    this.rows = new Int8Rows(spec.dimension, Math.max(1, capacity), options.chunkBytes ?? CHUNK_BYTES, options.arithmetic ?? PGVECTOR_AVX2_FMA);
    this.columns = new FilterColumns(this.spec.filters);
    this.loading = options.loading ?? false;
    this.arithmetic = options.arithmetic === undefined ? PGVECTOR_AVX2_FMA : options.arithmetic;
    this.compareIds = spec.idOrder === 'numeric' ? compareNumericIds : compareCodePoints;
  }

  get count(): number {
    return this.ids.length;
  }

  /** Bumped on every change; a search that yields checks it did not move. */
  get version(): number {
    return this._version;
  }

  /** Bytes held, for the cache's byte bound. */
  get bytes(): number {
    let idBytes = 0;
    for (const id of this.ids) idBytes += id.length * 2;
    return this.rows.bytes + this.columns.bytes + idBytes + this.ids.length * ROW_OVERHEAD_BYTES;
  }

  /** True when a build would make searches faster (int8 bounds loosened by writes, or the layout drifted): searches stay exact meanwhile. */
  get needsBuild(): boolean {
    return this.rows.needsBuild || this.drift > Math.max(MIN_RUN_ROWS, this.count * DRIFT_SHARE);
  }

  has(id: string): boolean {
    return this.index.has(id);
  }

  /** Insert or replace by id. Throws RangeError (changing nothing) for a wrong dimension or filter value. */
  upsert(row: HotRow): void {
    if (!(row.embedding instanceof Float32Array) || row.embedding.length !== this.spec.dimension) {
      throw new RangeError(`embedding must be a Float32Array of ${this.spec.dimension} dimensions, got ${row.embedding?.length}`);
    }
    this.columns.check(row.filters);
    let r = this.index.get(row.id);
    if (r === undefined) {
      r = this.ids.length;
      this.rows.write(r, row.embedding);
      this.ids.push(row.id);
      this.index.set(row.id, r);
    } else {
      this.columns.zoneRemove(this.rows.chunkOf(r), r);
      this.rows.write(r, row.embedding);
    }
    this.columns.set(r, row.filters, this.rows.chunkOf(r));
    this.values[r] = Object.freeze(Array.from(row.values));
    this.drift++;
    this._version++;
  }

  remove(id: string): boolean {
    const r = this.index.get(id);
    if (r === undefined) return false;
    const last = this.ids.length - 1;
    const rowBlock = this.rows.chunkOf(r);
    const lastBlock = this.rows.chunkOf(last);
    this.columns.zoneRemove(rowBlock, r);
    this.rows.swapRemove(r);
    if (r !== last) {
      this.columns.move(last, r, lastBlock, rowBlock);
      this.ids[r] = this.ids[last]!;
      this.values[r] = this.values[last]!;
      this.index.set(this.ids[r]!, r);
      this.drift++;
    } else {
      this.columns.pop(r);
    }
    this.ids.length = last;
    this.values.length = last;
    this.index.delete(id);
    this._version++;
    return true;
  }

  /**
   * Recomputes the int8 copy's scales and lays the rows out by the first
   * filter column, yielding to the event loop; false when a write landed
   * meanwhile or `stillCurrent` turned false (nothing changed: the set is
   * still exact).
   */
  async build(stillCurrent: () => boolean = () => true): Promise<boolean> {
    const version = this._version;
    const current = () => this._version === version && stillCurrent();
    const count = this.ids.length;
    const layout = await runSliced(this.columns.layoutSteps(count), { budgetMs: SLICE_BUDGET_MS, stillCurrent: current });
    if (!layout || !current()) return false;
    const { order, runs } = layout;
    const minRun = Math.max(MIN_RUN_ROWS, count * MIN_RUN_SHARE);
    const breaks: number[] = [];
    for (let i = 0; i < runs.length; i++) {
      const end = i + 1 < runs.length ? runs[i + 1]! : count;
      if (end - runs[i]! >= minRun) breaks.push(runs[i]!, end);
    }
    let identity = true;
    for (let i = 0; i < count && identity; i++) identity = order[i] === i;
    const state = await runSliced(this.rows.buildSteps(identity ? undefined : order, breaks), { budgetMs: SLICE_BUDGET_MS, stillCurrent: current });
    if (!state || !current()) return false;
    this.rows.install(state);
    this.columns.permute(order, (row) => this.rows.chunkOf(row));
    if (!identity) {
      this.ids = Array.from(order, (r) => this.ids[r]!);
      this.values = Array.from(order, (r) => this.values[r]!);
      this.index.clear();
      this.ids.forEach((id, i) => this.index.set(id, i));
    }
    this.drift = 0;
    this.loading = false;
    this._version++;
    return true;
  }

  /**
   * Exact top-k under `where`: similarity descending (pgvector's distance
   * ascending), ties by id. Long searches yield to the event loop; null when
   * the set changed meanwhile, `stillCurrent` turned false, the set was
   * never built after a load, or (with the server's arithmetic unknown) the
   * answer is ambiguous: the caller asks pgvector. Throws RangeError for a
   * query that does not fit the spec.
   */
  async search(q: HotQuery, stillCurrent: () => boolean = () => true): Promise<HotHit[] | null> {
    if (this.loading) return null;
    const version = this._version;
    const found = await runSliced(this.topKSteps(q), {
      budgetMs: SLICE_BUDGET_MS,
      stillCurrent: () => this._version === version && stillCurrent(),
    });
    if (!found || !found.hits || this._version !== version) return null;
    return found.hits.map((h) => ({ id: this.ids[h.row]!, similarity: h.similarity, values: this.values[h.row]! }));
  }

  /** @internal For benches and tests: the same search in one go, with the kernel's counters. */
  searchNow(q: HotQuery): { hits: HotHit[] | null; stats: TopKResult } | null {
    if (this.loading) return null;
    const stats = runToEnd(this.topKSteps(q));
    return { hits: stats.hits && stats.hits.map((h) => ({ id: this.ids[h.row]!, similarity: h.similarity, values: this.values[h.row]! })), stats };
  }

  private *topKSteps(q: HotQuery): Generator<number | void, TopKResult, void> {
    if (!(q.query instanceof Float32Array) || q.query.length !== this.spec.dimension) {
      throw new RangeError(`query must be a Float32Array of ${this.spec.dimension} dimensions`);
    }
    if (!Number.isInteger(q.limit) || q.limit < 1 || q.limit > 100) throw new RangeError(`limit must be an integer from 1 to 100, got ${q.limit}`);
    const count = this.ids.length;
    const selection = this.columns.select(q.where, count, this.rows.state.chunks.length);
    if (selection.count === 0 && selection.rows) {
      return { hits: [], scored: 0, rescored: 0, emulated: 0, scans: 0, bytes: 0, path: 'filtered' };
    }
    return yield* topKSteps(this.rows, this.memory, {
      query: q.query,
      k: q.limit,
      minSimilarity: q.minSimilarity,
      chunks: selection.test ? selection.blocks : undefined,
      accept: selection.test,
      passing: selection.count,
      passingRows: selection.rows,
      ids: this.ids,
      compareIds: this.compareIds,
      arithmetic: this.arithmetic,
    });
  }
}
