import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { searchable } from '../../embedding.js';

/*
 * One partition of a collection held in memory and searched by a full
 * scan: every row that passes the filter is scored exactly in float64.
 * The reference the faster kernels are checked against, and the set the
 * cache uses until they land.
 */

export type FilterValue = string | number | null;
export interface ColumnSpec {
  name: string;
  kind: 'text' | 'number';
}
export interface PartitionSetSpec {
  dimension: number;
  filters: readonly ColumnSpec[];
  idOrder: 'text' | 'numeric';
}
export interface HotRow {
  id: string;
  embedding: Float32Array;
  filters: readonly FilterValue[];
  values: readonly unknown[];
}
export type FilterCondition =
  | { eq: FilterValue }
  | { in: readonly (string | number)[] }
  | { notIn: readonly (string | number)[] }
  | { lt?: string | number; lte?: string | number; gt?: string | number; gte?: string | number };
export interface HotQuery {
  query: Float32Array;
  where: readonly { column: number; condition: FilterCondition }[];
  limit: number;
  minSimilarity?: number | undefined;
}
export interface HotHit {
  id: string;
  similarity: number;
  values: readonly unknown[];
}

const ROW_OVERHEAD_BYTES = 160;
const ROWS_PER_SLICE = 2_048;

/** Code-point order (UTF-8 byte order), as COLLATE "C" sorts. */
export function compareText(a: string, b: string): number {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.codePointAt(i)!;
    const y = b.codePointAt(i)!;
    if (x !== y) return x < y ? -1 : 1;
    if (x > 0xffff) i++;
  }
  return a.length < b.length ? -1 : a.length > b.length ? 1 : 0;
}

function compare(a: string | number, b: string | number): number {
  if (typeof a === 'number' && typeof b === 'number') return a < b ? -1 : a > b ? 1 : 0;
  return compareText(String(a), String(b));
}

/** SQL semantics: NULL matches only `eq: null`. */
export function matches(v: FilterValue, c: FilterCondition): boolean {
  if ('eq' in c) return c.eq === null ? v === null : v !== null && compare(v, c.eq) === 0;
  if (v === null) return false;
  if ('in' in c) return c.in.some((x) => compare(v, x) === 0);
  if ('notIn' in c) return !c.notIn.some((x) => compare(v, x) === 0);
  if (c.lt !== undefined && !(compare(v, c.lt) < 0)) return false;
  if (c.lte !== undefined && !(compare(v, c.lte) <= 0)) return false;
  if (c.gt !== undefined && !(compare(v, c.gt) > 0)) return false;
  if (c.gte !== undefined && !(compare(v, c.gte) >= 0)) return false;
  return true;
}

export class ScanSet {
  private ids: string[] = [];
  private vectors: Float32Array[] = [];
  /** 1 / ‖row‖ in float64, or 0 for a row whose similarity is undefined (never returned). */
  private inverseNorms: number[] = [];
  private filterValues: FilterValue[][] = [];
  private values: (readonly unknown[])[] = [];
  private readonly index = new Map<string, number>();
  private _version = 0;
  private textBytes = 0;

  constructor(
    readonly spec: PartitionSetSpec,
    _capacity = 16,
    private readonly options: { loading?: boolean } = {},
  ) {}

  get count(): number {
    return this.ids.length;
  }

  get version(): number {
    return this._version;
  }

  get bytes(): number {
    return this.ids.length * (this.spec.dimension * 4 + ROW_OVERHEAD_BYTES) + this.textBytes;
  }

  get needsBuild(): boolean {
    return false;
  }

  has(id: string): boolean {
    return this.index.has(id);
  }

  upsert(row: HotRow): void {
    let r = this.index.get(row.id);
    if (r === undefined) {
      r = this.ids.length;
      this.index.set(row.id, r);
      this.ids.push(row.id);
    }
    this.vectors[r] = Float32Array.from(row.embedding);
    let sq = 0;
    for (let i = 0; i < row.embedding.length; i++) sq += row.embedding[i]! * row.embedding[i]!;
    this.inverseNorms[r] = searchable(row.embedding) ? 1 / Math.sqrt(sq) : 0;
    this.filterValues[r] = [...row.filters];
    this.values[r] = row.values;
    this.textBytes += row.id.length * 2;
    this._version++;
  }

  remove(id: string): boolean {
    const r = this.index.get(id);
    if (r === undefined) return false;
    const last = this.ids.length - 1;
    this.index.delete(id);
    if (r !== last) {
      this.ids[r] = this.ids[last]!;
      this.vectors[r] = this.vectors[last]!;
      this.inverseNorms[r] = this.inverseNorms[last]!;
      this.filterValues[r] = this.filterValues[last]!;
      this.values[r] = this.values[last]!;
      this.index.set(this.ids[r]!, r);
    }
    this.ids.length = this.vectors.length = this.inverseNorms.length = this.filterValues.length = this.values.length = last;
    this.textBytes -= id.length * 2;
    this._version++;
    return true;
  }

  async build(_stillCurrent: () => boolean = () => true): Promise<boolean> {
    this.options.loading = false;
    return true;
  }

  private order(a: HotHit, b: HotHit): number {
    if (a.similarity !== b.similarity) return b.similarity - a.similarity;
    if (this.spec.idOrder === 'numeric') {
      const x = BigInt(a.id);
      const y = BigInt(b.id);
      return x < y ? -1 : x > y ? 1 : 0;
    }
    return compareText(a.id, b.id);
  }

  async search(q: HotQuery, stillCurrent: () => boolean = () => true): Promise<HotHit[] | null> {
    if (this.options.loading) return null;
    const version = this._version;
    const top: HotHit[] = [];
    const dim = this.spec.dimension;
    for (let r = 0; r < this.ids.length; r++) {
      if (r > 0 && r % ROWS_PER_SLICE === 0) {
        await yieldToLoop();
        if (this._version !== version || !stillCurrent()) return null;
      }
      const inv = this.inverseNorms[r]!;
      if (inv === 0) continue;
      const f = this.filterValues[r]!;
      if (!q.where.every((w) => matches(f[w.column] ?? null, w.condition))) continue;
      const v = this.vectors[r]!;
      let dot = 0;
      for (let i = 0; i < dim; i++) dot += v[i]! * q.query[i]!;
      const similarity = Math.max(-1, Math.min(1, dot * inv));
      if (q.minSimilarity !== undefined && similarity < q.minSimilarity) continue;
      const hit: HotHit = { id: this.ids[r]!, similarity, values: this.values[r]! };
      if (top.length < q.limit) {
        top.push(hit);
        top.sort((a, b) => this.order(a, b));
      } else if (this.order(hit, top[top.length - 1]!) < 0) {
        top[top.length - 1] = hit;
        top.sort((a, b) => this.order(a, b));
      }
    }
    return this._version === version ? top : null;
  }
}
